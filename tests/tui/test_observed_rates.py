"""Rates over the time the data covers: a recording replayed (``--replay FILE --replay-speed 0``) into a 1-hour
window holds minutes of events, not an hour's. The dashboard runs on the embedded source the CLI opens for it
(the replay collector feeding the store), on the wall clock."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from netspy_tui.ai.settings import AISettings
from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.tui.app import NetspyApp
from tests.factories import BASE_TIME, connection_json
from tests.tui.conftest import wait_for

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
