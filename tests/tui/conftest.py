"""Fixtures for the dashboard tests: the demo recording, a frozen clock, apps over a MemorySource."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import pytest
from textual import work
from textual.pilot import Pilot

from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.models import ConnectionEvent, PacketDropEvent, parse_events
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.tui.demo_data import DEMO_NOW, DEMO_PATH

WAIT_SECONDS = 10.0


def demo_events() -> list[ConnectionEvent | PacketDropEvent]:
    lines = DEMO_PATH.read_text(encoding="utf-8").splitlines()
    events, skipped = parse_events([json.loads(line) for line in lines])
    assert skipped == 0
    return events


class Clock:
    """A clock that stands still unless a test moves it."""

    def __init__(self, now: datetime = DEMO_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def demo_source(clock: Callable[[], datetime] | None = None) -> MemorySource:
    return MemorySource(demo_events(), label="replay of demo.jsonl", clock=clock or Clock())


class SourceApp(NetspyApp):
    """NetspyApp that opens its in-process gateway inside its own event loop (for snap_compare and scripts).

    The gateway's MCP client lives in one worker for the app's whole life, as its context manager needs.
    """

    def __init__(self, source: Any, **kwargs: Any) -> None:
        self.source = source
        super().__init__(cast(Gateway, None), **kwargs)

    def on_mount(self) -> None:
        self._own_gateway()

    @work(group="gateway", exit_on_error=True)
    async def _own_gateway(self) -> None:
        async with open_gateway(self.source) as gateway:
            self.set_gateway(gateway)
            self.poll_loop()
            await asyncio.Event().wait()


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], what: str = "condition",
                   limit: float = WAIT_SECONDS) -> None:
    """Let the app run until ``condition()`` holds; fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await pilot.pause(0.02)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> MemorySource:
    return demo_source(clock)

