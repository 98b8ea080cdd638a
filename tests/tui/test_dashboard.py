"""The dashboard driven through a pilot, over the demo recording, asserting what a user sees."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent

from netspy_tui.commands import CommandRunner, parse_command
from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.models import ConnectionEvent, PacketDropEvent, Scope, SourceInfo
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.textsafe import clean
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.poller import Poller
from netspy_tui.tui.screens.help import HelpScreen
from netspy_tui.tui.widgets.ai_pane import AIPane
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from tests.factories import connection, drop
from tests.tui.conftest import Clock, demo_events, wait_for
from tests.tui.demo_data import DEMO_NOW, HOSTILE
from tests.tui.scenes import Polled
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.quiet

SIZE = (160, 45)


def in_window(seconds: int, kind: type = ConnectionEvent) -> list[Any]:
    return [e for e in demo_events() if isinstance(e, kind) and DEMO_NOW - timedelta(seconds=seconds) < e.time]


@asynccontextmanager
async def dashboard(
    source: MemorySource, clock: Clock, *, spy: Callable[[Gateway], None] | None = None, **kw: Any
) -> AsyncIterator[tuple[NetspyApp, Pilot[int]]]:
    """The app over ``source`` (through a real in-process gateway), after its first full render."""
    async with open_gateway(source) as gateway:
        if spy is not None:
            spy(gateway)
        app = NetspyApp(gateway, interval=kw.pop("interval", 0.25), clock=clock, source_note="demo", **kw)
        async with app.run_test(size=SIZE) as pilot:
            await started(app, pilot)
            yield app, pilot


def status_text(app: NetspyApp) -> str:
    return app.dashboard.status.build().plain


def rows(app: NetspyApp) -> list[ConnectionEvent]:
    return list(app.dashboard.connections.events.values())


async def started(app: NetspyApp, pilot: Any, n: int = len(in_window(60))) -> None:
    await wait_for(pilot, lambda: app.dashboard.connections.row_count == n, f"{n} connection rows")


async def test_rows_appear_then_only_new_rows_are_added(source: MemorySource, clock: Clock) -> None:
    returned: list[int] = []

    def spy(gateway: Gateway) -> None:
        original = gateway.snapshot

        async def snapshot(*args: Any, **kwargs: Any) -> Any:
            snap = await original(*args, **kwargs)
            if snap.connections is not None:
                returned.append(snap.connections.returned)
            return snap

        gateway.snapshot = snapshot  # type: ignore[method-assign]

    # polls on the timer (a server without change notifications): idle polls re-read only the overlap
    async with dashboard(Polled(source), clock, spy=spy) as (app, pilot):
        table = app.dashboard.connections
        before = dict(table.rows)
        first_polls = len(returned)
        await wait_for(pilot, lambda: len(returned) >= first_polls + 2, "two more polls")
        # Nothing new: each poll re-reads only the short overlap before the newest event (late arrivals), never
        # the window.
        overlap = set(returned[first_polls:])
        assert len(overlap) == 1 and next(iter(overlap)) < 10
        (overlap_rows,) = overlap

        fresh = [
            connection(
                pid=4211, command="curl", ip="1.1.1.1", port=443, time=DEMO_NOW - timedelta(seconds=s), outcome="ok"
            )
            for s in (0.03, 0.02, 0.01)
        ]
        source.add_events(fresh)
        await wait_for(pilot, lambda: table.row_count == len(before) + 3, "three new rows")
        assert max(returned[first_polls:]) <= overlap_rows + 3  # the poll asked only for what was new (+ overlap)
        for key, row in before.items():
            assert table.rows[key] is row  # old rows untouched: a diff, not a rebuild
        assert [e.id for e in rows(app)[-3:]] == [e.id for e in fresh]
        assert table.cursor_row == table.row_count - 1  # follows the newest
        assert str(table.get_cell_at((table.row_count - 1, table.get_column_index("destination")))) == "1.1.1.1:443"
        assert "Connections (153)" in str(app.dashboard.query_one("#views").get_tab("connections-tab").label)


async def test_filter_narrows_as_you_type_and_esc_clears(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        await pilot.press("slash")
        assert app.dashboard.query_one("#filter-bar", Input).has_focus
        await pilot.press("c", "u")
        assert {e.command for e in rows(app)} == {"curl"}
        assert "filter “cu”" in status_text(app)
        await pilot.press("r", "l")  # exactly a process: the tools are asked about it too
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="curl"), "subject curl")
        await wait_for(
            pilot,
            lambda: "process 'curl'" in str(app.dashboard.query_one("#patterns").border_title),
            "patterns for curl",
        )
        curl = [e for e in in_window(60) if e.command == "curl"]
        assert len(rows(app)) == len(curl)
        assert {r.command for r in app.dashboard.processes.stats.values()} == {"curl"}
        await pilot.press("escape")
        await started(app, pilot)
        assert app.poller.config.subject == Scope()
        assert "filter" not in status_text(app)
        assert not app.dashboard.query_one("#filter-bar", Input).display

        # by destination port, and by pid prefix
        await pilot.press("slash", *"5432", "enter")
        assert rows(app) and all("5432" in e.destination for e in rows(app))
        assert app.dashboard.connections.has_focus
        await pilot.press("escape", "slash", *"4211")
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(pid=4211), "subject pid 4211")
        await wait_for(pilot, lambda: bool(rows(app)) and {e.pid for e in rows(app)} == {4211}, "pid 4211 rows")


async def test_a_filter_typed_before_its_process_appears_shows_it_when_others_fill_the_rows(
    source: MemorySource, clock: Clock
) -> None:
    """``/zzprobe``, then zzprobe runs while other processes make more events than the table keeps: its rows
    show (the filter names a process now, so the tools are asked about it), not "Connections (0)" for good."""
    async with dashboard(source, clock, max_rows=200) as (app, pilot):
        await pilot.press("slash", *"zzprobe", "enter")
        assert not rows(app)
        probe = [
            connection(
                pid=777, command="zzprobe", ip="10.9.8.7", port=80, time=DEMO_NOW - timedelta(seconds=0.5), outcome="ok"
            )  # fmt: skip
            for _ in range(4)
        ]
        storm = [
            connection(
                pid=900,
                command="storm",
                ip="127.0.0.1",
                port=9,
                time=DEMO_NOW - timedelta(seconds=0.4),
                outcome="refused",
            )  # fmt: skip
            for _ in range(300)
        ]
        source.add_events(probe + storm)
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="zzprobe"), "subject zzprobe")
        await wait_for(pilot, lambda: [e.id for e in rows(app)] == [e.id for e in probe], "the four zzprobe rows")
        tab = app.dashboard.query_one("#views").get_tab("connections-tab")
        assert "Connections (4)" in str(tab.label)
        # a part of a name narrows only the rows kept, the latest 200 (all storm): the label says what it searched
        await pilot.press("escape", "slash", *"zzpr")
        await wait_for(pilot, lambda: "Connections (0 in the latest 200)" in str(tab.label), "the searched label")


async def test_enter_focuses_every_panel_on_a_process_and_backspace_returns(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        procs = app.dashboard.processes
        procs.focus()
        procs.move_cursor(row=procs.get_row_index("nginx"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="nginx"), "focus nginx")
        nginx = [e for e in in_window(60) if e.command == "nginx"]
        await wait_for(pilot, lambda: len(rows(app)) == len(nginx), "nginx rows")
        assert {e.command for e in rows(app)} == {"nginx"}
        assert "focus process 'nginx'" in status_text(app)
        patterns = app.dashboard.query_one("#patterns")
        await wait_for(
            pilot,
            lambda: f"{len(nginx)} attempts" in str(patterns.query_one("#patterns-body").content),
            "nginx patterns",
        )
        assert "process 'nginx'" in str(patterns.border_title)
        assert str(procs.get_cell("nginx", "process")).startswith("▶ nginx")
        nginx_drops = [e for e in in_window(60, PacketDropEvent) if e.command == "nginx"]
        await wait_for(pilot, lambda: app.dashboard.drops.row_count == len(nginx_drops), "nginx drops")

        await pilot.press("backspace")
        await started(app, pilot)
        assert app.poller.config.subject == Scope()
        assert "focus" not in status_text(app)

        # enter on a connection row focuses that row's process
        table = app.dashboard.connections
        table.focus()
        hostile_row = next(i for i, e in enumerate(rows(app)) if e.command == HOSTILE)
        table.move_cursor(row=hostile_row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command=HOSTILE), "focus hostile")
        await wait_for(pilot, lambda: bool(rows(app)) and {e.command for e in rows(app)} == {HOSTILE}, "hostile rows")


async def test_a_click_on_a_process_row_focuses_it_as_enter_does(source: MemorySource, clock: Clock) -> None:
    """enter calls the screen at once (no RowSelected walk up the containers); a click still selects with the message,
    and the screen answers it the same way."""
    async with dashboard(source, clock) as (app, pilot):
        procs = app.dashboard.processes
        before = app.poller.config.subject
        row = procs.get_row_index("nginx")
        procs.move_cursor(row=row + 1 if row == 0 else 0)  # (the cursor elsewhere)
        await pilot.pause()
        top = procs.content_region.y - procs.region.y + 1  # (inside the border, below the header line)
        at = (4, top + row - round(procs.scroll_y))
        await pilot.click(procs, offset=at)  # (the cursor moves there)
        assert procs.cursor_row == row and app.poller.config.subject == before != Scope(command="nginx")
        await pilot.click(procs, offset=at)  # (a click on the cursor's cell selects it)
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="nginx"), "focus nginx by click")
        assert "focus process 'nginx'" in status_text(app)


async def test_pause_freezes_the_tables_and_resume_catches_up(source: MemorySource, clock: Clock) -> None:
    async with dashboard(Polled(source), clock) as (app, pilot):  # polls on the timer while paused
        await pilot.press("space")
        assert "PAUSED  since 12:00:00" in status_text(app)  # when it was paused, not a freshness age
        assert "updated" not in status_text(app)
        source.add_events([connection(pid=99, command="wget", time=DEMO_NOW - timedelta(seconds=0.01), outcome="ok")])
        polls = app.polls
        await wait_for(pilot, lambda: app.polls >= polls + 3, "three polls while paused")
        assert app.dashboard.latest is not None and app.dashboard.latest.connections[-1].command == "wget"
        assert app.dashboard.connections.row_count == len(in_window(60))  # nothing drawn
        await pilot.press("space")
        assert "LIVE" in status_text(app) and "since" not in status_text(app)
        assert rows(app)[-1].command == "wget"


class LossySource(MemorySource):
    """Reports raw events shed in the last minute while ``lossy`` is set."""

    lossy = True
    shed = 9300

    async def info(self) -> SourceInfo:
        base = await super().info()
        shed = {"shed": self.shed}
        since_start = base.model_copy(update={"losses": shed, "events_lost": self.shed})
        if not self.lossy:  # (what was shed since start stays counted)
            return since_start
        return since_start.model_copy(update={"recent_losses": shed, "degraded": True})


async def test_header_health_is_degraded_with_the_figure_while_events_are_lost(clock: Clock) -> None:
    source = LossySource(demo_events(), label="replay of demo.jsonl", clock=clock)
    async with dashboard(Polled(source), clock) as (app, pilot):  # health read on the timer: no event comes
        await wait_for(pilot, lambda: "degraded" in status_text(app), "degraded health")
        first = app.dashboard.status.build().split("\n")[0]
        assert "● degraded · 9,300 not kept, counts exact" in first.plain  # shed, not lost: the counts are whole
        warn = app.dashboard.status._style("warn")
        start = first.plain.index("degraded")
        assert any(span.style == warn and span.start <= start < span.end for span in first.spans)
        source.lossy = False
        await wait_for(pilot, lambda: "● healthy" in status_text(app), "healthy again", limit=30)
        assert "not kept" not in status_text(app).split("\n")[0]
        assert "since start: 9,300 raw events shed under load; counts are exact" in status_text(app).split("\n")[1]


async def test_at_80_columns_a_degraded_header_still_says_paused(clock: Clock) -> None:
    """The loss figure gives way before PAUSED / LIVE does (the second line still says what was not kept)."""
    source = LossySource(demo_events(), label="replay of demo.jsonl", clock=clock)
    source.shed = 2_330_981
    async with open_gateway(Polled(source)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "degraded" in status_text(app), "degraded health")
            assert "LIVE" in status_text(app).split("\n")[0]
            await pilot.press("space")
            await wait_for(pilot, lambda: "PAUSED" in status_text(app).split("\n")[0], "PAUSED in the header")
            assert "degraded" in status_text(app).split("\n")[0]


async def test_tab_title_says_latest_n_of_the_window_total(source: MemorySource, clock: Clock) -> None:
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, max_rows=50)
        async with app.run_test(size=SIZE) as pilot:

            def label() -> str:
                return str(app.dashboard.query_one("#views").get_tab("connections-tab").label)

            await wait_for(pilot, lambda: " of " in label(), "a count with its total")
            assert label() == f"Connections (latest 50 of {len(in_window(60))})"
            await pilot.press("slash", *"curl")  # a text filter: only what is shown is counted
            await wait_for(pilot, lambda: " of " not in label(), "count of the filtered rows")


async def test_tab_title_says_no_total_while_the_table_holds_the_whole_window(
    source: MemorySource, clock: Clock
) -> None:
    """The summaries are read apart from the rows (and not at every poll): while the table holds every event of the
    window, a total counted a moment later is no "latest N of M" (it came into the title for a poll and went, as
    the window filled)."""
    async with dashboard(source, clock, interval=3600) as (app, pilot):
        screen = app.dashboard
        snap = screen.latest
        assert snap is not None and snap.patterns is not None and snap.patterns.stats.total == len(snap.connections)
        assert snap.connections_whole and snap.drops_whole
        stats = snap.patterns.stats.model_copy(update={"total": snap.patterns.stats.total + 5})
        screen.apply_snapshot(replace(snap, patterns=snap.patterns.model_copy(update={"stats": stats})))
        await pilot.pause()
        assert f"Connections ({len(snap.connections)})" in screen_text(app)
        assert " of " not in str(screen.query_one("#views", TabbedContent).get_tab("connections-tab").label)


async def test_tab_title_says_latest_n_of_m_while_the_first_page_left_older_events_unfetched(
    source: MemorySource, clock: Clock
) -> None:
    """The first poll fetches one page of the newest events; the older ones of the window are not fetched later.
    That table holds fewer than its row cap without holding the window: "latest 20 of 150" until the events it
    did not fetch have left the window."""
    n = len(in_window(60))
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=3600, clock=clock)
        app.poller = app.dashboard.poller = Poller(gateway, clock=clock, window=60, interval=3600, max_events=20)
        async with app.run_test(size=SIZE) as pilot:
            tab = app.dashboard.query_one("#views", TabbedContent).get_tab("connections-tab")
            await wait_for(pilot, lambda: app.dashboard.renders >= 1, "the first render")
            assert str(tab.label) == f"Connections (latest 20 of {n})"
            assert app.dashboard.latest is not None and not app.dashboard.latest.connections_whole
            clock.now += timedelta(seconds=61)  # the window moves past every event held or not
            source.add_events([connection(command="wget", time=clock.now - timedelta(seconds=1))])
            app.poller.wake.set()
            await wait_for(
                pilot,
                lambda: app.dashboard.latest is not None and app.dashboard.latest.connections_whole,
                "the window held whole",
            )
            await pilot.pause()
            assert str(tab.label) == "Connections (1)"


async def test_w_cycles_the_window(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        assert "window 1m" in status_text(app)
        await pilot.press("w")
        assert "window 5m" in status_text(app)
        await started(app, pilot, len(in_window(300)))
        assert app.dashboard.processes.border_title == "Processes · 5m"
        await pilot.press("w")
        await started(app, pilot, len(in_window(900)))
        await pilot.press("w")
        assert "window 1h" in status_text(app)
        await pilot.press("w")
        await started(app, pilot, len(in_window(60)))
        assert "window 1m" in status_text(app)


class YoungSource(MemorySource):
    """A source that started 4 minutes ago (its uptime, as the embedded collector reports it)."""

    async def info(self) -> SourceInfo:
        return (await super().info()).model_copy(update={"uptime_seconds": 240.0})


async def test_events_per_second_is_averaged_over_the_time_observed_not_the_whole_window(clock: Clock) -> None:
    events = [
        connection(pid=4000 + i % 7, command="curl", time=DEMO_NOW - timedelta(seconds=i * 0.5)) for i in range(480)
    ]  # 480 events in the 4 minutes the source has run
    async with open_gateway(YoungSource(events, clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, window=3600)
        async with app.run_test(size=SIZE) as pilot:
            await started(app, pilot, 480)
            await wait_for(pilot, lambda: "ev/s" in status_text(app), "the rate")
            assert "window 1h" in status_text(app)
            assert "2.0 ev/s" in status_text(app), status_text(app)  # 480 / 240 s, not 480 / 3600 s (0.1)


def process_order(app: NetspyApp) -> list[str]:
    table = app.dashboard.processes
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def test_process_table_sorts_by_any_column_from_the_keyboard(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        await wait_for(pilot, lambda: app.dashboard.processes.row_count == 6, "six processes")
        stats = app.dashboard.processes.stats
        by_attempts = sorted(stats, key=lambda k: stats[k].attempts, reverse=True)
        assert [stats[k].attempts for k in process_order(app)] == [stats[k].attempts for k in by_attempts]
        await pilot.press("s")  # -> Dests, largest first
        assert "sort Dests ▼" in str(app.dashboard.processes.border_subtitle)
        dests = [stats[k].distinct_destinations for k in process_order(app)]
        assert dests == sorted(dests, reverse=True)
        await pilot.press("s", "s", "s")  # Failed, Last seen, then Rx/s (largest first; no Workload column here)
        assert "sort Rx/s avg ▼" in str(app.dashboard.processes.border_subtitle)
        await pilot.press("s", "s")  # Tx/s, then Process (A-Z)
        assert "sort Process ▲" in str(app.dashboard.processes.border_subtitle)
        assert process_order(app) == sorted(process_order(app), key=str.casefold)
        await pilot.press("S")
        assert process_order(app) == sorted(process_order(app), key=str.casefold, reverse=True)
        assert "sort Process ▼" in str(app.dashboard.processes.border_subtitle)


async def test_command_bar_runs_tools_and_reports_bad_input_in_one_line(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        await pilot.press("colon")
        bar = app.dashboard.query_one("#command-bar", CommandInput)
        assert bar.has_focus
        result = app.dashboard.query_one("#result", ResultPanel)

        def shown() -> str:
            return str(result.query_one("#result-text").content)

        await pilot.press(*"summary --process curl --duration 120", "enter")
        curl = len([e for e in in_window(120) if e.command == "curl"])
        await wait_for(pilot, lambda: "outbound" in shown(), "summary result")
        assert shown() == f"Process 'curl' made {curl} outbound connection attempts over the last 120 seconds"
        assert not result.has_class("-error")

        async def run(line: str) -> None:
            bar.value = line
            await pilot.press("enter")

        await pilot.press(*"frobnicate", "enter")
        await wait_for(pilot, lambda: result.has_class("-error"), "usage error")
        assert shown().startswith("Unknown command 'frobnicate'") and "\n" not in shown()

        await run("list --pid abc")
        await wait_for(pilot, lambda: "whole number" in shown(), "bad pid")
        assert "\n" not in shown() and result.has_class("-error")

        await run("list --pid 4000000000")  # the tool's own range check: is_error result
        await wait_for(pilot, lambda: "pid must be <=" in shown(), "tool validation error")
        assert result.has_class("-error")

        await run("list --process nginx --max-events 2")
        await wait_for(pilot, lambda: "2 of" in shown(), "list result")
        assert not result.has_class("-error") and shown().count("nginx") >= 3

        await run("tools")
        await wait_for(pilot, lambda: "list_connections" in shown(), "tools list")
        await run("help")
        await wait_for(pilot, lambda: shown().startswith("Commands:"), "help")

        # history and completion
        await pilot.press("up")
        assert bar.value == "help"
        await pilot.press("up")
        assert bar.value == "tools"
        await pilot.press("down", "down")
        assert bar.value == ""
        await pilot.press(*"ana", "tab")
        assert bar.value == "analyze"
        await pilot.press(*" --pro", "tab")
        assert bar.value == "analyze --process "
        await pilot.press("escape")
        assert not bar.display
        assert app.is_running


async def test_command_bar_commands_cover_the_window_on_screen(source: MemorySource, clock: Clock) -> None:
    """``:summary`` with the window at 15m counted the last 60 seconds (the tools' default): "0 outbound
    connection attempts" under a screen full of them. A command without --duration covers the window shown."""
    async with dashboard(source, clock) as (app, pilot):
        await pilot.press("w", "w")
        assert "window 15m" in status_text(app)
        result = app.dashboard.query_one("#result", ResultPanel)

        def shown() -> str:
            return str(result.query_one("#result-text").content)

        await pilot.press("colon", *"summary", "enter")
        await wait_for(pilot, lambda: "outbound" in shown(), "summary result")
        assert shown() == (
            f"All processes made {len(in_window(900))} outbound connection attempts over the last 900 seconds"
        )
        bar = app.dashboard.query_one("#command-bar", CommandInput)
        bar.value = "summary --duration 120"  # typed, it wins
        await pilot.press("enter")
        await wait_for(pilot, lambda: "120 seconds" in shown(), "summary over 120 s")
        assert shown() == (
            f"All processes made {len(in_window(120))} outbound connection attempts over the last 120 seconds"
        )
        bar.value = "dropsummary"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "drop" in shown() and "120 seconds" not in shown(), "drop summary")
        assert "900 seconds" in shown() and str(len(in_window(900, PacketDropEvent))) in shown()
    # the REPL has no window: its commands keep the tools' default (60 s)
    assert CommandRunner(lambda: app.dashboard.gateway).arguments(parse_command("summary")) == {}


