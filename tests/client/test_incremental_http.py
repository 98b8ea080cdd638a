"""A dashboard over HTTP on a netspy-tui server (``serve``) is sent each event once: ``/api/events`` takes the store's
insertion cursor (``after``) and answers the next one (``cursor``), so a poll costs the server what is new instead of
re-reading the overlap the poller asks again by time; what the dashboard holds is what a full fetch holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import utcnow
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.tui.poller import Poller
from tests.factories import connection, drop

Scope_ = MutableMapping[str, Any]
App = Callable[[Scope_, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Asked:
    """The server's app, noting the query string of every ``/api/events`` request."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.events: list[str] = []

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/events":
            self.events.append(scope["query_string"].decode())
        await self.app(scope, receive, send)


async def _rows(url: str) -> tuple[list[str], list[str]]:
    """What a dashboard that has just opened on ``url`` holds: its connections' and drops' ids, oldest first."""
    source = HttpSource(url, retries=0)
    async with open_gateway(source) as gateway:
        snap = await Poller(gateway, clock=utcnow, window=3600, interval=1.0).poll()
    await source.aclose()
    return [e.id for e in snap.connections], [e.id for e in snap.drops]


async def test_the_second_poll_is_sent_only_the_new_events_and_shows_what_a_full_fetch_shows(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite3", retention_seconds=None, max_rows=None)
    now = datetime.now(UTC).replace(microsecond=0)
    store.add_events([connection(pid=100 + i, time=now - timedelta(seconds=30 - i)) for i in range(30)]
                     + [drop(pid=400, ago=5 + i) for i in range(5)])  # fmt: skip
    newest = now - timedelta(seconds=1)  # the newest connection held after the first poll
    asked = Asked(create_app(EmbeddedSource(None, store, reason="test")))
    try:
        with BackgroundServer(asked) as srv:
            source = HttpSource(srv.url, retries=0)
            async with open_gateway(source) as gateway:
                poller = Poller(gateway, clock=utcnow, window=3600, interval=1.0)
                await poller.poll()
                store.add_events([
                    connection(pid=900, time=newest),  # the same time as the newest held: on the since boundary
                    connection(pid=901, time=newest - timedelta(seconds=1)),  # late: older than the newest held
                    connection(pid=902, time=now),
                    drop(pid=401, ago=1),
                ])  # fmt: skip
                asked.events.clear()
                second = await poller.poll()
                polled = list(asked.events)
            await source.aclose()
            full = await _rows(srv.url)
    finally:
        store.close()
    assert ([e.id for e in second.connections], [e.id for e in second.drops]) == full
    assert {900, 901, 902} <= {e.pid for e in second.connections} and len(second.connections) == 33
    conns = [q for q in polled if "type=connection" in q]
    assert len(conns) == 1 and "after=" in conns[0], polled  # one request, from the cursor on
    page = await _page(store_path=tmp_path / "events.sqlite3", query=conns[0])
    assert sorted(e["pid"] for e in page) == [900, 901, 902]  # only the new events were sent


async def _page(store_path: Path, query: str) -> list[dict[str, Any]]:
    """The answer the server gave to ``query`` (asked again of the same store, now that nothing is added)."""
    store = EventStore(store_path, retention_seconds=None, max_rows=None)
    try:
        with BackgroundServer(create_app(EmbeddedSource(None, store, reason="test"))) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
                events: list[dict[str, Any]] = (await c.get(f"/api/events?{query}")).json()["events"]
                return events
    finally:
        store.close()
