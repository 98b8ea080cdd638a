"""The aggregator's fast ingest path (a batch checked in one pass in C, rows made without a model per
event) stores, lists, counts and de-duplicates exactly what the model's way does: the same batches
ingested both ways give the same answers, and a batch of the fast path sent again after a restart
is not counted twice."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.fleet.store import FleetStore, parse_batch
from netspy_tui.fleet.wire import BOUNDS, WireConnection, WireDrop
from netspy_tui.models import EventQuery, PacketDropEvent, Scope, format_time, ns_to_time, parse_event
from netspy_tui.serve.app import event_json
from tests.factories import connection_json, drop_json

pytestmark = pytest.mark.quiet

NODES = ("node-a", "node-b")


def _at(seconds_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds_ago)


def fast_events() -> list[dict[str, Any]]:
    """Events of every shape the fast path takes (what serve --forward and the Go agents send)."""
    out: list[dict[str, Any]] = []
    for i in range(40):
        node = NODES[i % 2]
        out.append(connection_json(pid=100 + i % 4, port=400 + i % 3, ago=5 + i % 7, k8s_node_name=node))
    out.append(connection_json(pid=7, return_code=-111, ago=3, k8s_node_name="node-a"))  # refused, by its code
    out.append(connection_json(pid=7, outcome="timeout", workload="docker abc", hostname="example.org",
                               protocol_inferred=True, ago=4, k8s_node_name="node-b"))  # fmt: skip
    out.append(connection_json(pid=8, command="café 🚀", ip="2001:db8::1", ago=6, k8s_node_name="node-a"))
    no_id = connection_json(pid=9, ago=7, k8s_node_name="node-a")
    del no_id["id"]  # keyed by what it is
    offset = connection_json(pid=9, k8s_node_name="node-b")
    del offset["id"]
    offset["time"] = _at(8).astimezone(timezone(timedelta(hours=2))).isoformat(timespec="microseconds")
    short = connection_json(pid=10, ago=9, k8s_node_name="node-a")
    short["time"] = _at(9).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    whole = connection_json(pid=10, k8s_node_name="node-b")
    whole["time"] = _at(10).strftime("%Y-%m-%dT%H:%M:%SZ")
    tenth = connection_json(pid=11, k8s_node_name="node-a")  # 27 characters, as format_time's are, but not its form
    tenth["time"] = _at(10.5).astimezone(timezone(timedelta(hours=5))).strftime("%Y-%m-%dT%H:%M:%S.%f")[:21] + "+05:00"
    out += [no_id, offset, short, whole, tenth]
    # the contract's forms: a kernel drop reason in fields of its own, MPTCP as Unknown(n) with its name
    kernel = PacketDropEvent(drop_reason="NO_SOCKET", drop_reason_code=3, protocol="UDP", time=_at(11), pid=3, id="k1")
    out.append({**event_json(kernel), "k8s_node_name": "node-a"})
    out.append({**event_json(parse_event(connection_json(protocol="MPTCP", ago=12))), "k8s_node_name": "node-b"})
    for i in range(10):
        out.append(drop_json(pid=20 + i % 2, reason="NETFILTER_DROP", code=5, ago=2 + i, k8s_node_name=NODES[i % 2]))
    return out


def slow_events() -> list[dict[str, Any]]:
    """Valid events the fast path leaves to the model (a time in nanoseconds, a field of its own, ...; not its lax
    forms: "32" for a pid is refused, test_ingest_refuses_what_the_contract_types_do_not_allow)."""
    nano = connection_json(pid=30, k8s_node_name="node-a")
    nano["time"] = _at(13).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # RFC 3339 nano (Go's)
    extra = connection_json(pid=31, ago=14, k8s_node_name="node-b", zone="eu-1")
    offset = connection_json(pid=32, k8s_node_name="node-a")
    offset["time"] = _at(15).astimezone(timezone(timedelta(hours=-5))).strftime("%Y-%m-%dT%H:%M:%S.%f") + "789-05:00"
    empty_name = {**connection_json(pid=33, ago=16, k8s_node_name="node-b"), "protocol_name": ""}
    null_reason = drop_json(pid=34, ago=17, k8s_node_name="node-a", kernel_drop_reason=None)
    return [nano, extra, offset, empty_name, null_reason]


def body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events}).encode()


def answers(fleet: FleetStore, now: datetime) -> dict[str, Any]:
    """What a user of each node's store sees: the events listed (as the contract's JSON), their counts
    and the window's figures."""
    out: dict[str, Any] = {}
    for node, store in sorted(fleet.nodes().items()):
        for kind in ("connection", "packet_drop"):
            page = store.query(EventQuery(kind=kind, limit=500))
            scope = Scope(kind, window=600)  # type: ignore[arg-type]
            out[f"{node} {kind}"] = ([event_json(e) for e in page.events], page.total_count,
                                     store.count(scope, now), store.stats(scope, now=now))  # fmt: skip
    stats = fleet.stats()
    stats.pop("aggregation_start")
    out["stats"] = stats
    return out


