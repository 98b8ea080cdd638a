"""A fleet as a user runs one: a real ``netspy-tui serve --aggregate`` on 127.0.0.1 and three agents
(``serve --forward`` replaying recordings, each with its own node name), the aggregator killed
mid-run and restarted on its store; then ingest abuse against the real server."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import connection_json, drop_json
from tests.hardening.conftest import TERMINATED, Child, Cli, cli, free_port, spawn, wait_until  # noqa: F401 (fixtures)
from tests.hardening.test_security import served_url

INGEST_TOKEN = "fleet-ingest-secret"
READ_TOKEN = "fleet-read-secret"
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
AGENT = {"Authorization": f"Bearer {INGEST_TOKEN}"}
#: node -> (connections, drops) in its recording
NODES = {"node-a": (240, 24), "node-b": (150, 10), "node-c": (60, 6)}
SPREAD = 6.0  # seconds the recordings span (played in real time: forwarding runs while the aggregator dies)

pytestmark = pytest.mark.slow


def recording(path: Path, node: str, connections: int, drops: int) -> Path:
    lines = []
    for i in range(connections):
        lines.append(connection_json(pid=100 + i % 4, command=f"cli-{node[-1]}", port=20000 + i,
                                     ago=30 - SPREAD * i / connections))  # fmt: skip
    for i in range(drops):
        lines.append(drop_json(pid=9, command="nginx", ago=30 - SPREAD * i / drops, reason="NETFILTER_DROP"))
    lines.sort(key=lambda e: e["time"])
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def aggregator(spawn: Callable[..., Child], port: int, db: Path) -> tuple[Child, str]:  # noqa: F811
    child = spawn("serve", "--aggregate", "--port", str(port), "--db", str(db), "--token", READ_TOKEN,
                  "--ingest-token", INGEST_TOKEN)  # fmt: skip
    return child, served_url(child, "the aggregator API")


def counts(url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    out = {}
    for kind, path in (("connection", "/api/connection-summary"), ("packet_drop", "/api/packet-drop-summary")):
        out[kind] = httpx.get(url + path, params={"duration_seconds": 3600, **params}, headers=headers,
                              timeout=10).json()  # fmt: skip
    return out


def test_three_agents_one_aggregator_exact_per_node_through_a_restart(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
    cli: Cli,  # noqa: F811
) -> None:
    port = free_port()
    db = tmp_path / "fleet"
    agg, url = aggregator(spawn, port, db)
    agents: dict[str, str] = {}
    for node, (n_conn, n_drop) in NODES.items():
        rec = recording(tmp_path / f"{node}.jsonl", node, n_conn, n_drop)
        child = spawn("serve", "--replay", str(rec), "--replay-speed", "1", "--port", str(free_port()),
                      "--forward", url, env={"NETSPY_FORWARD_TOKEN": INGEST_TOKEN, "NODE_NAME": node})  # fmt: skip
        agents[node] = served_url(child, "the eBPF server API")

    def stats() -> dict[str, Any]:
        return dict(httpx.get(url + "/api/stats", headers=READER, timeout=10).json())

    # killed (SIGKILL: no goodbye) once some events are in, while the agents are still sending
    wait_until(lambda: stats()["total_events"] > 0, "the first events at the aggregator", timeout=30)
    agg.proc.send_signal(signal.SIGKILL)
    agg.proc.wait(10)
    agg, url2 = aggregator(spawn, port, db)  # the same port and store
    assert url2 == url

    expected = {node: c + d for node, (c, d) in NODES.items()}
    wait_until(lambda: stats()["events_by_node"] == expected, f"per-node totals {expected}", timeout=90)
    for node, agent_url in agents.items():  # each agent's spool is drained: it has nothing waiting
        wait_until(
            lambda u=agent_url: httpx.get(u + "/health", timeout=10).json()["forwarding"]["waiting"] == 0,  # type: ignore[misc]
            f"{node}'s spool drained",
        )

    fleet = counts(url, READER)
    total = {"connection": 0, "packet_drop": 0}
    for node, agent_url in agents.items():
        own = counts(agent_url, {})
        assert (own["connection"]["count"], own["packet_drop"]["count"]) == NODES[node]
        for kind in total:
            assert fleet[kind]["count_by_node"][node] == own[kind]["count"], (node, kind)
            total[kind] += own[kind]["count"]
        one = counts(url, READER, node=node)
        assert one["connection"]["count"] == NODES[node][0] and one["connection"]["count_by_node"] == {
            node: NODES[node][0]
        }
    assert {kind: fleet[kind]["count"] for kind in total} == total  # the fleet's total is the sum
    assert stats()["total_events"] == sum(expected.values())  # nothing counted twice across the restart
    health = httpx.get(url + "/health", headers=READER, timeout=10).json()
    assert health["component"] == "aggregator" and health["nodes"] == 3
    check_clients(cli, url)
    assert INGEST_TOKEN not in "".join(agg.err) and READ_TOKEN not in "".join(agg.err)


def check_clients(cli: Cli, url: str) -> None:  # noqa: F811
    """What a user points at the aggregator: --tool (the HTTP client) and an MCP agent at /mcp."""
    server = ("--server", url, "--token", READ_TOKEN)
    by_node = cli("--tool", "list_processes", "--group-by", "node", "--duration", "3600", "--json", *server)
    assert by_node.returncode == 0, by_node.stderr
    groups = {g["key"]: g["attempts"] for g in json.loads(by_node.stdout)["data"]["groups"]}
    assert groups == {node: c for node, (c, _) in NODES.items()}
    one = cli("--tool", "get_network_summary", "--node", "node-b", "--duration", "3600", "--json", *server)
    assert one.returncode == 0 and json.loads(one.stdout)["data"]["count"] == NODES["node-b"][0], one.stderr
    status = cli("--tool", "server_status", *server)
    assert status.returncode == 0 and "Aggregator of 3 nodes" in status.stdout, status.stderr
    unknown = cli("--tool", "get_network_summary", "--node", "node-z", *server)
    assert unknown.returncode == 1 and "its nodes: node-a, node-b, node-c" in unknown.stderr
    assert unknown.stderr.count("\n") == 1

    async def over_mcp() -> tuple[Any, Any]:
        import httpx2
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers=READER, timeout=20) as http:
            async with Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
                summary = await client.call_tool("get_network_summary", {"node": "node-c", "duration": 3600})
                groups = await client.call_tool("list_processes", {"group_by": "node", "duration": 3600})
                return summary.structured_content, groups.structured_content

    summary, groups_mcp = asyncio.run(over_mcp())
    assert summary["count"] == NODES["node-c"][0]
    assert {g["key"]: g["attempts"] for g in groups_mcp["groups"]} == {node: c for node, (c, _) in NODES.items()}


def test_ingest_abuse_against_the_real_server(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    agg = spawn("serve", "--aggregate", "--port", str(free_port()), "--ingest-token", INGEST_TOKEN,
                "--ingest-max-events", "20")  # fmt: skip
    url = served_url(agg, "the aggregator API") + "/api/events/ingest"
    events = [connection_json(pid=5, command="curl", port=100 + i, ago=3, k8s_node_name="edge-1") for i in range(5)]
    good = httpx.post(url, json={"events": events}, headers=AGENT, timeout=10)
    assert good.status_code == 200 and good.json()["events_processed"] == 5
    again = httpx.post(url, json={"events": events}, headers=AGENT, timeout=10).json()
    assert (again["events_processed"], again["duplicates"], again["success"]) == (0, 5, True)
    bad = httpx.post(url, json={"events": [*events[:1], {"type": "connection", "k8s_node_name": "edge-1"}]},
                     headers=AGENT, timeout=10).json()  # fmt: skip
    assert bad["success"] is False and bad["rejected"][0]["index"] == 1 and "time" in bad["rejected"][0]["reason"]
    wrong = httpx.post(url, json={"events": events}, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and "ingest token" in wrong.text
    many = [connection_json(ago=3, k8s_node_name="edge-1") for _ in range(21)]
    too_many = httpx.post(url, json={"events": many}, headers=AGENT, timeout=10)
    assert too_many.status_code == 413 and "limit is 20" in too_many.text
    huge = httpx.post(url, content=b" " * (17 << 20), headers=AGENT, timeout=30)
    assert huge.status_code == 413
    stats = httpx.get(url.removesuffix("/api/events/ingest") + "/api/stats", timeout=10).json()
    assert stats["events_by_node"] == {"edge-1": 5}  # only the good ones, once
    assert agg.stop() == TERMINATED
    assert "Traceback" not in "".join(agg.err) and INGEST_TOKEN not in "".join(agg.err)


def test_a_compressed_ingest_is_refused_415_naming_the_encoding(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    """A gzip-compressed batch (Content-Encoding: gzip, as a proxy or an agent's HTTP library may send) was answered
    400 "Invalid JSON", which sends the operator looking at the JSON: 415, naming the encoding, nothing stored;
    the same batch uncompressed (or identity) goes."""
    import gzip
    import json

    agg = spawn("serve", "--aggregate", "--port", str(free_port()), "--ingest-token", INGEST_TOKEN)
    url = served_url(agg, "the aggregator API") + "/api/events/ingest"
    events = [connection_json(pid=5, command="curl", port=100 + i, ago=3, k8s_node_name="edge-1") for i in range(3)]
    body = json.dumps({"events": events}).encode()
    for encoding in ("gzip", "br", "deflate"):
        headers = {**AGENT, "Content-Type": "application/json", "Content-Encoding": encoding}
        refused = httpx.post(url, content=gzip.compress(body), headers=headers, timeout=10)
        assert refused.status_code == 415, refused.text
        assert f"Unsupported Content-Encoding '{encoding}'" in refused.text and refused.text.count("\n") == 1
        assert refused.headers["accept-encoding"] == "identity"
    unauthorized = httpx.post(url, content=gzip.compress(body), headers={"Content-Encoding": "gzip"}, timeout=10)
    assert unauthorized.status_code == 401  # (the token first: nothing said to whoever has none)
    for encoding in ({}, {"Content-Encoding": "identity"}):
        taken = httpx.post(url, content=body, headers={**AGENT, "Content-Type": "application/json", **encoding},
                           timeout=10).json()  # fmt: skip
        assert taken["success"] is True
    stats = httpx.get(url.removesuffix("/api/events/ingest") + "/api/stats", timeout=10).json()
    assert stats["events_by_node"] == {"edge-1": 3}  # (the identity batch again: duplicates, counted once)
    assert agg.stop() == TERMINATED
