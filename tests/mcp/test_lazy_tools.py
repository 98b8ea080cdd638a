"""Tools are built at their first use (issue 17: building all 14 argument models and JSON schemas was ~0.15 s of
CPU on the dashboard's way to its first data, and the dashboard calls one tool). What a client sees is unchanged:
``tools/list`` lists every tool in the order they were registered, with both schemas; a call answers as ever."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.mcp_tools import server as server_module
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection

pytestmark = pytest.mark.quiet

#: The order main registered them in (and lists them in)
ORDER = [
    "get_network_summary", "list_connections", "analyze_patterns", "get_packet_drop_summary", "list_packet_drops",
    "analyze_packet_drops", "list_processes", "get_traffic", "get_connect_latency", "lookup_names", "server_status",
    "ai_insights", "contextual_analysis", "dashboard_snapshot",
]  # fmt: skip


def _built(server: object) -> list[str]:
    """The tools built, whole (listed) or for calls only."""
    tools = server._tool_manager  # type: ignore[attr-defined]
    return sorted({*tools._tools, *tools._callable})


def _output_schema(server: object, name: str) -> dict[str, Any] | None:
    schema: dict[str, Any] | None = server._tool_manager.get_tool(name).output_schema  # type: ignore[attr-defined]
    return schema


async def test_a_call_builds_only_the_tool_it_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the app's own gateway (the dashboard's path; an outside client lists the tools first, to check
    results against their output schemas, and so builds them all)."""
    servers: list[object] = []

    def keep(*args: Any, **kwargs: Any) -> Any:
        servers.append(create_server(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(server_module, "create_server", keep)
    async with open_gateway(MemorySource([connection(pid=7, command="curl")])) as gw:
        (server,) = servers
        assert _built(server) == []
        result = await gw.call("get_network_summary", {"process_name": "curl"})
        assert not result.is_error and result.data is not None and result.data["process_name"] == "curl"
        assert _built(server) == ["get_network_summary"]
        # a bad argument is still the tool's one-sentence error (its schema is built for the check)
        bad = await gw.call("list_connections", {"max_events": False})
        assert bad.is_error and "max_events must be a whole number" in bad.text
        unknown = await gw.call("no_such_tool", {})
        assert unknown.is_error and "no_such_tool" in unknown.text
        assert _built(server) == ["get_network_summary", "list_connections"]
        snapshot = await gw.snapshot(parts=["connections"])  # the dashboard's one call: its parts build nothing
        assert [e.command for e in snapshot.connections.events] == ["curl"]  # type: ignore[union-attr]
        assert _built(server) == ["dashboard_snapshot", "get_network_summary", "list_connections"]
        # a call builds no output schema (JSON schema generation over the result's model: most of a build); the
        # listing publishes every tool whole, and calls use the whole tool from then on
        assert _output_schema(server, "dashboard_snapshot") is None
        listed = {t.name: t for t in await gw.list_tools()}
        assert listed["dashboard_snapshot"].output_schema is not None
        assert listed["dashboard_snapshot"].output_schema["type"] == "object"
        assert _output_schema(server, "dashboard_snapshot") == listed["dashboard_snapshot"].output_schema
        again = await gw.snapshot(parts=["connections"])
        assert [e.command for e in again.connections.events] == ["curl"]  # type: ignore[union-attr]


async def test_the_listing_has_every_tool_in_order_with_its_schemas() -> None:
    server = create_server(MemorySource([]))
    async with Client(server) as client:
        await client.call_tool("server_status", {})  # one built ahead of the others: the order stays
        tools = (await client.list_tools()).tools
    assert [t.name for t in tools] == ORDER
    for tool in tools:
        assert tool.input_schema["type"] == "object", tool.name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", tool.name
    assert _built(server) == sorted(ORDER)


def test_one_shot_servers_still_register_only_their_tool() -> None:
    server = create_server(MemorySource([]), only=["get_traffic"])
    assert [t.name for t in server._tool_manager.list_tools()] == ["get_traffic"]
