"""The network-telemetry MCP server driven through a real in-memory MCP client session."""

from __future__ import annotations

import re

import pytest
from mcp.client import Client

from netspy_tui import __version__
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionList, NetworkSummary, PatternAnalysis
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, drop

pytestmark = pytest.mark.quiet

EXPECTED_TOOLS = {
    "dashboard_snapshot",
    "get_network_summary",
    "list_connections",
    "analyze_patterns",
    "get_packet_drop_summary",
    "list_packet_drops",
    "analyze_packet_drops",
    "list_processes",
    "server_status",
    "ai_insights",
    "contextual_analysis",
    "get_traffic",
    "get_connect_latency",
    "lookup_names",
}


@pytest.fixture
def source() -> MemorySource:
    return MemorySource(
        [
            connection(pid=1234, command="curl", ip="93.184.216.34", port=443, ago=50, outcome="ok"),
            connection(pid=1234, command="curl", ip="93.184.216.34", port=443, ago=40, outcome="ok"),
            connection(pid=1234, command="curl", ip="127.0.0.1", port=9, ago=30, return_code=-111),
            connection(pid=1234, command="curl", ip="::1", port=8080, ago=20, outcome="ok"),
            connection(pid=1234, command="curl", ip="10.0.0.1", port=53, protocol="UDP", ago=10, outcome="ok"),
            connection(pid=77, command="nginx", ip="10.0.0.9", port=5432, ago=5, outcome="ok"),
            connection(pid=1234, command="curl", ip="10.0.0.1", port=443, ago=600, outcome="ok"),  # outside 60 s
            drop(pid=77, command="nginx", reason="NO_SOCKET", code=3, ago=3),
        ]
    )


async def test_every_tool_is_listed_with_bounded_schema_and_output_schema(source):
    async with Client(create_server(source)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == EXPECTED_TOOLS
    summary = tools["get_network_summary"]
    props = summary.input_schema["properties"]
    assert props["duration"]["minimum"] == 1 and props["duration"]["maximum"] == 604800
    assert any(v.get("minimum") == 1 for v in props["pid"]["anyOf"])
    assert tools["list_connections"].input_schema["properties"]["max_events"]["maximum"] == 1000
    assert summary.output_schema is not None and "count" in summary.output_schema["properties"]
    assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())
    assert all(t.description for t in tools.values())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_server_info_carries_the_package_version_in_both_protocol_eras(source, mode):
    async with Client(create_server(source), mode=mode) as client:
        info = client.server_info
        era = client.protocol_version
    assert era == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert info is not None and (info.name, info.version) == ("network-telemetry", __version__)


async def test_summary_uses_the_seed_wording_and_structured_content(source):
    async with open_gateway(source) as gw:
        result = await gw.call("get_network_summary", {"process_name": "curl", "duration": 60})
        typed = await gw.summary(process_name="curl")
    assert not result.is_error
    assert result.text == "Process 'curl' made 5 outbound connection attempts over the last 60 seconds"
    assert result.data is not None and result.data["count"] == 5
    assert isinstance(typed, NetworkSummary) and typed.count == 5 and typed.source == "events in memory"


async def test_list_connections_newest_first_bounded_with_paging_hint(source):
    async with open_gateway(source) as gw:
        page = await gw.connections(process_name="curl", max_events=2)
        result = await gw.call("list_connections", {"process_name": "curl", "max_events": 2})
    assert isinstance(page, ConnectionList)
    assert page.returned == 2 and page.total_count == 6 and page.truncated
    assert page.events[0].time > page.events[1].time
    assert "4 more, older than those shown" in result.text and f"before={page.before} to page back" in result.text


async def test_list_connections_since_is_incremental(source):
    async with open_gateway(source) as gw:
        newest = (await gw.connections(max_events=1)).events[0]
        nothing_new = await gw.connections(since=newest.time.isoformat())
        source.add_events([connection(pid=5, command="wget", ago=0)])
        one_new = await gw.connections(since=newest.time.isoformat())
    assert nothing_new.returned == 0
    assert [e.command for e in one_new.events] == ["wget"]


