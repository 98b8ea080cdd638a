"""Fixtures for the dashboard tests: the demo recording, a frozen clock, a MemorySource over it."""

from __future__ import annotations

import pytest

from netspy_tui.telemetry.memory import MemorySource
from tests.tui.scenes import Clock, demo_events, demo_source, spy_snapshots, wait_for

__all__ = ["Clock", "demo_events", "demo_source", "spy_snapshots", "wait_for"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> MemorySource:
    return demo_source(clock)
