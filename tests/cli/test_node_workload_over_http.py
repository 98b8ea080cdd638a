"""The tools' ``node`` and ``workload`` filters over ``--server`` of a one-host netspy-tui ``serve`` (not an
aggregator) agree with the same tools on that host (its own ``/mcp``): its own node keeps everything, another is
an error naming its node, and a workload (which the server's events do not carry) is refused, pointing at its
``/mcp``, instead of answering 0. The API refuses a ``workload`` filter on ``/api/events`` instead of ignoring it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator

import httpx
import pytest
from mcp import StdioServerParameters
from mcp.client import Client

from netspy_tui.mcp_tools.narrow import host_node
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection

HOST = host_node()


def host_source() -> EmbeddedSource:
    """What a serve on this host stores: 10 connects of zzprobe, 2 of curl (no node, no workload on the events)."""
    store = EventStore(None)
    store.add_events([connection(pid=70, command="zzprobe", port=1000 + i, ago=5) for i in range(10)])
    store.add_events([connection(pid=71, command="curl", ago=5) for _ in range(2)])
    return EmbeddedSource(None, store)


@pytest.fixture
def served() -> Iterator[tuple[str, EmbeddedSource]]:
    source = host_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            yield srv.url, source
    finally:
        asyncio.run(source.aclose())


def test_over_the_cli_its_own_node_counts_everything_and_another_is_an_error_naming_it(run_cli, served):
    url, _ = served
    summary = ("--server", url, "--tool", "get_network_summary", "--process", "zzprobe", "--duration", "3600")
    own = run_cli(*summary, "--node", HOST)
    assert own.returncode == 0, own.stderr
    assert own.stdout == f"Process 'zzprobe' made 10 outbound connection attempts over the last 3600 seconds\n" \
                         f"Only node {HOST}.\n"  # fmt: skip
    other = run_cli(*summary, "--node", "nosuch")
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr == f"netspy-tui: node 'nosuch' is not a node of this source (its nodes: {HOST}); pass one " \
                           "of those, or leave node out for all.\n"  # fmt: skip
    listed = json.loads(run_cli("--server", url, "--tool", "list_connections", "--node", HOST, "--json").stdout)
    assert listed["data"]["total_count"] == 12
    nodes = run_cli("--server", url, "--tool", "list_processes", "--group-by", "node", "--duration", "3600")
    assert nodes.returncode == 0, nodes.stderr
    assert f"  {HOST}" in nodes.stdout and "12 attempts" in nodes.stdout


def test_over_the_cli_a_workload_filter_is_refused_with_where_to_ask(run_cli, served):
    url, _ = served
    for args in (("--tool", "get_network_summary", "--workload", "host"),
                 ("--tool", "list_connections", "--workload", "host"),
                 ("--tool", "list_processes", "--group-by", "workload")):  # fmt: skip
        out = run_cli("--server", url, *args)
        assert out.returncode == 1 and out.stdout == "", (args, out.stdout)
        assert out.stderr.startswith("netspy-tui: "), args
        assert "the processes' own host: this eBPF server's events do not say their workload; ask the server's " \
               "own MCP tools (netspy-tui serve answers MCP at /mcp), or filter by pid or process_name." \
               in out.stderr, args  # fmt: skip
        assert len(out.stderr.splitlines()) == 1


async def test_an_outside_agent_over_stdio_sees_what_the_hosts_own_mcp_sees(served):
    url, source = served
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    env["NETSPY_CONFIG"] = "/nonexistent/netspy.toml"
    params = StdioServerParameters(command=sys.executable, args=["-m", "netspy_tui", "mcp", "--server", url], env=env)
    args = {"process_name": "zzprobe", "duration": 3600, "node": HOST}
    async with Client(params, read_timeout_seconds=30) as remote, Client(create_server(source)) as local:
        for client in (remote, local):
            own = await client.call_tool("get_network_summary", args)
            assert not own.is_error and own.structured_content["count"] == 10  # type: ignore[index]
            other = await client.call_tool("get_network_summary", args | {"node": "nosuch"})
            assert other.is_error and f"(its nodes: {HOST})" in other.content[0].text  # type: ignore[union-attr]
        refused = await remote.call_tool("get_network_summary", {"workload": "host"})
        assert refused.is_error and "netspy-tui serve answers MCP at /mcp" in refused.content[0].text  # type: ignore[union-attr]


def test_the_api_refuses_a_workload_filter_and_says_its_node(served):
    url, _ = served
    with httpx.Client(base_url=url, timeout=5) as client:
        refused = client.get("/api/events", params={"workload": "x"})
        assert refused.status_code == 400
        assert refused.text.startswith("workload is not supported: this server's events do not carry their workload")
        assert client.get("/health").json()["node"] == HOST


def test_the_api_answers_kubernetes_filters_in_a_pod_and_refuses_them_elsewhere(served, monkeypatch):
    """In a pod (the downward API's NODE_NAME, POD_NAME, POD_NAMESPACE), every event served carries those k8s_*
    fields, and the contract's k8s_* filters were refused all the same, "this server has no Kubernetes metadata"
    (an audit's): its own values keep every event, another none. Outside a pod they are refused, as before."""
    url, _ = served
    with httpx.Client(base_url=url, timeout=5) as client:
        refused = client.get("/api/events", params={"k8s_node_name": "node-x"})
        assert refused.status_code == 400 and "has no Kubernetes metadata" in refused.text
    for name, value in (("NODE_NAME", "node-x"), ("POD_NAME", "agent-1"), ("POD_NAMESPACE", "mon")):
        monkeypatch.setenv(name, value)
    source = host_source()
    try:
        with BackgroundServer(create_app(source)) as srv, httpx.Client(base_url=srv.url, timeout=5) as client:
            cases = [({"k8s_node_name": "node-x"}, 12), ({"node": "node-x"}, 12),
                     ({"k8s_namespace": "mon", "k8s_pod_name": "agent-1", "command": "curl"}, 2),
                     ({"k8s_node_name": "node-y"}, 0), ({"k8s_namespace": "mon", "k8s_pod_name": "x"}, 0)]  # fmt: skip
            for query, count in cases:
                answer = client.get("/api/events", params=query)
                assert answer.status_code == 200, (query, answer.text)
                body = answer.json()
                assert body["count"] == count and body["total_count"] == count, (query, body["count"])
                assert all(e["k8s_node_name"] == "node-x" for e in body["events"])
                assert all(body["filters"][k] == v for k, v in query.items()), body["filters"]
    finally:
        asyncio.run(source.aclose())


@pytest.mark.parametrize("null_maps", [False, True])
def test_an_aggregator_whose_summaries_carry_no_count_by_node_is_counted_not_zero(run_cli, null_maps):
    """The aggregator's summary paths answer ``api.ConnectionSummaryResponse`` (no ``count_by_node``), as the Go
    aggregator does: a node's count was 0 ("0 outbound connection attempts … Only node w1."), exit 0. And Go
    encodes an empty map as null: ``/api/stats``'s maps as null failed every node-scoped tool (an audit's)."""
    from tests.factories import connection_json
    from tests.fake_ebpf_server import FakeEbpfServer

    events = [connection_json(pid=9, command="zzw1", port=2000 + i, ago=5, k8s_node_name="w1") for i in range(3)]
    events += [connection_json(pid=8, command="zzw2", ago=5, k8s_node_name="w2")]
    with FakeEbpfServer("aggregator", events=events, node_counts=False) as srv:
        if null_maps:
            srv.reply_raw(b'{"total_events": 4, "events_by_type": null, "events_by_node": {"w1": 3, "w2": 1}}',
                          "application/json", path="/api/stats")  # fmt: skip
        summary = run_cli("--server", srv.url, "--tool", "get_network_summary", "--node", "w1")
        drops = run_cli("--server", srv.url, "--tool", "get_packet_drop_summary", "--node", "w1")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("All processes made 3 outbound connection attempts"), summary.stdout
    assert drops.returncode == 0 and "0 packet drops" in drops.stdout.replace("no packet drops", "0 packet drops")
