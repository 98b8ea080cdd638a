"""The fake eBPF server speaks each API generation per the contract, and misbehaves on request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests import contract
from tests.contract import validate_response
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import GENERATIONS, FakeEbpfServer

NOW = datetime.now(UTC)


def _events() -> list[dict[str, Any]]:
    return [
        connection_json(pid=100, command="curl", ago=10),
        connection_json(pid=100, command="curl", ip="::1", port=8080, ago=20),
        connection_json(pid=200, command="wget", ip="10.0.0.1", port=80, ago=50, k8s_node_name="worker-1"),
        connection_json(pid=300, command="ssh", ip="10.0.0.2", port=22, ago=90, k8s_node_name="worker-2"),
        connection_json(pid=300, command="ssh", ip="10.0.0.2", port=22, ago=7200),
        drop_json(pid=400, command="nginx", ago=5, k8s_node_name="worker-1", k8s_namespace="web"),
        drop_json(pid=400, command="nginx", reason="UDP_DROP", code=3, ago=30),
        drop_json(pid=500, command="dnsmasq", ago=600),
    ]


@pytest.fixture(params=GENERATIONS)
def server(request: pytest.FixtureRequest) -> Iterator[FakeEbpfServer]:
    with FakeEbpfServer(request.param, events=_events()) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def _spec(generation: str) -> contract.Spec:
    return "aggregator" if generation == "aggregator" else "server"


# Every endpoint of every generation: (method, path, query, json body, definition(s)).
_SEED = [
    ("GET", "/health", None, None, ["HealthResponse"]),
    ("POST", "/api/connection-summary", None, {"pid": 100, "command": "curl", "duration_seconds": 60}, None),
    ("POST", "/api/connection-summary", None, {"process_name": "curl", "duration_seconds": 60}, None),
    ("GET", "/api/list-connections", None, None, ["ConnectionListResponse"]),
    ("POST", "/api/list-connections", None, {"pid": 100, "limit": 20}, ["ConnectionListResponse"]),
]
_SEED = [(m, p, q, b, d or ["ConnectionSummaryResponse"]) for m, p, q, b, d in _SEED]
_CURRENT = _SEED + [
    ("GET", "/", None, None, ["ServiceInfo"]),
    ("GET", "/api/connection-summary", {"pid": "100", "command": "curl", "duration_seconds": "30"}, None,
     ["ConnectionSummaryResponse"]),
    ("GET", "/api/packet-drop-summary", {"duration_seconds": "60"}, None, ["PacketDropSummaryResponse"]),
    ("POST", "/api/packet-drop-summary", None, {"pid": 400, "duration_seconds": 60}, ["PacketDropSummaryResponse"]),
    ("GET", "/api/list-packet-drops", None, None, ["PacketDropListResponse"]),
    ("GET", "/api/events", None, None, ["EventsResponse"]),
    ("GET", "/api/events", {"type": "connection", "pid": "100", "command": "curl", "limit": "1"}, None,
     ["EventsResponse"]),
    ("GET", "/api/events", {"since": "2020-01-01T00:00:00Z", "until": "2100-01-01T00:00:00+02:00"}, None,
     ["EventsResponse"]),
    ("GET", "/api/programs", None, None, ["ProgramsResponse"]),
]  # fmt: skip
_AGGREGATOR = [
    (m, p, q, b, d + (["AggregatedSummaryResponse"] if "summary" in p else [])
     + (["AggregatedListResponse"] if "/api/list-" in p else []))
    for m, p, q, b, d in _CURRENT
    if not (p.startswith("/api/list-") and m == "POST")  # the aggregator answers 405 there
] + [
    ("GET", "/api/events", {"k8s_node_name": "worker-1", "k8s_namespace": "web"}, None, ["EventsResponse"]),
    ("GET", "/api/stats", None, None, ["AggregationStatsResponse"]),
    ("POST", "/api/events/ingest", None, {"events": [connection_json(ago=1, k8s_node_name="worker-3")]},
     ["IngestResponse"]),
]  # fmt: skip
ENDPOINTS = {"seed": _SEED, "current": _CURRENT, "aggregator": _AGGREGATOR}


def test_every_endpoint_validates(server: FakeEbpfServer, client: httpx.Client) -> None:
    spec = _spec(server.generation)
    for method, path, query, body, defs in ENDPOINTS[server.generation]:
        resp = client.request(method, server.url + path, params=query, json=body)
        assert resp.status_code == 200, (method, path, resp.text)
        assert resp.headers["content-type"] == "application/json"
        for definition in defs:
            validate_response(definition, resp.json(), spec)


def test_endpoint_tables_cover_the_specs() -> None:
    """Each generation's table exercises every documented operation that generation has."""
    for generation, table in ENDPOINTS.items():
        exercised = {(m, p) for m, p, *_ in table}
        documented = set(contract.operations(_spec(generation)))
        if generation == "seed":
            expected = {("GET", "/health"), ("POST", "/api/connection-summary"), ("GET", "/api/list-connections")}
        elif generation == "current":
            expected = documented - {("GET", "/api/stats"), ("POST", "/api/events/ingest")}
        else:
            expected = documented
        assert expected <= exercised, (generation, expected - exercised)