def test_the_fast_path_gives_what_the_models_give_and_a_replay_after_a_restart_is_not_counted(tmp_path: Path) -> None:
    fast, slow = fast_events(), slow_events()
    items = parse_batch(body(fast))
    assert all(isinstance(e, WireConnection | WireDrop) for e in items)  # the whole batch checked in C
    assert not any(isinstance(e, WireConnection | WireDrop) for e in parse_batch(body(slow)))  # the models' way
    viafast = FleetStore(tmp_path / "fast")
    viamodel = FleetStore(tmp_path / "model")
    for fleet, batches in ((viafast, [items, parse_batch(body(slow))]), (viamodel, [fast, slow])):
        results = [fleet.ingest(b) for b in batches]
        assert [(r.accepted, r.duplicates, r.rejected) for r in results] == [(len(fast), 0, []), (len(slow), 0, [])]
    now = datetime.now(UTC)
    expected = answers(viamodel, now)
    assert answers(viafast, now) == expected
    listed = expected["node-b connection"][0]
    assert any(e.get("protocol_name") == "MPTCP" for e in listed) and any(e.get("zone") == "eu-1" for e in listed)
    viafast.close()
    viamodel.close()

    reopened = FleetStore(tmp_path / "fast")
    again = reopened.ingest(parse_batch(body(fast)))  # the agent never saw the answer: the same batch again
    assert (again.accepted, again.duplicates) == (0, len(fast))
    assert answers(reopened, now) == expected
    reopened.close()


def test_one_bad_event_sends_the_batch_the_models_way_and_the_rest_is_kept() -> None:
    fleet = FleetStore(None)
    events = fast_events()
    events[3]["time"] = "2026-02-30T10:00:00Z"  # the shape the fast path takes, a day that does not exist
    events[5]["destination_port"] = 2**64  # beyond what the store holds
    items = parse_batch(body(events))
    result = fleet.ingest(items)
    assert result.accepted == len(events) - 2
    assert [i for i, _ in result.rejected] == [3, 5] and result.rejected[0][1].startswith("time:")
    assert sum(fleet.stats()["events_by_node"].values()) == len(events) - 2
    fleet.close()


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_an_integer_out_of_its_range_is_refused_as_the_model_way_refuses_it(name: str) -> None:
    # the decoder checks the ranges (in C): at the edges the batch stays on the fast path; one beyond sends it the
    # model's way, where that event alone is refused with the reason ingest always gave, the rest kept
    lo, hi = BOUNDS[name]
    drop = name in ("skb_length", "packet_size_bytes")

    def events(value: int) -> list[dict[str, Any]]:
        out = [drop_json(pid=20 + i, ago=2 + i, k8s_node_name="node-a") if drop else
               connection_json(pid=20 + i, ago=2 + i, k8s_node_name="node-a") for i in range(4)]  # fmt: skip
        out[2][name] = value
        return out

    for edge in (lo, hi):
        if edge is not None:
            assert all(isinstance(e, WireConnection | WireDrop) for e in parse_batch(body(events(edge))))
    for beyond in ([lo - 1] if lo is not None else []) + ([hi + 1] if hi is not None else []):
        items = parse_batch(body(events(beyond)))
        assert not any(isinstance(e, WireConnection | WireDrop) for e in items)  # (the model's way)
        fleet = FleetStore(None)
        result = fleet.ingest(items)
        assert result.accepted == 3 and [i for i, _ in result.rejected] == [2]
        assert name in result.rejected[0][1].split(":")[0], result.rejected
        fleet.close()


