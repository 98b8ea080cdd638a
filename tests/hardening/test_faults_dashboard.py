"""The dashboard over a real (misbehaving) eBPF server on 127.0.0.1: it keeps working and loses nothing.

Covered elsewhere: loss and recovery of an in-memory source with the stale/retry countdown
(tests/tui/test_resilience.py::test_server_loss_shows_stale_with_retry_countdown_then_recovers), the
poller's backoff (tests/tui/test_poller.py). Here the dashboard reads through the real HTTP client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from textual.pilot import Pilot

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.screens.help import HelpScreen
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.tui.scenes import wait_for

SIZE = (160, 45)


@asynccontextmanager
async def dashboard(url: str, *, read_timeout: float = 5.0) -> AsyncIterator[tuple[NetspyApp, Pilot[Any]]]:
    source = HttpSource(url, read_timeout=read_timeout, connect_timeout=1.0, retries=0)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2)
            async with app.run_test(size=SIZE) as pilot:
                yield app, pilot
    finally:
        await source.aclose()


def status(app: NetspyApp) -> str:
    return app.dashboard.status.build().plain


def shown_ids(app: NetspyApp) -> list[str]:
    return [e.id for e in app.dashboard.connections.events.values()]


async def still_responsive(app: NetspyApp, pilot: Pilot[Any]) -> None:
    """Keys still work while the data source misbehaves: the help screen opens and closes."""
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help screen")
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def test_server_down_at_start_then_up() -> None:
    srv = FakeEbpfServer("current", events=[connection_json(ago=1, command="curl")]).start()
    srv.stop()  # the port is known, nothing listens
    async with dashboard(srv.url) as (app, pilot):
        await wait_for(pilot, lambda: "stale since" in status(app), "stale status")
        assert f"Cannot reach the eBPF server at {srv.url} (connection refused)" in status(app)
        assert app.dashboard.connections.row_count == 0
        await still_responsive(app, pilot)
        srv.start()
        try:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "recovery", limit=20)
            await wait_for(pilot, lambda: "stale" not in status(app) and "healthy" in status(app), "healthy")
        finally:
            srv.stop()


async def test_server_dies_and_returns_nothing_duplicated_or_lost() -> None:
    """Events the server kept while the dashboard could not reach it all appear once afterwards."""
    before = [connection_json(ago=30 - i, pid=100 + i, command="curl") for i in range(5)]
    gap = [connection_json(ago=10 - i * 0.01, pid=200 + i % 7, command="wget") for i in range(250)]
    gap_drops = [drop_json(ago=9 - i * 0.1, pid=300 + i) for i in range(20)]
    after = [connection_json(ago=0.5, pid=999, command="nc")]
    with FakeEbpfServer("current", events=before) as srv:
        async with dashboard(srv.url) as (app, pilot):
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 5, "first rows")
            srv.stop()
            await wait_for(pilot, lambda: "Cannot reach" in status(app), "server loss shown")
            srv.events.extend(gap + gap_drops)  # the server keeps collecting while we cannot reach it
            await still_responsive(app, pilot)
            srv.start()
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 255, "gap caught up", limit=20)
            assert "stale" not in status(app)
            srv.events.extend(after)
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 256, "live again")
            ids = shown_ids(app)
            drops = list(app.poller._drops.events)  # what the drops view holds
    expected = [e["id"] for e in before + gap + after]
    assert len(ids) == len(set(ids)) == len(expected)  # no duplicates
    assert set(ids) == set(expected)  # nothing lost, nothing invented
    assert sorted(drops) == sorted(e["id"] for e in gap_drops)
    since = [r.query.get("since") for r in srv.requests_to("/api/events") if r.query.get("type") == "connection"]
    assert since[0] is None and all(since[1:])  # the first poll reads the window, every later one is incremental


async def test_answers_the_client_cannot_use_are_shown_in_one_line_then_recover() -> None:
    cases: list[tuple[str, Any, str]] = [
        (
            "503",
            lambda s: s.fail_with(503, "System not initialized"),
            "is not ready (503 on /api/events: System not initialized)",
        ),
        (
            "500",
            lambda s: s.fail_with(500, "panic: runtime error\ngoroutine 1 [running]:"),
            "answered 500 on /api/events: panic: runtime error",
        ),
        ("html", lambda s: s.reply_raw(b"<html><body>Bad Gateway</body></html>", "text/html"), "not JSON"),
        ("truncated", lambda s: s.reply_raw(b'{"events": [{"type": "connection", "pid": 4'), "not JSON"),
        (
            "wrong type",
            lambda s: s.reply_raw(b'{"events": [{"type": "connection", "pid": "x", "time": "2026-01-01"}]}'),
            "unexpected JSON on /api/events (events.0.connection.pid",
        ),
        (
            "missing field",
            lambda s: s.reply_raw(b'{"events": [{"type": "connection", "pid": 4}]}'),
            "unexpected JSON on /api/events (events.0.connection.time: Field required)",
        ),
        ("not an object", lambda s: s.reply_raw(b"[1, 2, 3]"), "unexpected JSON on /api/events"),
        ("nested bomb", lambda s: s.reply_raw(b"[" * 100_000), "not JSON"),
    ]
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        async with dashboard(srv.url) as (app, pilot):
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "first row")
            await wait_for(pilot, lambda: "api current" in status(app), "generation detected")
            for name, misbehave, fragment in cases:
                misbehave(srv)
                await wait_for(pilot, lambda f=fragment: f in status(app), f"{name}: {fragment}")
                text = status(app)
                assert "⚠ " in text and "stale since" in text, (name, text)
                assert "Traceback" not in text and "\x1b" not in text, (name, text)
                assert app.dashboard.connections.row_count == 1, name  # the last good data stays
                polls = app.polls
                srv.reset()
                await wait_for(pilot, lambda p=polls: app.polls > p and "stale" not in status(app), f"{name}: recovery")
            assert app.is_running


async def test_slow_server_past_the_read_timeout_keeps_the_ui_responsive() -> None:
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        async with dashboard(srv.url, read_timeout=0.5) as (app, pilot):
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "first row")
            srv.delay(30, path="/api/events")
            await wait_for(
                pilot, lambda: "did not answer /api/events within 0.5 s (read timeout)" in status(app), "timeout shown"
            )
            await still_responsive(app, pilot)
            srv.events.append(connection_json(ago=0.1, command="late"))
            srv.release()
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 2, "caught up")
            assert "stale" not in status(app)


async def test_late_events_at_or_before_the_newest_seen_time_are_not_lost() -> None:
    """An event stamped at (or just before) the newest time already shown, that reaches the server a
    moment later (per-CPU buffers, an aggregator's agents), must still appear."""
    from datetime import UTC, datetime, timedelta

    newest = datetime.now(UTC) - timedelta(seconds=2)
    first = connection_json(time=newest, pid=1, command="first")
    with FakeEbpfServer("current", events=[first]) as srv:
        async with dashboard(srv.url) as (app, pilot):
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "first row")
            polls = app.polls
            await wait_for(pilot, lambda: app.polls >= polls + 2, "incremental polls")
            srv.events.append(connection_json(time=newest, pid=2, command="same-time"))
            srv.events.append(connection_json(time=newest - timedelta(milliseconds=300), pid=3, command="late"))
            polls = app.polls
            await wait_for(pilot, lambda: app.polls >= polls + 5, "more polls")
            commands = sorted(e.command for e in app.dashboard.connections.events.values())
    assert commands == ["first", "late", "same-time"]
