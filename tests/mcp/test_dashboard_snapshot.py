"""``dashboard_snapshot`` (issue 17: one round trip per refresh): each part equals what its own tool returns for
the same arguments and cursors (time and insertion order), whatever the scope, cursors, parts and addresses (a
property test over the demo recording with the clock standing still); only the event lists' readable ``text``
is one line there."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.client import Client

from netspy_tui.mcp_tools.schemas import RECENT_BYTES_SECONDS, SNAPSHOT_PARTS, DashboardSnapshot
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionEvent, format_time, parse_time
from netspy_tui.names import NameResolver
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Clock, demo_events, demo_source

pytestmark = pytest.mark.quiet

EVENTS = demo_events()
PIDS = sorted({e.pid for e in EVENTS if e.pid >= 1})[:6]
COMMANDS = sorted({e.command for e in EVENTS})[:6]
ADDRESSES = sorted({e.destination_ip for e in EVENTS if isinstance(e, ConnectionEvent) and e.destination_ip})[:8]

cursors = st.one_of(
    st.none(), st.integers(min_value=0, max_value=400).map(lambda s: format_time(DEMO_NOW - timedelta(seconds=s)))
)

seq_cursors = st.one_of(st.none(), st.integers(min_value=0, max_value=len(EVENTS) + 3))


def _separately(args: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each part's own tool call, with the same arguments the snapshot passes it."""
    scope = {"pid": args.get("pid"), "process_name": args.get("process_name")}
    events = {**scope, "max_events": args.get("max_events", 100)}
    window = {**scope, "duration": args.get("duration", 60)}
    return {
        "status": ("server_status", {}),
        "connections": (
            "list_connections",
            {**events, "since": args.get("since"), "until": args.get("until"), "after": args.get("after")},
        ),
        "drops": ("list_packet_drops", {**events, "since": args.get("drops_since"), "after": args.get("drops_after")}),
        "patterns": ("analyze_patterns", window),
        "drop_patterns": ("analyze_packet_drops", window),
        "processes": ("list_processes", {"duration": args.get("duration", 60), "limit": args.get("limit", 20)}),
        "names": ("lookup_names", {"addresses": args.get("addresses")}),
        "recent_bytes": ("get_traffic", {**scope, "duration": RECENT_BYTES_SECONDS, "limit": 1}),
        "inbound": ("list_connections", {**events, "since": args.get("inbound_since"), "direction": "inbound"}),
    }


async def _compare(args: dict[str, Any]) -> None:
    clock = Clock()
    server = create_server(demo_source(clock, inbound=True), names=NameResolver(enabled=False))
    wanted = set(SNAPSHOT_PARTS if args.get("parts") is None else args["parts"])
    async with Client(server) as client:
        snap = await client.call_tool("dashboard_snapshot", {k: v for k, v in args.items() if v is not None})
        listed = await client.list_tools()
        schema = next(t.output_schema for t in listed.tools if t.name == "dashboard_snapshot")
        alone = {}
        for part, (tool, tool_args) in _separately(args).items():
            if part in wanted and (part != "names" or args.get("addresses")):
                alone[part] = await client.call_tool(tool, {k: v for k, v in tool_args.items() if v is not None})
    since, until = args.get("since"), args.get("until")
    if since is not None and until is not None and parse_time(since) >= parse_time(until):
        # an empty range is refused as the arguments are checked, whatever the parts (as a bound out of range is)
        assert snap.is_error and "since must be earlier than until" in snap.content[0].text
        return
    errors = [r.content[0].text.split(": ", 1)[-1] for r in alone.values() if r.is_error]
    if errors:  # e.g. a pid and a process name that disagree: the snapshot says the same sentence
        assert snap.is_error and any(e in snap.content[0].text for e in errors)
        return
    assert not snap.is_error, snap.content
    content = snap.structured_content
    assert content is not None
    # what its published output schema describes (the server does not validate it again: each part is a model's dump)
    assert schema is not None
    jsonschema.validate(content, schema)
    DashboardSnapshot.model_validate(content)
    for part in [*SNAPSHOT_PARTS, "names", "recent_bytes", "inbound"]:
        if part in alone:
            expected = dict(alone[part].structured_content or {})
            if part in ("connections", "drops", "inbound"):  # the listing text is one line in a snapshot
                assert content[part].pop("text").endswith("events listed.")
                expected.pop("text")
            if part == "recent_bytes":  # "until" is the wall-clock time each call read (a source without bytes)
                content[part]["stats"].pop("until")
                expected["stats"] = {k: v for k, v in expected["stats"].items() if k != "until"}
            assert content[part] == expected, part
        else:
            assert content.get(part) is None, part


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pid=st.sampled_from([None, None, *PIDS]),
    process_name=st.sampled_from([None, None, *COMMANDS]),
    duration=st.sampled_from([1, 10, 60, 300, 3600]),
    max_events=st.integers(min_value=1, max_value=1000),
    since=cursors,
    until=cursors,
    drops_since=cursors,
    inbound_since=cursors,
    after=seq_cursors,
    drops_after=seq_cursors,
    parts=st.one_of(
        st.none(),
        st.lists(st.sampled_from([*SNAPSHOT_PARTS, "names", "recent_bytes", "inbound"]), unique=True, max_size=9),
    ),
    limit=st.integers(min_value=1, max_value=200),
    addresses=st.one_of(st.none(), st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=5, unique=True)),
)
def test_each_part_equals_its_own_tool(**args: Any) -> None:
    asyncio.run(_compare(args))


