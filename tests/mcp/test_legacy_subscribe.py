"""Change notifications for MCP clients on the protocols before 2026-07-28 (the initialize handshake: Claude Desktop,
the Inspector and most agents today): they subscribe with ``resources/subscribe`` and are told with
``notifications/resources/updated`` on their session. The SDK 2.3 publishes only to ``subscriptions/listen`` streams,
so such a client read ``"notifies": true``, subscribed, and was never told."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, connection_json
from tests.mcp.test_outside_agents import _env, _free_port

# (the SDK warns that resources/subscribe is gone from 2026-07-28: these clients speak the protocols before it)
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


class Told:
    """The ``notifications/resources/updated`` a client's session received, by URI."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self.event = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            self.uris.append(str(message.params.uri))
            self.event.set()

    async def wait(self, seconds: float = 20.0) -> None:
        with anyio.fail_after(seconds):
            await self.event.wait()
        self.event = anyio.Event()


async def test_a_legacy_client_that_subscribes_is_told_of_new_events_and_not_after_it_unsubscribes() -> None:
    source = MemorySource([connection(ago=1)])
    told = Told()
    async with Client(create_server(source), mode="legacy", message_handler=told) as client:
        caps = client.server_capabilities
        assert caps is not None and caps.resources is not None and caps.resources.subscribe
        assert '"notifies": true' in (await client.read_resource(EVENTS_URI)).contents[0].text  # type: ignore[union-attr]
        await client.subscribe_resource(EVENTS_URI)
        source.add_events([connection(ago=0)])
        await told.wait()
        assert told.uris == [EVENTS_URI]
        await client.unsubscribe_resource(EVENTS_URI)
        source.add_events([connection(ago=0)])
        await client.read_resource(EVENTS_URI)  # (a round trip: a notification sent meanwhile would be in by now)
        await anyio.sleep(0.3)  # (beyond the server's gap between notifications, 0.1 s)
        assert told.uris == [EVENTS_URI]


async def test_subscribing_to_anything_else_is_refused_in_one_sentence() -> None:
    async with Client(create_server(MemorySource([])), mode="legacy") as client:
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource("netspy://telemetry/nothing")
    assert refused.value.error.message == (
        f"Only {EVENTS_URI} is updated: netspy://telemetry/nothing cannot be subscribed to."
    )


def _recording(path: Path, seconds: int = 120) -> Path:
    """Ten connects a second over ``seconds`` from now on: replayed at its pace, events keep arriving."""
    start = datetime.now(UTC)
    lines = [json.dumps(connection_json(pid=4242, command="curl", time=start + timedelta(seconds=i / 10)))
             for i in range(seconds * 10)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_an_outside_agent_on_stdio_with_the_older_protocol_is_told_as_events_arrive(tmp_path: Path) -> None:
    """As Claude Desktop runs it: ``netspy-tui mcp`` over stdio, the initialize handshake, resources/subscribe."""
    recording = _recording(tmp_path / "live.jsonl")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "netspy_tui", "mcp", "--replay", str(recording), "--replay-speed", "1"],
        env=_env(),
    )
    told = Told()
    async with Client(params, mode="legacy", read_timeout_seconds=30, message_handler=told) as client:
        await client.subscribe_resource(EVENTS_URI)
        await told.wait()
        first = await client.call_tool("get_network_summary", {"process_name": "curl"})
        await told.wait()  # (another, as more arrive)
        later = await client.call_tool("get_network_summary", {"process_name": "curl"})
    assert set(told.uris) == {EVENTS_URI}
    assert 0 < first.structured_content["count"] < later.structured_content["count"]  # type: ignore[index]


@pytest.fixture
def live_http(tmp_path: Path):
    """``netspy-tui mcp --http`` on a free port replaying a recording at its pace; stopped after the test."""
    recording = _recording(tmp_path / "live.jsonl")
    port = _free_port()
    argv = [sys.executable, "-m", "netspy_tui", "mcp", "--http", "--port", str(port), "--replay", str(recording),
            "--replay-speed", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "the MCP HTTP server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_an_outside_agent_over_streamable_http_with_the_older_protocol_is_told(live_http: str) -> None:
    """``netspy-tui mcp --http``: the older protocol's notifications ride the client's standalone stream."""
    told = Told()
    async with Client(live_http, mode="legacy", message_handler=told) as client:
        await client.subscribe_resource(EVENTS_URI)
        await told.wait()
        await told.wait()
    assert len(told.uris) >= 2 and set(told.uris) == {EVENTS_URI}  # (more may come while the client closes)