async def test_question_mark_shows_every_binding(source: MemorySource, clock: Clock) -> None:
    from netspy_tui.tui import keys

    async with dashboard(source, clock) as (app, pilot):
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help screen")
        box = app.screen.query_one("#help-text")
        console = Console(width=box.content_region.width, record=True, file=io.StringIO())
        console.print(box.content)  # exactly what the modal renders, at its width
        text = " ".join(console.export_text().split())
        for action in keys.ACTIONS:
            assert f"{action.display_keys} {action.help}" in text
        assert "summary [--pid N]" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_action_is_in_the_palette_and_runs_from_it(source: MemorySource, clock: Clock) -> None:
    from netspy_tui.tui import keys

    async with dashboard(source, clock) as (app, pilot):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for action in keys.ACTIONS:
            if action.id != "netspy.quit":
                assert action.palette_title in titles
        assert "focus: nginx" in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"pause")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.dashboard.paused, "paused from the palette")


async def test_export_writes_the_current_view(source: MemorySource, clock: Clock, tmp_path: Path) -> None:
    async with dashboard(source, clock, export_dir=tmp_path) as (app, pilot):
        await pilot.press("slash", *"python3", "enter")
        await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="python3"), "python3")
        await wait_for(
            pilot,
            lambda: (
                app.dashboard.rendered is not None and app.dashboard.rendered.config.subject == Scope(command="python3")
            ),
            "python3 drawn",
        )
        await pilot.press("e")
        path = tmp_path / "netspy-connections-20261124T120000Z.json"
        await wait_for(pilot, path.exists, "json export")
        data = json.loads(path.read_text())
        python3 = [e for e in in_window(60) if e.command == "python3"]
        assert [c["id"] for c in data["connections"]] == [e.id for e in python3]
        assert data["filter"] == "python3" and data["window_seconds"] == 60
        assert data["patterns"]["stats"]["total"] == len(python3)
        assert any(str(path) in str(n.message) for n in app._notifications)

        await pilot.press("escape", "E")
        csv_path = tmp_path / "netspy-connections-20261124T120000Z.csv"
        await wait_for(pilot, csv_path.exists, "csv export")
        table = list(csv.reader(csv_path.open()))
        assert table[0][:4] == ["time", "pid", "process", "destination"]
        assert len(table) == 1 + len(in_window(60))
        hostile = [r for r in table if r[1] == "6666"]
        assert hostile and all(r[2] == "[bold red]x\\x1b[2J" for r in hostile)  # control chars escaped

        await pilot.press("d", "E")  # the drops view exports drops
        drops_path = tmp_path / "netspy-drops-20261124T120000Z.csv"
        await wait_for(pilot, drops_path.exists, "drops export")
        drop_rows = list(csv.reader(drops_path.open()))
        assert len(drop_rows) == 1 + len(in_window(60, PacketDropEvent))
        assert {r[3] for r in drop_rows[1:]} >= {"NO_SOCKET", "TCP_INVALID_SEQUENCE", "NETFILTER_DROP"}


