"""The served API, in process: contract-exact JSON for GET and seed POST forms, filters, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from netspy_tui.errors import ServerUnavailable
from netspy_tui.models import ConnectionEvent, EventQuery, Scope, SourceInfo, parse_event
from netspy_tui.serve import create_app, event_json
from netspy_tui.telemetry.memory import MemorySource
from tests.contract import validate_event, validate_response
from tests.factories import connection, connection_json

pytestmark = pytest.mark.quiet

# (method, path, query, JSON body, definition) for every endpoint, current GET and seed POST forms.
CASES: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str]] = [
    ("GET", "/", None, None, "ServiceInfo"),
    ("GET", "/health", None, None, "HealthResponse"),
    ("GET", "/api/connection-summary", None, None, "ConnectionSummaryResponse"),
    ("GET", "/api/connection-summary", {"pid": 100, "command": "curl", "duration_seconds": 30}, None,
     "ConnectionSummaryResponse"),
    ("POST", "/api/connection-summary", None,
     {"pid": 100, "command": "curl", "process_name": "curl", "duration_seconds": 60}, "ConnectionSummaryResponse"),
    ("POST", "/api/connection-summary", None, {"process_name": "curl", "duration_seconds": 60},
     "ConnectionSummaryResponse"),
    ("GET", "/api/packet-drop-summary", {"pid": 400}, None, "PacketDropSummaryResponse"),
    ("POST", "/api/packet-drop-summary", None, {"command": "nginx", "duration_seconds": 60},
     "PacketDropSummaryResponse"),
    ("GET", "/api/list-connections", None, None, "ConnectionListResponse"),
    ("GET", "/api/list-connections", {"pid": 100, "limit": 1}, None, "ConnectionListResponse"),
    ("POST", "/api/list-connections", None, {"pid": 100, "limit": 20}, "ConnectionListResponse"),
    ("GET", "/api/list-packet-drops", None, None, "PacketDropListResponse"),
    ("POST", "/api/list-packet-drops", None, {"process_name": "nginx"}, "PacketDropListResponse"),
    ("GET", "/api/events", None, None, "EventsResponse"),
    ("GET", "/api/events", {"type": "connection", "pid": 100, "command": "curl", "limit": 1}, None,
     "EventsResponse"),
    ("GET", "/api/events", {"type": "packet_drop", "since": "2020-01-01T00:00:00Z",
                            "until": "2100-01-01T00:00:00+02:00"}, None, "EventsResponse"),
    ("GET", "/api/programs", None, None, "ProgramsResponse"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "body", "definition"), CASES)
async def test_every_endpoint_matches_the_contract(
    client: httpx.AsyncClient, method: str, path: str, query: Any, body: Any, definition: str
) -> None:
    resp = await client.request(method, path, params=query, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    payload = resp.json()
    for spec in ("server", "aggregator"):  # the shapes are the same in both published specs
        validate_response(definition, payload, spec)


async def test_events_carry_every_contract_field(client: httpx.AsyncClient) -> None:
    events = (await client.get("/api/events")).json()["events"]
    assert len(events) == 8
    v6 = next(e for e in events if e.get("address_family") == 10)
    assert v6["destination"] == "[2606:2800:220:1:248:1893:25c8:1946]:443"
    assert len(v6["raw_ipv6"]) == 16 and v6["raw_ipv6"][:2] == [0x26, 0x06]
    for event in events:
        assert event["time"].endswith("Z")
        assert None not in event.values()  # optional fields are absent, never null
        # The JSON parses back to the same event the source holds.
        assert parse_event(event).time == datetime.fromisoformat(event["time"])


# --- summaries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({}, 3),  # default 60 s: 10, 20 and 50 s ago
        ({"duration_seconds": 15}, 1),
        ({"duration_seconds": 100}, 4),
        ({"duration_seconds": 86400}, 5),
        ({"duration_seconds": 0}, 3),  # zero is "the default", as an unset Go field
        ({"duration_seconds": 86400, "pid": 300}, 2),
        ({"duration_seconds": 86400, "command": "wget"}, 1),
        ({"duration_seconds": 86400, "pid": 0}, 5),  # pid 0 = no filter
        ({"duration_seconds": 86400, "command": "nope"}, 0),
    ],
)
async def test_connection_summary_counts_the_window(client: httpx.AsyncClient, params: dict, count: int) -> None:
    got = (await client.get("/api/connection-summary", params=params)).json()
    assert got["count"] == count
    posted = (await client.post("/api/connection-summary", json=params)).json()
    assert posted["count"] == count
    assert got["duration_seconds"] == posted["duration_seconds"] == (params.get("duration_seconds") or 60)
    assert got["pid"] == params.get("pid", 0) and got["command"] == params.get("command", "")


async def test_summary_matches_the_source_count(client: httpx.AsyncClient, source: MemorySource) -> None:
    for kind, path in (("connection", "/api/connection-summary"), ("packet_drop", "/api/packet-drop-summary")):
        for window in (10, 45, 120, 3600):
            served = (await client.get(path, params={"duration_seconds": window})).json()["count"]
            assert served == await source.count(Scope(kind, None, None, window)), (kind, window)


async def test_packet_drop_summary_seed_alias(client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/packet-drop-summary", json={"process_name": "nginx", "pid": 0})).json()
    assert (body["count"], body["command"], body["pid"]) == (2, "nginx", 0)
    both = (await client.post("/api/packet-drop-summary", json={"command": "dnsmasq", "process_name": "nginx",
                                                                  "duration_seconds": 3600})).json()  # fmt: skip
    assert (both["command"], both["count"]) == ("dnsmasq", 1)  # command wins over the alias


# --- lists honour filters (unlike the original) ---------------------------------------------


async def test_list_connections_honours_filters_from_query_and_body(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/list-connections")).json()
    assert everything["total_events"] == 4  # the 2-hour-old event is outside the last hour
    assert set(everything["events_by_pid"]) == {"100", "200", "300"}
    newest_first = [e["time"] for e in everything["events_by_pid"]["100"]]
    assert newest_first == sorted(newest_first, reverse=True)

    by_pid = (await client.get("/api/list-connections", params={"pid": 100})).json()
    assert list(by_pid["events_by_pid"]) == ["100"] and by_pid["total_events"] == 2
    limited = (await client.post("/api/list-connections", json={"pid": 100, "limit": 1})).json()
    assert limited["total_events"] == 1
    assert limited["events_by_pid"]["100"][0]["time"] == newest_first[0]
    by_name = (await client.post("/api/list-connections", json={"process_name": "wget"})).json()
    assert list(by_name["events_by_pid"]) == ["200"]
    wider = (await client.get("/api/list-connections", params={"duration_seconds": 86400, "pid": 300})).json()
    assert wider["total_events"] == 2
    drops = (await client.get("/api/list-packet-drops", params={"command": "nginx", "limit": 1})).json()
    assert drops["total_events"] == 1 and drops["events_by_pid"]["400"][0]["drop_reason"] == "TCP_DROP"


async def test_list_default_limit_is_100(source: MemorySource) -> None:
    source.add_events([connection(pid=1000 + i, ago=1 + i / 10) for i in range(150)])
    transport = httpx.ASGITransport(app=create_app(source))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        body = (await c.get("/api/list-connections")).json()
        validate_response("ConnectionListResponse", body)
        assert body["total_events"] == 100
        assert (await c.get("/api/list-connections", params={"limit": 10000})).json()["total_events"] == 154


# --- /api/events --------------------------------------------------------------------------


async def test_events_filters_and_echo(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/events")).json()
    assert everything["count"] == everything["total_count"] == 8
    assert everything["filters"] == {"limit": 100}
    times = [datetime.fromisoformat(e["time"]) for e in everything["events"]]
    assert times == sorted(times, reverse=True)  # both kinds merged, newest first
    assert {e["type"] for e in everything["events"]} == {"connection", "packet_drop"}

    page = (await client.get("/api/events", params={"type": "connection", "pid": 100, "limit": 1})).json()
    assert (page["count"], page["total_count"]) == (1, 2)
    assert page["filters"] == {"type": "connection", "pid": 100, "limit": 1}

    since = datetime.now(UTC) - timedelta(seconds=40)
    recent = (await client.get("/api/events", params={"since": since.isoformat(), "command": "nginx"})).json()
    assert [e["pid"] for e in recent["events"]] == [400, 400]
    assert recent["filters"]["command"] == "nginx"
    assert datetime.fromisoformat(recent["filters"]["since"]) == since
    assert recent["filters"]["since"].endswith("Z")

    until = datetime.now(UTC) - timedelta(hours=1)
    old = (await client.get("/api/events", params={"until": until.isoformat().replace("+00:00", "Z")})).json()
    assert [e["pid"] for e in old["events"]] == [300]

    limited = (await client.get("/api/events", params={"limit": 3})).json()
    assert (limited["count"], limited["total_count"]) == (3, 8)
    assert limited["events"] == everything["events"][:3]


async def test_since_is_exclusive_until_inclusive(client: httpx.AsyncClient, source: MemorySource) -> None:
    page = await source.query(EventQuery(kind="connection", pid=200))
    stamp = page.events[0].time.isoformat()
    assert (await client.get("/api/events", params={"pid": 200, "since": stamp})).json()["count"] == 0
    assert (await client.get("/api/events", params={"pid": 200, "until": stamp})).json()["count"] == 1


# --- bad input: 400, plain text, naming the parameter ---------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "named"),
    [
        ("GET", "/api/events", {"limit": "abc"}, None, "limit"),
        ("GET", "/api/events", {"limit": "-5"}, None, "limit"),
        ("GET", "/api/events", {"limit": "10001"}, None, "limit"),
        ("GET", "/api/events", {"limit": "1.5"}, None, "limit"),
        ("GET", "/api/events", {"pid": "abc"}, None, "pid"),
        ("GET", "/api/events", {"pid": "-1"}, None, "pid"),
        ("GET", "/api/events", {"pid": str(2**32)}, None, "pid"),
        ("GET", "/api/events", {"type": "tcp"}, None, "type"),
        ("GET", "/api/events", {"since": "yesterday"}, None, "since"),
        ("GET", "/api/events", {"since": "2026-11-24"}, None, "since"),
        ("GET", "/api/events", {"until": "2026-11-24T12:00:00"}, None, "until"),
        ("GET", "/api/events", {"until": "2026-13-45T12:00:00Z"}, None, "until"),
        ("GET", "/api/events", {"since": "2026-11-24T13:00:00Z", "until": "2026-11-24T12:00:00Z"}, None, "since"),
        ("GET", "/api/events", {"k8s_node_name": "worker-1"}, None, "k8s_node_name"),
        ("GET", "/api/events", {"command": "x" * 300}, None, "command"),
        ("GET", "/api/connection-summary", {"duration_seconds": "-1"}, None, "duration_seconds"),
        ("GET", "/api/connection-summary", {"duration_seconds": "soon"}, None, "duration_seconds"),
        ("GET", "/api/connection-summary", {"duration_seconds": str(10**12)}, None, "duration_seconds"),
        ("POST", "/api/connection-summary", None, {"pid": True}, "pid"),
        ("POST", "/api/connection-summary", None, {"pid": 1.5}, "pid"),
        ("POST", "/api/connection-summary", None, {"command": 5}, "command"),
        ("POST", "/api/connection-summary", None, {"process_name": ["curl"]}, "process_name"),
        ("POST", "/api/packet-drop-summary", None, {"duration_seconds": "a while"}, "duration_seconds"),
        ("POST", "/api/list-connections", None, {"limit": -1}, "limit"),
        ("POST", "/api/list-packet-drops", None, {"pid": {"eq": 1}}, "pid"),
        ("GET", "/api/list-connections", {"limit": "lots"}, None, "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, method: str, path: str, query: Any, body: Any, named: str
) -> None:
    resp = await client.request(method, path, params=query, json=body)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.text.startswith(f"{named} "), resp.text
    assert resp.text.count("\n") == 1 and "Traceback" not in resp.text


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"curl"', b"\xff\xfe"])
async def test_bad_json_bodies_are_400(client: httpx.AsyncClient, raw: bytes) -> None:
    resp = await client.post("/api/connection-summary", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.text.startswith("Invalid JSON") and resp.headers["content-type"].startswith("text/plain")


async def test_empty_post_body_means_defaults(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/connection-summary")
    assert resp.status_code == 200 and resp.json()["count"] == 3


async def test_unknown_paths_and_methods_are_plain_text(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nope")
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"
    wrong = await client.post("/api/events", json={})
    assert (wrong.status_code, wrong.text) == (405, "Method not allowed\n")
    assert "GET" in wrong.headers["allow"]
    assert (await client.delete("/health")).status_code == 405


# --- failures of the source -----------------------------------------------------------------


class UnhealthySource(MemorySource):
    async def info(self) -> SourceInfo:
        return SourceInfo(label="embedded", kind="embedded", generation="embedded", healthy=False,
                          detail="collector not started")  # fmt: skip


class BrokenSource(MemorySource):
    async def query(self, q: EventQuery) -> Any:
        raise RuntimeError("disk on fire\nTraceback (most recent call last): secret internals")

    async def count(self, *args: Any) -> int:
        raise ServerUnavailable("the eBPF server at http://10.0.0.9:8080 is not answering", "start it")

    async def info(self) -> SourceInfo:
        raise RuntimeError("info exploded")


async def _get(app_source: MemorySource, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(app_source))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        return await c.get(path)


async def test_unhealthy_source_is_503_on_health_only() -> None:
    """503 (a probe fails) with the health answer's text fields and why, not the bare "System not initialized" that
    read as "still starting"; every value a string, as the contract types the 503 (a map of strings)."""
    source = UnhealthySource()
    resp = await _get(source, "/health")
    assert resp.status_code == 503 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status"] == "unhealthy" and body["detail"] == "collector not started"
    assert {"status", "component", "uptime", "version", "source", "detail"} <= set(body)
    assert all(isinstance(v, str) for v in body.values()), body  # (the contract's 503: a map of strings)
    assert (await _get(source, "/api/events")).status_code == 200


async def test_source_failures_are_plain_text_without_traceback() -> None:
    source = BrokenSource()
    boom = await _get(source, "/api/events")
    assert (boom.status_code, boom.text) == (500, "Internal server error\n")
    unavailable = await _get(source, "/api/connection-summary")
    assert unavailable.status_code == 503
    assert unavailable.text == "the eBPF server at http://10.0.0.9:8080 is not answering. Start it.\n"
    health = await _get(source, "/health")
    assert (health.status_code, health.text) == (503, "System not initialized\n")


# --- event serialization --------------------------------------------------------------------


def test_event_json_fills_what_a_collector_left_out() -> None:
    bare = ConnectionEvent(pid=9, command="python3", time=datetime.now(UTC), destination_ip="::1",
                           destination_port=53, destination="[::1]:53", address_family=10, protocol="UDP",
                           socket_type="DGRAM", timestamp=5)  # fmt: skip
    data = event_json(bare)
    validate_event(data)
    assert data["raw_ipv6"] == [0] * 15 + [1]
    assert data["id"] == event_json(bare)["id"]  # stable across requests
    full = connection_json(ago=1, outcome="refused", return_code=-111, sampled=True, source="procfs")
    # a complete event goes out as it came in, saying it is a connect() (an added field: absent means outbound)
    assert event_json(parse_event(full)) == {**full, "direction": "outbound"}


async def test_untrusted_command_text_is_escaped_and_undecodable_bytes_replaced() -> None:
    odd = [
        connection(pid=1, command="[bold]x\x1b[31m\n", ago=1),
        connection(pid=2, command=b"ab\xffcd".decode("utf-8", "surrogateescape"), ago=2),
    ]
    resp = await _get(MemorySource(odd), "/api/events")
    assert resp.status_code == 200
    commands = [e["command"] for e in resp.json()["events"]]
    assert commands == ["[bold]x\x1b[31m\n", "ab\ufffdcd"]
    validate_response("EventsResponse", resp.json())


async def test_a_repeated_parameter_an_unencoded_plus_and_a_huge_number_are_answered_as_a_go_client_expects(
    client: httpx.AsyncClient,
) -> None:
    """A parameter given twice is read as Go's ``Query().Get`` reads it, the first (the last was used); a ``+`` left
    unencoded in a time (a space once decoded) is named with its fix; a number past 19 digits is out of range,
    not "not an integer"."""
    twice = await client.get("/api/events?type=connection&type=packet_drop&pid=100&pid=400")
    assert twice.status_code == 200 and twice.json()["filters"]["type"] == "connection"
    assert twice.json()["filters"]["pid"] == 100 and {e["pid"] for e in twice.json()["events"]} == {100}
    plus = await client.get("/api/events?since=2026-12-08T00:00:00+01:00")
    assert plus.status_code == 400 and plus.text.count("\n") == 1
    assert "encode it as %2B, e.g. 2026-12-08T00:00:00%2B01:00" in plus.text, plus.text
    encoded = await client.get("/api/events?since=2026-12-08T00:00:00%2B01:00")
    assert encoded.status_code == 200, encoded.text
    for name in ("limit", "pid"):
        huge = await client.get(f"/api/events?{name}=99999999999999999999")
        assert huge.status_code == 400 and f"{name} is out of range" in huge.text, huge.text


def in_process(source: MemorySource) -> httpx.AsyncClient:
    """A client of the app made now (it reads the Kubernetes environment when it is made)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(source)), base_url="http://127.0.0.1")


