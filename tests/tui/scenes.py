"""Scripted scenes over the demo recording, shared by the snapshot tests and scripts/export_screenshots.py.

Each scene drives a real NetspyApp (through an in-process gateway over a MemorySource with a
fixed clock) to a state worth looking at, waiting on conditions rather than time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, cast

from textual import work
from textual.pilot import Pilot
from textual.widgets import Input

from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.models import ConnectionEvent, PacketDropEvent, Scope, parse_events
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.screens.help import HelpScreen
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from tests.tui.demo_data import DEMO_NOW, DEMO_PATH
from tests.tui.screen_text import screen_text

WAIT_SECONDS = 10.0
SIZE = (160, 45)


def demo_events() -> list[ConnectionEvent | PacketDropEvent]:
    lines = DEMO_PATH.read_text(encoding="utf-8").splitlines()
    events, skipped = parse_events([json.loads(line) for line in lines])
    assert skipped == 0
    return events


class Clock:
    """A clock that stands still unless a test moves it."""

    def __init__(self, now: datetime = DEMO_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


#: Connections the demo host's nginx accepted on 10.0.2.2:443: (seconds before DEMO_NOW, peer, peer port).
DEMO_ACCEPTS = ((1.5, "203.0.113.7", 50412), (4.2, "198.51.100.23", 61877), (12.8, "203.0.113.7", 50398),
                (33.0, "192.0.2.80", 40021))  # fmt: skip


def demo_inbound() -> list[ConnectionEvent]:
    """The demo's inbound connections, as the store lists the kernel's passive-open counts."""
    return [
        ConnectionEvent(id=f"in-demo-{i}", pid=812, command="nginx", time=DEMO_NOW - timedelta(seconds=ago),
                        destination_ip="10.0.2.2", destination_port=443, destination="10.0.2.2:443", address_family=2,
                        protocol="TCP", socket_type="STREAM", outcome="ok", direction="inbound", peer_ip=peer,
                        peer_port=port)
        for i, (ago, peer, port) in enumerate(DEMO_ACCEPTS)
    ]  # fmt: skip


def demo_source(clock: Callable[[], datetime] | None = None, *, inbound: bool = False) -> MemorySource:
    """The demo recording; with ``inbound``, nginx's accepted connections too (the snapshot scenes and
    screenshots show them; the other tests count the recording's connects)."""
    return MemorySource(demo_events(), label="replay of demo.jsonl", clock=clock or Clock(),
                        inbound=demo_inbound() if inbound else None)  # fmt: skip


class Polled:
    """``source`` without change notifications, as a remote eBPF server is: the dashboard polls it on its timer."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def __getattr__(self, name: str) -> Any:
        if name == "on_change":
            raise AttributeError(name)
        return getattr(self._source, name)


class SourceApp(NetspyApp):
    """NetspyApp that opens its in-process gateway inside its own event loop (for snap_compare and scripts).

    The gateway's MCP client lives in one worker for the app's whole life, as its context manager needs.
    """

    def __init__(self, source: Any, **kwargs: Any) -> None:
        self.source = source
        super().__init__(cast(Gateway, None), **kwargs)

    def on_mount(self) -> None:
        self._own_gateway()

    @work(group="gateway", exit_on_error=True)
    async def _own_gateway(self) -> None:
        async with open_gateway(self.source) as gateway:
            self.set_gateway(gateway)
            self.poll_loop()
            await asyncio.Event().wait()


def demo_app(**kwargs: Any) -> SourceApp:
    clock = Clock()
    return SourceApp(
        demo_source(clock, inbound=True),
        clock=clock,
        interval=kwargs.pop("interval", 0.25),
        source_note="recorded demo · clock fixed at 2026-11-24 12:00:00 UTC",
        **kwargs,
    )


async def wait_for(
    pilot: Pilot[Any], condition: Callable[[], bool], what: str = "condition", limit: float = WAIT_SECONDS
) -> None:
    """Let the app run until ``condition()`` holds; fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await pilot.pause(0.02)


def _app(pilot: Pilot[Any]) -> NetspyApp:
    return cast(NetspyApp, pilot.app)


#: seconds a screen must stay the same before a scene is taken (the scenes' poll interval is 0.25 s)
STEADY_SECONDS = 0.35


