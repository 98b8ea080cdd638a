"""HttpSource against a real HTTP server on 127.0.0.1, for every API generation and failure."""

from __future__ import annotations

import pytest

from netspy_tui.errors import ContractError, ServerError, ServerUnavailable
from netspy_tui.models import EventQuery, Scope
from netspy_tui.telemetry.client import HttpSource, probe
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer


def _events() -> list[dict]:
    return [
        connection_json(pid=100, command="curl", ip="93.184.216.34", port=443, ago=30),
        connection_json(pid=100, command="curl", ip="93.184.216.34", port=443, ago=20),
        connection_json(pid=200, command="nginx", ip="10.0.0.5", port=5432, ago=10),
        connection_json(pid=100, command="curl", ip="10.0.0.1", port=80, ago=1800),
        drop_json(pid=200, command="nginx", reason="TCP_DROP", ago=5),
    ]


@pytest.mark.parametrize("generation", ["seed", "current", "aggregator"])
async def test_detects_generation_and_answers_the_same(generation):
    with FakeEbpfServer(generation, events=_events()) as srv:
        source = HttpSource(srv.url)
        try:
            assert await source.generation() == generation
            info = await source.info()
            assert info.healthy and info.generation == generation and srv.url in info.label
            page = await source.query(EventQuery(command="curl", limit=10))
            assert [e.command for e in page.events] == ["curl"] * 3
            assert page.events[0].time > page.events[1].time
            assert await source.count(Scope("connection", None, "curl", 60)) == 2
            stats = await source.stats(Scope("connection", None, None, 60))
            assert stats.total == 3 and stats.processes[0].command == "curl"
        finally:
            await source.aclose()


async def test_current_generation_uses_filtered_events_endpoint():
    with FakeEbpfServer("current", events=_events()) as srv:
        source = HttpSource(srv.url)
        try:
            await source.query(EventQuery(pid=200, limit=5))
            await source.count(Scope("packet_drop", 200, None, 60))
        finally:
            await source.aclose()
        q = srv.requests_to("/api/events")[-1].query
        assert q["type"] == "connection" and q["pid"] == "200" and q["limit"] == "5"
        assert srv.requests_to("/api/packet-drop-summary")[-1].method == "GET"
        assert not srv.requests_to("/api/list-connections")


async def test_seed_generation_uses_post_bodies_and_filters_on_the_client():
    with FakeEbpfServer("seed", events=_events()) as srv:
        source = HttpSource(srv.url)
        try:
            page = await source.query(EventQuery(pid=100, command="curl", limit=1))
            count = await source.count(Scope("connection", 100, "curl", 60))
        finally:
            await source.aclose()
        lst = srv.requests_to("/api/list-connections")[-1]
        assert lst.method == "POST" and lst.body["pid"] == 100
        summary = srv.requests_to("/api/connection-summary")[-1]
        assert summary.method == "POST" and summary.body["duration_seconds"] == 60 and summary.body["pid"] == 100
        assert page.total_count == 3 and len(page.events) == 1 and count == 2


async def test_seed_generation_has_no_packet_drops():
    with FakeEbpfServer("seed", events=_events()) as srv:
        source = HttpSource(srv.url)
        try:
            with pytest.raises(ServerError, match="seed API, which has no packet-drop endpoints"):
                await source.query(EventQuery(kind="packet_drop"))
        finally:
            await source.aclose()


async def test_incremental_since_returns_only_newer_events():
    with FakeEbpfServer("current", events=_events()) as srv:
        source = HttpSource(srv.url)
        try:
            first = await source.query(EventQuery(limit=100))
            newest = first.events[0].time
            again = await source.query(EventQuery(since=newest))
            srv.events.append(connection_json(pid=300, command="wget", ago=0))
            fresh = await source.query(EventQuery(since=newest))
        finally:
            await source.aclose()
    assert again.events == []
    assert [e.command for e in fresh.events] == ["wget"]


async def test_connection_refused_is_one_line_naming_the_url():
    srv = FakeEbpfServer("current").start()
    url = srv.url
    srv.stop()
    source = HttpSource(url, retries=1, backoff=0.01)
    try:
        with pytest.raises(ServerUnavailable) as info:
            await source.info() and await source.query(EventQuery())
    finally:
        await source.aclose()
    message = str(info.value)
    assert url in message and "connection refused" in message and "--server" in message
    assert "\n" not in message
    assert not await probe(url)


