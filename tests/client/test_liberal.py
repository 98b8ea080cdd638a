"""Be liberal in what the contract allows: payloads the ebpf-server's own specs permit, sent by a real
HTTP server on 127.0.0.1, read through HttpSource and the MCP tools (a real in-memory MCP session)."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import EventQuery, EventsResponse, Scope, SummaryResponse
from netspy_tui.telemetry.client import HttpSource
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer

NOTE_ONE = "Note: the server sent 1 item that is not an event (null or an unknown kind); it was skipped."


def _events() -> list[dict]:
    return [
        connection_json(pid=4242, command="curl", ago=3),
        connection_json(pid=4242, command="curl", ago=2),
        drop_json(pid=4242, command="curl", ago=1),
    ]


async def _call_all(url: str) -> dict[str, tuple[bool, str, dict]]:
    source = HttpSource(url, retries=0)
    calls = {
        "list_connections": {},
        "list_packet_drops": {},
        "analyze_patterns": {},
        "analyze_packet_drops": {},
        "get_network_summary": {"pid": 4242, "process_name": "curl"},
        "list_processes": {},
    }
    out = {}
    try:
        async with Client(create_server(source)) as client:
            for name, args in calls.items():
                result = await client.call_tool(name, args)
                out[name] = (result.is_error, result.content[0].text, result.structured_content or {})
    finally:
        await source.aclose()
    return out


@pytest.mark.parametrize("generation", ["current", "aggregator"])
async def test_null_event_items_are_skipped_counted_and_said_once(generation, caplog):
    with FakeEbpfServer(generation, events=_events(), not_events=[None]) as srv:
        with caplog.at_level(logging.WARNING, logger="netspy_tui.telemetry.client"):
            results = await _call_all(srv.url)
    for name, (is_error, text, _) in results.items():
        assert not is_error, (name, text)
    _, text, data = results["list_connections"]
    assert data["returned"] == 2 and data["not_events"] == 1 and data["total_count"] == 2
    assert text.count(NOTE_ONE) == 1
    _, text, data = results["list_packet_drops"]
    assert data["returned"] == 1 and data["not_events"] == 1 and text.count(NOTE_ONE) == 1
    _, text, data = results["analyze_patterns"]
    assert data["stats"]["total"] == 2 and data["stats"]["not_events"] == 1 and text.count(NOTE_ONE) == 1
    _, text, data = results["list_processes"]
    assert data["processes"][0]["attempts"] == 2 and data["not_events"] == 1 and text.count(NOTE_ONE) == 1
    _, text, data = results["get_network_summary"]
    assert data["count"] == 2
    warnings = [r for r in caplog.records if "not events" in r.getMessage()]
    assert len(warnings) == 1 and "1 item in /api/events that is not" in warnings[0].getMessage()


async def test_items_of_any_kind_that_are_not_events_are_skipped():
    junk = [None, 7, "x", [], {"type": "flow", "pid": 1}]
    with FakeEbpfServer("current", events=_events(), not_events=junk) as srv:
        results = await _call_all(srv.url)
    _, text, data = results["list_connections"]
    assert data["not_events"] == 5 and data["returned"] == 2
    assert "Note: the server sent 5 items that are not events (null or an unknown kind); they were skipped." in text


async def test_seed_lists_with_null_items_are_read_too():
    with FakeEbpfServer("seed", events=_events()[:2], not_events=[None, None]) as srv:
        source = HttpSource(srv.url, retries=0)
        try:
            page = await source.query(EventQuery(command="curl"))
        finally:
            await source.aclose()
    assert len(page.events) == 2 and page.not_events == 2


async def test_events_without_nulls_report_nothing():
    with FakeEbpfServer("current", events=_events()) as srv:
        results = await _call_all(srv.url)
    _, text, data = results["list_connections"]
    assert data["not_events"] == 0 and "not an event" not in text


def test_a_known_event_with_a_wrong_field_is_still_an_error():
    bad = connection_json()
    bad["pid"] = "many"
    with pytest.raises(ValueError, match="pid"):
        EventsResponse.model_validate({"events": [None, bad]})


@pytest.mark.parametrize("query_time", ["", "now", "2023-01-01 noon", "1700000000x", "2023-13-45T99:00:00Z"])
async def test_a_query_time_that_is_not_a_timestamp_is_kept_as_text(query_time):
    with FakeEbpfServer("current", events=_events(), query_time=query_time) as srv:
        results = await _call_all(srv.url)
        source = HttpSource(srv.url, retries=0)
        try:
            raw = await source._get("/api/connection-summary", SummaryResponse)
        finally:
            await source.aclose()
    for name, (is_error, text, _) in results.items():
        assert not is_error, (name, text)
    assert raw.query_time == query_time


def test_a_query_time_that_is_one_is_a_datetime():
    parsed = SummaryResponse.model_validate({"count": 1, "query_time": "2023-01-01T12:00:00Z"})
    assert isinstance(parsed.query_time, datetime) and parsed.query_time.year == 2023
    assert SummaryResponse.model_validate({"query_time": {"a": 1}}).query_time is None


# --- what the server is -----------------------------------------------------------------------


async def _label(srv: FakeEbpfServer) -> tuple[str, str, int]:
    source = HttpSource(srv.url, retries=0)
    try:
        gen = await source.generation()
        info = await source.info()
        count = await source.count(Scope("connection", None, "curl", 60))
    finally:
        await source.aclose()
    return gen, info.label, count


async def test_a_plain_agent_serving_api_stats_is_not_an_aggregator():
    with FakeEbpfServer("current", events=_events(), stats_endpoint=True) as srv:
        gen, label, count = await _label(srv)
        assert not srv.requests_to("/api/stats")
    assert gen == "current" and label.startswith("ebpf-server at") and count == 2


AGGREGATOR_HEALTH = {"status": "healthy", "component": "aggregator", "uptime": "1m2s", "stats": {"total_events": 3}}


@pytest.mark.parametrize("stats_endpoint", [True, False])
async def test_an_aggregator_is_known_by_what_its_health_says(stats_endpoint):
    with FakeEbpfServer("aggregator", events=_events(), health=AGGREGATOR_HEALTH, stats_endpoint=stats_endpoint) as srv:
        gen, label, count = await _label(srv)
    assert gen == "aggregator" and label.startswith("aggregator at") and count == 2


async def test_an_aggregator_that_says_nothing_is_known_by_its_answers():
    plain = {"status": "healthy", "component": "eBPF Monitor API", "uptime": "active", "version": "1.0.0"}
    with FakeEbpfServer("aggregator", events=_events(), health=plain, stats_endpoint=False) as srv:
        source = HttpSource(srv.url, retries=0)
        try:
            assert await source.generation() == "current"
            assert await source.count(Scope("connection", None, "curl", 60)) == 2  # count_by_node in the answer
            assert await source.generation() == "aggregator"
            assert (await source.info()).label.startswith("aggregator at")
        finally:
            await source.aclose()


async def test_a_failing_health_does_not_stop_queries_that_work():
    with FakeEbpfServer("current", events=_events()) as srv:
        srv.fail_with(503, path="/health")
        source = HttpSource(srv.url, retries=0)
        try:
            page = await source.query(EventQuery(command="curl"))
            gen = await source.generation()
        finally:
            await source.aclose()
    assert gen == "current" and len(page.events) == 2


@pytest.mark.parametrize("generation", ["current", "aggregator"])
async def test_the_label_changes_nothing_that_works(generation):
    with FakeEbpfServer(generation, events=_events(), stats_endpoint=True) as srv:
        results = await _call_all(srv.url)
        source = HttpSource(srv.url, retries=0)
        try:
            stats = await source.aggregator_stats()
        finally:
            await source.aclose()
    assert all(not is_error for is_error, _, _ in results.values())
    assert results["list_connections"][2]["returned"] == 2
    assert stats is not None and stats.total_events == 3