def test_an_event_the_fast_path_declines_after_decoding_is_judged_by_the_model() -> None:
    fleet = FleetStore(None)
    events = fast_events()[:4]
    events[1]["time"] = "2026-02-30T10:00:00Z"  # decodes (the pattern fits), the date does not exist
    items = parse_batch(body(events))
    assert all(isinstance(e, WireConnection | WireDrop) for e in items)
    result = fleet.ingest(items)
    assert result.accepted == 3 and [i for i, _ in result.rejected] == [1] and result.rejected[0][1].startswith("time:")
    fleet.close()


async def test_the_fleets_page_builds_only_what_it_keeps_and_is_the_merge_of_the_nodes_pages() -> None:
    from netspy_tui.fleet.merge import merge_pages
    from netspy_tui.fleet.source import FleetSource

    fleet = FleetStore(None)
    events = fast_events()
    same = _at(1)  # equal times (and timestamps) on both nodes: ties keep the nodes' order, then each one's
    for i in range(6):
        events.append(connection_json(pid=50 + i, time=same, timestamp=7, k8s_node_name=NODES[i % 2]))
    assert not fleet.ingest(parse_batch(body(events))).rejected
    source = FleetSource(fleet)
    for kind in ("connection", "packet_drop"):
        for limit in (1, 5, 9, 500):
            q = EventQuery(kind=kind, limit=limit)  # type: ignore[arg-type]
            want = merge_pages([store.query(q) for store in fleet.nodes().values()], limit)
            got = await source.query(q)
            assert got.cursor == fleet.seq  # (the fleet's insertion position: the merge of pages has none)
            # (and of connections the fleet's resolution position)
            assert got.resolved_cursor == (fleet.resolved_position if kind == "connection" else None)
            got = got.model_copy(update={"cursor": None, "resolved_cursor": None})
            assert got == want and [event_json(e) for e in got.events] == [event_json(e) for e in want.events]
            assert len(got.events) == min(limit, got.total_count)
    fleet.close()


