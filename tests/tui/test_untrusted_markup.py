"""Names and outcomes a server sends are data in every place the dashboard shows them: the command palette (which
parses its titles as markup), the filter bar a group heading fills (an Input draws its value as it is), and the
local rules' explanation (Markdown). Each found by an audit with a reproduction; each driven here as a user would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.content import Content
from textual.widgets import Input

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.textsafe import clean, markup_literal
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.ai_pane import AIPane
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.quiet

SIZE = (160, 45)


@asynccontextmanager
async def _dashboard(clock: Clock, **fields: Any) -> AsyncIterator[tuple[NetspyApp, Any]]:
    """The dashboard over three connects of ``fields`` (pid 4242 to port 4444), once their rows are shown."""
    events = [connection(pid=4242, time=DEMO_NOW - timedelta(seconds=i + 1), port=4444, **fields) for i in range(3)]
    async with open_gateway(MemorySource(events, label="hostile", clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 3, "rows")
            yield app, pilot


def _frame(app: NetspyApp) -> str:
    return "\n".join("".join(s.text for s in strip) for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize(
    "text", ["[ @click=app.quit]x", "[$accent]evil", "[RED]x", "[ a=:]x", "a\\[b]c", "\\[red]x", "x\\", "[[x]]", "ok"]
)
def test_markup_literal_reads_back_as_the_text_itself(text: str) -> None:
    content = Content.from_markup(markup_literal(text))
    assert content.plain == text and not content.spans


async def test_a_process_name_carrying_a_click_action_is_a_palette_entry_that_focuses_it(clock: Clock) -> None:
    # Textual's escape() left "[ @click=app.quit]" as markup: the palette row quit the app when clicked
    name = "[ @click=app.quit]PWN"
    async with _dashboard(clock, command=name) as (app, pilot):
        d = app.dashboard
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"focus")
        await wait_for(pilot, lambda: f"focus: {name}" in _frame(app), "the entry, as the name reads")
        lines = _frame(app).splitlines()
        y = next(i for i, line in enumerate(lines) if f"focus: {name}" in line)
        x = lines[y].index("PWN")
        assert "@click" not in (app.screen.get_style_at(x, y).meta or {})
        await pilot.click(offset=(x, y))
        await wait_for(pilot, lambda: d.focus_subject is not None, "the process focused")
        assert app.is_running and d.focus_subject.command == name


@pytest.mark.parametrize("name", ["[ a=:]x", "[$accent]evil", "[RED]x"])
async def test_a_name_textual_would_read_as_markup_keeps_its_palette_entry(name: str, clock: Clock) -> None:
    # ("[ a=:]x" raised a MarkupError in the palette's search: the process had no entry)
    events = [connection(pid=4242, command=name, time=DEMO_NOW - timedelta(seconds=1), port=4444)]
    async with open_gateway(MemorySource(events, label="hostile", clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "rows")
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
            await pilot.press(*"focus")
            await wait_for(pilot, lambda: f"focus: {name}" in _frame(app), "the entry, as the name reads")


async def test_a_workload_heading_fills_the_filter_bar_with_its_name_made_inert(clock: Clock) -> None:
    workload = "pod x\x1b]0;PWNED\x1b\\\x1b[2J\u202eevil"
    async with _dashboard(clock, command="curl", workload=workload) as (app, pilot):
        d = app.dashboard
        d.processes.focus()
        await pilot.press("g")  # group by workload
        await wait_for(pilot, lambda: d.processes.grouped and d.processes.row_count >= 2, "grouped")
        d.processes.move_cursor(row=0)
        assert d.processes.selected_group() == workload
        await pilot.press("enter")  # the heading: its rows, through the filter
        bar = d.query_one("#filter-bar", Input)
        await wait_for(pilot, lambda: bar.display and bar.value, "the filter bar filled")
        assert bar.value == clean(workload, None)
        await pilot.pause()
        text = screen_text(app)
        assert "\x1b" not in text and "\u202e" not in text and clean(workload, None)[:20] in text
        out = app.screen._compositor.render_update(full=True).render_segments(app.console)
        assert "\x1b]0;PWNED" not in out and "\x1b[2J" not in out


async def test_an_outcome_in_the_local_rules_explanation_is_text_not_a_link(clock: Clock) -> None:
    outcome = "[CLICK](http://e.v)"
    async with _dashboard(clock, command="curl", outcome=outcome) as (app, pilot):
        d = app.dashboard
        d.connections.focus()
        await pilot.press("a")  # explain (no model configured: the local rules)
        pane = d.query_one(AIPane)
        await wait_for(pilot, lambda: pane.state == "finished", "the explanation", limit=30)
        await pilot.pause()
        area = pane.content_region  # (the patterns panel has an "Outcomes" line too)
        lines = [line[area.x : area.right] for line in _frame(app).splitlines()[area.y : area.bottom]]
        y = next(i for i, line in enumerate(lines) if "Outcomes" in line)
        assert outcome in lines[y]  # shown as written, brackets and address included
        x = area.x + lines[y].index(outcome)
        for dx in range(len(outcome)):
            assert "@click" not in (app.screen.get_style_at(x + dx, area.y + y).meta or {})
