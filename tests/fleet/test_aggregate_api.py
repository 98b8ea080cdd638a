"""``serve --aggregate``'s HTTP API in process: ingest (token, bounds, per-event validation,
retries), queries across nodes with node filters, ``/api/stats``, ``/health``; and the client
(HttpSource, as the dashboard and ``--tool`` use it) against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from netspy_tui.fleet.prep import IngestChecker
from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.models import EventQuery, Scope
from netspy_tui.serve.aggregate import INGEST_PATH, AggregatorApi, IngestLimits
from netspy_tui.serve.app import create_app
from netspy_tui.telemetry.client import HttpSource
from tests.factories import connection_json, drop_json

INGEST = "agents-secret"
READ = "readers-secret"
AGENT = {"Authorization": f"Bearer {INGEST}"}
READER = {"Authorization": f"Bearer {READ}"}


def batch(node: str, n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        event = connection_json(pid=100 + i % 3, command="curl", port=1000 + i, ago=5, **extra) if i % 4 else \
            drop_json(pid=9, command="nginx", ago=5, reason="NETFILTER_DROP")  # fmt: skip
        event["id"] = f"{node}-{i:08d}"
        event["k8s_node_name"] = node
        out.append(event)
    return out


def app_of(fleet: FleetStore, checker: IngestChecker | None = None, **limits: Any) -> Any:
    api = AggregatorApi.factory(fleet, IngestLimits(INGEST, **limits), checker)
    return create_app(FleetSource(fleet), token=READ, api=api, own_auth_paths=[INGEST_PATH], max_body_bytes=64 * 1024)


@pytest.fixture(scope="module")
def processes() -> Iterator[IngestChecker]:
    with IngestChecker(1) as checker:
        yield checker


@pytest.fixture(params=["here", "in a checking process"])
def checker(request: pytest.FixtureRequest, processes: IngestChecker) -> IngestChecker | None:
    """Bodies read and checked in the ingest thread, or in a checking process (``serve --aggregate``'s default on
    more than one core): the same answers."""
    return processes if request.param != "here" else None


@pytest.fixture
async def fleet() -> AsyncIterator[FleetStore]:
    store = FleetStore(None)
    yield store
    store.close()


@pytest.fixture
async def client(fleet: FleetStore, checker: IngestChecker | None) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_of(fleet, checker))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


async def test_ingest_counts_per_node_and_queries_answer_across_nodes(client: httpx.AsyncClient) -> None:
    for node, n in (("node-a", 12), ("node-b", 8), ("node-c", 4)):
        r = await client.post(INGEST_PATH, json={"events": batch(node, n)}, headers=AGENT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["events_processed"] == n and body["rejected"] == []
    stats = (await client.get("/api/stats", headers=READER)).json()
    assert stats["events_by_node"] == {"node-a": 12, "node-b": 8, "node-c": 4} and stats["total_events"] == 24
    assert stats["events_by_type"] == {"connection": 18, "packet_drop": 6} and stats["connected_agents"] == 3
    assert stats["last_event_time"].endswith("Z")
    summary = (await client.get("/api/connection-summary", headers=READER)).json()
    assert summary["count_by_node"] == {"node-a": 9, "node-b": 6, "node-c": 3} and summary["count"] == 18
    assert summary["total_nodes"] == 3
    one = (await client.get("/api/connection-summary", params={"node": "node-b"}, headers=READER)).json()
    assert (one["count"], one["count_by_node"]) == (6, {"node-b": 6})
    events = (await client.get("/api/events", params={"k8s_node_name": "node-c", "limit": 100}, headers=READER)).json()
    assert events["count"] == 4 and {e["k8s_node_name"] for e in events["events"]} == {"node-c"}
    assert events["filters"]["node"] == "node-c"
    listing = (await client.get("/api/list-connections", headers=READER)).json()
    assert listing["events_by_node"] == {"node-a": 9, "node-b": 6, "node-c": 3} and listing["total_nodes"] == 3
    health = (await client.get("/health", headers=READER)).json()
    assert health["component"] == "aggregator" and health["nodes"] == 3 and health["stats"]["total_events"] == 24


async def test_a_bad_event_is_refused_with_its_reason_and_the_rest_kept(client: httpx.AsyncClient) -> None:
    events = batch("node-a", 3)
    events.insert(1, {**events[0], "id": "bad-1", "pid": "not a pid"})
    events.append({**events[0], "id": "bad-2", "k8s_node_name": "no spaces allowed"})
    events.append(42)
    r = await client.post(INGEST_PATH, json={"events": events}, headers=AGENT)
    body = r.json()
    assert r.status_code == 200 and body["success"] is False and body["events_processed"] == 3
    reasons = {item["index"]: item["reason"] for item in body["rejected"]}
    assert set(reasons) == {1, 4, 5} and reasons[1].startswith("pid:") and "k8s_node_name" in reasons[4]
    assert "not an event object" in reasons[5] and "3 rejected" in body["message"]


async def test_a_retried_batch_is_not_counted_twice(client: httpx.AsyncClient) -> None:
    events = batch("node-a", 10)
    first = (await client.post(INGEST_PATH, json={"events": events}, headers=AGENT)).json()
    again = (await client.post(INGEST_PATH, json={"events": events[5:] + batch("node-a", 2, 10)}, headers=AGENT)).json()
    assert first["events_processed"] == 10 and (again["events_processed"], again["duplicates"]) == (2, 5)
    assert (await client.get("/api/stats", headers=READER)).json()["events_by_node"] == {"node-a": 12}


async def test_wrong_tokens_oversized_batches_and_bodies_get_clear_answers(
    fleet: FleetStore, checker: IngestChecker | None
) -> None:
    transport = httpx.ASGITransport(app=app_of(fleet, checker, max_events=50))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        wrong = await c.post(INGEST_PATH, json={"events": batch("n", 1)}, headers=READER)
        assert wrong.status_code == 401 and "ingest token" in wrong.text and READ not in wrong.text
        none = await c.post(INGEST_PATH, json={"events": batch("n", 1)})
        assert none.status_code == 401
        reader_on_ingest_token = await c.get("/api/stats", headers=AGENT)
        assert reader_on_ingest_token.status_code == 401  # the agents' token reads nothing
        many = await c.post(INGEST_PATH, json={"events": batch("n", 51)}, headers=AGENT)
        assert many.status_code == 413 and "51, the limit is 50" in many.text
        big = await c.post(INGEST_PATH, content=b'{"events": [' + b" " * 70_000 + b"]}", headers=AGENT)
        assert big.status_code == 413 and "too large" in big.text
        garbage = await c.post(INGEST_PATH, content=b"{nope", headers=AGENT)
        assert garbage.status_code == 400 and garbage.text.startswith("Invalid JSON")
        shape = await c.post(INGEST_PATH, json=[1, 2], headers=AGENT)
        assert shape.status_code == 400 and '{"events": [event, ...]}' in shape.text
        assert fleet.stats()["total_events"] == 0  # nothing of the refused requests was kept


async def test_a_node_above_its_rate_is_told_when_to_retry(fleet: FleetStore, checker: IngestChecker | None) -> None:
    transport = httpx.ASGITransport(app=app_of(fleet, checker, max_events=100, rate=100.0))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        ok = await c.post(INGEST_PATH, json={"events": batch("fast", 100)}, headers=AGENT)
        assert ok.status_code == 200
        slow_down = await c.post(INGEST_PATH, json={"events": batch("fast", 100, 100)}, headers=AGENT)
        assert slow_down.status_code == 429 and int(slow_down.headers["Retry-After"]) >= 1
        other = await c.post(INGEST_PATH, json={"events": batch("other", 10)}, headers=AGENT)
        assert other.status_code == 200  # the bucket is per node
    assert fleet.stats()["events_by_node"] == {"fast": 100, "other": 10}


async def test_bad_node_filters_are_one_line_400s(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/events", params={"node": "a b"}, headers=READER)
    assert r.status_code == 400 and r.text.count("\n") == 1 and "node must be a node name" in r.text


async def test_the_client_sees_an_aggregator_with_per_node_figures(fleet: FleetStore) -> None:
    fleet.ingest(batch("node-a", 8, workload="docker abc") + batch("node-b", 4))
    source = HttpSource("http://127.0.0.1", token=READ, transport=httpx.ASGITransport(app=app_of(fleet)))
    try:
        assert await source.generation() == "aggregator"
        info = await source.info()
        assert info.healthy and info.label.startswith("aggregator at")
        assert await source.count(Scope("connection", window=60)) == 9
        assert await source.count(Scope("connection", window=60, node="node-b")) == 3
        assert await source.count(Scope("connection", window=60, workload="docker abc")) == 6
        page = await source.query(EventQuery("connection", limit=100, node="node-a"))
        assert page.total_count == 6 and {e.k8s_node_name for e in page.events} == {"node-a"}
        stats = await source.aggregator_stats()
        assert stats is not None and stats.events_by_node == {"node-a": 8, "node-b": 4}
    finally:
        await source.aclose()


async def test_the_fleet_source_filters_by_node_and_workload(fleet: FleetStore) -> None:
    fleet.ingest(batch("node-a", 8, workload="docker abc") + batch("node-b", 8))
    source = FleetSource(fleet)
    assert await source.count(Scope("connection", window=60)) == 12
    assert await source.count_by_node(Scope("connection", window=60, workload="docker abc")) == {
        "node-a": 6,
        "node-b": 0,
    }
    stats = await source.stats(Scope("connection", window=60, node="node-b"))
    assert stats.total == 6 and stats.processes[0].command == "curl"
    assert await source.count(Scope("connection", window=60, node="nowhere")) == 0
    info = await source.info()
    assert info.generation == "aggregator" and info.nodes == {"node-a": 8, "node-b": 8}


async def test_without_an_ingest_token_the_servers_own_token_guards_ingest(fleet: FleetStore) -> None:
    app = create_app(FleetSource(fleet), token=READ, api=AggregatorApi.factory(fleet, IngestLimits(None)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        assert (await c.post(INGEST_PATH, json={"events": batch("n", 2)})).status_code == 401
        ok = await c.post(INGEST_PATH, json={"events": batch("n", 2)}, headers=READER)
        assert ok.status_code == 200 and ok.json()["events_processed"] == 2


async def test_a_batch_the_store_could_not_keep_is_taken_again(fleet: FleetStore, monkeypatch: Any) -> None:
    fleet.ingest(batch("node-a", 1))
    store = fleet.nodes()["node-a"]
    real = store.add_rows

    def full(rows: Any, counts: Any, blocks: Any = None) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "add_rows", full)
    with pytest.raises(OSError):
        fleet.ingest(batch("node-a", 5, 1))
    monkeypatch.setattr(store, "add_rows", real)
    retry = fleet.ingest(batch("node-a", 5, 1))  # the agent got a 500 and sends the batch again
    assert (retry.accepted, retry.duplicates) == (5, 0)


async def test_a_write_that_fails_in_the_ingest_thread_is_answered_with_an_error(
    fleet: FleetStore, client: httpx.AsyncClient, monkeypatch: Any
) -> None:
    # a batch is checked in one thread and written in another: the answer waits for the write, and a write that
    # fails is a 503 (the agent keeps the batch and retries), never a 200 for events that were not stored
    from netspy_tui.store import StoreError

    assert (await client.post(INGEST_PATH, json={"events": batch("node-a", 1)}, headers=AGENT)).status_code == 200
    store = fleet.nodes()["node-a"]
    real = store.add_rows

    def full(rows: Any, counts: Any, blocks: Any = None) -> None:
        raise StoreError("cannot write to the event store: database or disk is full", lost=len(rows))

    monkeypatch.setattr(store, "add_rows", full)
    r = await client.post(INGEST_PATH, json={"events": batch("node-a", 5, 1)}, headers=AGENT)
    assert r.status_code == 503 and "disk is full" in r.text
    assert fleet.stats()["events_by_node"] == {"node-a": 1}
    monkeypatch.setattr(store, "add_rows", real)
    r = await client.post(INGEST_PATH, json={"events": batch("node-a", 5, 1)}, headers=AGENT)  # the agent's retry
    assert r.status_code == 200 and (r.json()["events_processed"], r.json()["duplicates"]) == (5, 0)
    assert fleet.stats()["events_by_node"] == {"node-a": 6}


async def test_batches_posted_together_are_each_stored_once(fleet: FleetStore, client: httpx.AsyncClient) -> None:
    # several agents' batches in flight at once (checked and written in two threads): every answer says what was
    # stored, a batch sent again while its first copy is in flight is counted once
    posts = [client.post(INGEST_PATH, json={"events": batch(node, 40, start)}, headers=AGENT)
             for start in (0, 40) for node in ("node-a", "node-b", "node-c")]  # fmt: skip
    posts.append(client.post(INGEST_PATH, json={"events": batch("node-b", 40, 40)}, headers=AGENT))
    answers = await asyncio.gather(*posts)
    assert all(r.status_code == 200 for r in answers)
    assert sum(r.json()["events_processed"] for r in answers) == 240
    assert sum(r.json()["duplicates"] for r in answers) == 40
    assert fleet.stats()["events_by_node"] == {"node-a": 80, "node-b": 80, "node-c": 80}


async def test_metrics_sum_the_nodes(client: httpx.AsyncClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for node, n in (("node-a", 8), ("node-b", 4)):
        await client.post(INGEST_PATH, json={"events": batch(node, n)}, headers=AGENT)
    text = (await client.get("/metrics", headers=READER)).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    connects = sum(s.value for s in families["netspy_connects"].samples if s.name == "netspy_connects_total")
    summary = (await client.get("/api/connection-summary", headers=READER)).json()
    assert connects == summary["count"] == 9


async def test_the_dashboard_shows_every_nodes_events_from_an_aggregator(fleet: FleetStore) -> None:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.tui.app import NetspyApp
    from tests.tui.scenes import wait_for

    fleet.ingest(batch("node-a", 8) + batch("node-b", 4) + batch("node-c", 4))
    source = HttpSource("http://127.0.0.1", token=READ, transport=httpx.ASGITransport(app=app_of(fleet)))
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.25, source_note="aggregator")
            async with app.run_test(size=(160, 45)) as pilot:
                table = app.dashboard.connections
                await wait_for(pilot, lambda: table.row_count == 12, "12 connection rows from 3 nodes")
                assert {e.k8s_node_name for e in table.events.values()} == {"node-a", "node-b", "node-c"}
                assert "aggregator" in app.dashboard.status.build().plain
    finally:
        await source.aclose()


async def test_what_the_store_kept_of_a_batch_is_not_asked_again(fleet: FleetStore, monkeypatch: Any) -> None:
    from netspy_tui.store import StoreError

    fleet.ingest(batch("node-a", 1))
    store = fleet.nodes()["node-a"]
    real = store.add_rows

    def partly(rows: Any, counts: Any, blocks: Any = None) -> None:
        real(rows[1:], counts)  # (its blocks hold them all: made again from the rows)
        raise StoreError("1 event could not be stored (value out of range)", lost=1)

    monkeypatch.setattr(store, "add_rows", partly)
    result = fleet.ingest(batch("node-a", 4, 1))
    assert result.accepted == 3 and [why for _, why in result.rejected] == [
        "not stored: 1 event could not be stored (value out of range)."
    ]
    assert fleet.stats()["events_by_node"] == {"node-a": 4}


async def test_events_after_the_fleets_cursor_are_those_stored_since_whatever_their_times(
    fleet: FleetStore, monkeypatch: Any, tmp_path: Any
) -> None:
    """``/api/events`` of one type takes serve's ``after`` extension and answers its ``cursor``: the fleet's
    insertion position. After it: exactly the events stored since (an agent's backlog of minutes-old events as
    well as the newest), each once; a cursor this aggregator cannot answer for (of before its restart, or older
    than what it remembers) is answered by time alone, as without one. Listings of both types are unchanged."""
    from datetime import UTC, datetime, timedelta

    from netspy_tui.fleet import store as fleet_store
    from netspy_tui.models import format_time

    def events(node: str, ids: range, ago: float, **extra: Any) -> list[dict[str, Any]]:
        out = [connection_json(pid=70, command="app", port=4000 + i, ago=ago, **extra) for i in ids]
        for i, event in zip(ids, out, strict=True):
            event.update(id=f"{node}-{i}", k8s_node_name=node)
        return out

    async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
        since = format_time(datetime.now(UTC) - timedelta(seconds=600))
        r = await client.get("/api/events", params={"type": "connection", "since": since, "limit": 100, **params},
                             headers=READER)  # fmt: skip
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def ingest(client: httpx.AsyncClient, batch_: list[dict[str, Any]]) -> None:
        r = await client.post(INGEST_PATH, json={"events": batch_}, headers=AGENT)
        assert r.status_code == 200 and r.json()["success"], r.text

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(fleet)), base_url="http://127.0.0.1") as c:
        await ingest(c, events("node-a", range(4), 1))
        first = await listed(c)
        assert first["count"] == 4 and isinstance(first["cursor"], int)
        assert {"events", "count", "total_count", "query_time", "filters"} <= set(first)
        await ingest(c, events("node-b", range(3), 200, workload="web") + events("node-b", range(3, 4), 900))
        after = await listed(c, after=first["cursor"])
        assert sorted(e["id"] for e in after["events"]) == ["node-b-0", "node-b-1", "node-b-2"]  # (900 s: too old)
        assert after["total_count"] == 3 and after["cursor"] > first["cursor"]
        again = await listed(c, after=after["cursor"])
        assert again["events"] == [] and again["total_count"] == 0 and again["cursor"] == after["cursor"]
        assert (await listed(c, after=first["cursor"], node="node-a"))["events"] == []
        web = await listed(c, after=first["cursor"], workload="web")
        assert web["count"] == 3 and web["cursor"] == after["cursor"]
        both = (await c.get("/api/events", params={"limit": 100}, headers=READER)).json()
        assert both["count"] == 8 and "cursor" not in both  # (of both types: as the contract has it)

        monkeypatch.setattr(fleet_store, "MAX_MARKS", 2)  # what it remembers: two batches
        for n in range(3):
            await ingest(c, events("node-c", range(n, n + 1), 1))
        forgotten = await listed(c, after=after["cursor"])  # older than the marks kept: by time alone
        assert forgotten["count"] == 10 and forgotten["cursor"] > after["cursor"]

    durable = FleetStore(tmp_path / "fleet")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(durable)), base_url="http://127.0.0.1") as c:
        await ingest(c, events("node-a", range(2), 1))
        before = (await listed(c))["cursor"]
    durable.close()
    durable = FleetStore(tmp_path / "fleet")  # a restart: the stores kept, the positions not
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(durable)),
                                     base_url="http://127.0.0.1") as c:  # fmt: skip
            await ingest(c, events("node-a", range(2, 3), 1))
            restarted = await listed(c, after=before)
            assert restarted["count"] == 3 and restarted["cursor"] > before  # by time: nothing missed
    finally:
        durable.close()


async def test_an_empty_batch_and_an_empty_aggregators_stats_read_as_the_go_aggregator_writes_them(
    client: httpx.AsyncClient,
) -> None:
    """``{}`` and ``{"events": null}`` are an empty batch to the Go aggregator (a 400 here said the body was not
    an object); before any event ``last_event_time`` is Go's zero time (it was "", which RFC3339 parsers refuse)."""
    stats = (await client.get("/api/stats", headers=READER)).json()
    assert stats["last_event_time"] == "0001-01-01T00:00:00Z" and stats["aggregation_start"].endswith("Z")
    for body in ({}, {"events": None}, {"events": []}):
        r = await client.post(INGEST_PATH, json=body, headers=AGENT)
        assert r.status_code == 200 and r.json()["events_processed"] == 0, (body, r.text)
    for bad in ([], {"events": 5}, {"events": {"a": 1}}):
        r = await client.post(INGEST_PATH, json=bad, headers=AGENT)
        assert r.status_code == 400 and "must be a JSON object" in r.text, (bad, r.text)
    await client.post(INGEST_PATH, json={"events": batch("node-a", 1)}, headers=AGENT)
    assert (await client.get("/api/stats", headers=READER)).json()["last_event_time"] != "0001-01-01T00:00:00Z"
