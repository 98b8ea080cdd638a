"""Fixtures the eBPF collector suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netspy_tui.collector.ebpf import EbpfCollector
from tests.collector.test_ebpf import Recorder, start_or_skip


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[EbpfCollector, Recorder]]:
    """One collector per test module for the cases that need nothing of their own (each test looks
    only at its own traffic: its own ports, pids and commands)."""
    collector = EbpfCollector()
    recorder = Recorder()
    start_or_skip(collector, recorder)
    yield collector, recorder
    collector.stop()
