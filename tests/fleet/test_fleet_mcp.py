"""The MCP tools' node and workload filters and ``list_processes`` group_by, through a real MCP client
session: on an aggregator (its nodes, the events' workloads) and on this host's live collector (the
node is this host, a workload is the pids in its cgroups)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.mcp_tools.narrow import host_node
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import SourceInfo
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, connection_json, drop_json

pytestmark = pytest.mark.quiet

#: node -> [(pid, command, workload, connections)]
FLEET = {
    "node-a": [(10, "curl", "docker aaa", 7), (11, "nginx", "nginx.service", 3)],
    "node-b": [(10, "curl", "docker bbb", 5)],
    "node-c": [(12, "wget", "host", 2)],
}


def fleet_events() -> list[dict[str, Any]]:
    out = []
    for node, rows in FLEET.items():
        for pid, command, workload, n in rows:
            for i in range(n):
                event = connection_json(pid=pid, command=command, port=1000 + i, ago=5, workload=workload,
                                        return_code=-111 if i == 0 else 0)  # fmt: skip
                out.append({**event, "k8s_node_name": node})
        out.append({**drop_json(ago=5), "k8s_node_name": node})
    return out


@asynccontextmanager
async def fleet_session() -> AsyncIterator[Client]:
    fleet = FleetStore(None)
    assert not fleet.ingest(fleet_events()).rejected
    try:
        async with Client(create_server(FleetSource(fleet))) as client:
            yield client
    finally:
        fleet.close()


async def call(client: Client, tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    return result.structured_content


async def error(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    text = str(result.content[0].text)  # type: ignore[union-attr]
    assert "\n" not in text and "Traceback" not in text
    return text


async def test_node_filters_on_an_aggregator() -> None:
    async with fleet_session() as fleet_client:
        await _test_node_filters_on_an_aggregator(fleet_client)


async def _test_node_filters_on_an_aggregator(fleet_client: Client) -> None:
    assert (await call(fleet_client, "get_network_summary"))["count"] == 17
    for node, rows in FLEET.items():
        summary = await call(fleet_client, "get_network_summary", node=node)
        assert summary["count"] == sum(n for *_, n in rows)
        assert f"Only node {node}." in summary["text"]
        listed = await call(fleet_client, "list_connections", node=node, max_events=100)
        assert listed["total_count"] == summary["count"]
        assert {e["k8s_node_name"] for e in listed["events"]} == {node}
        drops = await call(fleet_client, "get_packet_drop_summary", node=node)
        assert drops["count"] == 1
    patterns = await call(fleet_client, "analyze_patterns", node="node-a", process_name="curl")
    assert patterns["stats"]["total"] == 7 and patterns["stats"]["outcomes"]
    snap = await call(fleet_client, "dashboard_snapshot", node="node-a")  # every part of one node
    assert {e["k8s_node_name"] for e in snap["connections"]["events"]} == {"node-a"}
    assert len(snap["connections"]["events"]) == 10 and len(snap["drops"]["events"]) == 1
    assert snap["patterns"]["stats"]["total"] == 10 and snap["drop_patterns"]["stats"]["total"] == 1
    assert {p["command"]: p["attempts"] for p in snap["processes"]["processes"]} == {"curl": 7, "nginx": 3}
    assert all(p["nodes"] == ["node-a"] for p in snap["processes"]["processes"])
    merged = await call(fleet_client, "list_processes")  # across nodes: a process names every node it ran on
    assert {p["command"]: p["nodes"] for p in merged["processes"]}["curl"] == ["node-a", "node-b"]


async def test_workload_filters_on_an_aggregator() -> None:
    async with fleet_session() as fleet_client:
        await _test_workload_filters_on_an_aggregator(fleet_client)


async def _test_workload_filters_on_an_aggregator(fleet_client: Client) -> None:
    curl_a = await call(fleet_client, "get_network_summary", workload="docker aaa")
    assert curl_a["count"] == 7
    both = await call(fleet_client, "list_connections", workload="docker bbb", node="node-b", max_events=100)
    assert both["total_count"] == 5 and {e["workload"] for e in both["events"]} == {"docker bbb"}
    none = await call(fleet_client, "get_network_summary", workload="docker bbb", node="node-a")
    assert none["count"] == 0


async def test_list_processes_groups_by_node_and_by_workload() -> None:
    async with fleet_session() as fleet_client:
        await _test_list_processes_groups_by_node_and_by_workload(fleet_client)


async def _test_list_processes_groups_by_node_and_by_workload(fleet_client: Client) -> None:
    by_node = await call(fleet_client, "list_processes", group_by="node")
    assert {g["key"]: g["attempts"] for g in by_node["groups"]} == {"node-a": 10, "node-b": 5, "node-c": 2}
    assert {g["key"]: g["failures"] for g in by_node["groups"]} == {"node-a": 2, "node-b": 1, "node-c": 1}
    assert by_node["groups"][0]["key"] == "node-a" and "by node" in by_node["text"]
    by_workload = await call(fleet_client, "list_processes", group_by="workload")
    assert {g["key"]: g["attempts"] for g in by_workload["groups"]} == {
        "docker aaa": 7, "nginx.service": 3, "docker bbb": 5, "host": 2,
    }  # fmt: skip
    one_node = await call(fleet_client, "list_processes", group_by="workload", node="node-a")
    assert {g["key"]: g["attempts"] for g in one_node["groups"]} == {"docker aaa": 7, "nginx.service": 3}
    by_process = await call(fleet_client, "list_processes")
    assert by_process["group_by"] == "process" and by_process["groups"] == []
    assert by_process["processes"][0]["command"] == "curl" and by_process["processes"][0]["attempts"] == 12


async def test_unknown_or_malformed_values_are_one_actionable_line() -> None:
    async with fleet_session() as fleet_client:
        await _test_unknown_or_malformed_values_are_one_actionable_line(fleet_client)


async def _test_unknown_or_malformed_values_are_one_actionable_line(fleet_client: Client) -> None:
    text = await error(fleet_client, "get_network_summary", node="node-z")
    assert "node 'node-z' is not a node of this source (its nodes: node-a, node-b, node-c)" in text
    assert "node must be a node name" in await error(fleet_client, "list_connections", node="bad node")
    assert "group_by: Input should be" in await error(fleet_client, "list_processes", group_by="pods")
    assert "not per workload" in await error(fleet_client, "get_traffic", workload="docker aaa")
    assert "workload must not be empty" in await error(fleet_client, "get_network_summary", workload="")


# --- this host's live collector --------------------------------------------------------------


@dataclass(frozen=True)
class _Workload:
    name: str


class _Cgroups:
    """A WorkloadResolver's answers for the test's pids (the real one reads /proc/PID/cgroup)."""

    def __init__(self, by_pid: dict[int, str]) -> None:
        self.by_pid = by_pid

    def of_pid(self, pid: int, *, refresh: bool = False) -> _Workload | None:
        name = self.by_pid.get(pid)
        return _Workload(name) if name else None


class _LiveHost(MemorySource):
    """Events as this host's live collector holds them: no node, no workload on the events."""

    async def info(self) -> SourceInfo:
        return SourceInfo(label="procfs (embedded)", kind="embedded", generation="embedded", collector="procfs")