async def _settle(pilot: Pilot[Any]) -> None:
    """Stop cursor blink, then wait until the screen shows the same text, views and underlines for a while (a
    Markdown answer mounting its blocks, a scroll scheduled after a refresh or the next poll's answer can take a
    few frames)."""
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()

    def state() -> tuple[object, ...]:
        """The text, and where every scrolling view is and how big its content is (a scrollbar's thumb shows
        both: a Markdown answer still laying out a block, or a table widening a column for a row that came
        later, changes it without changing the text in view). Tables are scroll views, not containers."""
        from textual.containers import ScrollableContainer
        from textual.scroll_view import ScrollView

        scrolling = [*pilot.app.screen.query(ScrollableContainer), *pilot.app.screen.query(ScrollView)]
        # (a table sizes its content when idle: one with a size still to work out is not steady yet)
        views = [
            (w.id, w.virtual_size, w.scroll_offset, getattr(w, "_require_update_dimensions", False)) for w in scrolling
        ]
        return screen_text(pilot.app), views

    shown = state()

    def underlined() -> bool:
        """Every tab bar's underline sits under its active tab: a tab whose label changed width ("Connections
        (12)" to "(4)") moves it after the next refresh, animated over 0.3 s; on a loaded machine three
        samples can match before it has moved."""
        from textual.widgets import Tabs
        from textual.widgets._tabs import Underline

        for tabs in pilot.app.screen.query(Tabs):
            active = tabs.query("#tabs-list > Tab.-active")
            if not active:
                continue
            line = tabs.query_one(Underline)
            span = active.first().virtual_region.shrink(active.first().styles.gutter).column_span
            animating = any(pilot.app.animator.is_being_animated(line, a) for a in ("highlight_start", "highlight_end"))
            if animating or (line.highlight_start, line.highlight_end) != span:
                return False
        return True

    loop = asyncio.get_running_loop()
    same_since, samples = loop.time(), 1

    def steady() -> bool:
        """The same screen in three samples in a row, for at least :data:`STEADY_SECONDS` (more than a poll
        interval: a poll that still changes something has come and been drawn; the tab underline's 0.3 s slide
        used to give this wait by chance, before the dashboard's animations were turned off)."""
        nonlocal shown, same_since, samples
        now = state()
        if now != shown:
            shown, same_since, samples = now, loop.time(), 1
            return False
        samples += 1
        return samples >= 3 and loop.time() - same_since >= STEADY_SECONDS and underlined()

    await wait_for(pilot, steady, "a steady screen")


async def main_view(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await wait_for(pilot, lambda: app.dashboard.renders > 0 and app.dashboard.processes.row_count == 6, "render")
    await _settle(pilot)


async def focused_process(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await main_view(pilot)
    procs = app.dashboard.processes
    procs.focus()
    procs.move_cursor(row=procs.get_row_index("nginx"))
    await pilot.press("enter")
    await wait_for(
        pilot,
        lambda: app.dashboard.rendered is not None and app.dashboard.rendered.config.subject == Scope(command="nginx"),
        "nginx drawn",
    )
    await _settle(pilot)


async def filtered(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await main_view(pilot)
    await pilot.press("slash", *"5432")
    await wait_for(
        pilot, lambda: all("5432" in e.destination for e in app.dashboard.connections.events.values()), "filtered rows"
    )
    await _settle(pilot)


async def command_result(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await main_view(pilot)
    await pilot.press("colon")
    bar = app.dashboard.query_one("#command-bar", CommandInput)
    bar.value = "analyze --process nginx"
    await pilot.press("enter")
    result = app.dashboard.query_one("#result", ResultPanel)
    await wait_for(pilot, lambda: "Top destinations" in str(result.query_one("#result-text").content), "result")
    await pilot.press(*"sum")
    await _settle(pilot)


async def help_modal(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await main_view(pilot)
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
    await _settle(pilot)


async def drops_view(pilot: Pilot[Any]) -> None:
    app = _app(pilot)
    await main_view(pilot)
    await pilot.press("d")
    await wait_for(pilot, lambda: app.dashboard.view == "drops", "drops tab")
    app.dashboard.drops.focus()
    await _settle(pilot)


async def ai_rules(pilot: Pilot[Any]) -> None:
    """``a`` on nginx with no AI model configured: the local rule-based explanation."""
    app = _app(pilot)
    await main_view(pilot)
    procs = app.dashboard.processes
    procs.focus()
    procs.move_cursor(row=procs.get_row_index("nginx"))
    await pilot.press("a")
    await wait_for(pilot, lambda: app.dashboard.ai_pane.state == "finished", "rule-based explanation")
    await _settle(pilot)


SCENES: dict[str, Callable[[Pilot[Any]], Awaitable[None]]] = {
    "main": main_view,
    "focused-process": focused_process,
    "filter": filtered,
    "command-result": command_result,
    "help": help_modal,
    "drops": drops_view,
    "ai-pane": ai_rules,
}


def spy_snapshots(gateway: Any, argument: str) -> list[list[str]]:
    """Record the ``argument`` list (sorted) of every ``gateway.snapshot`` call from now on."""
    asked: list[list[str]] = []
    real = gateway.snapshot

    async def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(sorted(kwargs.get(argument) or []))
        return await real(*args, **kwargs)

    gateway.snapshot = spy
    return asked
