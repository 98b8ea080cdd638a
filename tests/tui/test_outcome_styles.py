"""The connection table's outcome colours follow the theme, for the rows that come after a change."""

from __future__ import annotations

from typing import Any

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for

pytestmark = pytest.mark.quiet


async def test_rows_added_after_a_theme_change_take_its_outcome_colours(clock: Clock) -> None:
    # the connection table remembers each outcome's style (Textual's own cache is emptied by every refresh): a
    # theme change must still reach the rows that come after it
    source = MemorySource(clock=clock)
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock, source_note="test")
        async with app.run_test(size=(160, 45)) as pilot:
            table = app.dashboard.connections
            column = [c.key for c in table.COLUMNS].index("outcome")

            def add(pid: int) -> Any:
                event = connection(pid=pid, command="curl", ip="10.0.0.1", port=443, time=clock.now, outcome="refused")
                source.add_events([event])
                return event

            first = add(1)
            await wait_for(pilot, lambda: first.id in table.events, "the first row")
            before = table.get_row(first.id)[column].style
            app.theme = "dracula" if app.theme != "dracula" else "nord"
            await pilot.pause()
            second = add(2)
            await wait_for(pilot, lambda: second.id in table.events, "the second row")
            after = table.get_row(second.id)[column].style
            assert after != before
            assert after == table.get_component_rich_style("outcome--refused", partial=True)


async def test_the_focused_process_row_takes_the_new_theme_after_a_theme_change(clock: Clock) -> None:
    # the process table remembers its row styles (focused, failing) as the connection table its outcome styles:
    # a theme change must still reach the rows drawn after it
    source = MemorySource(clock=clock)
    source.add_events([connection(pid=7, command="curl", ip="10.0.0.1", port=443, time=clock.now, outcome="refused")])
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock, source_note="test")
        async with app.run_test(size=(160, 45)) as pilot:
            screen, table = app.dashboard, app.dashboard.processes
            await wait_for(pilot, lambda: table.row_count == 1, "the process row")
            table.focus()
            await pilot.press("enter")  # focus the process under the cursor
            await wait_for(pilot, lambda: str(table.get_row_at(0)[0]).startswith("▶ "), "the focused row")

            def shown() -> Any:
                return table.get_row_at(0)[0].style

            before = shown()
            assert before == table.get_component_rich_style("processes--focused", partial=True)
            app.theme = "dracula" if app.theme != "dracula" else "nord"
            await pilot.pause()
            after = table.get_component_rich_style("processes--focused", partial=True)
            assert after != before
            source.add_events(
                [connection(pid=7, command="curl", ip="10.0.0.2", port=443, time=clock.now, outcome="ok")]
            )
            await wait_for(pilot, lambda: shown() == after, "the focused row in the new theme's colours")
            assert screen.focus_subject is not None