@asynccontextmanager
async def host_session() -> AsyncIterator[Client]:
    events = [connection(pid=1, command="curl", port=p, ago=5) for p in range(4)]
    events += [connection(pid=2, command="curl", port=p, ago=5, return_code=-111) for p in range(3)]
    events += [connection(pid=3, command="sshd", port=22, ago=5)]
    cgroups = _Cgroups({1: "docker aaa", 2: "docker aaa", 3: "ssh.service"})
    async with Client(create_server(_LiveHost(events), workloads=cgroups)) as client:  # type: ignore[arg-type]
        yield client


async def test_on_one_host_a_workload_is_its_pids_and_the_node_is_this_host() -> None:
    async with host_session() as host_client:
        await _test_on_one_host_a_workload_is_its_pids_and_the_node_is_this_host(host_client)


async def _test_on_one_host_a_workload_is_its_pids_and_the_node_is_this_host(host_client: Client) -> None:
    summary = await call(host_client, "get_network_summary", workload="docker aaa")
    assert summary["count"] == 7
    listed = await call(host_client, "list_connections", workload="docker aaa", max_events=100)
    assert listed["total_count"] == 7 and {e["pid"] for e in listed["events"]} == {1, 2}
    patterns = await call(host_client, "analyze_patterns", workload="docker aaa", pid=2)
    assert patterns["stats"]["total"] == 3
    here = await call(host_client, "get_network_summary", node=host_node())
    assert here["count"] == 8
    groups = await call(host_client, "list_processes", group_by="workload")
    assert [(g["key"], g["attempts"], g["failures"]) for g in groups["groups"]] == [
        ("docker aaa", 7, 3), ("ssh.service", 1, 0),
    ]  # fmt: skip
    nodes = await call(host_client, "list_processes", group_by="node")
    assert [(g["key"], g["attempts"]) for g in nodes["groups"]] == [(host_node(), 8)]
    text = await error(host_client, "get_network_summary", workload="docker zzz")
    assert "no process of workload 'docker zzz'" in text and "'docker aaa', 'ssh.service'" in text
    text = await error(host_client, "list_connections", node="elsewhere")
    assert f"its nodes: {host_node()}" in text


