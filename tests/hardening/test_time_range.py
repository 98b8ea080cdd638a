"""Times and cursors outside what the store holds are refused the same way everywhere: a 400 with one line (HTTP,
``serve`` and ``serve --aggregate``), exit 2 with one line (CLI, a recording), ``Invalid arguments`` (MCP), never a
500, a traceback or "failed unexpectedly". The rule (models.TIME_RANGE): 1678-01-01 to 2262-04-11, what 64-bit
nanoseconds since the epoch hold, to whole days; cursors up to 2^62."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from tests.hardening.conftest import DEMO, Child, Cli, assert_one_line_error, free_port
from tests.hardening.test_security import served_url
from tests.mcp.test_inbound_tools import seeded_source

RANGE = "must be between 1678-01-01T00:00:00Z and 2262-04-11T00:00:00Z"
FAR = "9999-12-31T23:59:59Z"
EARLY = "0001-01-01T00:00:00Z"
JUST_AFTER = "2262-04-12T00:00:00Z"  # (the first day whose nanoseconds overflow 64 bits)

#: (path, query, the start of the one-line answer)
REFUSED = [
    ("/api/events", {"until": FAR}, f"until {RANGE}, got '{FAR}'"),
    ("/api/events", {"since": EARLY}, f"since {RANGE}, got '{EARLY}'"),
    ("/api/events", {"type": "connection", "since": JUST_AFTER}, f"since {RANGE}, got '{JUST_AFTER}'"),
    ("/api/events", {"type": "packet_drop", "until": FAR}, f"until {RANGE}, got '{FAR}'"),
]


def _refuses(url: str, cases: list[tuple[str, dict[str, str], str]]) -> None:
    with httpx.Client(base_url=url, timeout=20) as client:
        for path, query, said in cases:
            resp = client.get(path, params=query)
            assert (resp.status_code, resp.text) == (400, said + "\n"), (path, query)
        # the bounds themselves are times a query may name
        edges = {"since": "1678-01-01T00:00:00Z", "until": "2262-04-11T00:00:00Z", "type": "connection"}
        assert client.get("/api/events", params=edges).status_code == 200


def test_serve_and_the_aggregator_answer_400_for_a_time_the_store_cannot_hold(spawn: Callable[..., Child]) -> None:
    node = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(free_port()))
    aggregator = spawn("serve", "--aggregate", "--port", str(free_port()))
    node_url = served_url(node, "the eBPF server API")
    _refuses(node_url, [*REFUSED, ("/api/inbound", {"until": FAR}, f"until {RANGE}, got '{FAR}'")])
    _refuses(served_url(aggregator, "the aggregator API"), REFUSED)
    with httpx.Client(base_url=node_url, timeout=20) as client:
        beyond = client.get("/api/events", params={"type": "connection", "after": str(2**62 + 1)})
        assert beyond.status_code == 400 and beyond.text.startswith("after must be between 0 and 4611686018427387904")
    for child in (node, aggregator):
        child.stop()
        log = "".join(child.err)
        assert "Traceback" not in log and "ERROR" not in log and "OverflowError" not in log, log


def test_the_cli_and_the_repl_refuse_such_a_time_in_one_line(cli: Cli) -> None:
    for flag, value in (("--until", FAR), ("--since", EARLY), ("--since", JUST_AFTER)):
        for tool in ("list_connections", "list_packet_drops"):
            run = cli("--replay", str(DEMO), "--tool", tool, flag, value)
            line = assert_one_line_error(run, 2)
            assert line == f"netspy-tui: Invalid arguments for {tool}: {flag} {RANGE}, not '{value}'.", line
    ok = cli("--replay", str(DEMO), "--tool", "list_connections", "--until", "2262-04-11T00:00:00Z", "--max-events",
             "1")  # fmt: skip
    assert ok.returncode == 0 and "of 240 connection events" in ok.stdout, ok.stderr
    repl = cli("repl", "--replay", str(DEMO), input=f"list --until {FAR}\ndrops --since {EARLY}\nquit\n")
    assert repl.returncode == 1 and "Traceback" not in repl.stderr and "unexpectedly" not in repl.stderr, repl.stderr
    assert repl.stderr == (
        f"error: Invalid arguments for list_connections: --until {RANGE}, not '{FAR}'.\n"
        f"error: Invalid arguments for list_packet_drops: --since {RANGE}, not '{EARLY}'.\n"
    )


def test_a_recording_with_such_a_time_is_refused_at_start_not_lost_in_its_batch(cli: Cli, tmp_path: Path) -> None:
    lines = DEMO.read_text().splitlines()[:3]
    bad = json.loads(lines[0]) | {"id": "0123456789abcdef", "time": "9999-12-31T00:00:00Z"}
    rec = tmp_path / "rec.jsonl"
    rec.write_text("\n".join([*lines, json.dumps(bad)]) + "\n")
    run = cli("--replay", str(rec), "--replay-times", "recorded", "--tool", "list_connections")
    line = assert_one_line_error(run, 2)
    assert line.startswith(f"netspy-tui: {rec}:4: time {RANGE}, not '9999-12-31T00:00:00Z'."), line


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error, (tool, arguments, text)
    return str(text)


async def test_the_tools_answer_invalid_arguments_for_such_a_time_or_cursor() -> None:
    source = seeded_source()
    try:
        async with Client(create_server(source)) as c:
            for tool in ("list_connections", "list_packet_drops"):
                for name, value in (("until", FAR), ("since", EARLY), ("since", JUST_AFTER)):
                    text = await _call(c, tool, {name: value})
                    assert text == f"Invalid arguments for {tool}: {name} {RANGE}, not '{value}'.", text
            inbound = await _call(c, "list_connections", {"direction": "inbound", "until": FAR})
            assert inbound == f"Invalid arguments for list_connections: until {RANGE}, not '{FAR}'.", inbound
            snapshot = "Invalid arguments for dashboard_snapshot: "
            cases: list[tuple[dict[str, Any], str]] = [
                ({"since": "9999-01-01T00:00:00Z"}, f"since {RANGE}, not '9999-01-01T00:00:00Z'"),
                ({"drops_since": EARLY}, f"drops_since {RANGE}, not '{EARLY}'"),
                ({"inbound_since": "9999-01-01T00:00:00Z", "parts": ["inbound"]},
                 f"inbound_since {RANGE}, not '9999-01-01T00:00:00Z'"),
                ({"after": 10**30}, "after must be <= 4611686018427387904"),
                ({"drops_after": 2**63}, "drops_after must be <= 4611686018427387904"),
                ({"after": 5, "resolved_after": 2**62 + 1}, "resolved_after must be <= 4611686018427387904"),
            ]  # fmt: skip
            for arguments, said in cases:
                text = await _call(c, "dashboard_snapshot", arguments)
                assert text == f"{snapshot}{said}.", (arguments, text)
            fine = await c.call_tool("list_connections", {"until": "2262-04-11T00:00:00Z", "after": 2**62})
            assert not fine.is_error, fine.content
    finally:
        await source.aclose()
