"""``serve``'s MCP at ``/mcp`` is made at its first request (serve.runner.LazyMcp): an agent or an aggregator
nobody asks over MCP never imports the SDK's server (most of a start's CPU), and the first
MCP client gets the same tools as before. (One that cannot be made: tests/serve/test_live.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.hardening.conftest import DEMO, Child, free_port

SDK_SERVER = "mcp.server.mcpserver"


def _imported(lines: list[str]) -> set[str]:
    """The modules ``-X importtime`` (PYTHONPROFILEIMPORTTIME) listed in ``lines`` of stderr."""
    return {ln.rsplit("|", 1)[1].strip() for ln in list(lines) if ln.startswith("import time:") and "|" in ln}


async def _summary(url: str) -> Any:
    async with httpx2.AsyncClient(timeout=30) as http, Client(streamable_http_client(url, http_client=http)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        return tools, await client.call_tool("get_network_summary", {"duration": 86400})


def test_serve_imports_the_mcp_server_at_the_first_mcp_request_and_answers_it(
        spawn: Callable[..., Child]) -> None:  # fmt: skip
    port = free_port()
    child = spawn("serve", "--port", str(port), "--replay", str(DEMO), "--replay-speed", "0",
                  env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    child.wait_for("serving the eBPF server API", 60)
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert httpx.get(url + "/api/events", timeout=10).status_code == 200
    started = _imported(child.err)
    assert "netspy_tui.serve.runner" in started  # (the listing is there)
    assert SDK_SERVER not in started and "netspy_tui.mcp_tools.server" not in started

    tools, summary = asyncio.run(_summary(url + "/mcp"))
    assert {"get_network_summary", "list_connections", "server_status"} <= tools
    assert not summary.is_error, summary.content
    assert summary.structured_content["count"] > 0
    assert SDK_SERVER in _imported(child.err)
    # (a second client reuses what the first made)
    assert not asyncio.run(_summary(url + "/mcp"))[1].is_error
    assert child.stop() in (0, -15, 128 + 15)
