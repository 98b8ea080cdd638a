"""Idle, the process table ages with the window as the event tables do: with nothing new arriving, the summaries
are read again only every few idle refreshes, and the process table kept processes whose events had left the window
for ~50 s (an audit's: "Connections (0)" above a table of four processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from textual.pilot import Pilot

from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui import poller as poller_module
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.tui.conftest import Clock, spy_snapshots, wait_for
from tests.tui.demo_data import DEMO_NOW


@asynccontextmanager
async def _idle_dashboard(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, ages: Iterable[int]
) -> AsyncIterator[tuple[NetspyApp, Pilot[int], Gateway]]:
    """The dashboard over curl's connections ``ages`` seconds before DEMO_NOW, once curl is in its process table;
    idle refreshes every 0.2 s (not 10), the summaries' own idle re-read never."""
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 0.2)
    monkeypatch.setattr(poller_module, "IDLE_SUMMARY_EVERY", 10_000)
    events = [connection(pid=7, command="curl", time=DEMO_NOW - timedelta(seconds=s)) for s in ages]
    async with open_gateway(MemorySource(events, clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.1, clock=clock, window=60)
        async with app.run_test(size=(120, 35)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.processes.row_count == 1, "curl in the process table")
            yield app, pilot, gateway


async def test_processes_whose_events_left_the_window_leave_the_table_while_nothing_new_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    async with _idle_dashboard(monkeypatch, clock, (5, 4, 3)) as (app, pilot, _):
        screen = app.dashboard
        clock.now = DEMO_NOW + timedelta(seconds=90)  # its events leave the 1-minute window; nothing new comes
        await wait_for(pilot, lambda: screen.connections.row_count == 0, "the connections table empty")
        await wait_for(pilot, lambda: screen.processes.row_count == 0, "the process table empty")


async def test_a_window_full_of_events_is_not_summarised_again_at_every_idle_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Over a window full of events the oldest one leaves at every moment: that alone must not have the summaries
    # read again at each idle poll (an hour of 1,000,000 events idled at 0.5-0.6 % of a core instead of 0.2);
    # only a row whose newest event has gone does.
    clock = Clock()
    async with _idle_dashboard(monkeypatch, clock, range(59, 0, -1)) as (app, pilot, gateway):
        await wait_for(pilot, lambda: app.poller._idle_ticks > 0, "an idle poll (nothing new)")
        asked = spy_snapshots(gateway, "parts")
        for step in range(1, 11):  # the window slides a second at a time; the oldest event leaves each time
            clock.now = DEMO_NOW + timedelta(seconds=step)
            polls = len(asked)
            await wait_for(pilot, lambda n=polls + 1: len(asked) >= n, "an idle poll")
        summarised = [parts for parts in asked if "patterns" in parts]
        assert len(asked) >= 10
        assert summarised == [], summarised
        assert app.dashboard.processes.row_count == 1
