"""An outside MCP client (as Claude Desktop or the Inspector would) over stdio and streamable HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from mcp import StdioServerParameters
from mcp.client import Client

from netspy_tui import __version__
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.mcp.test_tools_in_memory import EXPECTED_TOOLS

CALLS = {
    "get_network_summary": {"process_name": "curl"},
    "list_connections": {"max_events": 5},
    "analyze_patterns": {"pid": 4242},
    "get_packet_drop_summary": {},
    "list_packet_drops": {},
    "analyze_packet_drops": {},
    "list_processes": {},
    "get_traffic": {},
    "get_connect_latency": {"duration": 30},
    "lookup_names": {"addresses": ["127.0.0.1"]},
    "server_status": {},
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    env["NETSPY_CONFIG"] = "/nonexistent/netspy.toml"
    return env


@pytest.fixture
def server():
    events = [connection_json(pid=4242, command="curl", ago=3), drop_json(ago=2)]
    with FakeEbpfServer("current", events=events) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_lists_every_tool_and_calls_each(server, mode):
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "netspy_tui", "mcp", "--server", server.url], env=_env()
    )
    async with Client(params, mode=mode, read_timeout_seconds=30) as client:
        assert client.server_info is not None
        assert (client.server_info.name, client.server_info.version) == ("network-telemetry", __version__)
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == EXPECTED_TOOLS
        assert all(t.input_schema.get("type") == "object" and t.output_schema for t in tools.values())
        for name, args in CALLS.items():
            result = await client.call_tool(name, args)
            assert not result.is_error, (name, result.content)
            assert result.structured_content, name
            assert result.content[0].text
        summary = await client.call_tool("get_network_summary", {"process_name": "curl"})
        assert summary.content[0].text == "Process 'curl' made 1 outbound connection attempt over the last 60 seconds"
        bad = await client.call_tool("list_connections", {"max_events": 0})
        assert bad.is_error and "max_events must be >= 1" in bad.content[0].text
        ai = await client.call_tool("ai_insights", {"summary_text": "x"})
        assert ai.is_error and "OPENAI_API_KEY" in ai.content[0].text


def _free_port() -> int:
    from tests.hardening.conftest import free_port  # noqa: PLC0415

    return free_port()


@pytest.fixture
def mcp_http(server):
    """`netspy-tui mcp --http` as a subprocess on a free port, stopped after the test."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspy_tui", "mcp", "--http", "--port", str(port), "--server", server.url],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("MCP HTTP server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_streamable_http_serves_the_same_tools(mcp_http):
    async with Client(mcp_http) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("get_network_summary", {"process_name": "curl"})
    assert names == EXPECTED_TOOLS
    assert "made 1 outbound connection attempt" in result.content[0].text


async def test_stdio_contextual_analysis_with_an_unreachable_ai_is_one_sentence(server):
    """The AI tool opens its own in-process MCP session; the AI's error must reach the outside client
    as the sentence it is, not as 'failed unexpectedly (ExceptionGroup)'."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    env = {**_env(), "OPENAI_BASE_URL": closed, "OPENAI_API_KEY": "sk-test-unreachable"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "netspy_tui", "mcp", "--server", server.url], env=env
    )
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("contextual_analysis", {"query": "why?"})
    text = result.content[0].text
    assert result.is_error
    assert "Could not connect to the AI server" in text and "ExceptionGroup" not in text and "unexpectedly" not in text