async def test_analyze_patterns_reports_destinations_mixes_and_rate(source):
    async with open_gateway(source) as gw:
        analysis = await gw.patterns(process_name="curl")
        text = (await gw.call("analyze_patterns", {"process_name": "curl"})).text
    assert isinstance(analysis, PatternAnalysis)
    stats = analysis.stats
    assert stats.total == 5
    assert stats.top_destinations[0].key == "93.184.216.34:443" and stats.top_destinations[0].count == 2
    assert {c.key: c.count for c in stats.protocols} == {"TCP": 4, "UDP": 1}
    assert {c.key: c.count for c in stats.outcomes} == {"ok": 4, "refused": 1}
    assert analysis.failure_ratio == pytest.approx(0.2)
    assert analysis.rate_per_minute == pytest.approx(5.0)
    assert sum(stats.rate_buckets) == 5
    assert "Top destinations: 93.184.216.34:443 2" in text and "refused 1" in text


async def test_packet_drop_tools(source):
    async with open_gateway(source) as gw:
        summary = await gw.drop_summary()
        drops = await gw.drops()
        analysis = await gw.drop_patterns()
    assert summary.count == 1 and summary.text.endswith("had 1 packet drop over the last 60 seconds")
    assert drops.events[0].drop_reason == "NO_SOCKET"
    assert analysis.stats.outcomes[0].key == "NO_SOCKET"


async def test_list_processes_ranks_top_talkers(source):
    async with open_gateway(source) as gw:
        procs = await gw.processes(duration=60)
    assert [p.command for p in procs.processes] == ["curl", "nginx"]
    curl = procs.processes[0]
    assert (curl.attempts, curl.failures, curl.distinct_destinations, curl.pids) == (5, 1, 4, [1234])


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("get_network_summary", {"pid": 0}, "pid must be >= 1"),
        ("get_network_summary", {"pid": -5}, "pid must be >= 1"),
        ("get_network_summary", {"duration": 0}, "duration must be >= 1"),
        ("get_network_summary", {"duration": 10**9}, "duration must be <= 604800"),
        ("list_connections", {"max_events": 5000}, "max_events must be <= 1000"),
        ("list_connections", {"max_events": "many"}, "max_events must be a whole number"),
        (
            "list_connections",
            {"since": "yesterday"},
            "Invalid arguments for list_connections: since must be an RFC3339 time (e.g. 2026-11-24T12:00:00Z), "
            "not 'yesterday'.",
        ),
        (
            "list_packet_drops",
            {"since": "soon", "max_events": 0},
            "Invalid arguments for list_packet_drops: max_events must be >= 1; since must be an RFC3339 time",
        ),
        ("get_network_summary", {"pid": 1234, "process_name": "nginx"}, "pid 1234 is 'curl', not 'nginx'"),
        ("ai_insights", {}, "summary_text is required"),
    ],
)
async def test_bad_arguments_are_one_sentence_error_results(source, tool, args, message):
    async with open_gateway(source) as gw:
        result = await gw.call(tool, args)
    assert result.is_error
    assert message in result.text
    assert "\n" not in result.text and "Traceback" not in result.text


async def test_server_status_describes_the_source(source):
    async with open_gateway(source) as gw:
        status = await gw.status()
    assert status.source.label == "events in memory" and status.source.healthy
    assert "Events seen: 8" in status.text


async def test_hostile_process_names_are_inert_in_text(source):
    source.add_events([connection(pid=66, command="\x1b[2J[bold]evil\u202e", ago=1, outcome="ok")])
    async with open_gateway(source) as gw:
        text = (await gw.call("list_connections", {"pid": 66})).text
        data = (await gw.connections(pid=66)).events[0]
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J[bold]evil\\u202e" in text
    assert data.command == "\x1b[2J[bold]evil\u202e"  # structured data keeps the real bytes


