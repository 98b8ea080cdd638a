"""Quitting does not wait for a poll (issue 14): ``q`` leaves while a slow source is still answering one (the
poll is cancelled, not waited for). The 0.5 s target for the whole process is the quit bench's
(``bench/quit.py``); here the bound only has to be well under the stuck query's 30 s, so a loaded machine
cannot fail it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.tui.conftest import Clock, demo_source, wait_for
from tests.tui.scenes import Polled

pytestmark = pytest.mark.quiet

#: well under SlowSource's 30 s: leaving sooner proves the poll was cancelled, not waited for
QUIT_WITHIN = 10.0


class SlowSource(MemorySource):
    """Answers the first polls, then takes 30 s per query in a worker thread (a store under a burst), or until
    :attr:`released`."""

    def __init__(self, clock: Clock) -> None:
        demo = demo_source(clock)
        super().__init__(demo._snapshot(), clock=clock)
        self.slow = threading.Event()
        self.stuck = threading.Event()
        self.released = threading.Event()

    async def query(self, q: Any) -> Any:
        if self.slow.is_set():
            self.stuck.set()
            await asyncio.to_thread(self.released.wait, 30)
        return await super().query(q)


async def test_q_leaves_without_waiting_for_a_slow_poll_in_flight() -> None:
    clock = Clock()
    source = SlowSource(clock)
    try:
        async with open_gateway(Polled(source)) as gateway:  # (polled on the timer: nothing changes in between)
            app = NetspyApp(gateway, interval=0.1, clock=clock)
            async with app.run_test(size=(120, 35)) as pilot:
                await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "the first rows")
                source.slow.set()
                await wait_for(pilot, source.stuck.is_set, "a poll stuck in the slow source")
                await pilot.pause(0.3)  # the first frames drawn: the key is handled at once
                started = time.monotonic()
                await pilot.press("q")
                await wait_for(pilot, lambda: not app.is_running, "exit", limit=QUIT_WITHIN)
            left = time.monotonic() - started
        closed = time.monotonic() - started
    finally:
        source.released.set()  # (the worker thread, which the loop's close would wait for)
    assert app.return_code == 0
    assert left < QUIT_WITHIN, f"the app took {left:.2f}s to exit"
    assert closed < QUIT_WITHIN, f"closing the gateway after the app took {closed:.2f}s"


async def test_q_before_the_ai_pane_has_mounted_its_answer_view_leaves_without_an_error() -> None:
    """The AI pane mounts its Markdown view after the first frame; a ``q`` that came first (a user who quits at
    once) must not make that mount fail as the app closes (it did: MountError, and a traceback on exit)."""
    clock = Clock()
    async with open_gateway(Polled(demo_source(clock))) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock)
        async with app.run_test(size=(160, 45)) as pilot:
            pane = app.dashboard.ai_pane
            await wait_for(pilot, lambda: pane._answer is not None, "the answer view mounted after the first frame")
            pane._answer = None  # as before that frame
            app.exit(0)
            assert pane._mount_answer() is False  # the app is closing: nothing mounted, nothing raised
        assert app.return_code == 0
