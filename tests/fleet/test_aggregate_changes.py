"""``serve --aggregate`` offers ``/api/changes`` as ``serve`` does: on a real aggregator (its API on 127.0.0.1, a
free port, stopped by the test) an agent's ingest wakes a waiting long poll, behind the read token; a dashboard
pointed at it follows the stream and shows what an agent sent without waiting out its idle backoff; its MCP
server notifies too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.client import Client

from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionEvent
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.aggregate import INGEST_PATH, AggregatorApi, IngestLimits
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui import poller as poller_module
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection_json
from tests.serve.test_changes import LIMIT, _feed, _until_waiting
from tests.tui.scenes import wait_for

INGEST = "agents-secret"
READ = "readers-secret"
AGENT = {"Authorization": f"Bearer {INGEST}"}
READER = {"Authorization": f"Bearer {READ}"}


def events(node: str, command: str, n: int = 3, pid: int = 100) -> dict[str, Any]:
    out = []
    for i in range(n):
        event = connection_json(pid=pid, command=command, port=1000 + i, ago=1)
        event.update(id=f"{node}-{command}-{i}", k8s_node_name=node)
        out.append(event)
    return {"events": out}


@pytest.fixture
def fleet() -> Iterator[FleetStore]:
    store = FleetStore(None)
    yield store
    store.close()


@pytest.fixture
def aggregator(fleet: FleetStore) -> Iterator[BackgroundServer]:
    app = create_app(FleetSource(fleet), token=READ, api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    with BackgroundServer(app, host="127.0.0.1", port=0) as srv:
        yield srv


def _changes(srv: BackgroundServer, **params: Any) -> httpx.Response:
    # the client gives up well before the server's 30 s: an answer means the server did not wait it out
    return httpx.get(f"{srv.url}/api/changes", params=params, headers=READER, timeout=LIMIT)


def _shown(app: NetspyApp, command: str) -> ConnectionEvent | None:
    """The connection row of ``command`` the dashboard shows, if any."""
    return next((e for e in app.dashboard.connections.events.values() if e.command == command), None)


def _ingest(srv: BackgroundServer, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(srv.url + INGEST_PATH, json=body, headers=AGENT, timeout=LIMIT)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_an_ingest_wakes_a_waiting_long_poll_behind_the_read_token(aggregator: BackgroundServer) -> None:
    root = httpx.get(aggregator.url + "/", headers=READER, timeout=LIMIT).json()
    assert root["service"] == "netspy-tui aggregator" and "GET /api/changes" in root["endpoints"]
    assert httpx.get(aggregator.url + "/api/changes", timeout=LIMIT).status_code == 401  # read like the rest
    seq = _changes(aggregator).json()["seq"]
    answers: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(_changes(aggregator, after=seq, timeout=30)))
    waiter.start()
    _until_waiting(_feed(aggregator))
    assert _ingest(aggregator, events("node-a", "curl"))["events_processed"] == 3
    waiter.join(LIMIT)
    assert not waiter.is_alive() and answers[0].status_code == 200
    woken = answers[0].json()
    assert woken["changed"] is True and woken["seq"] > seq
    # an agent's retry of that batch stores nothing: the sequence stays (the poll waits its 1 s out)
    assert _ingest(aggregator, events("node-a", "curl"))["duplicates"] == 3
    assert _changes(aggregator, after=woken["seq"], timeout=1).json() == {"seq": woken["seq"], "changed": False}


async def test_a_dashboard_on_the_aggregator_shows_an_ingested_event_without_its_idle_backoff(
    aggregator: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polled on a timer, this dashboard would wait an hour after its first empty poll (the idle backoff, and the
    # refresh of a followed source, both an hour): only a change the aggregator reports can bring the new event.
    monkeypatch.setattr(poller_module, "IDLE_BACKOFF_AFTER", 0)
    monkeypatch.setattr(poller_module, "IDLE_POLL_MAX", 3600.0)
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 3600.0)
    await asyncio.to_thread(_ingest, aggregator, events("node-a", "first"))
    http = HttpSource(aggregator.url, retries=0, token=READ)
    try:
        async with open_gateway(http) as gateway:
            app = NetspyApp(gateway, interval=0.05, window=60)
            async with app.run_test(size=(160, 45)) as pilot:
                await wait_for(pilot, lambda: app.polls >= 1 and app.poller.following, "the first data, then push")
                await wait_for(pilot, lambda: _shown(app, "first") is not None, "the first events")
                assert "updates pushed" in app.dashboard.status.build().plain
                await asyncio.to_thread(_ingest, aggregator, events("node-b", "pushed", pid=4242))
                await wait_for(pilot, lambda: _shown(app, "pushed") is not None, "the pushed event")
                pushed = _shown(app, "pushed")
                assert pushed is not None and pushed.k8s_node_name == "node-b"
    finally:
        await http.aclose()


async def test_the_aggregators_mcp_server_notifies_an_ingest(fleet: FleetStore) -> None:
    source = FleetSource(fleet)
    async with Client(create_server(source)) as client:
        contents = (await client.read_resource(EVENTS_URI)).contents
        assert '"notifies": true' in contents[0].text  # type: ignore[union-attr]
        async with client.listen(resource_subscriptions=[EVENTS_URI]) as updates:
            await asyncio.to_thread(fleet.ingest, events("node-a", "curl")["events"])
            update = await asyncio.wait_for(anext(aiter(updates)), LIMIT)
        assert getattr(update, "uri", None) == EVENTS_URI