async def test_until_pages_backward(source):
    async with open_gateway(source) as gw:
        first = await gw.connections(max_events=2)
        older = await gw.connections(max_events=2, until=first.events[-1].time.isoformat())
        bad = await gw.call("list_connections", {"until": "soon"})
    assert older.events[0].id == first.events[-1].id  # until is inclusive
    assert older.events[1].time < first.events[-1].time
    assert bad.is_error and bad.text.startswith("Invalid arguments for list_connections: until must be an RFC3339")


async def test_get_traffic_on_a_source_without_byte_counts_says_so(source):
    async with Client(create_server(source)) as client:
        result = await client.call_tool("get_traffic", {"duration": 30})
        bad = await client.call_tool("get_traffic", {"limit": 201})
        wrong = await client.call_tool("get_traffic", {"process": "curl"})
    assert not result.is_error
    assert result.structured_content["stats"]["available"] is False
    assert result.structured_content["stats"]["window_seconds"] == 30
    assert "not counted by this source" in result.content[0].text
    assert bad.is_error and "limit must be <= 200" in bad.content[0].text
    assert wrong.is_error and "unknown argument 'process'" in wrong.content[0].text


async def test_get_connect_latency_on_a_source_without_measurements_says_so(source):
    async with Client(create_server(source)) as client:
        result = await client.call_tool("get_connect_latency", {"pid": 1234})
        bad = await client.call_tool("get_connect_latency", {"duration": 0})
    assert not result.is_error
    assert result.structured_content["stats"]["available"] is False
    assert "not measured by this source" in result.content[0].text
    assert bad.is_error and "duration must be >= 1" in bad.content[0].text


async def test_every_tool_answers_what_its_output_schema_describes(source):
    # the server does not validate answers again (each is a model's dump): this test does, tool by tool
    import jsonschema

    async with Client(create_server(source)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        checked = []
        for name, tool in sorted(tools.items()):
            args = {"contextual_analysis": {"question": "why?"}, "lookup_names": {"addresses": ["127.0.0.1"]}}
            result = await client.call_tool(name, args.get(name, {}))
            assert tool.output_schema is not None, name
            if result.is_error:  # the AI tools without a key: a one-line error, no structured content
                assert name in ("ai_insights", "contextual_analysis"), (name, result.content)
                continue
            jsonschema.validate(result.structured_content, tool.output_schema)
            checked.append(name)
    assert set(checked) >= EXPECTED_TOOLS - {"ai_insights", "contextual_analysis"}


async def test_drop_texts_name_the_kernel_context_and_count_drops_not_attempts() -> None:
    """Drops where the kernel ran for no process (pid 0, no name) are "(kernel)", as the lists, the dashboard and
    /metrics say; a drop is counted as a drop (not an attempt, nor a failure); plurals are English."""
    source = MemorySource([*(drop(pid=0, command="", ago=5) for _ in range(3)), drop(pid=77, command="python", ago=4)])
    async with Client(create_server(source)) as client:
        processes = await client.call_tool("list_processes", {"kind": "packet_drop", "duration": 600})
        analysis = await client.call_tool("analyze_packet_drops", {"duration": 600})
        by_node = await client.call_tool("list_processes", {"kind": "packet_drop", "group_by": "node", "duration": 600})
    text = processes.content[0].text  # type: ignore[union-attr]
    assert re.search(r"\(kernel\) +pids 0 +3 drops", text) and "1 drop" in text, text
    assert "attempt" not in text and "failure" not in text and "destination" not in text, text
    assert "Processes: (kernel) 3, python 1" in analysis.content[0].text  # type: ignore[union-attr]
    grouped = by_node.content[0].text  # type: ignore[union-attr]
    assert "4 drops" in grouped and "attempt" not in grouped and "failure" not in grouped, grouped


def test_plurals_are_english() -> None:
    from netspy_tui.analysis.describe import _plural

    assert [_plural(1, "process"), _plural(2, "process"), _plural(1, "byte"), _plural(1000, "byte")] == [
        "1 process", "2 processes", "1 byte", "1,000 bytes"]  # fmt: skip