async def test_the_poller_makes_one_call_per_refresh() -> None:
    """A refresh with new events is one tool call (it was 5-6): the snapshot."""
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.tui.poller import Poller

    clock = Clock()
    async with open_gateway(demo_source(clock)) as gateway:
        calls: list[str] = []
        real = gateway.call

        async def spy(name: str, arguments: dict[str, Any] | None = None) -> Any:
            calls.append(name)
            return await real(name, arguments)

        gateway.call = spy  # type: ignore[method-assign]
        poller = Poller(gateway, clock=clock, window=300, interval=1.0)
        first = await poller.poll()
        assert calls == ["dashboard_snapshot"] and first.connections and first.processes.processes
        calls.clear()
        await poller.poll()
        assert calls == ["dashboard_snapshot"]


async def test_a_burst_the_table_holds_is_paged_with_snapshot_calls() -> None:
    """A burst of more new events than one call returns (but fewer than the table holds) is paged backward with the
    snapshot's connections part and ``until``: all of it fetched, still one tool, no page's text built."""
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.tui.poller import Poller
    from tests.factories import connection

    clock = Clock()
    source = demo_source(clock)
    async with open_gateway(source) as gateway:
        calls: list[tuple[str, dict[str, Any]]] = []
        real = gateway.call

        async def spy(name: str, arguments: dict[str, Any] | None = None) -> Any:
            calls.append((name, dict(arguments or {})))
            return await real(name, arguments)

        gateway.call = spy  # type: ignore[method-assign]
        poller = Poller(gateway, clock=clock, window=300, interval=1.0, max_rows=2000, max_events=50)
        first = await poller.poll()
        newest = max(e.time for e in first.connections)
        burst = [connection(pid=700, command="burst", port=2000 + i, time=newest + timedelta(milliseconds=i + 1))
                 for i in range(120)]  # fmt: skip
        source.add_events(burst)
        calls.clear()
        snap = await poller.poll()
        assert [name for name, _ in calls] == ["dashboard_snapshot"] * 3  # (50 + 50 + 20)
        assert [args.get("parts") for _, args in calls[1:]] == [["connections"], ["connections"]]
        assert all("until" in args for _, args in calls[1:]) and "until" not in calls[0][1]
        assert snap.new_connections == 120 and snap.burst_skipped == 0
        assert {e.id for e in burst} <= {e.id for e in snap.connections}


async def test_a_refresh_carries_only_the_new_events() -> None:
    """With the source's insertion-order cursor a refresh's connections part holds just the events stored since
    the last one (the time cursor's overlap re-sent the last seconds' events every refresh), a late one too."""
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.tui.poller import Poller
    from tests.factories import connection

    clock = Clock()
    source = demo_source(clock)
    async with open_gateway(source) as gateway:
        answers: list[tuple[dict[str, Any], Any]] = []
        real = gateway.call

        async def spy(name: str, arguments: dict[str, Any] | None = None) -> Any:
            result = await real(name, arguments)
            answers.append((dict(arguments or {}), result.data))
            return result

        gateway.call = spy  # type: ignore[method-assign]
        poller = Poller(gateway, clock=clock, window=300, interval=1.0)
        first = await poller.poll()
        newest = max(e.time for e in first.connections)
        fresh = [connection(pid=900 + i, command="fresh", time=newest - timedelta(seconds=i * 0.5)) for i in range(3)]
        source.add_events(fresh)  # (stamped up to a second before the newest shown: late arrivals)
        answers.clear()
        second = await poller.poll()
        args, data = answers[0]
        assert args["after"] == len(EVENTS) and "since" in args  # (the demo source's events so far)
        assert sorted(e["pid"] for e in data["connections"]["events"]) == [900, 901, 902]
        assert second.new_connections == 3 and {e.pid for e in second.connections} >= {900, 901, 902}


async def test_a_refresh_reads_the_source_info_once_and_each_tool_call_its_own() -> None:
    """The snapshot's parts (the lists, the status, the patterns) share one reading of the source's info (on this
    host's store each reading is a thread hop and two queries); a tool called on its own still reads it afresh."""
    from netspy_tui.mcp_tools.gateway import open_gateway

    clock = Clock()
    source = demo_source(clock, inbound=True)
    reads: list[int] = []
    real = source.info

    async def counted() -> Any:
        reads.append(1)
        return await real()

    source.info = counted  # type: ignore[method-assign]
    async with open_gateway(source) as gateway:
        reads.clear()
        snap = await gateway.snapshot(duration=300, parts=SNAPSHOT_PARTS)
        assert snap.status is not None and snap.connections is not None and snap.drops is not None
        assert snap.connections.source == snap.status.source.label  # (the parts' source, from the one reading)
        assert len(reads) == 1
        reads.clear()
        await gateway.connections(max_events=5)
        await gateway.drops(max_events=5)
        assert len(reads) == 2
