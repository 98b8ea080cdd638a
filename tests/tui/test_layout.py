"""The dashboard at the sizes terminals really are: 80x24, 120x35, 200x55 (what the user sees on screen)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widget import Widget

from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.cells import Column, fit_widths
from netspy_tui.tui.widgets.processes import _pids_text
from tests.tui.scenes import SCENES, demo_app, wait_for
from tests.tui.screen_text import screen_lines, screen_text

pytestmark = pytest.mark.quiet


def shown(widget: Widget) -> bool:
    """On screen: displayed, with every ancestor displayed, and given some room."""
    return widget.is_on_screen and widget.region.area > 0


def column_x(app: NetspyApp, table_id: str, key: str) -> tuple[int, int]:
    """(first, last) screen column of a table column, from the table's region and the column widths."""
    table = app.dashboard.query_one(f"#{table_id}")
    x = table.region.x
    for column in table.ordered_columns:  # type: ignore[attr-defined]
        width = column.get_render_width(table)
        if column.key.value == key:
            return x, x + width - 1
        x += width
    raise AssertionError(f"no column {key}")


@asynccontextmanager
async def main_view(size: tuple[int, int]) -> AsyncIterator[tuple[NetspyApp, Pilot[Any]]]:
    app = demo_app()
    async with app.run_test(size=size) as pilot:
        await SCENES["main"](pilot)
        yield app, pilot


@pytest.mark.parametrize("size", [(80, 24), (120, 35)])
async def test_below_140_columns_the_tables_take_the_width_and_outcome_is_in_view(size: tuple[int, int]) -> None:
    async with main_view(size) as (app, pilot):
        d = app.dashboard
        assert d.has_class("-narrow")
        assert not shown(d.query_one("#patterns")) and not shown(d.query_one("#ai-pane"))
        assert d.connections.region.width == size[0]
        first, last = column_x(app, "connections", "outcome")
        assert last < size[0] - 2, "the Outcome column is past the right edge"
        await wait_for(pilot, lambda: "q Quit" in screen_lines(app)[-1], "the footer")
        lines = screen_lines(app)
        header = next(line for line in lines if "Time (UTC)" in line)
        for label in ("Process", "Destination", "Outcome"):
            assert label in header
        assert "refused" in screen_text(app)
        procs = next(line for line in lines if "Attempts" in line)
        assert "Last seen" in procs and "Failed" in procs
        # header: each line fits on its own line; footer: one line with the most important keys
        assert "healthy" in lines[0] and "LIVE" in lines[0] and "updates pushed" in lines[0]
        assert "updates" not in lines[1] and "LIVE" not in lines[1]
        assert lines[-1].startswith(" ? Help") and "q Quit" in lines[-1] and "a Explain" in lines[-1]
        assert "p Patterns" in lines[-1]


async def test_at_80x24_p_and_i_put_a_pane_in_place_of_the_tables_and_esc_brings_them_back() -> None:
    async with main_view((80, 24)) as (app, pilot):
        d = app.dashboard
        await pilot.press("p")
        await wait_for(pilot, lambda: shown(d.query_one("#patterns")), "pattern panel")
        assert not shown(d.connections) and d.query_one("#patterns").region.width == 80
        assert "Top destinations" in screen_text(app)
        await pilot.press("i")
        await wait_for(pilot, lambda: shown(d.ai_pane), "AI pane")
        assert not shown(d.query_one("#patterns")) and not shown(d.connections)
        await pilot.press("escape")
        await wait_for(pilot, lambda: shown(d.connections), "tables back")
        assert not shown(d.ai_pane)
        # a explains the selected process: the answer comes into view in place of the tables
        await pilot.press("a")
        await wait_for(pilot, lambda: d.ai_pane.state == "finished", "explanation")
        assert shown(d.ai_pane) and not shown(d.connections)
        await pilot.press("i")
        await wait_for(pilot, lambda: shown(d.connections), "tables back after i")


async def test_at_200x55_columns_grow_and_hiding_the_ai_pane_widens_the_tables() -> None:
    async with main_view((200, 55)) as (app, pilot):
        d = app.dashboard
        assert d.has_class("-wide")
        assert shown(d.query_one("#patterns")) and shown(d.ai_pane)
        table = d.connections
        used = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert used >= table.size.width - 2 - 3, "columns stay narrow with empty space to their right"
        pids_first, pids_last = column_x(app, "processes", "pids")
        assert pids_last - pids_first + 1 > 15
        before = table.region.width
        await pilot.press("i")
        await wait_for(pilot, lambda: not shown(d.ai_pane), "AI pane hidden")
        await wait_for(pilot, lambda: table.region.width > before + 10, "wider tables")
        assert shown(d.query_one("#patterns"))
        await pilot.press("p")
        await wait_for(pilot, lambda: table.region.width == 200, "tables take the whole width")
        await pilot.press("i")
        await wait_for(pilot, lambda: shown(d.ai_pane), "AI pane back")


def test_fit_widths_keeps_minimums_and_shares_spare_width_among_growing_columns() -> None:
    cols = [Column("a", "A", 4, 4), Column("b", "B", 5, 9), Column("c", "C", 3, 20)]
    assert fit_widths(cols, 10) == [4, 0, 0]  # too narrow: what fits whole, nothing after the first cut
    assert fit_widths(cols, 6 + 7 + 4) == [4, 9, 0]  # c (3 + 2 padding) does not fit whole: b takes the spare
    assert fit_widths(cols, 2) == [4, 0, 0]  # the first column always
    assert fit_widths(cols, 6 + 7 + 5 + 4) == [4, 7, 5]
    assert fit_widths(cols, 100) == [4, 9, 20]
    # what a column wants comes first (at 80 columns a destination whole before a longer process name), then the
    # rest is shared
    wants = [Column("a", "A", 4, 4), Column("b", "B", 5, 9), Column("c", "C", 3, 20, want=8)]
    assert fit_widths(wants, 6 + 7 + 5 + 4) == [4, 5, 7]
    assert fit_widths(wants, 6 + 7 + 5 + 9) == [4, 7, 10]


def test_pid_list_shows_as_many_pids_as_fit() -> None:
    pids = list(range(1000, 1012))
    assert _pids_text(pids, 13) == "1000,1001+10"
    assert _pids_text(pids, 60) == ",".join(map(str, pids))
    assert _pids_text([5], 13) == "5"


async def test_at_80x24_ipv4_destinations_show_whole() -> None:
    """A destination whole before a longer process name: the spare width was shared evenly, and at 80 columns
    "10.0.2.15:80…" and "127.0.0.1:44…" lost their ports (an audit's). The connections show the longest IPv4
    destination whole (21 cells); the drops, with their reason beside it, a loopback one."""
    from datetime import UTC, datetime, timedelta

    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.telemetry.memory import MemorySource
    from netspy_tui.tui.app import NetspyApp
    from tests.factories import connection, drop
    from tests.tui.screen_text import screen_text

    when = datetime.now(UTC) - timedelta(seconds=2)
    source = MemorySource([connection(pid=7, command="curl", ip="203.113.255.254", port=65535, time=when),
                           drop(pid=8, command="nginx", destination="127.0.0.1:44321", time=when)])  # fmt: skip
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, source_note="test")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "the connection")
            await pilot.pause()
            assert "203.113.255.254:65535" in screen_text(app)
            await pilot.press("d")
            await wait_for(pilot, lambda: "127.0.0.1:44321" in screen_text(app), "the drop's destination, whole")
