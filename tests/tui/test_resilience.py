"""Server loss and recovery, and the AI pane's streaming states, through a pilot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from netspy_tui.ai import ProgressNote
from netspy_tui.errors import AIError, ServerUnavailable
from netspy_tui.mcp_tools.ai_bridge import AIHooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import EventPage, EventQuery, Scope, SourceInfo, WindowStats
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.ai_pane import AIPane
from tests.tui.conftest import Clock, demo_source, wait_for
from tests.tui.screen_text import screen_text
from tests.tui.test_dashboard import SIZE, in_window, status_text

pytestmark = pytest.mark.quiet


class FlakySource:
    """A MemorySource that raises ServerUnavailable from every method while ``down`` is set."""

    def __init__(self, inner: MemorySource) -> None:
        self.inner = inner
        self.down = False
        self.calls_while_down = 0

    def _check(self) -> None:
        if self.down:
            self.calls_while_down += 1
            raise ServerUnavailable("Cannot reach the eBPF server at http://127.0.0.1:9", "is it running?")

    async def info(self) -> SourceInfo:
        self._check()
        return await self.inner.info()

    async def query(self, q: EventQuery) -> EventPage:
        self._check()
        return await self.inner.query(q)

    async def count(self, scope: Scope) -> int:
        self._check()
        return await self.inner.count(scope)

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        self._check()
        return await self.inner.stats(scope, top_n, buckets)

    async def programs(self) -> list[Any]:
        self._check()
        return await self.inner.programs()

    async def losses(self, window_seconds: int) -> dict[str, int]:
        self._check()
        return await self.inner.losses(window_seconds)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_source_that_never_answered_is_not_live() -> None:
    clock = Clock()
    source = FlakySource(demo_source(clock))
    source.down = True
    async with open_gateway(source) as gateway:  # type: ignore[arg-type]
        app = NetspyApp(gateway, interval=0.2, clock=clock)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "stale since" in status_text(app), "the failure shown")
            assert "LIVE" not in status_text(app)
            # at 80 columns the error's address shows whole: "⚠ stale since 18:05:38, retry in 1s (attempt 1): "
            # first left only "Cannot reach the eBPF server" of it (an audit's)
            await pilot.pause()
            assert "⚠ Cannot reach the eBPF server at http://127.0.0.1:9 · retry" in screen_text(app)


async def test_server_loss_shows_stale_with_retry_countdown_then_recovers() -> None:
    clock = Clock()
    source = FlakySource(demo_source(clock))
    async with open_gateway(source) as gateway:  # type: ignore[arg-type]
        app = NetspyApp(gateway, interval=0.2, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            n = len(in_window(60))
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == n, "first render")
            source.down = True
            await wait_for(pilot, lambda: "stale since" in status_text(app), "stale status")
            text = status_text(app)
            assert "⚠ Cannot reach the eBPF server at http://127.0.0.1:9 · retry in" in text
            assert "(attempt 1, stale since 12:00:00)" in text
            assert "○ stale" in text  # health mark turns hollow
            assert "LIVE" not in text  # (nothing is live while the source does not answer)
            await wait_for(pilot, lambda: "attempt 3" in status_text(app), "backing off")
            assert app.dashboard.connections.row_count == n  # last good data stays on screen
            polls = app.polls
            source.down = False
            await wait_for(pilot, lambda: app.polls > polls and "stale" not in status_text(app), "recovery")
            assert "● healthy · replay of demo.jsonl" in status_text(app)
            assert app.is_running


async def test_explain_streams_markdown_and_shows_finished() -> None:
    seen: list[Scope] = []
    noted, gate = asyncio.Event(), asyncio.Event()

    async def explain(gateway: Any, scope: Scope) -> AsyncIterator[str | ProgressNote]:
        seen.append(scope)
        yield ProgressNote("gathering nginx via MCP…")
        await noted.wait()
        yield "## nginx\n\n"
        await gate.wait()
        yield "- 37 attempts, **3 failed**\n"

    clock = Clock()
    async with open_gateway(demo_source(clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, ai=AIHooks(explain=explain, label="test model"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.processes.row_count == 6, "processes")
            procs = app.dashboard.processes
            procs.focus()
            procs.move_cursor(row=procs.get_row_index("nginx"))
            await pilot.press("a")
            pane = app.dashboard.query_one("#ai-pane", AIPane)
            await wait_for(
                pilot, lambda: "gathering nginx via MCP" in str(pane.query_one("#ai-state").content), "progress note"
            )
            assert pane.state == "started"
            noted.set()
            await wait_for(pilot, lambda: pane.answer == "## nginx\n\n", "first fragment")
            assert pane.streaming
            state = str(pane.query_one("#ai-state").content)
            assert "Streaming: explaining process 'nginx' over 1m… (esc cancels)" in state
            assert seen == [Scope(command="nginx", window=60)]
            await pilot.press("a")  # the same request again while it streams: ignored, not restarted
            await wait_for(pilot, lambda: any("esc cancels" in str(n.message) for n in app._notifications), "note")
            assert len(seen) == 1 and pane.streaming
            gate.set()
            await wait_for(pilot, lambda: pane.state == "finished", "finished")
            assert pane.answer == "## nginx\n\n- 37 attempts, **3 failed**\n"
            assert str(pane.border_title) == "AI · test model"


async def test_explain_failure_keeps_partial_text_and_notifies() -> None:
    async def explain(gateway: Any, scope: Scope) -> AsyncIterator[str]:
        yield "Partial [b]answer[/b]\x1b[2J"
        raise AIError("The AI server at http://127.0.0.1:1 refused the connection", "check OPENAI_BASE_URL")

    clock = Clock()
    async with open_gateway(demo_source(clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, ai=AIHooks(explain=explain))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "rows")
            await pilot.press("a")
            pane = app.dashboard.query_one("#ai-pane", AIPane)
            await wait_for(pilot, lambda: pane.state == "failed", "failed state")
            assert pane.answer == "Partial [b]answer[/b]\\x1b[2J"  # escape made visible, text kept
            state = str(pane.query_one("#ai-state").content)
            assert "Failed: The AI server at http://127.0.0.1:1 refused" in state
            await wait_for(
                pilot,
                lambda: any("refused the connection" in str(n.message) for n in app._notifications),
                "notification",
            )


def test_the_headers_error_is_its_first_sentence_whatever_abbreviation_it_holds() -> None:
    from netspy_tui.tui.widgets.status import _first_sentence

    assert _first_sentence("Cannot reach the eBPF server at http://127.0.0.1:9 (refused). Start it.") == (
        "Cannot reach the eBPF server at http://127.0.0.1:9 (refused)"
    )
    assert _first_sentence("Not an eBPF server (e.g. a web app, i.e. not the API). Check --server.") == (
        "Not an eBPF server (e.g. a web app, i.e. not the API)"
    )
    assert _first_sentence("one sentence.") == "one sentence"
