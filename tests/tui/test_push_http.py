"""Push over HTTP (issue 17): the dashboard on an HttpSource of a real ``netspy-tui serve`` (127.0.0.1, a free
port, stopped by the test) follows its ``/api/changes`` long poll and refreshes only after a change; against a
server without it (an ebpf-server: 404) it polls on its timer; when the stream breaks it falls back to the timer
and the header stops saying "updates pushed"."""

from __future__ import annotations

import asyncio

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui import poller as poller_module
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection, connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.tui.scenes import wait_for

SIZE = (160, 45)


def _shows(app: NetspyApp, command: str) -> bool:
    return any(e.command == command for e in app.dashboard.connections.events.values())


async def test_a_served_store_pushes_a_new_event_to_the_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    # While following, the timer's only part is IDLE_REFRESH (the moving window): an hour, so only a pushed
    # change can bring the new event (the 0.05 s interval only bounds how often a refresh may follow one).
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 3600.0)
    source = MemorySource([connection(ago=1, command="first")])
    with BackgroundServer(create_app(source)) as srv:
        http = HttpSource(srv.url, retries=0)
        try:
            async with open_gateway(http) as gateway:
                app = NetspyApp(gateway, interval=0.05)
                async with app.run_test(size=SIZE) as pilot:
                    await wait_for(pilot, lambda: app.polls >= 1 and app.poller.following, "the first data, then push")
                    await wait_for(pilot, lambda: _shows(app, "first"), "the first event on screen")
                    shown = app.dashboard.status.build().plain
                    assert "updates pushed" in shown and " ago" not in shown
                    before = app.polls
                    source.add_events([connection(ago=0, pid=4242, command="pushed")])
                    await wait_for(pilot, lambda: _shows(app, "pushed"), "the pushed event on screen")
                    # one refresh for the change (plus at most one in flight when it came); the 0.05 s timer
                    # would have made dozens while the test waited
                    assert app.poller.following and app.polls - before <= 2
        finally:
            await http.aclose()


async def test_the_dashboard_falls_back_to_the_timer_when_the_stream_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 3600.0)
    source = MemorySource([connection(ago=1, command="first")])
    srv = BackgroundServer(create_app(source)).start()
    http = HttpSource(srv.url, retries=0)
    try:
        async with open_gateway(http) as gateway:
            app = NetspyApp(gateway, interval=0.05)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.polls >= 1 and app.poller.following, "the first data, then push")
                # the server is gone: the long poll fails, the MCP server ends its notifications
                await asyncio.to_thread(srv.stop)
                await wait_for(pilot, lambda: not app.poller.following, "the fallback to the timer")
                polls = app.polls  # (a refresh a change notification asked for may have ended meanwhile)
                shown = app.dashboard.status.build().plain
                assert "updates pushed" not in shown
                # polled again on the timer (failing: the header says the server cannot be reached)
                await wait_for(pilot, lambda: "Cannot reach" in app.dashboard.status.build().plain, "the failure")
                assert app.polls == polls
    finally:
        srv.stop()
        await http.aclose()


async def test_against_a_server_without_the_stream_the_dashboard_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "IDLE_BACKOFF_AFTER", 1000)  # every interval: the count below is polls
    with FakeEbpfServer("current", events=[connection_json(ago=1, command="first")]) as srv:
        http = HttpSource(srv.url, retries=0)
        try:
            async with open_gateway(http) as gateway:
                app = NetspyApp(gateway, interval=0.05)
                async with app.run_test(size=SIZE) as pilot:
                    await wait_for(pilot, lambda: app.polls >= 3, "polls on the timer")
                    assert not app.poller.following
                    shown = app.dashboard.status.build().plain
                    assert "pushed" not in shown and " ago" in shown
                    srv.events.append(connection_json(ago=0, command="polled", pid=4242))
                    await wait_for(pilot, lambda: _shows(app, "polled"), "the new event, polled")
            assert len([r for r in srv.requests if r.path == "/api/changes"]) == 1  # asked once
        finally:
            await http.aclose()
