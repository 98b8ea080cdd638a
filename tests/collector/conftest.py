"""Fixtures the eBPF collector suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netspy_tui.collector.ebpf import EbpfCollector
from tests.collector.connect_paths import CONNECT_PATHS
from tests.collector.test_ebpf import Recorder, collector_on


@pytest.fixture(scope="module", params=CONNECT_PATHS)
def connect_path(request: pytest.FixtureRequest) -> str:
    """Each test that takes this (or :func:`live`) runs on both of the ways connect() is followed."""
    return str(request.param)


@pytest.fixture(scope="module")
def live(connect_path: str) -> Iterator[tuple[EbpfCollector, Recorder]]:
    """One collector per test module and connect() path for the cases that need nothing of their own (each test
    looks only at its own traffic: its own ports, pids and commands)."""
    recorder = Recorder()
    with collector_on(connect_path, recorder) as collector:
        yield collector, recorder