# --- the "unknown" workload group: the events no workload names --------------------------------------


async def test_the_unknown_workload_group_has_its_failures_and_processes_on_one_host() -> None:
    """A process gone before its cgroup was read (a short script's connects refused) is in ``unknown``: its
    refusals are that group's failures (they were 0) and its name is among the group's processes."""
    events = [connection(pid=1, command="curl", port=p, ago=5, return_code=-111 if p == 0 else 0) for p in range(4)]
    events += [connection(pid=900 + i, command="python3", port=1, ago=5, return_code=-111) for i in range(26)]
    events += [connection(pid=950, command="probe", port=80, ago=5)]
    cgroups = _Cgroups({1: "docker aaa"})
    async with Client(create_server(_LiveHost(events), workloads=cgroups)) as client:  # type: ignore[arg-type]
        groups = await call(client, "list_processes", group_by="workload")
    assert [(g["key"], g["attempts"], g["failures"], g["processes"]) for g in groups["groups"]] == [
        ("unknown", 27, 26, ["python3", "probe"]), ("docker aaa", 4, 1, ["curl"]),
    ]  # fmt: skip
    assert "26 failures" in groups["text"] and "python3, probe" in groups["text"]


async def test_the_unknown_workload_group_has_its_failures_and_processes_on_an_aggregator() -> None:
    """Events an agent sent without a workload are ``unknown`` on the aggregator, with their own failures."""
    extra = [{**connection_json(pid=40, command="python3", port=1, ago=5, return_code=-111), "k8s_node_name": "node-c"}
             for _ in range(26)]  # fmt: skip
    fleet = FleetStore(None)
    assert not fleet.ingest(fleet_events() + extra).rejected
    try:
        async with Client(create_server(FleetSource(fleet))) as client:
            groups = await call(client, "list_processes", group_by="workload")
    finally:
        fleet.close()
    unknown = [g for g in groups["groups"] if g["key"] == "unknown"]
    assert [(g["attempts"], g["failures"], g["processes"]) for g in unknown] == [(26, 26, ["python3"])]
    assert sum(g["failures"] for g in groups["groups"]) == 4 + 26  # each of FLEET's rows has one refused connect
