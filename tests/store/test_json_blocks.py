"""Raw events kept as JSON blocks (the aggregator's ingest, ``EventStore.add_rows``) answer every list, count
and read in order exactly as the same events kept as one row each (``add_events``) — also after the file
is reopened, and after retention by age and by row count."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from netspy_tui.models import EventQuery, Scope
from netspy_tui.store import EventStore, StoreError
from netspy_tui.store import jsonblocks as J
from netspy_tui.store import rollups as R
from netspy_tui.store.sqlite import event_row
from tests.factories import BASE_TIME, connection, drop

pytestmark = pytest.mark.quiet

NS = 1_000_000_000


def _events(n: int, start: int = 0) -> list:  # type: ignore[type-arg]
    """Connections and drops of a few pids and commands, times in no particular order, some equal; each 10
    connections first (a block numbers a write's connections first, then its drops: rows written in that
    order have the same seqs)."""
    out = []
    for i in range(start, start + n):
        when = BASE_TIME + timedelta(seconds=(i * 7) % 40, microseconds=(i % 3) * 10)
        if i % 6 == 0:
            out.append(drop(pid=7 + i % 2, command="nginx", time=when, timestamp=1000 + i, id=f"d{i:05d}"))
        else:
            cmd = ("curl", "wget", "python3", "naïve ☃ cmd")[i % 4]
            out.append(connection(pid=100 + i % 5, command=cmd, time=when, timestamp=1000 + (i % 4),
                                  port=1000 + i, id=f"c{i:05d}"))  # fmt: skip
    return [e for i in range(0, n, 10) for e in sorted(out[i : i + 10], key=lambda e: e.type != "connection")]


def _add_as_blocks(store: EventStore, events: list) -> None:  # type: ignore[type-arg]
    rows = [event_row(e)[0] for e in events]
    store.add_rows(rows, R.rows_from_events(events))


QUERIES = [
    EventQuery(limit=1000),
    EventQuery(limit=7),
    EventQuery(kind="packet_drop", limit=1000),
    EventQuery(kind="packet_drop", limit=3),
    EventQuery(pid=101, limit=1000),
    EventQuery(pid=102, limit=4),
    EventQuery(command="curl", limit=1000),
    EventQuery(command="naïve ☃ cmd", limit=5),
    EventQuery(command="nobody", limit=5),
    EventQuery(pid=101, command="wget", limit=1000),
    EventQuery(since=BASE_TIME + timedelta(seconds=10), until=BASE_TIME + timedelta(seconds=20), limit=1000),
    EventQuery(since=BASE_TIME + timedelta(seconds=10), until=BASE_TIME + timedelta(seconds=20), limit=6),
    EventQuery(kind="packet_drop", since=BASE_TIME + timedelta(seconds=5), limit=1000),
    EventQuery(after=40, limit=1000),
    EventQuery(after=40, pid=100, limit=3),
    EventQuery(limit=0),
]


def _answers(store: EventStore) -> list:  # type: ignore[type-arg]
    """What a user of the store sees: every list (events and totals), counts kept, reads in order."""
    out: list = []  # type: ignore[type-arg]
    for q in QUERIES:
        page = store.query(q)
        out.append((q, [e.model_dump() for e in page.events], page.total_count, page.truncated, page.cursor))
    for kind in ("connection", "packet_drop"):
        out.append(store.kept(Scope(kind, window=10**6), now=BASE_TIME + timedelta(seconds=60)))  # type: ignore[arg-type]
        out.append(store.count(Scope(kind, window=10**6), now=BASE_TIME + timedelta(seconds=60)))  # type: ignore[arg-type]
    for seq, limit in ((0, 10_000), (0, 9), (33, 12), (10**6, 5)):
        got, oldest = store.after(seq, limit, 2**62)
        out.append(([(q, e.model_dump()) for q, e in got], oldest))
    out.append((store.row_count(), store.stored_by_kind(), store.newest_time(), store.newest_seq()))
    return out


def test_blocks_answer_as_rows_and_again_when_reopened(tmp_path: Path) -> None:
    events = _events(200)
    with EventStore(tmp_path / "rows.sqlite3", retention_seconds=None) as rows:
        for i in range(0, len(events), 10):
            rows.add_events(events[i : i + 10])
        want = _answers(rows)
    blocks_path = tmp_path / "blocks.sqlite3"
    with EventStore(blocks_path, retention_seconds=None) as store:
        for i in range(0, len(events), 10):
            _add_as_blocks(store, events[i : i + 10])
        assert _answers(store) == want
    with sqlite3.connect(blocks_path) as conn:  # kept as blocks: one row per write and kind, no event rows
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert conn.execute("SELECT count(*), sum(n) FROM json_blocks").fetchone() == (40, 200)
    with EventStore(blocks_path, retention_seconds=None) as reopened:
        assert _answers(reopened) == want
        _add_as_blocks(reopened, _events(10, start=200))  # numbering goes on after the blocks kept
        assert reopened.newest_seq() == 210 and reopened.row_count() == 210
        got, _ = reopened.after(200, 100, 2**62)
        assert [e.id for _, e in got] == [e.id for e in _events(10, start=200) if e.type == "connection"] + [
            e.id for e in _events(10, start=200) if e.type == "packet_drop"
        ]


def test_a_block_splits_when_a_write_has_more_events_than_one_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "BLOCK_EVENTS", 16)
    events = sorted(_events(100), key=lambda e: e.type != "connection")  # (one write: its connections first)
    with EventStore(retention_seconds=None) as rows:
        rows.add_events(events)
        want = _answers(rows)
    with EventStore(retention_seconds=None) as store:
        _add_as_blocks(store, events)
        assert _answers(store) == want


def test_retention_by_row_count_cuts_the_oldest_block_and_keeps_totals_exact(tmp_path: Path) -> None:
    events = _events(120)
    with EventStore(tmp_path / "rows.sqlite3", retention_seconds=None, max_rows=75) as rows:
        for i in range(0, len(events), 10):
            rows.add_events(events[i : i + 10])
        rows.prune()
        want = _answers(rows)
    with EventStore(tmp_path / "blocks.sqlite3", retention_seconds=None, max_rows=75) as store:
        for i in range(0, len(events), 10):
            _add_as_blocks(store, events[i : i + 10])
        store.prune()
        got = _answers(store)
        assert store.row_count() == 75 == sum(store.stored_by_kind().values())
        assert len(store.after(0, 10_000, 2**62)[0]) == 75
        # the counts are the rollups': every event stays counted whatever retention removed of the raw ones
        n = sum(store.count(Scope(k, window=10**6), now=BASE_TIME + timedelta(seconds=60))  # type: ignore[arg-type]
                for k in ("connection", "packet_drop"))  # fmt: skip
        assert n == 120
    assert got == want


def test_retention_by_age_removes_whole_blocks_all_older_and_keeps_totals_exact() -> None:
    old = [connection(time=BASE_TIME + timedelta(seconds=i), id=f"old{i}", pid=5) for i in range(30)]
    new = [connection(time=BASE_TIME + timedelta(seconds=100 + i), id=f"new{i}", pid=6) for i in range(20)]
    mixed = [connection(time=BASE_TIME + timedelta(seconds=s), id=f"mix{s}", pid=7) for s in (10, 140)]
    with EventStore(retention_seconds=60) as store:
        _add_as_blocks(store, old)
        _add_as_blocks(store, mixed)  # one event old, one new: the block stays whole until both are old
        _add_as_blocks(store, new)
        assert store.prune(now=BASE_TIME + timedelta(seconds=150)) == 30
        assert store.row_count() == 22 == store.stored_by_kind()["connection"]
        page = store.query(EventQuery(limit=1000))
        assert page.total_count == 22 == len(page.events)
        assert {e.id for e in page.events} == {e.id for e in new + mixed}
        assert store.query(EventQuery(pid=5)).total_count == 0
        assert store.after(0, 100, 2**62)[1] == 31  # the oldest seq still stored: the mixed block's
        assert store.prune(now=BASE_TIME + timedelta(seconds=190)) == 20  # the new ones; the mixed block stays
        assert store.row_count() == 2 == len(store.query(EventQuery(limit=1000)).events)
        assert store.prune(now=BASE_TIME + timedelta(seconds=210)) == 2
        assert store.row_count() == 0 == store.query(EventQuery(limit=1000)).total_count


def test_a_value_a_block_cannot_hold_is_refused_alone_and_the_rest_is_kept() -> None:
    events = _events(10)
    rows = [event_row(e)[0] for e in events]
    rows[3] = (*rows[3][:3], 2**64, *rows[3][4:])  # a pid beyond 64 bits
    with EventStore(retention_seconds=None) as store:
        with pytest.raises(StoreError) as caught:
            store.add_rows(rows, R.rows_from_events(events))
        assert caught.value.lost == 1 and "1 of 10 events" in str(caught.value)
        assert store.row_count() == 9
        kept = {e.id for k in ("connection", "packet_drop") for e in store.query(EventQuery(kind=k, limit=100)).events}
        assert kept == {e.id for e in events} - {events[3].id}


def test_a_few_events_of_a_big_block_answer_as_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that wants a few events of a block reads just their bytes, one that wants most of them the
    whole block: either way the same events as rows (one write of 200: one block per kind)."""
    events = sorted(_events(200), key=lambda e: e.type != "connection")  # (a block's order: see _events)
    with EventStore(None, retention_seconds=None) as rows:
        rows.add_events(events)
        want = _answers(rows)
    reads: list[str] = []
    real = J._read
    monkeypatch.setattr(J, "_read", lambda conn, seq, what: reads.append(what) or real(conn, seq, what))
    with EventStore(None, retention_seconds=None) as store:
        _add_as_blocks(store, events)
        reads.clear()
        few = store.query(EventQuery(limit=3))
        assert "bodies" not in reads  # three events of ~170: read alone
        reads.clear()
        store.query(EventQuery(limit=1000))
        assert "bodies" in reads  # all of them: the block at once
        assert _answers(store) == want
    assert [e.model_dump() for e in few.events] == want[QUERIES.index(EventQuery(limit=1000))][1][:3]