async def test_csv_export_from_the_process_table_writes_the_process_table(
    source: MemorySource, clock: Clock, tmp_path: Path
) -> None:
    """E ("Export the visible table as CSV") wrote the connections table while the process table had the focus."""
    async with dashboard(source, clock, export_dir=tmp_path) as (app, pilot):
        procs = app.dashboard.processes
        await pilot.press("tab")
        assert procs.has_focus
        await pilot.press("s")  # by destinations: the file follows the table's order
        await pilot.press("E")
        path = tmp_path / "netspy-processes-20261124T120000Z.csv"
        await wait_for(pilot, path.exists, "process csv export")
        table = list(csv.reader(path.open()))
        assert table[0][:5] == ["process", "pids", "attempts", "destinations", "failures"]
        assert [r[0] for r in table[1:]] == [clean(name, None) for name in process_order(app)]
        by_name = {r[0]: r for r in table[1:]}
        nginx = procs.stats["nginx"]
        assert by_name["nginx"][2:5] == [str(nginx.attempts), str(nginx.distinct_destinations), str(nginx.failures)]
        assert by_name["[bold red]x\\x1b[2J"]  # a hostile name, escaped
        assert any(f"Exported {procs.row_count} processes rows to {path}" == str(n.message) for n in app._notifications)
        assert not (tmp_path / "netspy-connections-20261124T120000Z.csv").exists()

        await pilot.press("g", "E")  # grouped by workload: the processes under their headings, headings left out
        grouped = tmp_path / "netspy-processes-20261124T120000Z-1.csv"
        await wait_for(pilot, grouped.exists, "grouped process csv export")
        rows_written = [r[0] for r in list(csv.reader(grouped.open()))[1:]]
        assert rows_written == [clean(name, None) for name in process_order(app) if not name.startswith("\0")]
        assert sorted(rows_written) == sorted(by_name)