def test_errors_are_plain_text(server: FakeEbpfServer, client: httpx.Client) -> None:
    resp = client.get(server.url + "/no/such/path")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text == "404 page not found\n"
    bad = client.post(server.url + "/api/connection-summary", content=b"{not json")
    assert (bad.status_code, bad.text) == (400, "Invalid JSON\n")
    wrong_type = client.post(server.url + "/api/connection-summary", json={"pid": "100"})
    assert wrong_type.status_code == 400


# --- generation differences ----------------------------------------------------------------


def test_seed_has_no_events_endpoint_and_honours_post_filters(client: httpx.Client) -> None:
    with FakeEbpfServer("seed", events=_events()) as srv:
        for path in ("/api/events", "/api/programs", "/api/packet-drop-summary", "/api/list-packet-drops", "/"):
            resp = client.get(srv.url + path, params={"limit": 1})
            assert (resp.status_code, resp.headers["content-type"]) == (404, "text/plain; charset=utf-8"), path
        assert client.get(srv.url + "/api/connection-summary").status_code == 405
        by_alias = client.post(srv.url + "/api/connection-summary", json={"process_name": "curl", "pid": 0})
        assert by_alias.json()["count"] == 2
        assert by_alias.json()["command"] == "curl"
        listed = client.post(srv.url + "/api/list-connections", json={"pid": 100, "limit": 1}).json()
        assert list(listed["events_by_pid"]) == ["100"]
        assert listed["total_events"] == 1
        everything = client.get(srv.url + "/api/list-connections", params={"pid": 100}).json()
        assert set(everything["events_by_pid"]) == {"100", "200", "300"}  # GET takes no filters


def test_current_ignores_process_name(client: httpx.Client) -> None:
    with FakeEbpfServer("current", events=_events()) as srv:
        resp = client.post(srv.url + "/api/connection-summary", json={"process_name": "curl"}).json()
        assert (resp["command"], resp["count"]) == ("", 3)  # 10 s, 20 s and 50 s ago


@pytest.mark.parametrize("generation", ["current", "aggregator"])
def test_list_connections_quirk_ignores_filters_and_method(generation: str, client: httpx.Client) -> None:
    recent = [connection_json(pid=1000 + i, ago=1 + i) for i in range(150)]
    old = [connection_json(pid=7, ago=3700 + i) for i in range(5)]
    with FakeEbpfServer(generation, events=old + recent) as srv:
        answers = [client.get(srv.url + "/api/list-connections", params={"pid": 1000, "limit": 5}).json()]
        if generation == "current":
            answers.append(client.post(srv.url + "/api/list-connections", json={"pid": 1000, "limit": 5}).json())
        else:
            assert client.post(srv.url + "/api/list-connections", json={}).status_code == 405
        for body in answers:
            validate_response("ConnectionListResponse", body, _spec(generation))
            assert body["total_events"] == 100
            assert "7" not in body["events_by_pid"]  # older than an hour
            pids = sorted(int(p) for p in body["events_by_pid"])
            assert pids == list(range(1000, 1100))  # the newest 100


