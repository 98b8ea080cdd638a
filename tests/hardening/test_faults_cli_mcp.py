"""Server faults seen from the CLI (one-shot and the REPL session) and from the MCP server (stdio and in-process).

Covered elsewhere: connection refused and a 500 for ``--tool`` (tests/cli/test_single_command.py), the
client's own handling of refused/500/503/timeouts/broken bodies/100,000 events (tests/client/test_http_source.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import pytest
from mcp import StdioServerParameters
from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.client import HttpSource
from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import Child, Cli, assert_one_line_error, product_env

# --- CLI ---------------------------------------------------------------------------------------


def test_one_shot_tool_against_a_slow_unready_or_garbled_server(cli: Cli) -> None:
    servers = [FakeEbpfServer("current").start() for _ in range(4)]
    try:
        slow, unready, garbled, bomb = servers
        slow.delay(30)
        unready.fail_with(503, "System not initialized")
        garbled.reply_raw(b"\x1b[2J<html>\xff\xfe</html>", "text/html")
        bomb.reply_raw(b'{"events": ' + b"[" * 50_000)
        started = time.monotonic()
        runs = cli.many(
            [
                ["--tool", "get_network_summary", "--server", slow.url, "--timeout", "0.5"],
                ["--tool", "get_network_summary", "--server", unready.url],
                ["--tool", "list_connections", "--server", garbled.url],
                ["--tool", "list_connections", "--server", bomb.url],
            ]
        )
        elapsed = time.monotonic() - started
    finally:
        for srv in servers:
            srv.stop()
    lines = [assert_one_line_error(run, 1) for run in runs]
    assert f"The eBPF server at {slow.url} did not answer /api/events within 0.5 s (read timeout)" in lines[0]
    assert "raise --timeout" in lines[0]
    assert f"{unready.url} is not ready (503 on /api/events: System not initialized)" in lines[1]
    assert "sent a body that is not JSON on /api/events: '\\\\x1b[2J<html>" in lines[2]  # escaped, never raw
    assert "sent a body that is not JSON on /api/events" in lines[3]
    assert elapsed < 30  # a hung server costs the timeout (and retries), never a hang


def test_repl_session_survives_the_server_dying_and_returning(spawn: Callable[..., Child]) -> None:
    srv = FakeEbpfServer("current", events=[connection_json(ago=1, command="curl")]).start()
    try:
        repl = spawn("repl", "--server", srv.url, env={"NETSPY_RETRIES": "0"}, stdin=True)
        repl.send("summary --process curl")
        repl.wait_for("Process 'curl' made 1 outbound connection attempt", stream="out")
        srv.stop()
        repl.send("summary --process curl")
        line = repl.wait_for("error: Cannot reach the eBPF server")
        assert f"{srv.url} (connection refused)" in line
        srv.events.append(connection_json(ago=0.5, command="curl"))
        srv.start()
        repl.send("summary --process curl")
        repl.wait_for("Process 'curl' made 2 outbound connection attempts", stream="out")
        srv.fail_with(503, "System not initialized", times=1)
        repl.send("list --max-events 1")
        repl.wait_for("error: The eBPF server at")
        repl.send("quit")
        assert repl.proc.wait(timeout=15) == 1  # (commands failed)
    finally:
        srv.stop()
    out = "".join(repl.out)
    assert "Traceback" not in out + "".join(repl.err)
    assert "error: " not in out and "".join(repl.err).count("error: ") == 2


# --- MCP ---------------------------------------------------------------------------------------


async def test_mcp_stdio_server_down_at_start_dies_and_returns(tmp_path: pytest.TempPathFactory) -> None:
    srv = FakeEbpfServer("current", events=[connection_json(ago=1, command="curl")]).start()
    srv.stop()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "netspy_tui", "mcp", "--server", srv.url],
        env=product_env(tmp_path, NETSPY_RETRIES="0"),
    )  # type: ignore[arg-type]

    async def summary(client: Client) -> tuple[bool, str]:
        result = await client.call_tool("get_network_summary", {"process_name": "curl"})
        return bool(result.is_error), result.content[0].text  # type: ignore[union-attr]

    try:
        async with Client(params, read_timeout_seconds=30) as client:
            failed, text = await summary(client)
            assert failed and text.startswith(f"Cannot reach the eBPF server at {srv.url} (connection refused).")
            status = await client.call_tool("server_status", {})
            assert not status.is_error and "(unhealthy)" in status.content[0].text  # type: ignore[union-attr]
            srv.start()
            assert await summary(client) == (
                False,
                "Process 'curl' made 1 outbound connection attempt over the last 60 seconds",
            )
            srv.stop()
            failed, text = await summary(client)
            assert failed and "Cannot reach" in text and "\n" not in text
            srv.start()
            assert not (await summary(client))[0]
    finally:
        srv.stop()


async def test_mcp_tools_over_a_misbehaving_server_answer_one_sentence() -> None:
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        source = HttpSource(srv.url, read_timeout=5, retries=0)
        try:
            async with Client(create_server(source)) as client:

                async def text_of(tool: str, args: dict[str, object]) -> tuple[bool, str]:
                    result = await client.call_tool(tool, args)
                    return bool(result.is_error), result.content[0].text  # type: ignore[union-attr]

                assert not (await text_of("list_connections", {}))[0]
                cases = [
                    (lambda: srv.fail_with(503, "System not initialized"), "is not ready (503"),
                    (lambda: srv.fail_with(500, "database locked\n\tat main.go:12"), "answered 500 on /api/"),
                    (lambda: srv.reply_raw(b"OK"), "sent a body that is not JSON"),
                    (lambda: srv.reply_raw(b'{"events": [{"type": "connection"}]}'), "events.0.connection.time"),
                    (
                        lambda: srv.reply_raw(b'{"events": [{"type": "connection", "pid": 1' + b"0" * 5000 + b"}]}"),
                        "sent a body that is not JSON",
                    ),
                    (
                        lambda: srv.reply_raw(b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
                        "sent a body that is not JSON",
                    ),
                ]
                for misbehave, fragment in cases:
                    misbehave()
                    for tool in ("list_connections", "analyze_patterns", "list_processes"):
                        failed, text = await text_of(tool, {})
                        assert failed and fragment in text, (tool, fragment, text)
                        assert "\n" not in text and "unexpectedly" not in text, text
                    srv.reset()
                    assert not (await text_of("list_connections", {}))[0]

                # one call hangs past the read timeout; the server answers other calls meanwhile (before the hung
                # call gives up: 5 s, whatever the machine's load)
                srv.delay(30, path="/api/events")
                asked = len(srv.requests_to("/api/events"))
                slow = asyncio.create_task(text_of("list_connections", {}))
                await asyncio.to_thread(srv.wait_for_requests, asked + 1, 30, path="/api/events")  # it hangs now
                failed, status = await text_of("server_status", {})
                assert not failed and "healthy" in status and not slow.done()
                failed, text = await slow
                assert failed and "did not answer /api/events within 5 s (read timeout)" in text
                srv.release()
        finally:
            await source.aclose()


async def test_mcp_tools_over_100k_events_stay_bounded_and_count_everything() -> None:
    events = [
        connection_json(ago=50 - i * 0.0004, pid=1000 + i % 40, command=f"proc{i % 40}", ip=f"10.0.{i % 200}.{i % 250}")
        for i in range(100_000)
    ]
    events += [drop_json(ago=5)]
    with FakeEbpfServer("current", events=events) as srv:
        source = HttpSource(srv.url, read_timeout=60)
        try:
            async with Client(create_server(source)) as client:
                listed = await client.call_tool("list_connections", {"max_events": 1000})
                summary = await client.call_tool("get_network_summary", {"duration": 120})
                patterns = await client.call_tool("analyze_patterns", {"duration": 120})
        finally:
            await source.aclose()
    data = listed.structured_content or {}
    assert data["returned"] == 1000 and data["total_count"] == 100_000 and data["truncated"]
    assert len(listed.content[0].text.splitlines()) <= 1002  # type: ignore[union-attr]
    assert (summary.structured_content or {})["count"] == 100_000
    stats = (patterns.structured_content or {})["stats"]
    assert stats["total"] == 100_000  # the window's total, though only the newest 10,000 were fetched
    assert "100000" in patterns.content[0].text.replace(",", "")  # type: ignore[union-attr]
