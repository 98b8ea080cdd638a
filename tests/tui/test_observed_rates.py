"""Rates over the time the data covers: a recording replayed (``--replay FILE --replay-speed 0``) into a 1-hour
window holds minutes of events, not an hour's, and a store reopened (``--db``) events older than the collector.
The dashboard runs on the embedded source the CLI opens for them, on the wall clock."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from netspy_tui.ai.settings import AISettings
from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import BASE_TIME, connection, connection_json
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Polled
from tests.tui.screen_text import screen_lines

pytestmark = pytest.mark.quiet

SIZE = (160, 45)
HOUR = 3600


def record(path: Path, seconds: list[float]) -> Path:
    """A recording of python3's DNS connects, one at each of ``seconds`` (after BASE_TIME)."""
    lines = [
        json.dumps(connection_json(pid=2048, command="python3", ip="10.0.0.2", port=53, protocol="UDP",
                                   time=BASE_TIME + timedelta(seconds=s)))
        for s in seconds
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@asynccontextmanager
async def replayed(recording: Path, total: int) -> AsyncIterator[tuple[NetspyApp, Pilot[Any]]]:
    """``netspy-tui --replay FILE --replay-speed 0 --window 3600`` without an AI model, once its ``total`` events
    are in."""
    source = await EmbeddedSource.launch("replay", EventStore(None), replay_path=recording, replay_speed=0)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, window=HOUR, source_note="test", ai=dashboard_hooks(AISettings()))
            async with app.run_test(size=SIZE) as pilot:
                procs = app.dashboard.processes
                await wait_for(pilot, lambda: "python3" in procs.stats, "python3 in the process table")
                await wait_for(pilot, lambda: procs.stats["python3"].attempts == total, "the whole recording")
                yield app, pilot
    finally:
        await source.aclose()


async def explain(app: NetspyApp, pilot: Pilot[Any], name: str) -> str:
    """``a`` on ``name``'s row: the local rules' text in the AI pane."""
    procs = app.dashboard.processes
    procs.focus()
    procs.move_cursor(row=procs.get_row_index(name))
    await pilot.pause()
    await pilot.press("a")
    pane = app.dashboard.ai_pane
    await wait_for(pilot, lambda: pane.state == "finished", "the explanation")
    return pane.answer


def per_minute(text: str) -> float:
    found = re.search(r"connect\(\) attempts \(([\d,.]+) per minute", text)
    assert found, text
    return float(found.group(1).replace(",", ""))


async def test_a_replayed_steady_process_is_no_rate_spike_and_its_rate_is_its_own(tmp_path: Path) -> None:
    """300 connects, one a second for 5 minutes, replayed into the 1-hour window: 60 a minute, every minute.
    (Averaged over the hour they read 5.0 a minute, and each full minute a 12x spike.)"""
    async with replayed(record(tmp_path / "steady.jsonl", [float(i) for i in range(300)]), 300) as (app, pilot):
        text = await explain(app, pilot, "python3")
    assert "**Activity:** 300 connect() attempts (" in text, text
    # the replay ends within the second before it finishes; the window ends when `a` asks, a few seconds later
    assert 55.0 <= per_minute(text) <= 60.0, text
    assert re.search(r"per minute over the (5 min|30\d s) observed\)", text), text
    assert "Rate spike" not in text and "rate spike" not in text and "Worth a look" not in text, text
    assert "**Assessment:** nothing in these figures stands out." in text


async def test_a_replayed_burst_over_a_steady_half_hour_is_still_a_rate_spike(tmp_path: Path) -> None:
    """One connect every 30 s for half an hour, and 60 within 5 s at its 20th minute: a spike over the half hour's
    average of 4 a minute, whatever the hour before the recording held."""
    times = [30.0 * i for i in range(60)] + [1200 + i / 12 for i in range(60)]
    async with replayed(record(tmp_path / "burst.jsonl", sorted(times)), 120) as (app, pilot):
        text = await explain(app, pilot, "python3")
    assert "**Activity:** 120 connect() attempts (" in text, text
    assert 4.0 <= per_minute(text) <= 4.1, text  # 120 over the ~1,775 s observed (the half hour, and the seconds since)
    spike = re.search(r"\*\*Rate spike:\*\* (\d+) attempts in one 60 s interval ending [\d:]+ UTC, ([\d.]+)× the "
                      r"average of ([\d.]+) per interval over the 17\d\d s observed\.", text)  # fmt: skip
    assert spike, text
    assert int(spike.group(1)) >= 31 and 4.0 <= float(spike.group(3)) <= 4.1, text  # (the burst may span 2 intervals)
    assert "**Worth a look:** a rate spike." in text


