"""The aggregator's store: per-node exact counts, one bad event refused with its reason (the rest
kept), a batch sent again not counted twice — also after the aggregator restarted."""

from __future__ import annotations

from pathlib import Path

from netspy_tui.fleet.store import FleetStore
from netspy_tui.models import Scope
from tests.factories import connection_json, drop_json


def batch(node: str, n: int, start: int = 0) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for i in range(start, start + n):
        event = connection_json(pid=100 + i % 3, command="curl", port=1000 + i, ago=10) if i % 5 else \
            drop_json(pid=9, command="nginx", ago=10, reason="NETFILTER_DROP")  # fmt: skip
        event["id"] = f"{abs(hash(node)) % 10**6:06d}{i:010d}"
        event["k8s_node_name"] = node
        out.append(event)
    return out


def test_per_node_counts_are_each_nodes_own_and_the_fleet_their_sum(tmp_path: Path) -> None:
    fleet = FleetStore(tmp_path / "fleet")
    for node, n in (("node-a", 50), ("node-b", 30), ("node-c", 7)):
        result = fleet.ingest(batch(node, n))
        assert (result.accepted, result.duplicates, result.rejected) == (n, 0, [])
    stores = fleet.nodes()
    assert set(stores) == {"node-a", "node-b", "node-c"}
    for node, n in (("node-a", 50), ("node-b", 30), ("node-c", 7)):
        store = stores[node]
        assert store.count(Scope("connection", window=600)) + store.count(Scope("packet_drop", window=600)) == n
    stats = fleet.stats()
    assert stats["events_by_node"] == {"node-a": 50, "node-b": 30, "node-c": 7} and stats["total_events"] == 87
    assert stats["events_by_type"] == {"connection": 69, "packet_drop": 18} and stats["connected_agents"] == 3
    fleet.close()


def test_bad_events_are_refused_one_by_one(tmp_path: Path) -> None:
    fleet = FleetStore(None)
    events = batch("node-a", 4)
    events[1] = "not an object"
    events[2]["pid"] = "many"
    events.append({**batch("node-a", 1, start=10)[0], "k8s_node_name": "bad name/with slash"})
    result = fleet.ingest(events)
    assert result.accepted == 2
    reasons = dict(result.rejected)
    assert set(reasons) == {1, 2, 4}
    assert "not an event object" in reasons[1] and reasons[2].startswith("pid:")
    assert "node name" in reasons[4]
    fleet.close()


def test_a_batch_sent_again_is_not_counted_twice_even_after_a_restart(tmp_path: Path) -> None:
    fleet = FleetStore(tmp_path / "fleet")
    first = batch("node-a", 40)
    assert fleet.ingest(first).accepted == 40
    again = fleet.ingest(first[20:] + batch("node-a", 10, start=40))
    assert (again.accepted, again.duplicates) == (10, 20)
    fleet.close()
    reopened = FleetStore(tmp_path / "fleet")
    assert set(reopened.nodes()) == {"node-a"}
    retry = reopened.ingest(batch("node-a", 50))  # the agent never saw the answers: it sends them all again
    assert (retry.accepted, retry.duplicates) == (0, 50)
    store = reopened.nodes()["node-a"]
    assert store.count(Scope("connection", window=600)) + store.count(Scope("packet_drop", window=600)) == 50
    stats = reopened.stats()  # the stats say what the node stored before the restart, not only since
    assert stats["events_by_node"] == {"node-a": 50} and stats["events_by_type"] == {
        "connection": 40,
        "packet_drop": 10,
    }
    assert stats["last_event_time"] is not None and stats["connected_agents"] == 1
    reopened.close()
