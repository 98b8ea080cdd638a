"""Paint first (issue 17): the frame is drawn and answers keys before the source and the MCP gateway are up;
what needs the gateway waits for it; a source that cannot open ends the app with its reason."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from netspy_tui.ai.settings import AISettings
from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.ai_bridge import AIHooks, dashboard_hooks
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


async def test_the_ai_hooks_are_built_when_first_needed(source: MemorySource, clock: Clock) -> None:
    """The CLI hands the dashboard a function for its AI hooks (the AI layer loads after the first frame): the
    pane's title is there from the start, the hooks are built by the first ``a`` and answer it."""
    built: list[AIHooks] = []

    def hooks() -> AIHooks:
        built.append(dashboard_hooks(AISettings()))
        return built[-1]

    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, ai=hooks, ai_label="rules (no AI configured)")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "the first data")
            pane = app.dashboard.ai_pane
            assert built == [] and "rules (no AI configured)" in str(pane.border_title)
            await pilot.press("a")
            await wait_for(pilot, lambda: pane.state == "finished", "the explanation")
            assert len(built) == 1 and pane.answer
            await pilot.press("a")  # (once built, kept)
            await pilot.pause()
            assert len(built) == 1


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


#: What the dashboard's first frame must not wait for: each loads later, where it is used (issue 17). pydantic is
#: not listed: the domain models (netspy_tui.models) are imported by the widgets and the poller, and the CLI's
#: settings (pydantic-settings) load before the dashboard anyway.
NOT_BEFORE_THE_FIRST_FRAME = (
    "mcp",  # the SDK: the backend's import thread, after the frame
    "starlette",
    "uvicorn",
    "anyio",
    "httpx",  # the eBPF server's client, with the source
    "openai",  # the model's client, with the first AI request
    "markdown_it",  # the AI pane's Markdown view, mounted after the frame
    "pygments",
    "netspy_tui.ai",  # the AI layer, with the first AI request (or the backend's thread)
    "netspy_tui.mcp_tools.ai_bridge",
    "netspy_tui.mcp_tools.server",
    "netspy_tui.export",  # with the first export or screenshot
    "netspy_tui.config",  # (the CLI loads the settings before the dashboard: its modules need not)
    "netspy_tui.runtime",
    "netspy_tui.telemetry",
    "netspy_tui.collector",
    "netspy_tui.store",
)

_FIRST_FRAME = textwrap.dedent(
    """
    import asyncio, json, sys

    from netspy_tui.mcp_tools.gateway import StartingGateway
    from netspy_tui.tui.app import NetspyApp


    def no_hooks():
        raise AssertionError("the AI hooks were built before they were needed")


    async def main():
        app = NetspyApp(StartingGateway(), ai=no_hooks, ai_label="rules (no AI configured)")
        app.show_starting("the data source")
        seen = []
        painted = app.painted.set

        def first_frame():  # what is imported when the first frame is on screen
            seen.append(sorted(sys.modules))
            painted()

        app.painted.set = first_frame
        async with app.run_test(size=(160, 45)):
            await app.painted.wait()
            status = app.dashboard.status.build().plain
        print(json.dumps({"modules": seen[0], "status": status}))


    asyncio.run(main())
    """
)


def test_the_first_frame_is_drawn_before_the_sdk_the_ai_layer_export_or_markdown_load() -> None:
    """A dashboard (as run_dashboard makes it, its AI hooks built on first use) draws its first frame in a fresh
    interpreter; the modules imported by then are listed. A top-level import of any of these, anywhere on the
    dashboard's import path, fails here."""
    out = subprocess.run([sys.executable, "-c", _FIRST_FRAME], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    modules = set(seen["modules"])
    assert {"textual.app", "netspy_tui.tui.screens.dashboard", "netspy_tui.tui.widgets.ai_pane"} <= modules
    assert "starting: the data source" in seen["status"]  # the frame that was drawn
    loaded = sorted(
        m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_BEFORE_THE_FIRST_FRAME)
    )
    assert loaded == []
