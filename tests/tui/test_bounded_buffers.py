"""The dashboard's own buffers are bounded (issue 14; README "The dashboard"): at most ``max_rows`` connection and
drop events (the poller's windows, the tables' rows and their rendered cells), at most PROCESS_LIMIT process rows,
one AI answer of at most MAX_ANSWER_CHARS; and after a burst leaves the window they shrink back to the steady size.
The bound is tested on the buffers themselves, not on RSS (an allocator may keep freed pages)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.poller import PROCESS_LIMIT
from netspy_tui.tui.widgets import ai_pane
from netspy_tui.tui.widgets.connections import EventTable
from tests.factories import connection, drop
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW

pytestmark = pytest.mark.quiet

MAX_ROWS = 300


def sizes(app: NetspyApp) -> dict[str, int]:
    d = app.dashboard
    snap = d.latest
    assert snap is not None
    out = {"snapshot connections": len(snap.connections), "snapshot drops": len(snap.drops)}
    for name, table in (("connections", d.connections), ("drops", d.drops)):
        assert isinstance(table, EventTable)
        out[f"{name} rows"] = table.row_count
        out[f"{name} events"] = len(table.events)
        out[f"{name} cells"] = len(table._cells)
        out[f"{name} data"] = len(table._data)
    out["process rows"] = d.processes.row_count
    out["process stats"] = len(d.processes.stats)
    return out


async def test_buffers_stay_under_their_bounds_in_a_burst_and_shrink_back_after_it() -> None:
    clock = Clock()
    burst: list[Any] = [
        connection(
            pid=10_000 + i, command=f"burst{i % 400}", ip="10.0.0.1", time=DEMO_NOW - timedelta(seconds=20 - i * 0.002)
        )
        for i in range(5000)
    ]
    burst += [
        drop(pid=20_000 + i, command="burst", time=DEMO_NOW - timedelta(seconds=20 - i * 0.005)) for i in range(2000)
    ]
    source = MemorySource(burst, clock=clock)
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.1, clock=clock, max_rows=MAX_ROWS)
        async with app.run_test(size=(120, 35)) as pilot:
            await wait_for(
                pilot,
                lambda: app.dashboard.connections.row_count > 0 and app.dashboard.drops.row_count > 0,
                "the burst on screen",
                limit=30,
            )
            for _ in range(5):  # several polls through the burst
                await pilot.pause(0.15)
                during = sizes(app)
                assert max(v for k, v in during.items() if not k.startswith("process")) <= MAX_ROWS, during
                assert during["process rows"] <= PROCESS_LIMIT and during["process stats"] <= PROCESS_LIMIT, during
            await wait_for(pilot, lambda: sizes(app)["connections rows"] == MAX_ROWS, "the table at its bound", 30)

            # the burst leaves the 1-minute window; a steady trickle goes on
            clock.now = DEMO_NOW + timedelta(seconds=90)
            source.add_events(
                [connection(pid=7, command="steady", time=clock.now - timedelta(seconds=s)) for s in (3, 2, 1)]
            )
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 3, "back to the steady rows", limit=30)
            await wait_for(pilot, lambda: app.dashboard.drops.row_count == 0, "no drops left", limit=30)
            await wait_for(pilot, lambda: app.dashboard.processes.row_count == 1, "one process left", limit=30)
            after = sizes(app)
            assert {k: v for k, v in after.items() if k.startswith(("connections", "snapshot connections"))} == {
                "snapshot connections": 3,
                "connections rows": 3,
                "connections events": 3,
                "connections cells": 3,
                "connections data": 3,
            }, after
            assert after["drops events"] == after["drops cells"] == after["drops data"] == 0, after
            assert after["process rows"] == 1, after


async def test_one_ai_answer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ai_pane, "MAX_ANSWER_CHARS", 500)
    from netspy_tui.mcp_tools.ai_bridge import AIHooks

    async def explain(gateway: Any, subject: Any) -> Any:
        for _ in range(200):
            yield "word " * 10

    clock = Clock()
    async with open_gateway(MemorySource([connection(time=DEMO_NOW)], clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, ai=AIHooks(explain=explain))
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "a row")
            await pilot.press("a")
            pane = app.dashboard.ai_pane
            await wait_for(pilot, lambda: pane.state == "finished", "the answer")
            assert len(pane.answer) < 600 and pane.answer.endswith("the rest is not shown)*")
            assert len(pane.document) < 600


def test_the_readme_states_these_bounds() -> None:
    import inspect
    from pathlib import Path

    from netspy_tui.tui.widgets.command import HISTORY_LIMIT

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    max_rows = inspect.signature(NetspyApp.__init__).parameters["max_rows"].default
    section = readme.split("The dashboard's own memory is bounded", 1)[1].split("\n\n", 1)[0]
    for figure in (
        f"**{max_rows:,}** connection events",
        f"{max_rows:,} packet",
        f"**{PROCESS_LIMIT}** process rows",
        f"**{ai_pane.MAX_ANSWER_CHARS:,}** characters",
        f"{HISTORY_LIMIT} command lines",
    ):
        assert figure in " ".join(section.split()), figure
