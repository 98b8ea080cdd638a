"""The aggregator's store: per-node exact counts, one bad event refused with its reason (the rest
kept), a batch sent again not counted twice — also after the aggregator restarted."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.fleet.store import BadBatch, FleetStore, parse_batch
from netspy_tui.fleet.wire import WireConnection, WireDrop
from netspy_tui.models import Scope
from netspy_tui.store import StoreError
from tests.factories import connection_json, drop_json

pytestmark = pytest.mark.quiet


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


def test_a_valid_batch_is_checked_in_one_pass_and_one_bad_event_among_many_leaves_the_rest() -> None:
    fleet = FleetStore(None)
    events = batch("node-a", 500)
    whole = parse_batch(json.dumps({"events": events}).encode())
    assert len(whole) == 500 and all(isinstance(e, WireConnection | WireDrop) for e in whole)  # (checked in C)
    assert fleet.ingest(whole).accepted == 500
    more = batch("node-a", 500, start=500)
    more[250]["pid"] = "many"  # one bad event: the items come back as sent, each checked on its own
    more[400]["k8s_node_name"] = "bad name"  # valid as an event, not as a node name
    items = parse_batch(json.dumps({"events": more}).encode())
    assert all(isinstance(item, dict) for item in items)
    result = fleet.ingest(items)
    assert result.accepted == 498 and [i for i, _ in result.rejected] == [250, 400]
    assert result.rejected[0][1].startswith("pid:") and "node name" in result.rejected[1][1]
    kept = [e for i, e in enumerate(more) if i not in (250, 400)]  # sent again, all valid: one pass, all known
    again = fleet.ingest(parse_batch(json.dumps({"events": kept}).encode()))
    assert (again.accepted, again.duplicates) == (0, 498)
    named = batch("node-b", 3)
    named[1]["k8s_node_name"] = "bad name"
    valid = parse_batch(json.dumps({"events": named}).encode())
    assert all(isinstance(e, WireConnection | WireDrop) for e in valid)
    result = fleet.ingest(valid)
    assert result.accepted == 2 and [i for i, _ in result.rejected] == [1] and "node name" in result.rejected[0][1]
    assert fleet.stats()["events_by_node"] == {"node-a": 998, "node-b": 2}
    for body, why in ((b"{nope", "Invalid JSON"), (b"[1, 2]", '{"events": [event, ...]}')):
        with pytest.raises(BadBatch, match=re.escape(why)):
            parse_batch(body)
    fleet.close()


def test_events_of_one_key_in_one_second_are_one_rollup_row_with_their_count_first_and_last(tmp_path: Path) -> None:
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    offsets = [500_000, 100_000, 900_000, 300_000]  # not in time order
    events = []
    for i, us in enumerate(offsets):
        event = connection_json(pid=77, command="curl", port=443, time=second + timedelta(microseconds=us))
        event.update(id=f"same-key-{i}", k8s_node_name="node-a")
        events.append(event)
    fleet = FleetStore(tmp_path / "fleet")
    assert fleet.ingest(parse_batch(json.dumps({"events": events}).encode())).accepted == 4
    fleet.close()
    (path,) = (tmp_path / "fleet").glob("node-*.sqlite3")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT n, first, last FROM rollup WHERE pid = 77").fetchall()
    base = int(second.timestamp()) * 1_000_000_000
    assert rows == [(4, base + 100_000_000, base + 900_000_000)]


def test_one_keys_events_over_batches_out_of_order_and_a_retry_are_counted_once_each_everywhere(tmp_path: Path) -> None:
    """Events of one key in one second, over two batches (the second older than the first, one of them sent again
    with it) and a third batch of the next minute, 6 s into it, which folds the minute: the second's rollup row, the
    minute and hour rows, the node's counts and the window's figures all hold each event once, first and last those
    of the events."""
    minute = (int(datetime.now(UTC).timestamp()) // 60 - 3) * 60
    second = datetime.fromtimestamp(minute + 30, UTC)

    def event(i: int, us: int) -> dict:  # type: ignore[type-arg]
        data = connection_json(pid=77, command="curl", port=443, time=second + timedelta(microseconds=us))
        data.update(id=f"key-{i}", k8s_node_name="node-a")
        return data

    first = [event(0, 700_000), event(1, 800_000), event(2, 750_000)]
    older = [event(3, 200_000), event(4, 400_000), first[1]]  # (the retry of event 1)
    later = [connection_json(pid=5, time=second + timedelta(seconds=s), k8s_node_name="node-a") for s in (35, 36)]
    fleet = FleetStore(tmp_path / "fleet")
    results = [fleet.ingest(parse_batch(json.dumps({"events": b}).encode())) for b in (first, older, later)]
    assert [(r.accepted, r.duplicates) for r in results] == [(3, 0), (2, 1), (2, 0)]
    store = fleet.nodes()["node-a"]
    scope = Scope("connection", 77, None, 3600)
    assert store.count(scope) == 5 and store.stats(scope).total == 5
    assert fleet.stats()["events_by_node"] == {"node-a": 7}
    fleet.close()
    (path,) = (tmp_path / "fleet").glob("node-*.sqlite3")
    base = (minute + 30) * 1_000_000_000
    want = [(5, base + 200_000_000, base + 800_000_000)]
    with sqlite3.connect(path) as conn:
        for table, unit in (("rollup", "second"), ("rollup_minute", "minute"), ("rollup_hour", "hour")):
            rows = conn.execute(f"SELECT n, first, last FROM {table} WHERE pid = 77").fetchall()  # noqa: S608
            assert rows == want, (table, unit)


def test_a_batch_of_more_rows_than_one_statement_takes_counts_each_key_once_with_its_first_and_last(
    tmp_path: Path,
) -> None:
    # 301 events of 7 keys in one second: statements of 64, 16 and 1 rows (4 + 2 + 13), a key's rows in several
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    events = []
    for i in range(301):
        event = connection_json(pid=70 + i % 7, command="curl", port=443, time=second + timedelta(microseconds=i))
        event.update(id=f"many-{i}", k8s_node_name="node-a")
        events.append(event)
    fleet = FleetStore(tmp_path / "fleet")
    assert fleet.ingest(parse_batch(json.dumps({"events": events}).encode())).accepted == 301
    assert fleet.nodes()["node-a"].count(Scope("connection", pid=72, window=600)) == 43
    fleet.close()
    (path,) = (tmp_path / "fleet").glob("node-*.sqlite3")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT pid, n, first, last FROM rollup ORDER BY pid").fetchall()
    base = int(second.timestamp()) * 1_000_000_000
    assert rows == [(70 + k, 43, base + k * 1000, base + (294 + k) * 1000) for k in range(7)]


def test_a_retry_sent_while_its_first_try_is_being_stored_waits_for_it_and_is_stored_when_that_fails(
    tmp_path: Path,
) -> None:
    # an agent's retry (its first try's answer late) comes in while the first is still being written; the first
    # then fails: the retry must store the events, not call them duplicates of events that were never stored
    fleet = FleetStore(tmp_path / "fleet")
    fleet.ingest(batch("node-a", 3))  # (the node's store exists)
    store = fleet.nodes()["node-a"]
    entered, release = threading.Event(), threading.Event()
    real_add_rows = store.add_rows
    calls = []

    def add_rows(rows, counts, blocks=None):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        if len(calls) == 1:  # the first try: held, then a full disk
            entered.set()
            release.wait(30)
            raise StoreError("cannot write to the event store: database or disk is full", lost=len(rows))
        return real_add_rows(rows, counts, blocks)

    store.add_rows = add_rows  # type: ignore[method-assign]
    events = batch("node-a", 20, start=100)
    first: list[BaseException] = []

    def first_try() -> None:
        try:
            fleet.ingest(events)
        except StoreError as exc:
            first.append(exc)

    one = threading.Thread(target=first_try)
    one.start()
    assert entered.wait(30)
    retried: list[Any] = []
    two = threading.Thread(target=lambda: retried.append(fleet.ingest(events)))
    two.start()
    two.join(0.5)  # (it waits for the first try: without that wait it is done by now, all "duplicates")
    release.set()
    one.join(30)
    two.join(30)
    assert len(first) == 1 and len(retried) == 1
    assert (retried[0].accepted, retried[0].duplicates) == (20, 0)
    assert store.count(Scope("connection", window=600)) + store.count(Scope("packet_drop", window=600)) == 23
    fleet.close()
