"""Process names are data, never markup or terminal control: titles, the command bar result, the palette."""

from __future__ import annotations

from datetime import timedelta

import pytest
from textual.content import Content
from textual.fuzzy import Matcher

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.textsafe import clean
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.command import ResultPanel
from netspy_tui.tui.widgets.patterns import PatternsPanel
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.quiet

NAMES = ["we ird[red]", "[bold]x", "esc\x1b[2Jname", "rtl\u202eevil", "csi\x9b31m"]


def plain(title: object) -> str:
    """A border title as drawn: Textual keeps titles as markup strings and renders them through the parser."""
    return Content.from_markup(str(title)).plain


@pytest.mark.parametrize("name", NAMES)
async def test_hostile_name_shows_literally_in_titles_and_palette(name: str, clock: Clock) -> None:
    events = [connection(pid=4242, command=name, time=DEMO_NOW - timedelta(seconds=i + 1), port=4444) for i in range(3)]
    source = MemorySource(events, label="hostile", clock=clock)
    shown = clean(name, 32)
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock)
        async with app.run_test(size=(160, 45)) as pilot:
            d = app.dashboard
            await wait_for(pilot, lambda: d.connections.row_count == 3, "rows")
            # the pattern panel's title while focused on the process
            d.focus_process(name)
            panel = d.query_one(PatternsPanel)
            await wait_for(pilot, lambda: plain(panel.border_title) == f"Patterns · process '{shown}'", "title")
            assert f"Patterns · process '{shown}'" in screen_text(app)
            # the palette's focus entry, through the palette's own highlighter
            titles = [c.title for c in app.get_system_commands(d) if c.title.startswith("focus: ")]
            assert len(titles) == 1
            assert Matcher("focus").highlight(titles[0]).plain == f"focus: {shown}"
            # the command bar result's title
            line = f'list --process "{name}" --max-events 1'
            await d.run_command(line)
            result = d.query_one("#result", ResultPanel)
            await wait_for(
                pilot,
                lambda: result.display and "running" not in str(result.query_one("#result-text").content),
                "result",
            )
            assert plain(result.border_title) == clean(line, 60)
            text = screen_text(app)
            assert clean(line, 60)[:40] in text
            assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text