# --- the header's events per second ------------------------------------------------------------------------------


def header(app: NetspyApp) -> str:
    """The header's first line, as the screen shows it."""
    return screen_lines(app)[0]


def events_per_second(app: NetspyApp) -> float:
    found = re.search(r"([\d,.]+) ev/s", header(app))
    assert found, header(app)
    return float(found.group(1).replace(",", ""))


async def test_the_header_rate_of_a_replay_is_the_recordings_not_over_the_seconds_since_it_started(
    tmp_path: Path,
) -> None:
    """300 connects over 5 minutes, replayed in a second: 1 a second (it read 150+, 300 over the collector's uptime)."""
    async with replayed(record(tmp_path / "steady.jsonl", [float(i) for i in range(300)]), 300) as (app, pilot):
        await wait_for(pilot, lambda: "ev/s" in header(app), "the rate in the header")
        assert "window 1h" in header(app)
        assert 0.9 <= events_per_second(app) <= 1.0, header(app)  # 300 over the ~5 minutes since the first


async def test_the_header_rate_of_a_reopened_store_is_its_events_over_the_seconds_they_span() -> None:
    """``--db FILE`` reopened: 100 connects of the last 50 s stored by an earlier run, the source just started:
    2 a second (it read 100 over the second or two since the start)."""
    store = EventStore(None)
    now = datetime.now(UTC)
    store.add_events([connection(pid=7, command="curl", time=now - timedelta(seconds=50 - i / 2)) for i in range(100)])
    source = EmbeddedSource(None, store)
    await source.start()
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, source_note="test")
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: "ev/s" in header(app), "the rate in the header")
                assert "window 1m" in header(app)
                # 100 over the ~50 s since the first (a slow start makes it a little less)
                assert 1.8 <= events_per_second(app) <= 2.0, header(app)
    finally:
        await source.aclose()


async def test_paused_the_header_rate_stays_that_of_the_data_on_screen() -> None:
    """Paused, the tables keep the data they showed and the header its ev/s, while the polls go on; resumed, both
    catch up."""
    clock = Clock()
    source = MemorySource([connection(pid=5, command="curl", time=DEMO_NOW - timedelta(seconds=i)) for i in range(60)],
                          clock=clock)  # fmt: skip
    async with open_gateway(Polled(source)) as gateway:  # (polled on the timer while paused: no change to wake it)
        app = NetspyApp(gateway, interval=0.2, clock=clock, source_note="test")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "1.0 ev/s" in header(app), "60 connects over the 60 s window")
            await pilot.press("space")
            await wait_for(pilot, lambda: "PAUSED" in header(app), "paused")
            source.add_events([connection(pid=6, command="wget", time=DEMO_NOW) for _ in range(120)])
            polls = app.polls
            await wait_for(pilot, lambda: app.polls >= polls + 3, "three polls while paused")
            latest = app.dashboard.latest
            assert latest is not None and latest.events_per_second == 3.0  # (what the polls brought: not shown yet)
            assert "1.0 ev/s" in header(app), header(app)
            await pilot.press("space")
            await wait_for(pilot, lambda: "3.0 ev/s" in header(app), "the rate of the data shown again")
            assert "LIVE" in header(app)


async def test_the_pattern_panel_says_its_rate_is_over_the_minutes_observed_not_the_window(tmp_path: Path) -> None:
    """300 connects over 5 minutes replayed into the 1 h window: "300 attempts in 1h · 60.0/min" read as a rate
    that contradicted its own window (an audit's); it says the minutes the rate is over."""
    async with replayed(record(tmp_path / "steady.jsonl", [float(i) for i in range(300)]), 300) as (app, pilot):
        line = re.compile(r"300 attempts in 1h · (5\d\.\d|60\.0)/min over [45]m · 0% failed")  # (the clock moves)
        await wait_for(pilot, lambda: any(line.search(text) for text in screen_lines(app)), "the panel's first line")