async def screenshot_from_the_palette(pilot: Pilot[int]) -> None:
    await pilot.press("ctrl+p")
    await pilot.press(*"screenshot")
    await pilot.pause(0.2)
    await pilot.press("enter")


async def test_palette_screenshot_goes_to_the_export_directory_and_says_where_or_why_not(
    source: MemorySource, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"  # no ~/Downloads, as on a server
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    exports = tmp_path / "exports"
    async with dashboard(source, clock, export_dir=exports) as (app, pilot):
        await screenshot_from_the_palette(pilot)
        path = exports / "netspy-screenshot-20261124T120000Z.svg"
        await wait_for(pilot, lambda: any(str(path) in str(n.message) for n in app._notifications), "where it went")
        assert path.read_text().startswith("<svg") and (path.stat().st_mode & 0o777) == 0o600
        assert list(home.iterdir()) == []
    (tmp_path / "file").write_text("")
    async with dashboard(source, clock, export_dir=tmp_path / "file" / "sub") as (app, pilot):
        await screenshot_from_the_palette(pilot)
        await wait_for(
            pilot, lambda: any("Screenshot not saved" in str(n.message) for n in app._notifications), "why not"
        )
        [failed] = [n for n in app._notifications if "Screenshot not saved" in str(n.message)]
        assert "Not a directory" in str(failed.message) and failed.severity == "error"


async def test_hostile_process_names_render_inert(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        table = app.dashboard.connections
        row = next(i for i, e in enumerate(rows(app)) if e.command == HOSTILE)
        value = table.get_cell_at((row, table.get_column_index("process")))
        assert isinstance(value, Text)
        # no markup applied, the escape visible
        assert value.plain == "[bold red]x\\x1b[2J" and not value.spans
        screen = html.unescape(app.export_screenshot()).replace("\u00a0", " ")
        assert "[bold red]x\\x1b[2J" in screen
        assert "\x1b" not in screen
        procs = app.dashboard.processes
        assert procs.get_cell(HOSTILE, "process").plain == "[bold red]x\\x1b[2J"
        # the full name is readable (escaped) where there is room: the command bar's result
        await pilot.press("colon")
        app.dashboard.query_one("#command-bar", CommandInput).value = "list --pid 6666 --max-events 1"
        await pilot.press("enter")
        result = app.dashboard.query_one("#result", ResultPanel)
        await wait_for(pilot, lambda: "6666" in str(result.query_one("#result-text").content), "list result")
        shown = result.query_one("#result-text").content
        assert isinstance(shown, Text) and not shown.spans
        assert "[bold red]x\\x1b[2J" in shown.plain


async def test_without_ai_settings_a_explains_with_the_local_rules(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):  # no hooks given: no model, the local rules
        pane = app.dashboard.query_one("#ai-pane", AIPane)
        await pilot.press("i")
        assert not pane.display
        await pilot.press("a")
        assert pane.display
        await wait_for(pilot, lambda: pane.state == "finished", "rule-based explanation")
        assert pane.answer.startswith("### Local rule-based explanation — no AI model configured")
        assert "rules (no AI configured)" in str(pane.border_title)


async def test_q_quits_with_exit_code_zero(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")
    assert app.return_code == 0


def test_key_registry_is_consistent() -> None:
    from netspy_tui.tui import keys
    from netspy_tui.tui.screens.dashboard import DashboardScreen

    ids = [a.id for a in keys.ACTIONS]
    assert len(ids) == len(set(ids))
    bound = [k for a in keys.ACTIONS for k in a.keys.split(",")]
    assert len(bound) == len(set(bound))
    for a in keys.ACTIONS:
        assert callable(getattr(DashboardScreen, "action_" + a.action.split("(")[0]))
    assert [b.id for b in DashboardScreen.BINDINGS] == ids  # type: ignore[union-attr]
    assert keys.markdown_table().count("\n") == len(keys.ACTIONS) + 1


async def keys_in_one_go(pilot: Pilot[int], keys: str) -> None:
    """Queue every key before the app handles the first (as a paste or a fast typist does)."""
    names = {"/": "slash", ":": "colon"}
    for ch in keys:
        pilot.app.post_message(events.Key(names.get(ch, ch), ch))
    await pilot.pause()


@pytest.mark.parametrize(("opener", "bar_id"), [("/", "filter-bar"), (":", "command-bar"), ("A", "question-bar")])
async def test_keys_typed_right_after_an_opening_key_go_into_the_input(
    opener: str, bar_id: str, source: MemorySource, clock: Clock, tmp_path: Path
) -> None:
    async with dashboard(source, clock, export_dir=tmp_path) as (app, pilot):
        await keys_in_one_go(pilot, opener + "uxgen")
        bar = app.dashboard.query_one(f"#{bar_id}", Input)
        await wait_for(pilot, lambda: bar.value == "uxgen", "the letters in the input")
        assert app.dashboard.focused is bar
        assert not any(tmp_path.iterdir())  # e did not export  # noqa: ASYNC240
        assert not app.dashboard.paused and app.dashboard.view == "connections"


@pytest.mark.parametrize(("opener", "bar_id"), [("/", "filter-bar"), (":", "command-bar"), ("A", "question-bar")])
async def test_letters_typed_in_two_bursts_after_an_opening_key_all_go_into_the_input_in_order(
    opener: str, bar_id: str, source: MemorySource, clock: Clock
) -> None:
    """The first letter reaches the input before it has the focus; the rest come after it has it. Focusing must
    not select what is already there (the next letter would replace it)."""
    async with dashboard(source, clock) as (app, pilot):
        await keys_in_one_go(pilot, opener + "u")
        await pilot.pause(0.05)
        await keys_in_one_go(pilot, "xgen")
        bar = app.dashboard.query_one(f"#{bar_id}", Input)
        await wait_for(pilot, lambda: len(bar.value) >= 5, "five letters in the input")
        assert bar.value == "uxgen" and app.dashboard.focused is bar


async def test_the_input_has_the_focus_as_soon_as_its_opening_key_is_handled_even_while_the_app_is_busy(
    source: MemorySource, clock: Clock, tmp_path: Path
) -> None:
    """The app hands ``/uxgen`` to the table before the table handles ``/`` (its queue is behind); the app's
    own queue is busy meanwhile (here: held until the test lets it go). The input is opened and focused as
    the key reaches the screen, not once the app gets round to the key's binding."""
    async with dashboard(source, clock, export_dir=tmp_path) as (app, pilot):
        table, bar = app.dashboard.connections, app.dashboard.query_one("#filter-bar", Input)
        assert app.dashboard.focused is table
        release = asyncio.Event()
        app.call_later(release.wait)  # the app's message loop waits here (so the Pilot cannot be used)
        try:
            for ch in "/uxgen":
                table._forward_event(events.Key("slash" if ch == "/" else ch, ch))  # as the app forwards a key
            for _ in range(500):  # the table and the screen handle the keys meanwhile
                if bar.value == "uxgen":
                    break
                await asyncio.sleep(0.01)
            focused, shown = app.dashboard.focused, bar.display
        finally:
            release.set()
        assert bar.value == "uxgen" and focused is bar and shown
        await pilot.pause(0.1)
        assert app.dashboard.focused is bar and bar.value == "uxgen" and app.dashboard.filter_text == "uxgen"
        assert not any(tmp_path.iterdir())  # e did not export  # noqa: ASYNC240


async def test_help_is_shown_whole_and_ai_commands_clear_an_earlier_error(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        d = app.dashboard
        result = d.query_one("#result", ResultPanel)
        await d.run_command("help")
        await wait_for(pilot, lambda: "quit" in screen_text(app) and "tools  " in screen_text(app), "whole help")
        for name in ("summary", "status", "insights", "tools", "help", "quit"):
            assert any(line.lstrip(" │").startswith(name) for line in screen_text(app).splitlines()), name
        await d.run_command("bogus")
        assert result.display and result.has_class("-error")
        await d.run_command('insights "a summary"')  # no AI configured: the pane says so, the old error goes
        await wait_for(pilot, lambda: not result.display, "result box hidden")
        assert d.ai_pane.state == "notice"


async def test_rows_stay_in_time_order_when_an_event_arrives_late(source: MemorySource, clock: Clock) -> None:
    async with dashboard(source, clock) as (app, pilot):
        newest = rows(app)[-1].time
        late = connection(pid=31, command="late", time=newest - timedelta(seconds=1), outcome="ok")
        source.add_events([connection(pid=30, command="fresh", time=newest + timedelta(milliseconds=5), outcome="ok")])
        await wait_for(pilot, lambda: rows(app)[-1].command == "fresh", "fresh row")
        source.add_events([late])  # recorded after newer events (an outcome, an older page of a burst)
        await wait_for(pilot, lambda: any(e.command == "late" for e in rows(app)), "late row")
        times = [e.time for e in rows(app)]
        assert times == sorted(times)
        table = app.dashboard.connections
        shown = [str(table.get_cell_at((i, 0))) for i in range(table.row_count)]
        assert shown == sorted(shown)


async def test_the_drops_line_shows_the_drops_that_came_while_its_tab_was_hidden(
    source: MemorySource, clock: Clock
) -> None:
    """The line above the drops table is drawn only while its tab is shown: it must still show every drop of the
    window when the tab comes back, and follow new drops while shown."""
    async with dashboard(source, clock) as (app, pilot):
        line = app.dashboard.query_one("#drop-mix")

        def shown() -> str:
            return str(line.render())

        before = len(in_window(60, PacketDropEvent))
        source.add_events([drop(reason="PKT_TOO_SMALL", time=DEMO_NOW - timedelta(seconds=0.01))])
        # the rows and the summaries the line is drawn from (read apart from the rows, a poll later at times)
        await wait_for(
            pilot,
            lambda: (
                (snap := app.dashboard.rendered) is not None
                and len(snap.drops) > before
                and snap.drop_patterns is not None
                and snap.drop_patterns.stats.total > before
            ),
        )
        await pilot.press("space", "d")  # paused: no snapshot is drawn, the line is drawn as the tab is shown
        assert f"{before + 1} packet drops in 1m" in shown() and "PKT_TOO_SMALL 1" in shown()
        await pilot.press("space")
        source.add_events([drop(reason="PKT_TOO_SMALL", time=DEMO_NOW - timedelta(seconds=0.005))])
        await wait_for(pilot, lambda: f"{before + 2} packet drops in 1m" in shown(), "a new drop while shown")
        assert "PKT_TOO_SMALL 2" in shown()