async def test_info_reports_unhealthy_instead_of_raising():
    srv = FakeEbpfServer("current").start()
    url = srv.url
    srv.stop()
    source = HttpSource(url, retries=0)
    try:
        info = await source.info()
    finally:
        await source.aclose()
    assert not info.healthy and "Cannot reach" in info.detail


async def test_plain_text_500_body_is_shown_on_one_line():
    with FakeEbpfServer("current", events=_events()) as srv:
        source = HttpSource(srv.url, retries=0)
        try:
            await source.generation()
            srv.fail_with(500, "database \x1b[31mexploded\nstack...", path="/api/events")
            with pytest.raises(ServerError) as info:
                await source.query(EventQuery())
        finally:
            await source.aclose()
    message = str(info.value)
    assert "answered 500 on /api/events: database \\x1b[31mexploded" in message and "\n" not in message


async def test_503_is_retried_with_backoff_then_succeeds():
    with FakeEbpfServer("current", events=_events()) as srv:
        source = HttpSource(srv.url, retries=2, backoff=0.01)
        try:
            await source.generation()
            srv.fail_with(503, times=2, path="/api/events")
            page = await source.query(EventQuery())
        finally:
            await source.aclose()
    assert len(page.events) == 4
    assert len(srv.requests_to("/api/events")) == 1 + 3


async def test_503_that_persists_says_not_ready():
    with FakeEbpfServer("current") as srv:
        source = HttpSource(srv.url, retries=1, backoff=0.01)
        try:
            await source.generation()
            srv.fail_with(503)
            with pytest.raises(ServerError, match="not ready .*System not initialized"):
                await source.count(Scope("connection", None, None, 60))
        finally:
            await source.aclose()


async def test_slow_response_hits_the_read_timeout_with_a_clear_message():
    with FakeEbpfServer("current") as srv:
        source = HttpSource(srv.url, read_timeout=0.3, retries=0)
        try:
            await source.generation()
            srv.delay(30, path="/api/events")
            with pytest.raises(ServerUnavailable, match=r"did not answer /api/events within 0.3 s \(read timeout\)"):
                await source.query(EventQuery())
        finally:
            srv.release()
            await source.aclose()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"events": [', "not JSON"),
        (
            b'{"events": [{"type": "connection", "pid": "abc", "time": "2026-11-24T12:00:00Z"}]}',
            "unexpected JSON on /api/events (events.0.connection.pid",
        ),
        (b'{"events": "nope"}', "unexpected JSON on /api/events (events"),
    ],
)
async def test_broken_bodies_are_contract_errors(body, fragment):
    with FakeEbpfServer("current") as srv:
        source = HttpSource(srv.url, retries=0)
        try:
            await source.generation()
            srv.reply_raw(body, path="/api/events")
            with pytest.raises(ContractError) as info:
                await source.query(EventQuery())
        finally:
            await source.aclose()
    assert fragment in str(info.value)


async def test_large_responses_parse():
    events = [connection_json(pid=1000 + i % 50, command=f"p{i % 50}", ago=i % 50) for i in range(100_000)]
    with FakeEbpfServer("current", events=events) as srv:
        source = HttpSource(srv.url, read_timeout=60)
        try:
            page = await source.query(EventQuery(limit=100_000))
        finally:
            await source.aclose()
    assert len(page.events) == 100_000


async def test_programs_and_bearer_token_header():
    with FakeEbpfServer("current", events=_events()) as srv:
        source = HttpSource(srv.url, token="s3cret-token")
        try:
            programs = await source.programs()
        finally:
            await source.aclose()
        assert programs and all(p.name for p in programs)
        assert srv.requests[-1].headers.get("authorization") == "Bearer s3cret-token"


async def test_go_null_slices_read_as_empty():
    with FakeEbpfServer("current", events=[], programs=[], go_null_slices=True) as srv:
        source = HttpSource(srv.url)
        try:
            page = await source.query(EventQuery())
            programs = await source.programs()
            stats = await source.stats(Scope("connection", None, None, 60))
        finally:
            await source.aclose()
    assert page.events == [] and programs == [] and stats.total == 0