async def test_api_events_written_from_the_stored_json_answer_what_the_models_answer(monkeypatch: Any) -> None:
    import httpx

    from netspy_tui.fleet.source import FleetSource
    from netspy_tui.serve import forward
    from netspy_tui.serve.aggregate import AggregatorApi, IngestLimits
    from netspy_tui.serve.app import create_app

    fleet = FleetStore(None)
    events = fast_events()
    same = _at(1)  # ties across kinds and nodes
    events += [connection_json(pid=60, time=same, timestamp=5, k8s_node_name="node-a"),
               connection_json(pid=62, time=same, timestamp=5, k8s_node_name="node-b"),
               drop_json(pid=61, time=same, timestamp=5, k8s_node_name="node-b")]  # fmt: skip
    assert not fleet.ingest(parse_batch(body(events))).rejected
    assert not fleet.ingest(parse_batch(body(slow_events()))).rejected
    source = FleetSource(fleet)
    slow = []
    real = forward._slow
    monkeypatch.setattr(forward, "_slow", lambda item, identity: slow.append(item) or real(item, identity))
    app = create_app(source, api=AggregatorApi.factory(fleet, IngestLimits("agents")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for params in ({}, {"limit": 3}, {"type": "connection", "limit": 500}, {"type": "packet_drop"},
                       {"node": "node-a", "limit": 40}, {"command": "curl", "limit": 7}, {"pid": 7}):  # fmt: skip
            answer = (await client.get("/api/events", params=params)).json()
            limit = int(params.get("limit", 100))
            built = []
            total = 0
            for kind in (params["type"],) if "type" in params else ("connection", "packet_drop"):
                page = await source.query(EventQuery(kind=kind, limit=limit, node=params.get("node"),  # type: ignore[arg-type]
                                                     command=params.get("command"), pid=params.get("pid")))  # fmt: skip
                built += page.events
                total += page.total_count
            built.sort(key=lambda e: (e.time, e.timestamp), reverse=True)
            want = [event_json(e) for e in built[:limit]]
            assert answer["events"] == want and answer["count"] == len(want), params
            assert answer["total_count"] == max(total, len(want)) and answer["filters"]["limit"] == limit
    # the plain events were written without a model; the others (MPTCP, an extra field, ...) through theirs
    assert slow and len(slow) < len(events) // 4
    fleet.close()


def test_times_as_format_time_writes_them_are_read_as_the_model_reads_them() -> None:
    """The fast path reads a time of format_time's form (``…ss.ffffffZ``) from its minute's instant plus its
    seconds; whatever is not exactly that form, or names no real day, hour, minute or second, is the model's
    to judge: the same verdict and instant as the model gives."""
    fleet = FleetStore(None)
    texts = ["2026-12-03T17:00:00.000000Z", "2026-12-03T17:59:59.999999Z", "2024-02-29T23:59:30.000001Z",
             "1999-12-31T00:00:01.500000Z", "2026-12-03T17:00:00.000000Z", "2026-12-03T17:00:07.25+01:00",
             "2026-02-29T10:00:00.000000Z", "2026-12-03T24:00:00.000000Z", "2026-12-03T10:60:00.000000Z",
             "2026-12-03T10:00:60.000000Z", "0000-01-01T00:00:00.000000Z", "2026-12-03T10:00:0\uff15.000000Z",
             "2026-12-03T10:00:05.1_2345Z", "2026-12-03 10:00:05.123456Z", "2026-W49-3T10:00:05.123456Z",
             "2026-12-03T10:00:05.123456789Z", "2026-12-03T10:00:05Z"]  # fmt: skip
    events, want = [], {}
    for i, text in enumerate(texts):
        event = connection_json(pid=900 + i, k8s_node_name="node-a", id=f"t{i}")
        event["time"] = text
        events.append(event)
        try:
            want[900 + i] = parse_event(dict(event)).time
        except ValueError:
            pass
    assert 5 < len(want) < len(texts)
    items = parse_batch(body(events))
    assert all(isinstance(e, WireConnection) for e in items)
    result = fleet.ingest(items)
    assert result.accepted == len(want)
    assert [900 + i for i, _ in result.rejected] == [pid for pid in range(900, 900 + len(texts)) if pid not in want]
    assert all(why.startswith("time:") for _, why in result.rejected)
    stored = {e.pid: e.time for e in fleet.nodes()["node-a"].query(EventQuery(limit=100)).events}
    assert stored == want
    fleet.close()


def test_any_instant_written_by_format_time_is_stored_as_the_model_reads_it() -> None:
    rng = random.Random(7)
    fleet = FleetStore(None, retention_seconds=None)
    events = []
    now = int(datetime.now(UTC).timestamp()) * 10**9
    for i in range(2000):  # instants from 1970 to now (later ones are refused), any second and microsecond
        event = connection_json(pid=i, k8s_node_name="node-a", id=f"r{i}")
        event["time"] = format_time(ns_to_time(rng.randrange(0, now)))
        events.append(event)
    result = fleet.ingest(parse_batch(body(events)))
    assert (result.accepted, result.rejected) == (2000, [])
    stored = {e.pid: e.time for e in fleet.nodes()["node-a"].query(EventQuery(limit=5000)).events}
    assert stored == {e["pid"]: parse_event(dict(e)).time for e in events}
    fleet.close()