def test_events_filters_limit_and_echo(client: httpx.Client) -> None:
    with FakeEbpfServer("current", events=_events()) as srv:
        url = srv.url + "/api/events"
        everything = client.get(url).json()
        assert everything["count"] == everything["total_count"] == 8
        assert everything["filters"] == {"limit": 100}
        times = [datetime.fromisoformat(e["time"]) for e in everything["events"]]
        assert times == sorted(times, reverse=True)

        conns = client.get(url, params={"type": "connection", "pid": "100", "limit": "1"}).json()
        assert conns["count"] == 1 and conns["total_count"] == 2
        assert conns["filters"] == {"type": "connection", "pid": 100, "limit": 1}

        since = (datetime.now(UTC) - timedelta(seconds=40)).replace(microsecond=0)
        recent = client.get(url, params={"since": since.isoformat(), "command": "nginx"}).json()
        assert [e["pid"] for e in recent["events"]] == [400, 400]
        assert recent["filters"]["since"] == since.isoformat().replace("+00:00", "Z")
        assert recent["filters"]["command"] == "nginx"

        until = datetime.now(UTC) - timedelta(seconds=3600)
        old = client.get(url, params={"until": until.isoformat()}).json()
        assert [e["pid"] for e in old["events"]] == [300]

        ignored = client.get(url, params={"pid": "abc", "since": "yesterday", "limit": "-3"}).json()
        assert ignored["total_count"] == 8 and ignored["filters"] == {"limit": 100}

        many = [connection_json(ago=1) for _ in range(120)]
        srv.events.extend(many)  # visible to the next request
        capped = client.get(url).json()
        assert capped["count"] == 100 and capped["total_count"] == 128


def test_summary_counts_the_window(client: httpx.Client) -> None:
    with FakeEbpfServer("current", events=_events()) as srv:

        def count(path: str, **params: Any) -> int:
            return client.get(srv.url + path, params=params).json()["count"]

        assert count("/api/connection-summary") == 3  # default 60 s: 10, 20, 50 s ago
        assert count("/api/connection-summary", duration_seconds=15) == 1
        assert count("/api/connection-summary", duration_seconds=100) == 4
        assert count("/api/connection-summary", duration_seconds=86400) == 5
        assert count("/api/connection-summary", duration_seconds=86400, pid=300) == 2
        assert count("/api/connection-summary", duration_seconds=86400, command="wget") == 1
        assert count("/api/packet-drop-summary") == 2
        assert count("/api/packet-drop-summary", duration_seconds=3600) == 3
        post = client.post(srv.url + "/api/packet-drop-summary", json={"command": "nginx", "duration_seconds": 10})
        assert post.json() == {**post.json(), "count": 1, "pid": 0, "command": "nginx", "duration_seconds": 10}


def test_aggregator_ingest_stats_and_node_filters(client: httpx.Client) -> None:
    with FakeEbpfServer("aggregator", events=_events()) as srv:
        pushed = [drop_json(pid=900, ago=1, k8s_node_name="worker-9"), connection_json(pid=901, ago=1)]
        ingest = client.post(srv.url + "/api/events/ingest", json={"events": pushed})
        validate_response("IngestResponse", ingest.json(), "aggregator")
        assert ingest.json()["events_processed"] == 2
        assert client.get(srv.url + "/api/events/ingest").status_code == 405
        assert client.post(srv.url + "/api/events/ingest", content=b"[").text == "Bad request\n"

        stats = client.get(srv.url + "/api/stats").json()
        validate_response("AggregationStatsResponse", stats, "aggregator")
        assert stats["total_events"] == 10
        assert stats["events_by_type"] == {"connection": 6, "packet_drop": 4}
        assert stats["events_by_node"] == {"worker-1": 2, "worker-2": 1, "worker-9": 1}
        assert stats["connected_agents"] == 3

        node = client.get(srv.url + "/api/events", params={"k8s_node_name": "worker-1"}).json()
        assert sorted(e["pid"] for e in node["events"]) == [200, 400]
        assert node["filters"]["k8s_node_name"] == "worker-1"
        by_alias = client.get(srv.url + "/api/events", params={"node": "worker-9"}).json()
        assert [e["pid"] for e in by_alias["events"]] == [900]

        summary = client.get(srv.url + "/api/connection-summary", params={"duration_seconds": 100}).json()
        assert summary["count_by_node"] == {"worker-1": 1, "worker-2": 1}
        assert summary["total_nodes"] == 2
        for path in ("/api/stats", "/api/events/ingest"):
            with FakeEbpfServer("current") as current:
                assert client.get(current.url + path).status_code == 404


# --- misbehaviour --------------------------------------------------------------------------


