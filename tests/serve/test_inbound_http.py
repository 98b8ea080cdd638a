"""``GET /api/inbound``: a netspy-tui ``serve`` lists the connections local processes accepted, so a dashboard,
``--tool`` or ``repl`` over ``--server`` sees them as the embedded source does; the client asks a server
without the path (an ebpf-server) once, and ``list_connections`` then says the source does not see them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import ConnectionEvent, EventPage, EventQuery, format_time
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.aggregate import AggregatorApi, IngestLimits
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.mcp.test_inbound_tools import NOW, seeded_source

Q = EventQuery("connection", limit=100)


def rows(page: EventPage | None) -> list[tuple[Any, ...]]:
    """What a user sees of each accepted connection: who accepted it where, who connected, when, its id."""
    assert page is not None
    return [(e.direction, e.pid, e.command, e.destination_ip, e.destination_port, e.peer_ip, e.peer_port,
             e.time, e.id) for e in page.events if isinstance(e, ConnectionEvent)]  # fmt: skip


async def test_the_served_inbound_connections_are_the_stores() -> None:
    source = seeded_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
                body = (await c.get("/api/inbound")).json()
            assert set(body) == {"events", "count", "total_count", "available", "query_time"}
            assert (body["available"], body["count"], body["total_count"]) == (True, 4, 4)
            assert body["events"][0]["peer_ip"] == "fd00::7" and body["events"][0]["direction"] == "inbound"
            # the contract's raw fields agree with the readable ones (10.0.0.2, TCP, a stream socket)
            first = body["events"][0]
            assert (first["raw_ipv4"], first["raw_ipv6"], first["raw_protocol"], first["raw_socktype"]) == (
                int.from_bytes(bytes([10, 0, 0, 2]), "little"), [0] * 16, 6, 1)  # fmt: skip
            http = HttpSource(srv.url, retries=0)
            try:
                served = await http.inbound(Q)
                direct = await source.inbound(Q)
                assert rows(served) == rows(direct) and len(rows(served)) == 4
                assert [r[1:7] for r in rows(served)] == [
                    (202, "sshd", "10.0.0.2", 22, "fd00::7", 40000),
                    (101, "nginx", "10.0.0.2", 443, "10.0.0.8", 52000),
                    (101, "nginx", "10.0.0.2", 443, "10.0.0.8", 52000),
                    (101, "nginx", "10.0.0.2", 443, "10.0.0.9", 51000),
                ]
                since = NOW - timedelta(seconds=4)
                for q in (EventQuery("connection", command="nginx", limit=2), EventQuery("connection", pid=202),
                          EventQuery("connection", since=since), EventQuery("connection", until=since)):  # fmt: skip
                    page, want = await http.inbound(q), await source.inbound(q)
                    assert page is not None and want is not None
                    assert rows(page) == rows(want), q
                    assert (page.total_count, page.truncated) == (want.total_count, want.truncated), q
                nginx = await http.inbound(EventQuery("connection", command="nginx", limit=2))
                assert nginx is not None and (nginx.total_count, len(nginx.events), nginx.truncated) == (3, 2, True)
            finally:
                await http.aclose()
    finally:
        await source.aclose()


async def test_list_connections_over_http_lists_them() -> None:
    source = seeded_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            http = HttpSource(srv.url, retries=0)
            try:
                async with open_gateway(http) as gateway:
                    inbound = await gateway.connections(direction="inbound")
                    text = (await gateway.call("list_connections", {"direction": "inbound"})).text
                    both = await gateway.connections(direction="all")
            finally:
                await http.aclose()
    finally:
        await source.aclose()
    assert inbound.inbound_available is True and inbound.total_count == 4
    assert [(e.command, e.destination, e.peer_ip, e.peer_port) for e in inbound.events] == [
        ("sshd", "10.0.0.2:22", "fd00::7", 40000),
        ("nginx", "10.0.0.2:443", "10.0.0.8", 52000),
        ("nginx", "10.0.0.2:443", "10.0.0.8", 52000),
        ("nginx", "10.0.0.2:443", "10.0.0.9", 51000),
    ]
    assert text.startswith("All processes: 4 of 4 inbound connections, newest first")
    assert "sshd            <- [fd00::7]:40000" in text and "does not see" not in text
    assert both.total_count == 6 and sorted(e.direction for e in both.events) == ["inbound"] * 4 + ["outbound"] * 2


async def test_an_ebpf_server_without_the_path_is_asked_once() -> None:
    with FakeEbpfServer("current", events=[connection_json(pid=7, command="curl", ago=2)]) as fake:
        http = HttpSource(fake.url, retries=0)
        try:
            for _ in range(3):
                assert await http.inbound(Q) is None
            async with open_gateway(http) as gateway:
                listed = await gateway.connections(direction="inbound")
                text = (await gateway.call("list_connections", {"direction": "all"})).text
        finally:
            await http.aclose()
        assert len(fake.requests_to("/api/inbound")) == 1
    assert listed.inbound_available is False and listed.events == []
    assert "this source does not see inbound connections" in text and "curl" in text  # (all: the connects still)
    with FakeEbpfServer("seed", events=[connection_json(ago=2)]) as seed:
        http = HttpSource(seed.url, retries=0)
        try:
            assert await http.inbound(Q) is None
        finally:
            await http.aclose()
        assert seed.requests_to("/api/inbound") == []  # the seed generation is never asked


async def test_sources_that_do_not_see_them_answer_unavailable() -> None:
    fleet = FleetStore(None)
    aggregator = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(None)))
    try:
        for app in (create_app(MemorySource([connection(pid=7, command="curl", ago=1)])), aggregator):
            with BackgroundServer(app) as srv:
                async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
                    resp = await c.get("/api/inbound", params={"command": "nginx"})
                    root = (await c.get("/")).json()
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert (body["available"], body["events"], body["count"], body["total_count"]) == (False, [], 0, 0)
                assert "GET /api/inbound" in root["endpoints"]
                http = HttpSource(srv.url, retries=0)
                try:
                    assert await http.inbound(Q) is None
                    async with open_gateway(http) as gateway:
                        text = (await gateway.call("list_connections", {"direction": "inbound"})).text
                finally:
                    await http.aclose()
                assert "this source does not see inbound connections" in text
    finally:
        fleet.close()


async def test_bad_parameters_are_a_400_naming_them() -> None:
    source = seeded_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
                t = format_time(NOW)
                for params, word in (({"pid": "abc"}, "pid"), ({"pid": -1}, "pid"), ({"limit": 10_001}, "limit"),
                                     ({"limit": "many"}, "limit"), ({"since": "yesterday"}, "since"),
                                     ({"until": "2026-13-01"}, "until"), ({"command": "x" * 300}, "command"),
                                     ({"since": t, "until": t}, "since must be earlier than until")):  # fmt: skip
                    resp = await c.get("/api/inbound", params=params)
                    assert resp.status_code == 400, (params, resp.text)
                    assert word in resp.text and resp.text.count("\n") == 1, (params, resp.text)
                ok = await c.get("/api/inbound", params={"limit": 10_000, "pid": 202})
                assert ok.status_code == 200 and ok.json()["count"] == 1
    finally:
        await source.aclose()
