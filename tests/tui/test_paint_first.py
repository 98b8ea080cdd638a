"""Paint first (issue 17): the frame is drawn and answers keys before the source and the MCP gateway are up;
what needs the gateway waits for it; a source that cannot open ends the app with its reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import Backend, NetspyApp
from tests.tui.conftest import Clock, wait_for

SIZE = (160, 45)


def _status(app: NetspyApp) -> str:
    return app.dashboard.status.build().plain


async def test_frame_is_usable_before_the_gateway_is_up(source: MemorySource, clock: Clock) -> None:
    let_open = asyncio.Event()
    closed = asyncio.Event()

    @asynccontextmanager
    async def connect(progress: Callable[[str], None]) -> AsyncIterator[tuple[Gateway, str]]:
        progress("the test source, the MCP gateway")
        await let_open.wait()
        try:
            async with open_gateway(source) as gateway:
                yield gateway, "demo source"
        finally:
            closed.set()

    backend = Backend(connect)
    app = NetspyApp(backend.gateway, interval=0.25, clock=clock)
    app.show_starting("the data source")
    async with app.run_test(size=SIZE) as pilot:
        backend.start(app)
        await wait_for(pilot, lambda: "starting: the test source" in _status(app), "the header to say what starts")
        assert app.dashboard.connections.row_count == 0 and app.polls == 0
        # keys are answered while the gateway is not up: the filter bar opens, takes text and applies it
        await pilot.press("slash", *"curl", "enter")
        await wait_for(pilot, lambda: app.dashboard.filter_text == "curl", "the filter to apply")
        assert "filter “curl”" in _status(app)
        assert "starting" in _status(app) and app.polls == 0  # still nothing fetched
        # the gateway comes up: the poll that was waiting for it delivers, under the filter typed before
        let_open.set()
        await wait_for(pilot, lambda: app.polls >= 1 and app.dashboard.connections.row_count > 0, "the first data")
        assert "starting" not in _status(app)
        assert "demo source" in _status(app)
        shown = app.dashboard.connections.events.values()
        assert shown and all("curl" in e.command for e in shown)
    await backend.stop()
    assert closed.is_set()


async def test_the_backend_starts_loading_after_the_first_frame(source: MemorySource, clock: Clock) -> None:
    """Started before the app runs (as run_dashboard starts it), the backend opens nothing until the frame is
    drawn: the SDK import and the server's tools would otherwise share the CPU with drawing it."""
    seen: list[tuple[bool, str]] = []

    @asynccontextmanager
    async def connect(progress: Callable[[str], None]) -> AsyncIterator[tuple[Gateway, str]]:
        seen.append((app.painted.is_set(), _status(app) if app.is_running else "(no screen yet)"))
        async with open_gateway(source) as gateway:
            yield gateway, "demo source"

    backend = Backend(connect)
    app = NetspyApp(backend.gateway, interval=0.25, clock=clock)
    app.show_starting("the data source")
    backend.start(app)
    await asyncio.sleep(0.05)
    assert seen == []  # the app is not running yet: nothing opens
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, "the first data")
    await backend.stop()
    assert seen and seen[0][0], seen
    assert "starting: the data source" in seen[0][1]  # the header was on screen before anything opened


async def test_a_source_that_cannot_open_ends_the_app_with_its_reason(clock: Clock) -> None:
    @asynccontextmanager
    async def connect(progress: Callable[[str], None]) -> AsyncIterator[tuple[Gateway, str]]:
        progress("the test source")
        raise NetspyError("no eBPF server answers and the collector needs root")
        yield  # pragma: no cover

    backend = Backend(connect)
    app = NetspyApp(backend.gateway, interval=0.25, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        backend.start(app)
        await wait_for(pilot, lambda: app.return_code == 1, "the app to exit")
    with pytest.raises(NetspyError, match="collector needs root"):
        await backend.stop()


async def test_quitting_while_starting_stops_opening(clock: Clock) -> None:
    cancelled = asyncio.Event()

    @asynccontextmanager
    async def connect(progress: Callable[[str], None]) -> AsyncIterator[tuple[Gateway, str]]:
        try:
            await asyncio.Event().wait()  # never opens
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield  # pragma: no cover

    backend = Backend(connect)
    app = NetspyApp(backend.gateway, interval=0.25, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        backend.start(app)
        await pilot.pause()
        app.exit(0)
    await backend.stop()
    assert cancelled.is_set()


def test_the_dashboard_modules_load_without_the_mcp_sdk() -> None:
    """What loads before the first frame: Textual and the dashboard, not the SDK, the collector or openai."""
    code = (
        "import sys, netspy_tui.cli, netspy_tui.tui.app, netspy_tui.mcp_tools.ai_bridge, netspy_tui.config; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'openai', 'starlette') "
        "or m.startswith(('netspy_tui.collector', 'netspy_tui.store', 'netspy_tui.mcp_tools.server'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
