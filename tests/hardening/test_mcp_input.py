"""MCP tool arguments that violate the schema, sent raw: one sentence back, the server keeps answering.

Already covered in tests/mcp/test_tools_in_memory.py::test_bad_arguments_are_one_sentence_error_results:
out-of-range pid/duration/max_events, a non-numeric max_events, a bad ``since``, pid and process_name
that disagree, a missing ``summary_text``. Here: wrong JSON types, unknown fields, nulls, nested
objects, huge strings, booleans, and JSON-RPC requests that are not even well-formed, over stdio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection
from tests.hardening.conftest import DEMO, REPO, product_env

HUGE = "x" * 1_000_000

#: (tool, arguments, what the one-sentence error says)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("get_network_summary", {"pid": "many"}, "pid must be a whole number"),
    ("get_network_summary", {"pid": 1.5}, "pid must be a whole number"),
    ("get_network_summary", {"pid": True}, "pid must be a whole number"),
    ("get_network_summary", {"pid": {"$gt": 1}}, "pid must be a whole number"),
    ("get_network_summary", {"pid": [1, 2]}, "pid must be a whole number"),
    ("get_network_summary", {"pid": 10**40}, "pid must be <= 4194304"),
    ("get_network_summary", {"duration": None}, "duration must be a whole number"),
    ("get_network_summary", {"duration": "60s"}, "duration must be a whole number"),
    (
        "get_network_summary",
        {"process": "curl"},
        "unknown argument 'process' (expected: pid, process_name, duration, node, workload)",
    ),
    ("get_network_summary", {"node": "a b"}, "node must be a node name (letters, digits, '.', '-' and '_')"),
    ("list_processes", {"group_by": "pod"}, "group_by: Input should be 'process', 'workload' or 'node'"),
    ("get_network_summary", {"pid": 1, "bogus": 1, "extra": {"a": [1]}}, "unknown arguments 'bogus', 'extra'"),
    ("get_network_summary", {"process_name": ["curl"]}, "process_name: Input should be a valid string"),
    ("get_network_summary", {"process_name": {"name": "curl"}}, "process_name: Input should be a valid string"),
    ("get_network_summary", {"process_name": HUGE}, "process_name must be at most 64 characters"),
    ("list_connections", {"since": HUGE}, "since must be at most 64 characters"),
    ("list_connections", {"since": 1700000000}, "since: Input should be a valid string"),
    ("list_connections", {"max_events": False}, "max_events must be a whole number"),
    # an empty or backward window is a mistake, refused as the server's /api/events refuses it (not "no events")
    (
        "list_connections",
        {"since": "2026-12-05T13:00:00Z", "until": "2026-12-05T12:00:00Z"},
        "since must be earlier than until",
    ),
    (
        "list_packet_drops",
        {"since": "2026-12-05T12:00:00Z", "until": "2026-12-05T12:00:00Z"},
        "since must be earlier than until",
    ),
    ("list_processes", {"kind": "everything"}, "kind: Input should be 'connection' or 'packet_drop'"),
    ("list_processes", {"limit": 0, "kind": None}, "limit must be >= 1"),
    ("ai_insights", {"summary_text": None}, "summary_text: Input should be a valid string"),
    ("ai_insights", {"summary_text": HUGE}, "summary_text must be at most 20000 characters"),
    ("contextual_analysis", {"query": ""}, "query must not be empty"),
    ("server_status", {"verbose": True}, "unknown argument 'verbose' (expected: none)"),
]


@pytest.fixture
def source() -> MemorySource:
    return MemorySource([connection(pid=1234, command="curl", ago=5), connection(pid=77, command="nginx", ago=3)])


async def test_schema_violations_are_one_sentence_and_the_session_goes_on(source: MemorySource) -> None:
    async with Client(create_server(source)) as client:
        for tool, args, fragment in CASES:
            result = await client.call_tool(tool, args)
            text = result.content[0].text  # type: ignore[union-attr]
            assert result.is_error, (tool, args, text)
            assert text.startswith(f"Invalid arguments for {tool}: ") and fragment in text, (tool, text)
            assert "\n" not in text and len(text) < 400 and "Traceback" not in text
        ok = await client.call_tool("get_network_summary", {"process_name": "curl"})
    assert not ok.is_error
    assert ok.content[0].text == "Process 'curl' made 1 outbound connection attempt over the last 60 seconds"  # type: ignore[union-attr]


async def test_lax_but_harmless_values_still_work(source: MemorySource) -> None:
    """What the schema's types allow after coercion keeps working: numeric strings, whole floats, explicit nulls."""
    async with Client(create_server(source)) as client:
        for args in ({"pid": "1234"}, {"pid": 1234.0}, {"pid": 1234, "process_name": None}):
            result = await client.call_tool("get_network_summary", args)
            assert not result.is_error, (args, result.content)
            assert result.structured_content and result.structured_content["count"] == 1