def test_fail_with_counts_down_and_can_target_a_path(client: httpx.Client) -> None:
    with FakeEbpfServer("current", events=_events()) as srv:
        srv.fail_with(503, times=2)
        for _ in range(2):
            resp = client.get(srv.url + "/health")
            assert (resp.status_code, resp.text) == (503, "System not initialized\n")
            assert resp.headers["content-type"] == "text/plain; charset=utf-8"
        assert client.get(srv.url + "/health").status_code == 200

        srv.fail_with(500, "Internal server error", path="/api/events")
        assert client.get(srv.url + "/health").status_code == 200
        assert client.get(srv.url + "/api/events").status_code == 500
        assert client.get(srv.url + "/api/events").status_code == 500  # until reset
        srv.reset()
        assert client.get(srv.url + "/api/events").status_code == 200

        for status in (400, 404):
            srv.fail_with(status, "nope", times=1)
            assert (client.get(srv.url + "/health").status_code, client.get(srv.url + "/health").status_code) == (
                status,
                200,
            )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>502 Bad Gateway</html>", "text/html"),
        (b'{"events": [{"id": "00', "application/json"),
        (b'{"events": "none", "count": "two"}', "application/json"),
        (b"", "application/json"),
    ],
    ids=["html", "truncated", "wrong-types", "empty"],
)
def test_reply_raw(body: bytes, content_type: str, client: httpx.Client) -> None:
    with FakeEbpfServer("current") as srv:
        srv.reply_raw(body, content_type, times=1)
        resp = client.get(srv.url + "/api/events")
        assert (resp.status_code, resp.content, resp.headers["content-type"]) == (200, body, content_type)
        assert client.get(srv.url + "/api/events").json()["count"] == 0  # one time only


def test_delay_causes_read_timeout_and_release_is_prompt(client: httpx.Client) -> None:
    with FakeEbpfServer("current") as srv:
        srv.delay(30)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get(srv.url + "/health", timeout=0.3)
        assert time.monotonic() - started < 5
        srv.release()
        assert client.get(srv.url + "/health").status_code == 200

        srv.delay(30, path="/api/events")
        assert client.get(srv.url + "/health", timeout=2).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            client.get(srv.url + "/api/events", timeout=0.3)
        started = time.monotonic()
        srv.stop()  # a held request must not hold up shutdown
        assert time.monotonic() - started < 3


def test_stop_and_start_on_the_same_port(client: httpx.Client) -> None:
    srv = FakeEbpfServer("current", events=_events()).start()
    try:
        url = srv.url
        assert client.get(url + "/health").status_code == 200  # leaves a keep-alive connection
        srv.stop()
        assert not srv.running
        with pytest.raises(httpx.TransportError):
            client.get(url + "/health")
        srv.start()
        assert srv.url == url
        assert client.get(url + "/api/events").json()["count"] == 8
    finally:
        srv.stop()


def test_requests_are_recorded(client: httpx.Client) -> None:
    with FakeEbpfServer("seed") as srv:
        client.post(srv.url + "/api/connection-summary?x=1", json={"pid": 5, "duration_seconds": 30})
        client.get(srv.url + "/api/list-connections", params={"pid": "", "limit": "3"}, headers={"X-Test": "yes"})
        got = srv.wait_for_requests(2)
        assert (got[0].method, got[0].path, got[0].query, got[0].body) == (
            "POST",
            "/api/connection-summary",
            {"x": "1"},
            {"pid": 5, "duration_seconds": 30},
        )
        assert (got[1].method, got[1].query, got[1].body, got[1].raw_body) == (
            "GET",
            {"pid": "", "limit": "3"},
            None,
            b"",
        )
        assert got[1].headers["x-test"] == "yes"
        assert srv.requests_to("/api/list-connections") == [got[1]]
        with pytest.raises(AssertionError, match="expected 3"):
            srv.wait_for_requests(3, timeout=0.05)


def test_malformed_events_are_served_not_fatal(client: httpx.Client) -> None:
    broken = connection_json(ago=1)
    broken["time"] = "not a time"
    broken["pid"] = "1234"
    with FakeEbpfServer("current", events=[broken, connection_json(ago=2)]) as srv:
        everything = client.get(srv.url + "/api/events").json()
        assert everything["count"] == 2  # no time filter: served as it is
        windowed = client.get(srv.url + "/api/connection-summary").json()
        assert windowed["count"] == 1  # an unparseable time is Go's zero time
        with pytest.raises(contract.ContractViolation):
            validate_response("EventsResponse", everything)


def test_go_null_slices_knob(client: httpx.Client) -> None:
    """The real server encodes an empty result as null (a nil Go slice); the knob reproduces it."""
    with FakeEbpfServer("current", programs=[], go_null_slices=True) as srv:
        assert client.get(srv.url + "/api/events").json()["events"] is None
        assert client.get(srv.url + "/api/programs").json()["programs"] is None
        srv.events.append(connection_json(ago=1))
        assert len(client.get(srv.url + "/api/events").json()["events"]) == 1
    with FakeEbpfServer("current", programs=[]) as srv:
        assert client.get(srv.url + "/api/events").json()["events"] == []
