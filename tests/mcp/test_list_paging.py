"""Following ``list_connections``' own paging hint in a real MCP session reaches the events it says are left."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import LatencyGroup, LatencyStats, Scope, TrafficStats
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, drop

pytestmark = pytest.mark.quiet

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_the_hint_names_the_argument_that_reaches_the_older_events() -> None:
    store = EventStore(None)
    store.add_events([connection(pid=n, command="curl", time=NOW - timedelta(seconds=n)) for n in range(1, 6)])
    source = EmbeddedSource(None, store)
    try:
        async with Client(create_server(source)) as c:
            first = await c.call_tool("list_connections", {"max_events": 2})
            text = first.content[0].text  # type: ignore[union-attr]
            hint = re.search(
                r"\(3 more, older than those shown or as old as the last: .*pass (\w+)=(\S+) to page back\)", text
            )
            assert hint is not None, text
            shown = first.structured_content["events"]  # type: ignore[index]
            assert [e["pid"] for e in shown] == [1, 2]
            assert first.structured_content["before"] == hint.group(2)  # type: ignore[index]
            rest = await c.call_tool("list_connections", {"max_events": 10, hint.group(1): hint.group(2)})
            pids = [e["pid"] for e in rest.structured_content["events"]]  # type: ignore[index]
            assert pids == [3, 4, 5]  # the three the hint counted, none shown again
    finally:
        await source.aclose()


async def _follow_the_hint(c: Client, tool: str, arguments: dict[str, Any]) -> tuple[list[str], int]:
    """Page by the hint of each page's text, as an agent reading it would, until it names no more; the ids listed
    and the number of pages."""
    ids: list[str] = []
    for pages in range(1, 21):
        result = await c.call_tool(tool, arguments)
        assert not result.is_error, result.content
        shown = result.structured_content["events"]  # type: ignore[index]
        ids += [e["id"] for e in shown]
        text = result.content[0].text  # type: ignore[union-attr]
        hint = re.search(r"pass (\w+)=(<time of the oldest event shown>|\S+) to page back\)$", text)
        if hint is None:
            return ids, pages
        value = shown[-1]["time"] if hint.group(2).startswith("<") else hint.group(2)
        arguments = {**arguments, hint.group(1): value}
    raise AssertionError(f"still paging after 20 pages: {len(ids)} events listed, {len(set(ids))} distinct")


@pytest.mark.parametrize("tool", ["list_connections", "list_packet_drops"])
async def test_following_the_hint_through_events_of_one_time_lists_each_once(tool: str) -> None:
    """More events of one time than a page holds (a procfs sample's connections share its time): every page was
    the same before, and nothing older was reached."""
    make = connection if tool == "list_connections" else drop
    sampled = NOW - timedelta(seconds=5)
    events = [make(pid=100 + n, time=sampled, timestamp=7) for n in range(8)]
    events += [make(pid=200 + n, time=sampled - timedelta(seconds=n + 1)) for n in range(4)]
    store = EventStore(None)
    store.add_events(events)
    source = EmbeddedSource(None, store)
    try:
        async with Client(create_server(source)) as c:
            whole = await c.call_tool(tool, {"max_events": 100})
            expected = [e["id"] for e in whole.structured_content["events"]]  # type: ignore[index]
            for arguments in ({"max_events": 3}, {"max_events": 3, "until": sampled.isoformat()}, {"max_events": 1}):
                ids, pages = await _follow_the_hint(c, tool, arguments)
                assert ids == expected and len(expected) == 12, arguments  # each once, in the list's order
                assert pages == -(-12 // arguments["max_events"])
            bad = await c.call_tool(tool, {"before": "yesterday"})
    finally:
        await source.aclose()
    assert bad.is_error and len(bad.content) == 1
    text = bad.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"Invalid arguments for {tool}: before must be the `before` an earlier list returned")
    assert "\n" not in text


class _Measured(MemorySource):
    """A source whose connect latencies are given: one process with one connect, one with 12,345."""

    async def traffic(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                      ) -> TrafficStats:  # fmt: skip
        return TrafficStats(window_seconds=window_seconds, available=False)

    async def connect_latency(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                              ) -> LatencyStats:  # fmt: skip
        def group(command: str, n: int) -> LatencyGroup:
            return LatencyGroup(command=command, pids=[1], destination="10.0.0.1:80", attempts=n, p50_us=900,
                                p95_us=900, max_us=900, outcomes={"ok": n})  # fmt: skip

        groups = [group("busy", 12_345), group("once", 1)]
        return LatencyStats(window_seconds=window_seconds, attempts=12_346, p50_us=900, p95_us=900, max_us=900,
                            processes=groups, destinations=groups, total_destinations=1)  # fmt: skip


async def test_latency_text_counts_with_separators_and_the_right_plural() -> None:
    async with Client(create_server(_Measured([]))) as c:
        text = (await c.call_tool("get_connect_latency", {})).content[0].text  # type: ignore[union-attr]
    assert "All processes: 12,346 TCP connects in the last 60 seconds" in text
    assert "12,345 connects  p50" in text and " 1 connect  p50" in text and "1 connects" not in text
    assert "busy -> 10.0.0.1:80: 12,345 connects" in text and "(12,345 ok)" in text


class _NoLongCounts(MemorySource):
    """A server that refuses to count a long window (as some eBPF servers bound ``duration_seconds``)."""

    async def count(self, scope: Scope) -> int:
        raise NetspyError("the eBPF server refused duration_seconds=604800 (400)")


async def test_an_empty_list_stands_when_the_source_cannot_count_its_window() -> None:
    async with Client(create_server(_NoLongCounts([]))) as c:
        result = await c.call_tool("list_connections", {"process_name": "zzprobe"})
    assert not result.is_error
    assert result.content[0].text == "No connection events found for Process 'zzprobe'."  # type: ignore[union-attr]