async def test_kubernetes_filters_on_summaries_and_lists_answer_as_on_events(
    source: MemorySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/api/events`` answers ``k8s_pod_name``/``k8s_namespace``/``node`` from this server's own pod (its own
    value: every event; another: none; no metadata: a 400); the summaries and lists ignored them, so a pod that
    is not this one read every event here. They answer as ``/api/events`` does."""
    async with in_process(source) as c:
        for path in ("/api/connection-summary", "/api/list-packet-drops", "/api/events"):
            r = await c.get(path, params={"k8s_namespace": "x"})
            assert r.status_code == 400 and "no Kubernetes metadata" in r.text, (path, r.text)
    monkeypatch.setenv("K8S_NODE_NAME", "node-k")
    monkeypatch.setenv("K8S_POD_NAME", "agent-k")
    monkeypatch.setenv("K8S_POD_NAMESPACE", "obs")
    async with in_process(source) as c:
        own, other = {"k8s_namespace": "obs", "node": "node-k"}, {"k8s_pod_name": "agent-z"}
        every = (await c.get("/api/connection-summary", params={"duration_seconds": 3600})).json()["count"]
        assert every > 0
        assert (await c.get("/api/connection-summary", params={**own, "duration_seconds": 3600})).json()["count"] \
            == every  # fmt: skip
        assert (await c.get("/api/connection-summary", params=other)).json()["count"] == 0
        assert (await c.post("/api/packet-drop-summary", json={"k8s_pod_name": "agent-z"})).json()["count"] == 0
        listed = (await c.get("/api/list-connections", params=own)).json()
        assert listed["total_events"] > 0
        assert (await c.get("/api/list-connections", params=other)).json() | {"query_time": ""} == {
            "total_pids": 0, "total_events": 0, "events_by_pid": {}, "query_time": ""}  # fmt: skip
