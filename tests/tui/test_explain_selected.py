"""`a` explains the process the user highlighted, in whichever table had the focus, while new rows arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from netspy_tui.mcp_tools.ai_bridge import AIHooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import Scope
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.poller import event_key
from tests.factories import connection
from tests.tui.conftest import Clock, demo_source, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Polled

pytestmark = pytest.mark.quiet

SIZE = (160, 45)


class Explainer:
    """An explain hook that records its scope and holds its answer until ``gate`` is set."""

    def __init__(self) -> None:
        self.seen: list[Scope] = []
        self.gate = asyncio.Event()

    async def __call__(self, gateway: Any, scope: Scope) -> AsyncIterator[str]:
        self.seen.append(scope)
        await self.gate.wait()
        yield "done"


def burst(source: MemorySource, n: int, start: int = 0) -> None:
    """``n`` newer rows from another process (as netspy-tui's own AI request would add)."""
    source.add_events(
        [
            connection(
                pid=77, command="netspy-ai", port=8000 + start + i, time=DEMO_NOW - timedelta(milliseconds=10 - i)
            )
            for i in range(n)
        ]
    )


async def test_a_explains_the_process_highlighted_in_the_process_table_and_names_it_first() -> None:
    clock = Clock()
    source = demo_source(clock)
    explain = Explainer()
    async with open_gateway(Polled(source)) as gateway:  # polls on the timer: refreshes with nothing new too
        app = NetspyApp(gateway, interval=0.2, clock=clock, ai=AIHooks(explain=explain, label="test"))
        async with app.run_test(size=SIZE) as pilot:
            d = app.dashboard
            await wait_for(pilot, lambda: d.processes.row_count == 6, "processes")
            d.processes.focus()
            d.processes.move_cursor(row=d.processes.get_row_index("curl"))
            burst(source, 5)
            polls = app.polls
            await wait_for(pilot, lambda: app.polls >= polls + 2 and "netspy-ai" in d.processes.stats, "new rows")
            assert d.processes.selected_process() == "curl"
            await pilot.press("a")
            # the pane names the process before the request goes out (the hook has not answered yet)
            await wait_for(pilot, lambda: "process 'curl'" in d.ai_pane.state_text, "title names curl")
            await wait_for(pilot, lambda: bool(explain.seen), "request")
            assert explain.seen[0].command == "curl"
            explain.gate.set()
            await wait_for(pilot, lambda: d.ai_pane.state == "finished", "finished")


async def test_a_explains_the_highlighted_connection_row_which_stays_put_while_rows_arrive() -> None:
    clock = Clock()
    source = demo_source(clock)
    explain = Explainer()
    explain.gate.set()
    async with open_gateway(Polled(source)) as gateway:  # polls on the timer: refreshes with nothing new too
        app = NetspyApp(gateway, interval=0.2, clock=clock, ai=AIHooks(explain=explain, label="test"))
        async with app.run_test(size=SIZE) as pilot:
            d = app.dashboard
            table = d.connections
            await wait_for(pilot, lambda: table.row_count > 20, "rows")
            table.focus()
            row = next(i for i, e in reversed(list(enumerate(table.events.values()))) if e.command == "nginx")
            table.move_cursor(row=row)
            chosen = table.selected_event()
            assert chosen is not None and chosen.command == "nginx"
            before = table.row_count
            burst(source, 5)
            await wait_for(pilot, lambda: table.row_count == before + 5, "new rows")
            assert table.selected_event() is chosen, "the cursor moved off the row the user chose"
            polls = app.polls
            await wait_for(pilot, lambda: app.polls >= polls + 3, "more polls")
            assert table.selected_event() is chosen, "the cursor moved off the row the user chose"
            d.set_focus(None)  # nothing has the focus now (as when the AI pane replaced the tables at 80x24):
            await wait_for(pilot, lambda: d.focused is None, "no focus")  # the table focused last still counts
            await pilot.press("a")
            await wait_for(pilot, lambda: bool(explain.seen), "request")
            assert explain.seen[0].command == "nginx"
            # back on the last row, the cursor follows the newest rows again (tail -f)
            table.focus()
            table.move_cursor(row=table.row_count - 1)
            burst(source, 3, start=5)
            await wait_for(pilot, lambda: table.row_count == before + 8, "more rows")
            newest = list(table.events.values())[-1]
            assert table.cursor_row == table.row_count - 1 and event_key(table.selected_event()) == event_key(newest)


async def test_a_under_a_filter_explains_what_the_filter_shows() -> None:
    """A filter that is a pid shows that pid's rows alone: `a` explains that pid (curl 4388, not every curl), and
    with no row to read (the table emptied by a filter on a pid, then a poll) the filter's pid itself. A filter
    that names no process or node cannot narrow the explanation: the pane says so."""
    clock = Clock()
    source = demo_source(clock)
    explain = Explainer()
    explain.gate.set()
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock, ai=AIHooks(explain=explain, label="test"))
        async with app.run_test(size=SIZE) as pilot:
            d = app.dashboard
            await wait_for(pilot, lambda: d.processes.row_count == 6, "processes")
            await pilot.press("slash", *"4388", "enter")
            await wait_for(pilot, lambda: d.filter_subject == Scope(pid=4388), "the pid filter")
            await wait_for(pilot, lambda: d.selected_process() == ("curl", 4388), "curl 4388's row under the cursor")
            await pilot.press("a")
            await wait_for(pilot, lambda: d.ai_pane.state == "finished", "the first explanation")
            assert explain.seen[-1] == Scope(pid=4388, command="curl", window=60)
            assert "explaining process 'curl' (pid 4388) over 1m" in d.ai_pane.state_text, d.ai_pane.state_text

            d.connections.clear()  # no row to read: the filter's pid is what the view shows
            await pilot.pause()
            assert d.selected_process() == (None, None)
            await pilot.press("a")
            await wait_for(pilot, lambda: len(explain.seen) == 2 and d.ai_pane.state == "finished", "the second")
            assert explain.seen[-1] == Scope(pid=4388, window=60)
            assert "explaining pid 4388 over 1m" in d.ai_pane.state_text, d.ai_pane.state_text

            await pilot.press("escape", "slash", *"10.0.0", "enter")  # destinations: names no process or node
            await wait_for(pilot, lambda: d.filter_text == "10.0.0" and d.filter_subject is None, "a text filter")
            d.connections.clear()
            await pilot.pause()
            await pilot.press("a")
            await wait_for(pilot, lambda: len(explain.seen) == 3 and d.ai_pane.state == "finished", "the third")
            assert explain.seen[-1] == Scope(window=60)
            assert "all traffic (not only the rows the filter '10.0.0' shows" in d.ai_pane.state_text