async def test_unknown_tool_is_one_sentence(source: MemorySource) -> None:
    async with Client(create_server(source)) as client:
        result = await client.call_tool("drop_tables", {"pid": 1})
    assert result.is_error and result.content[0].text == "Unknown tool: drop_tables"  # type: ignore[union-attr]


# --- raw JSON-RPC over stdio ------------------------------------------------------------------------


class RawStdio:
    """`netspy-tui mcp` with JSON-RPC written by hand: no client library between the test and the server."""

    def __init__(self, tmp: Path) -> None:
        env = product_env(tmp, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netspy_tui", "mcp", "--replay", str(DEMO), "--replay-speed", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the server closed stdout; stderr: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return json.loads(line)  # every line on stdout is protocol (nothing printed there by mistake)

    def call(self, ident: int, name: str, arguments: Any) -> dict[str, Any]:
        self.send(
            {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        )
        return self.receive()

    def close(self) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=20)
        return code, self.proc.stderr.read()


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[RawStdio]:
    server = RawStdio(tmp_path)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_malformed_json_rpc_over_stdio_never_stops_the_server(raw: RawStdio) -> None:
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    raw.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})
    assert raw.receive()["result"]["serverInfo"]["name"] == "network-telemetry"
    raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    for ident, arguments in enumerate(([1, 2], "pid=1", 42), start=10):  # arguments that are not an object
        reply = raw.call(ident, "get_network_summary", arguments)
        assert reply["id"] == ident and reply["error"]["code"] == -32602, reply
    # lines that are not JSON-RPC at all: each answered as JSON-RPC 2.0 asks, with id null (the SDK left them
    # unanswered: a client waiting on a request it sent garbled waited until its timeout)
    for junk in (
        "{not json",
        "\x00\x01\x02 binary",
        "[]",
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call"}',
        json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": 5}}),
    ):
        raw.send(junk)
    replies = [raw.receive() for _ in range(5)]
    unknown = [r["error"] for r in replies if r["id"] is None]
    assert sorted(e["code"] for e in unknown) == [-32700, -32700, -32600], replies
    assert {e["message"] for e in unknown} == {"Parse error: the line is not JSON",
                                                "Invalid Request: not a JSON-RPC 2.0 message"}  # fmt: skip
    framed = [r for r in replies if r["id"] is not None]  # the two well-framed requests get their own answers
    assert sorted(r["id"] for r in framed) == [7, 8] and all(r["error"]["code"] == -32602 for r in framed)
    nested = raw.call(20, "get_network_summary", {"pid": {"a": {"b": [None]}}, "duration": -1})
    assert nested["result"]["isError"]
    assert nested["result"]["content"][0]["text"] == (
        "Invalid arguments for get_network_summary: pid must be a whole number; duration must be >= 1."
    )
    good = raw.call(21, "get_network_summary", {"duration": 600})
    assert not good["result"]["isError"] and "outbound connection" in good["result"]["content"][0]["text"]
    code, stderr = raw.close()
    assert code == 0 and "Traceback" not in stderr
    assert stderr.count("was not a JSON-RPC message") == 1, stderr  # said once on stderr, not once a line
