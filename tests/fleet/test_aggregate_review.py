"""A real ``netspy-tui serve --aggregate`` on 127.0.0.1, driven as agents and readers drive it: what it
answers about nodes, what /metrics writes of untrusted names, what ingest refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.factories import connection_json, drop_json
from tests.hardening.conftest import Child, free_port, spawn  # noqa: F401 (fixtures)
from tests.hardening.test_security import served_url

INGEST_TOKEN = "review-ingest-secret"
AGENT = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def aggregator(spawn: Callable[..., Child], db: Path, *more: str) -> tuple[Child, str]:  # noqa: F811
    child = spawn("serve", "--aggregate", "--port", str(free_port()), "--db", str(db), "--ingest-token",
                  INGEST_TOKEN, *more)  # fmt: skip
    return child, served_url(child, "the aggregator API")


def ingest(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(url + "/api/events/ingest", json={"events": events}, headers=AGENT, timeout=20)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_total_nodes_counts_the_nodes_listed_with_events(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    _, url = aggregator(spawn, tmp_path / "fleet")
    events = [connection_json(pid=10 + i, ago=5, k8s_node_name=f"node-{i}") for i in range(4)]
    events.append(drop_json(pid=9, ago=5, k8s_node_name="node-2"))
    assert ingest(url, events)["events_processed"] == 5
    for path, by_node in (("/api/connection-summary", {f"node-{i}": 1 for i in range(4)}),
                          ("/api/packet-drop-summary", {"node-2": 1})):  # fmt: skip
        summary = httpx.get(url + path, params={"duration_seconds": 600}, timeout=10).json()
        # the contract: total_nodes is the "number of nodes with events"; count_by_node lists those nodes
        assert summary["count_by_node"] == by_node, path
        assert summary["total_nodes"] == len(by_node) and summary["count"] == sum(by_node.values()), path


def test_metrics_write_a_process_name_with_escape_sequences_as_visible_text(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _, url = aggregator(spawn, tmp_path / "fleet")
    hostile = "[bold red]x\x1b[2J\x07"
    ingest(url, [connection_json(pid=7, command=hostile, ago=3, k8s_node_name="node-a", outcome="refused"),
                 drop_json(pid=8, command="ok\x9b2J", ago=3, k8s_node_name="node-a")])  # fmt: skip
    body = httpx.get(url + "/metrics", timeout=10).text
    assert not any(ch in body for ch in "\x1b\x07\x9b"), "a control character reached the exposition"
    labels: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            for value in sample.labels.values():
                assert value.isprintable(), (family.name, value)
            if family.name in ("netspy_connects", "netspy_packet_drops"):
                labels[sample.labels["process"]] = sample.value
    assert labels == {"[bold red]x\\x1b[2J\\x07": 1.0, "ok\\x9b2J": 1.0}  # the escapes the tools show
