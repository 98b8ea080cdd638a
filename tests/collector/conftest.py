"""Fixtures the eBPF collector suites share."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from netspy_tui.collector.ebpf import EbpfCollector
from tests.collector.connect_paths import CONNECT_PATHS
from tests.collector.test_ebpf import Recorder, _started, collector_on


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


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 (a free port), closed after the test."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _test_start() -> None:
    """Note when the running test began (``test_ebpf._started``): a module's recorder is shared by its tests,
    whose helpers look only at events made since."""
    _started[0] = time.time()