def test_reading_in_order_finds_an_event_inside_a_larger_block_an_earlier_version_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks hold at most BLOCK_EVENTS events now; a store written when they held more (a whole ingest batch) is
    read in order from inside one of its blocks as before (the aggregator's restart reads its ids so)."""
    events = sorted(_events(60), key=lambda e: e.type != "connection")
    monkeypatch.setattr(J, "BLOCK_EVENTS", 64)  # (as written before: one block per write and kind)
    with EventStore(tmp_path / "old.sqlite3", retention_seconds=None) as store:
        _add_as_blocks(store, events)
    monkeypatch.setattr(J, "BLOCK_EVENTS", 4)
    monkeypatch.setattr(J, "MAX_BLOCK_EVENTS", 64)
    with EventStore(tmp_path / "old.sqlite3", retention_seconds=None) as reopened:
        got, _ = reopened.after(30, 100, 2**62)
        assert [e.id for _, e in got] == [e.id for e in events[30:]]


def test_a_count_row_sqlite_refuses_is_refused_alone_and_the_rows_before_it_count_once(tmp_path: Path) -> None:
    """The rollup rows go in one ``executemany``; when SQLite refuses one of them (here a command it may not
    hold), the rows it had already taken are not taken a second time by the row-by-row retry."""
    events = [e for e in _events(20) if e.type == "connection"]
    counts = R.rows_from_events(events)
    assert len(counts) >= 6
    counts[3] = (*counts[3][:3], None, *counts[3][4:])  # (second, kind, pid, command=NULL, ...)
    path = tmp_path / "s.db"
    with EventStore(path, retention_seconds=None) as store:
        with pytest.raises(StoreError) as caught:
            store.add_rows([], counts)
        assert "1 of" in str(caught.value)
    with sqlite3.connect(path) as conn:
        stored = dict(((r[:9]), r[9]) for r in conn.execute("SELECT * FROM rollup"))
    want = {tuple(r[:9]): r[9] for i, r in enumerate(counts) if i != 3}
    assert stored == want


def test_bodies_are_kept_compressed_and_blocks_an_earlier_version_wrote_read_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block keeps its events' JSON compressed (zstd, a frame per FRAME_EVENTS events): a fraction of the
    JSON's bytes on disk. A store written before (blocks whose bodies are the JSON itself) answers as before,
    also once newer blocks are written beside its own, and when retention cuts into one of either kind."""
    # two writes of 150 (~125 connections: a block of two frames), each in a block's order (see _events)
    events = [
        e
        for part in (_events(150), _events(150, start=150))
        for e in sorted(part, key=lambda e: e.type != "connection")
    ]
    with EventStore(tmp_path / "rows.sqlite3", retention_seconds=None) as rows:
        rows.add_events(events[:150])
        rows.add_events(events[150:])
        want = _answers(rows)
        rows.max_rows = 140  # (retention then cuts into the second write's connections' block)
        rows.prune()
        want_cut = _answers(rows)
    path = tmp_path / "blocks.sqlite3"
    monkeypatch.setattr(J, "_pack", lambda body, ends: body)  # (as written before 2026-12-07: schema 3)
    with EventStore(path, retention_seconds=None) as old:
        _add_as_blocks(old, events[:150])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    monkeypatch.undo()
    with EventStore(path, retention_seconds=None, readonly=True) as reader:  # (read as it is: still 3)
        got = {e.id for e in reader.query(EventQuery(limit=1000)).events}
        assert got == {e.id for e in events[:150] if e.type == "connection"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    with EventStore(path, retention_seconds=None) as store:
        _add_as_blocks(store, events[150:])
        assert _answers(store) == want
    with sqlite3.connect(path) as conn:
        blocks = conn.execute("SELECT seq, n, bodies FROM json_blocks ORDER BY seq").fetchall()
        # written by this version: 4, which a netspy-tui of version 3 refuses (one line) instead of misreading it
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("4",)
    assert [bytes(b[:1]) for _, _, b in blocks[:2]] == [b"{", b"{"]  # (the earlier version's, as they were)
    packed = [(n, bytes(b)) for _, n, b in blocks[2:]]
    assert packed and all(b.startswith(J.PACKED) for _, b in packed)
    json_bytes = sum(len(event_row(e)[0][6]) for e in events[150:])
    assert sum(len(b) for _, b in packed) * 4 < json_bytes  # (these test events compress ~10 times)
    assert max(n for n, _ in packed) > J.FRAME_EVENTS  # (a block of more than one frame)
    with EventStore(path, retention_seconds=None, max_rows=140) as reopened:
        reopened.prune()
        assert _answers(reopened) == want_cut


@pytest.mark.parametrize("version", ["2", "5"])
def test_a_store_of_a_schema_this_version_does_not_read_is_refused_in_one_line(tmp_path: Path, version: str) -> None:
    path = tmp_path / "s.sqlite3"
    with EventStore(path, retention_seconds=None) as store:
        _add_as_blocks(store, _events(10))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
    for readonly in (False, True):
        with pytest.raises(StoreError) as caught:
            EventStore(path, retention_seconds=None, readonly=readonly).close()
        assert f"has schema version {version}, this netspy-tui reads 3 and 4" in str(caught.value)
    with sqlite3.connect(path) as conn:  # (left as it was)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (version,)
