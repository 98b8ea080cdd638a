"""Feels instant (issue 17): the dashboard the CLI runs leaves what it built before the first data to reference
counting (gc.freeze), so the cyclic collector's full passes no longer walk the modules, the screen and the first
window's rows on a refresh or a key; an app opened with the default (tests, benches of many apps) leaves the
collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import YOUNG_THRESHOLD, NetspyApp
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW

pytestmark = pytest.mark.quiet


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as this test process had it, restored after the test (the freeze is for good otherwise)."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert frozen == 0 or threshold[0] != YOUNG_THRESHOLD, "an earlier test left the heap frozen"
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
@pytest.mark.parametrize("freeze", [True, False])
async def test_the_heap_is_frozen_once_the_first_data_is_on_screen(
    source: MemorySource, clock: Clock, freeze: bool
) -> None:
    before = gc.get_freeze_count()
    async with open_gateway(source) as gw:
        app = NetspyApp(gw, interval=0.25, clock=clock, freeze_heap=freeze)
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "the first data")
            if freeze:  # (after the frame that shows it, once the screen is idle, or at the next poll when not)
                source.add_events([connection(pid=98, command="nc", time=DEMO_NOW, outcome="ok")])  # (a next poll)
                await wait_for(pilot, lambda: gc.get_freeze_count() > before, "the heap frozen")
                # the app's objects (its screen, the rows on it) are among the frozen ones
                assert gc.get_freeze_count() > before + 10_000
                assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            frozen = gc.get_freeze_count()
            # later refreshes do not freeze again (the rows that come and go stay the collector's)
            polls = app.polls
            for n in range(2):
                source.add_events(
                    [connection(pid=99, command="wget", time=DEMO_NOW - timedelta(seconds=n), outcome="ok")]
                )
                await wait_for(pilot, lambda n=n: app.polls >= polls + n + 1, "a poll for the new event")
            await pilot.pause()
            assert gc.get_freeze_count() <= frozen  # (frozen objects freed since: fewer)
            if not freeze:
                assert gc.get_freeze_count() == before and gc.get_threshold()[0] != YOUNG_THRESHOLD
            # and the dashboard goes on as before: the rows are there, keys answer
            await pilot.press("slash", *"curl")
            await wait_for(pilot, lambda: app.dashboard.filter_text == "curl", "the filter")
            assert 0 < app.dashboard.connections.row_count


@pytest.mark.usefixtures("collector")
async def test_a_screen_never_idle_after_the_first_data_still_freezes_the_heap_at_the_next_poll(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The freeze waited for the screen to be idle after the frame with the first data: on a busy host (polls as
    fast as frames) it never was, and the collector kept walking the whole heap (CI, beside the kernel tests, timed
    out waiting for it). The next poll freezes it when the screen has not been idle since."""
    before = gc.get_freeze_count()
    async with open_gateway(source) as gw:
        app = NetspyApp(gw, interval=0.25, clock=clock, freeze_heap=True)
        later: list[object] = []
        after_refresh = app.call_after_refresh

        def never_idle(callback: Any, *args: Any, **kwargs: Any) -> bool:
            if getattr(callback, "__name__", "") == "_freeze_once":  # (the screen is never idle: never called)
                later.append(callback)
                return True
            return after_refresh(callback, *args, **kwargs)

        monkeypatch.setattr(app, "call_after_refresh", never_idle)
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: bool(later), "the freeze asked for, after the first data's frame")
            assert gc.get_freeze_count() == before
            polls = app.polls
            source.add_events([connection(pid=99, command="wget", time=DEMO_NOW, outcome="ok")])
            await wait_for(pilot, lambda: app.polls > polls, "a poll for the new event")
            assert gc.get_freeze_count() > before + 10_000  # (asked after the frame; done at the next poll)
