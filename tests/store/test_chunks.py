"""Raw eBPF records kept as chunks (one row per batch): every list, count and retention answer
equals what the same records give when each is built into an event and filtered by hand."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.models import EventQuery, ns_to_time
from netspy_tui.store.sqlite import EventStore

pytestmark = pytest.mark.quiet

SPAN = 600.0


def _records(n: int = 3000, seed: int = 7) -> np.ndarray:
    return synth.records(n, SPAN, np.random.default_rng(seed), drop_share=0.3)


def _write(store: EventStore, recs: np.ndarray, size: int = 500) -> None:
    codec = synth.codec()
    for i in range(0, len(recs), size):
        store.write([Batch(records=recs[i : i + size].copy(), codec=codec)])


def _expected(recs: np.ndarray, kind: int, keep: np.ndarray | None = None) -> list[tuple[int, str, str, str]]:
    """(pid, command, destination, outcome/reason) newest first (ties: ts descending, then insertion)."""
    idx = np.flatnonzero((recs["kind"] == kind) & (keep if keep is not None else True))
    order = sorted(idx.tolist(), key=lambda i: (-int(recs["wall"][i]), -int(recs["ts"][i]), i))
    events = synth.codec().events(recs[order], ["0" * 16] * len(order))
    return [_key(e) for e in events]


def _key(e: object) -> tuple[int, str, str, str]:
    outcome = getattr(e, "outcome", None) or getattr(e, "drop_reason", "")
    return (e.pid, e.command, e.destination or "", outcome)  # type: ignore[attr-defined]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[EventStore, np.ndarray, Path]:
    recs = _records()
    store = EventStore(tmp_path / "s.db", retention_seconds=None, max_rows=None)
    _write(store, recs)
    return store, recs, tmp_path / "s.db"


@pytest.mark.parametrize("kind", ["connection", "packet_drop"])
def test_lists_equal_the_records_built_by_hand(stored: tuple[EventStore, np.ndarray, Path], kind: str) -> None:
    store, recs, _ = stored
    code = P.KIND_CONNECT if kind == "connection" else P.KIND_DROP
    want = _expected(recs, code)
    page = store.query(EventQuery(kind=kind, limit=50))  # type: ignore[arg-type]
    assert [_key(e) for e in page.events] == want[:50]
    assert page.total_count == len(want) and page.truncated
    everything = store.query(EventQuery(kind=kind, limit=10_000))  # type: ignore[arg-type]
    assert [_key(e) for e in everything.events] == want and not everything.truncated
    assert len({e.id for e in everything.events}) == len(want)  # ids stay distinct
    if kind == "packet_drop":
        assert {e.drop_reason for e in everything.events} <= set(synth.DROP_REASONS.values())  # type: ignore[union-attr]


def test_filters_by_pid_command_and_time(stored: tuple[EventStore, np.ndarray, Path]) -> None:
    store, recs, _ = stored
    pid = int(recs["pid"][recs["kind"] == P.KIND_CONNECT][5])
    page = store.query(EventQuery(kind="connection", pid=pid, limit=20))
    want = _expected(recs, P.KIND_CONNECT, recs["pid"] == pid)
    assert [_key(e) for e in page.events] == want[:20] and page.total_count == len(want)
    page = store.query(EventQuery(kind="connection", command="curl", limit=20))
    want = _expected(recs, P.KIND_CONNECT, recs["comm"] == b"curl")
    assert [_key(e) for e in page.events] == want[:20] and page.total_count == len(want)
    walls = np.sort(recs["wall"].astype(np.int64))
    lo, hi = int(walls[len(walls) // 4]), int(walls[len(walls) // 2])
    page = store.query(EventQuery(kind="connection", since=ns_to_time(lo), until=ns_to_time(hi), limit=10_000))
    inside = (recs["wall"].astype(np.int64) > lo // 1000 * 1000) & (recs["wall"].astype(np.int64) <= hi // 1000 * 1000)
    assert [_key(e) for e in page.events] == _expected(recs, P.KIND_CONNECT, inside)
    assert store.query(EventQuery(kind="connection", command="no-such", limit=5)).total_count == 0


def test_a_connect_stored_in_progress_gets_its_outcome_when_the_kernel_says(tmp_path: Path) -> None:
    recs = np.zeros(2, P.RECORD)
    wall = synth.time.time_ns()
    for r in recs:
        r["pid"], r["comm"], r["family"], r["port"], r["protocol"] = 42, b"curl", P.AF_INET, 443, 6
        r["addr"][:4] = (10, 0, 0, 1)
    recs["kind"] = P.KIND_CONNECT
    recs["flags"] = P.F_TCP | P.F_PENDING
    recs["result"], recs["code"] = P.RESULT_PENDING, -115
    recs["key"] = (0xFFFF888000000040, 0xFFFF888000000080)
    recs["wall"], recs["ts"] = (wall - 2000, wall - 1000), (1, 2)
    with EventStore(tmp_path / "p.db", retention_seconds=None, max_rows=None) as store:
        store.write([Batch(records=recs, codec=synth.codec())])
        assert [e.outcome for e in store.query(EventQuery(limit=5)).events] == ["in_progress", "in_progress"]
        outcome = np.zeros(1, P.RECORD)
        outcome["kind"], outcome["key"], outcome["wall"], outcome["result"] = 2, recs["key"][0], recs["wall"][0], 111
        store.write([Batch(records=outcome, codec=synth.codec())])
        got = store.query(EventQuery(limit=5)).events
        assert [e.outcome for e in got] == ["in_progress", "refused"]  # newest first: the second is still open
        assert store.row_count() == 2  # an OUTCOME record is not an event


def test_a_reused_socket_s_connects_each_take_the_first_outcome_at_or_after_their_start(tmp_path: Path) -> None:
    """Outcomes are looked up for a batch of sockets at once: a socket connected three times (resolved after the
    first and after the third) and one never resolved each get what a lookup of their own would give."""
    recs = np.zeros(4, P.RECORD)
    wall = synth.time.time_ns()
    for r in recs:
        r["pid"], r["comm"], r["family"], r["port"], r["protocol"] = 42, b"curl", P.AF_INET, 443, 6
        r["addr"][:4] = (10, 0, 0, 1)
    recs["kind"], recs["flags"] = P.KIND_CONNECT, P.F_TCP | P.F_PENDING
    recs["result"], recs["code"] = P.RESULT_PENDING, -115
    recs["key"] = (0xFFFF888000000040,) * 3 + (0xFFFF888000000080,)
    recs["wall"], recs["ts"] = (wall - 4000, wall - 3000, wall - 2000, wall - 1000), (1, 2, 3, 4)
    outcome = np.zeros(2, P.RECORD)
    outcome["kind"], outcome["key"] = 2, recs["key"][0]
    outcome["wall"], outcome["result"] = (recs["wall"][0], recs["wall"][2]), (111, 0)
    with EventStore(tmp_path / "p.db", retention_seconds=None, max_rows=None) as store:
        store.write([Batch(records=recs, codec=synth.codec())])
        store.write([Batch(records=outcome, codec=synth.codec())])
        got = store.query(EventQuery(limit=5)).events
        assert [e.outcome for e in got] == ["in_progress", "ok", "ok", "refused"]  # newest first


def test_a_reopened_file_answers_the_same(stored: tuple[EventStore, np.ndarray, Path]) -> None:
    store, _, path = stored
    before = [(e.id, _key(e)) for e in store.query(EventQuery(kind="packet_drop", limit=100)).events]
    newest = store.newest_time()
    store.close()
    with EventStore(path, retention_seconds=None, max_rows=None) as again:
        assert [(e.id, _key(e)) for e in again.query(EventQuery(kind="packet_drop", limit=100)).events] == before
        assert again.newest_time() == newest
        assert all(not reason.startswith("UNKNOWN") for _, (_, _, _, reason) in before)


def test_after_follows_insertion_order_across_chunks(stored: tuple[EventStore, np.ndarray, Path]) -> None:
    store, recs, _ = stored
    seen: list[int] = []
    seq = 0
    while True:
        got, oldest = store.after(seq, 700, settled_ns=2**62)
        if not got:
            break
        seen.extend(s for s, _ in got)
        seq = got[-1][0]
    assert oldest == 1 and len(seen) == len(recs) and seen == sorted(seen) and len(set(seen)) == len(seen)


def test_retention_by_rows_cuts_the_oldest_records_exactly(stored: tuple[EventStore, np.ndarray, Path]) -> None:
    store, recs, _ = stored
    everything = store.query(EventQuery(kind="connection", limit=10_000)).events
    store.max_rows = 1234
    deleted = store.prune()
    assert deleted == len(recs) - 1234 and store.row_count() == 1234
    kept = store.after(0, 10_000, settled_ns=2**62)[0]
    assert len(kept) == 1234 and kept[0][0] == len(recs) - 1234 + 1  # the oldest went first
    survivors = {e.id for e in store.query(EventQuery(kind="connection", limit=10_000)).events}
    assert survivors <= {e.id for e in everything}


def test_retention_by_age_deletes_whole_chunks_that_are_all_old(stored: tuple[EventStore, np.ndarray, Path]) -> None:
    store, recs, _ = stored
    newest = store.newest_time()
    assert newest is not None
    store.retention_seconds = SPAN / 2
    deleted = store.prune(newest)
    cutoff = newest - timedelta(seconds=SPAN / 2)
    remaining = store.query(EventQuery(kind="connection", limit=10_000)).events
    # every record older than the cutoff went, except in the one chunk that also holds newer ones
    old_left = [e for e in remaining if e.time < cutoff]
    assert len(old_left) < 500 and deleted > 0
    assert deleted + store.row_count() == len(recs)


def test_a_records_id_is_its_seq_mixed_with_the_stores_salt(tmp_path: Path) -> None:
    """Ids are stable: ``(seq * mix) ^ salt`` mod 2**64 as 16 hex digits (made by numpy for a batch: its 64-bit
    product wraps as the mask did), whatever the seq and the salt."""

    def want(seq: int, salt: int) -> str:
        return f"{((seq * 0x9E3779B97F4A7C15) ^ salt) & (2**64 - 1):016x}"

    with EventStore(tmp_path / "ids.db", retention_seconds=None, max_rows=None) as store:
        _write(store, _records(300))
        got = store.after(0, 1000, 2**62)[0]
        assert len(got) == 300 and all(event.id == want(seq, store._salt) for seq, event in got)
        store._salt = 2**64 - 12345  # (the top bit set)
        seqs = [1, 2**32 + 7, 2**62 + 3]
        assert store._event_ids(np.array(seqs, np.int64)) == [want(q, store._salt) for q in seqs]
