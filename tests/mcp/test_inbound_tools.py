"""Inbound connections through a real in-memory MCP session: ``list_connections(direction=...)`` and the
``inbound`` part of ``dashboard_snapshot`` over an event store that holds connect() events and the kernel's
passive-open counts (the traffic rows the eBPF and procfs collectors write), and a source without them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.collector.base import DIR_ACCEPT, DIR_RX
from netspy_tui.mcp_tools.schemas import DashboardSnapshot
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionList, format_time
from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection

pytestmark = pytest.mark.quiet

NS = 1_000_000_000
NOW = datetime.now(UTC).replace(microsecond=0)
S = int(NOW.timestamp())


def accept(second: int, pid: int, command: str, port: int, peer: str, peer_port: int, n: int = 1) -> T.Row:
    t = second * NS
    return (second, pid, command, "TCP", "10.0.0.2", port, peer, peer_port, DIR_ACCEPT, n, n, t + 1000, t + 9000)


def seeded_source() -> EmbeddedSource:
    """Two connect()s of curl, four connections nginx and sshd accepted (two in one row) and a byte row, in a
    store of its own (closed with the source)."""
    store = EventStore(None)
    source = EmbeddedSource(None, store)
    store.add_events([connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=NOW - timedelta(seconds=s))
                      for s in (6, 4)])  # fmt: skip
    rows = [
        accept(S - 5, 101, "nginx", 443, "10.0.0.9", 51000),
        accept(S - 3, 101, "nginx", 443, "10.0.0.8", 52000, n=2),  # the same addresses twice in one second
        accept(S - 2, 202, "sshd", 22, "fd00::7", 40000),
        (S - 2, 101, "nginx", "TCP", "10.0.0.2", 443, "10.0.0.9", 51000, DIR_RX, 500, 1, S * NS, S * NS),  # bytes
    ]
    with store._write_lock:  # the writer thread's transaction, without a collector
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, rows)
        store._writer.execute("COMMIT")
    return source


@asynccontextmanager
async def seeded() -> AsyncIterator[Client]:
    source = seeded_source()
    try:
        async with Client(create_server(source)) as c:
            yield c
    finally:
        await source.aclose()


async def listed(client: Client, **args: Any) -> tuple[ConnectionList, str]:
    result = await client.call_tool("list_connections", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return ConnectionList.model_validate(result.structured_content), result.content[0].text  # type: ignore[union-attr]


async def test_outbound_stays_the_default_and_inbound_lists_the_accepted_connections() -> None:
    async with seeded() as client:
        default, _ = await listed(client)
        assert default.direction == "outbound" and default.inbound_available is None
        assert [(e.direction, e.command) for e in default.events] == [("outbound", "curl")] * 2
        assert all(e.peer_ip is None for e in default.events)

        inbound, text = await listed(client, direction="inbound")
        assert inbound.total_count == 4 and inbound.inbound_available is True
        got = [(e.direction, e.pid, e.command, e.destination, e.peer_ip, e.peer_port) for e in inbound.events]
        assert got == [
            ("inbound", 202, "sshd", "10.0.0.2:22", "fd00::7", 40000),
            ("inbound", 101, "nginx", "10.0.0.2:443", "10.0.0.8", 52000),  # the second of the two (its row's last time)
            ("inbound", 101, "nginx", "10.0.0.2:443", "10.0.0.8", 52000),
            ("inbound", 101, "nginx", "10.0.0.2:443", "10.0.0.9", 51000),
        ]
        assert len({e.id for e in inbound.events}) == 4 and all(e.outcome == "ok" for e in inbound.events)
        assert text.startswith("All processes: 4 of 4 inbound connections, newest first")
        assert "sshd            <- [fd00::7]:40000" in text and "inbound, accepted on 10.0.0.2:22" in text

        nginx, _ = await listed(client, direction="inbound", process_name="nginx", max_events=2)
        assert (nginx.total_count, nginx.returned, nginx.truncated) == (3, 2, True)
        since, _ = await listed(client, direction="inbound", since=format_time(NOW - timedelta(seconds=4)))
        assert [e.command for e in since.events] == ["sshd", "nginx", "nginx"]
        by_pid, _ = await listed(client, direction="inbound", pid=202)
        assert [e.command for e in by_pid.events] == ["sshd"]


async def test_all_merges_both_directions_newest_first() -> None:
    async with seeded() as client:
        both, text = await listed(client, direction="all")
        assert both.total_count == 6
        assert [e.direction for e in both.events] == [
            "inbound",
            "inbound",
            "inbound",
            "outbound",
            "inbound",
            "outbound",
        ]
        assert "6 of 6 connections (outbound and inbound)" in text


async def test_the_dashboard_snapshot_has_an_inbound_part_with_a_time_cursor() -> None:
    async with seeded() as client:
        args = {
            "parts": ["connections", "inbound"],
            "after": None,
            "inbound_since": format_time(NOW - timedelta(seconds=3)),
        }
        result = await client.call_tool("dashboard_snapshot", {k: v for k, v in args.items() if v is not None})
        assert not result.is_error, result.content
        snap = DashboardSnapshot.model_validate(result.structured_content)
        assert snap.connections is not None and snap.inbound is not None
        assert [e.direction for e in snap.connections.events] == ["outbound", "outbound"]  # its cursor is its own
        assert [(e.command, e.peer_ip) for e in snap.inbound.events] == [
            ("sshd", "fd00::7"),
            ("nginx", "10.0.0.8"),
            ("nginx", "10.0.0.8"),
        ]
        assert snap.inbound.cursor is None  # (inbound connections page by time: they have no store order)


async def test_a_bad_direction_is_one_sentence() -> None:
    async with Client(create_server(MemorySource([]))) as c:
        result = await c.call_tool("list_connections", {"direction": "sideways"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("Invalid arguments for list_connections: direction") and "\n" not in text


async def test_a_source_that_does_not_see_accepts_says_so() -> None:
    source = MemorySource([connection(pid=7, command="curl", ago=1)])
    async with Client(create_server(source)) as c:
        inbound, text = await listed(c, direction="inbound")
        both, _ = await listed(c, direction="all")
    assert inbound.inbound_available is False and inbound.events == []
    assert "this source does not see inbound connections" in text
    assert both.inbound_available is False and [e.command for e in both.events] == ["curl"]
