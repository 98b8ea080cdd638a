"""``/api/events`` of ``serve --aggregate`` filtered by ``k8s_pod_name`` or ``k8s_namespace`` (the agents' identity,
kept in each event only): an audit found a quiet node's pod hidden behind a busy node's newer events (the filter ran
on one page of the whole fleet's newest 10,000), and ``limit=10000`` answered with the whole fleet's total as the
pod's. Against the aggregator API on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpx

from netspy_tui.serve.aggregate import MAX_LIMIT
from tests.factories import connection_json
from tests.fleet.test_fleet_resolutions import INGEST_TOKEN, served_fleet

READ_TOKEN = "fleet-read-secret"


def ingest(url: str, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 1000):
        r = httpx.post(url + "/api/events/ingest", json={"events": events[i : i + 1000]},
                       headers={"Authorization": f"Bearer {INGEST_TOKEN}"}, timeout=30)  # fmt: skip
        assert r.status_code == 200 and r.json()["events_processed"] == len(events[i : i + 1000]), r.text


def events(url: str, **params: Any) -> dict[str, Any]:
    r = httpx.get(url + "/api/events", params=params, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def made(n: int, node: str, pod: str, namespace: str, ago: float, prefix: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        event = connection_json(pid=100 + i % 7, command="app", port=8000 + i % 50, ago=ago - i * 1e-4)
        event.update(id=f"{prefix}-{i}", k8s_node_name=node, k8s_pod_name=pod, k8s_namespace=namespace)
        out.append(event)
    return out


def test_a_quiet_nodes_pod_is_found_behind_a_busy_nodes_newer_events_and_counts_are_the_pods() -> None:
    busy = MAX_LIMIT + 2_000
    with served_fleet(None, token=READ_TOKEN) as (_, url):
        ingest(url, made(54, "node-c", "pod-x", "ns1", 120, "c"))
        ingest(url, made(busy, "node-d", "pod-z", "ns2", 60, "d"))

        quiet = events(url, type="connection", k8s_pod_name="pod-x")
        assert (quiet["count"], quiet["total_count"]) == (54, 54)
        assert {e["k8s_pod_name"] for e in quiet["events"]} == {"pod-x"}
        # (node-d's older events were not read: the answer cannot say none of them is pod-x's, and says so)
        assert quiet["total_count_exact"] is False and "node-d had more" in quiet["note"]
        assert "node-c" not in quiet["note"]
        one = events(url, type="connection", k8s_pod_name="pod-x", node="node-c")
        assert (one["total_count"], "total_count_exact" in one) == (54, False)
        assert events(url, type="connection", k8s_namespace="ns1", limit=10)["total_count"] == 54
        assert events(url, type="connection", k8s_pod_name="pod-x", node="node-d")["total_count"] == 0

        # the busy pod has more than one read of its node holds: the count is of those read, and it says so
        for limit in (5, MAX_LIMIT):
            page = events(url, type="connection", k8s_pod_name="pod-z", limit=limit)
            assert page["count"] == limit and page["total_count"] == MAX_LIMIT, (limit, page["total_count"])
            assert page["total_count_exact"] is False and "node-d had more" in page["note"]
        both = events(url, k8s_namespace="ns2", limit=3)  # (both kinds: the drops read too)
        assert both["count"] == 3 and both["total_count_exact"] is False


def test_pod_and_namespace_on_the_aggregators_summaries_and_lists_are_refused_not_ignored() -> None:
    """They filter ``/api/events`` (each event's agent); the summaries and lists counted every node's events for
    any pod. A 400 that says where they work; ``node`` still narrows them."""
    with served_fleet(None, token=READ_TOKEN) as (_, url):
        ingest(url, made(5, "node-c", "pod-x", "ns1", 30, "c"))
        auth = {"Authorization": f"Bearer {READ_TOKEN}"}
        for path in ("/api/connection-summary", "/api/list-connections", "/api/packet-drop-summary"):
            for name in ("k8s_pod_name", "k8s_namespace"):
                r = httpx.get(url + path, params={name: "nonexistent"}, headers=auth, timeout=10)
                assert r.status_code == 400 and f"{name} filters /api/events only" in r.text, (path, r.text)
        r = httpx.get(url + "/api/connection-summary", params={"node": "node-c", "duration_seconds": 600},
                      headers=auth, timeout=10)  # fmt: skip
        assert r.status_code == 200 and r.json()["count"] == 5
