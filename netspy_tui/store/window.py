"""Window tallies kept current between calls: what makes repeated ``stats`` and ``count`` cheap.

The dashboard asks the same question (kind, pid, command, the last N seconds) every second, and
so do tools polling the store; between two calls the window slides by about a second and a few
new events arrive. Recomputing the figures costs a pass over every event in the window (seconds
for a million events: their number of distinct destinations and process/destination pairs is
close to their number, so no pre-aggregation by time compresses them much). A
:class:`WindowCache` instead keeps, per recent question, the tallies of the events in the window
(per second, destination, protocol, port, outcome, command, command+pid, command+destination) and
which data they describe: the window ``(lo, hi]`` and the highest ``seq`` seen. The next call reads
only what changed, inside the caller's read transaction:

- stored events the window no longer covers (it slid forward past them, or back),
- stored events it now covers (it slid over them),
- events stored since (``seq`` above the watermark) that fall inside it,

so the tallies describe exactly that snapshot. A window is rebuilt from the raw rows when the
deltas cannot account for the change: retention deleted events that may have been inside it
(every prune bumps the ``prunes`` serial in ``meta`` and leaves a record of what it deleted;
records another process made are not known here), the row counts disagree, or the window jumped
further than half its width. A caller whose snapshot is older than the tallies gets an answer
tallied from scratch, and the tallies stay as they are.

An in-memory store's reads hold its write lock, so there a window tallied from scratch is read
a chunk of rows at a time, giving the writer (the collector) the lock in between and catching
up with what it stored; a window's lock is therefore always taken before its snapshot.

First and last times are not tallied: they are index look-ups at answer time, as are the
rate-bucket boundaries that fall inside a second. Every figure is the one
:func:`netspy_tui.analysis.aggregate.aggregate` defines; ``tests/store`` holds them equal.
Ingest pays nothing for any of this.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from operator import floordiv, itemgetter
from typing import Any

from netspy_tui.analysis.aggregate import PROCESS_LIMIT, bucket_layout
from netspy_tui.models import Counted, EventKind, ProcessStat, WindowStats

E9 = 1_000_000_000
#: Rows fetched per round trip while tallying.
FETCH_CHUNK = 8192
#: Windows remembered; the least recently asked for is forgotten first ...
CACHE_WINDOWS = 8
#: ... and one not asked for in this many seconds is forgotten at the next call.
CACHE_IDLE_SECONDS = 300.0
#: A window whose tallies hold more keys than this is answered but not remembered (memory bound:
#: about 100 bytes a key; a million events of diverse traffic make about 200,000).
CACHE_MAX_KEYS = 1_500_000
#: Prune records kept (a window older than the oldest record is rebuilt).
PRUNE_RECORDS = 4096
#: Slide by at most this fraction of the window's width and it is updated, else rebuilt.
MAX_SLIDE = 0.5
#: Rows tallied between two pauses when a window is built a chunk at a time (``breathe``).
GROW_ROWS = 50_000

_COLUMNS = "t, pid, command, destination, port, protocol, outcome, failed"
_T, _PID, _COMMAND, _DESTINATION, _PORT, _PROTOCOL, _OUTCOME, _FAILED = map(itemgetter, range(8))
_COMMAND_PID, _COMMAND_DESTINATION = itemgetter(2, 1), itemgetter(2, 3)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KIND_CODE: dict[str, int] = {"connection": 0, "packet_drop": 1}

#: One prune transaction: per kind, (rows deleted, the highest ``t`` any of them could have).
PruneRecord = dict[int, tuple[int, int]]
#: ``count(conn, subject, lo, hi)``: events of the subject with ``lo < t <= hi``, counted from scratch.
ColdCount = Callable[[sqlite3.Connection, "Subject", int, int], int]
#: A read transaction: ``with snapshot() as conn`` (every statement inside sees the same data).
Snapshot = Callable[[], AbstractContextManager[sqlite3.Connection]]
#: ``breathe(conn)``: end the read transaction, let writers in, begin another.
Breathe = Callable[[sqlite3.Connection], None]


def _stored_since(where: str) -> str:
    """Rows stored after a watermark (params: seq above, seq up to, ``where``'s, t above, t up to)."""
    return f"FROM events NOT INDEXED WHERE seq > ? AND seq <= ? AND {where} AND t > ? AND t <= ?"


class _Stale(Exception):
    """The tallies contradict the data (a count would go below zero): rebuild."""


def _ns_to_time(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value // 1000)


@dataclass(frozen=True)
class Subject:
    """Which events a window holds: one kind, optionally one pid and/or one command."""

    kind: EventKind
    pid: int | None
    command: str | None

    @property
    def code(self) -> int:
        return KIND_CODE[self.kind]

    def where(self) -> tuple[str, tuple[Any, ...]]:
        clauses, params = ["kind = ?"], [self.code]
        if self.pid is not None:
            clauses.append("pid = ?")
            params.append(self.pid)
        if self.command is not None:
            clauses.append("command = ?")
            params.append(self.command)
        return " AND ".join(clauses), tuple(params)

    @property
    def index(self) -> str:
        """The raw index that serves this subject's time ranges."""
        if self.pid is not None:
            return "events_pid"
        return "events_command" if self.command is not None else "events_time"


def _merge(into: Counter[Any], delta: Mapping[Any, int], sign: int) -> None:
    """``into += sign * delta``, dropping keys that reach zero."""
    get = into.get
    for key, n in delta.items():
        value = get(key, 0) + sign * n
        if value > 0:
            into[key] = value
        elif value == 0:
            del into[key]
        else:
            raise _Stale


def _rename(counter: Counter[str], old: str, new: str) -> Counter[str]:
    if old in counter:
        counter[new] += counter.pop(old)
    return counter


class Tally:
    """Counts of the events in a window, by every key a :class:`WindowStats` figure needs."""

    __slots__ = (
        "attempts", "destinations", "distinct", "failures", "outcomes", "pairs", "pids", "ports", "protocols",
        "seconds", "total",
    )  # fmt: skip

    def __init__(self) -> None:
        self.total = 0
        self.seconds: Counter[int] = Counter()  # t // 1e9 -> events
        self.destinations: Counter[str] = Counter()  # destination, '' counted as 'unknown'
        self.protocols: Counter[str] = Counter()  # protocol, '' counted as 'unknown'
        self.ports: Counter[str] = Counter()  # str(port), connections only
        self.outcomes: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()  # command -> events
        self.failures: Counter[str] = Counter()  # command -> failed events
        self.pids: Counter[tuple[str, int]] = Counter()  # (command, pid) -> events
        self.pairs: Counter[tuple[str, str]] = Counter()  # (command, non-empty destination) -> events
        self.distinct: Counter[str] = Counter()  # command -> distinct non-empty destinations

    @property
    def keys(self) -> int:
        return len(self.seconds) + len(self.destinations) + len(self.pairs) + len(self.pids)

    def extend(self, rows: list[tuple[Any, ...]]) -> None:
        """Add rows of ``_COLUMNS`` while building from nothing: counted in C, keys normalised
        once by :meth:`finish`."""
        self.total += len(rows)
        self.seconds.update(map(floordiv, map(_T, rows), repeat(E9)))
        self.destinations.update(map(_DESTINATION, rows))
        self.protocols.update(map(_PROTOCOL, rows))
        self.ports.update(map(_PORT, rows))
        self.outcomes.update(map(_OUTCOME, rows))
        self.pids.update(map(_COMMAND_PID, rows))
        self.failures.update(compress(map(_COMMAND, rows), map(_FAILED, rows)))
        self.pairs.update(map(_COMMAND_DESTINATION, rows))

    def finish(self) -> None:
        """After :meth:`extend`: the keys :meth:`apply` keeps, and the figures derived from them."""
        _rename(self.destinations, "", "unknown")
        _rename(self.protocols, "", "unknown")
        ports: Counter[Any] = self.ports
        self.ports = Counter() if None in ports else Counter({str(p): n for p, n in ports.items()})
        for (cmd, _), n in self.pids.items():
            self.attempts[cmd] += n
        for key in [k for k in self.pairs if not k[1]]:
            del self.pairs[key]
        self.distinct = Counter(map(itemgetter(0), self.pairs))

    def apply(self, rows: list[tuple[Any, ...]], sign: int) -> None:
        """Add (``sign`` 1) or remove (-1) rows of ``_COLUMNS``."""
        if not rows:
            return
        self.total += sign * len(rows)
        if self.total < 0:
            raise _Stale
        _merge(self.seconds, Counter(map(floordiv, map(_T, rows), repeat(E9))), sign)
        _merge(self.destinations, _rename(Counter(map(_DESTINATION, rows)), "", "unknown"), sign)
        _merge(self.protocols, _rename(Counter(map(_PROTOCOL, rows)), "", "unknown"), sign)
        ports = Counter(map(_PORT, rows))
        if None not in ports:  # packet drops have no port
            _merge(self.ports, {str(p): n for p, n in ports.items()}, sign)
        _merge(self.outcomes, Counter(map(_OUTCOME, rows)), sign)
        pids = Counter(map(_COMMAND_PID, rows))
        _merge(self.pids, pids, sign)
        attempts: Counter[str] = Counter()
        for (cmd, _), n in pids.items():
            attempts[cmd] += n
        _merge(self.attempts, attempts, sign)
        _merge(self.failures, Counter(compress(map(_COMMAND, rows), map(_FAILED, rows))), sign)
        pairs, distinct = self.pairs, self.distinct
        get = pairs.get
        for key, n in Counter(map(_COMMAND_DESTINATION, rows)).items():
            if not key[1]:
                continue
            old = get(key, 0)
            value = old + sign * n
            if value > 0:
                pairs[key] = value
                if not old:
                    distinct[key[0]] += 1
            elif value == 0 and old:
                del pairs[key]
                if distinct[key[0]] == 1:
                    del distinct[key[0]]
                else:
                    distinct[key[0]] -= 1
            else:
                raise _Stale


class Window:
    """The tallies of one subject's window and the snapshot they describe."""

    def __init__(self, subject: Subject, full: bool) -> None:
        self.subject = subject
        self.full = full  # False: only the total is kept (count)
        self.lock = threading.Lock()
        self.used = time.monotonic()
        self.valid = False
        self.lo = self.hi = 0
        self.seq = 0  # highest seq of the snapshot described
        self.rows = 0  # stored events of the kind in that snapshot
        self.prunes: int | None = None  # prune serial of that snapshot
        self.total = 0
        self.tally = Tally()
        self.rebuilds = 0  # times tallied from scratch (the rest were slides)


class WindowCache:
    """Recently asked windows, brought up to date on each call. Thread-safe.

    ``cold_count`` counts a subject's events in a range from scratch (the store's fastest way);
    ``prune_records`` maps a prune serial to what that prune deleted (kept by the writer).
    """

    def __init__(self, cold_count: ColdCount, prune_records: Mapping[int, PruneRecord]) -> None:
        self._cold_count = cold_count
        self._records = prune_records
        self._lock = threading.Lock()
        self._windows: dict[tuple[Any, ...], Window] = {}

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()

    def windows(self) -> list[Window]:
        """The windows remembered now (most recently asked last)."""
        with self._lock:
            return sorted(self._windows.values(), key=lambda w: w.used)

    def _window(self, key: tuple[Any, ...], subject: Subject, full: bool) -> Window:
        now = time.monotonic()
        with self._lock:
            for k in [k for k, w in self._windows.items() if now - w.used > CACHE_IDLE_SECONDS]:
                del self._windows[k]
            window = self._windows.get(key)
            if window is None or (full and not window.full):
                window = Window(subject, full)
                self._windows[key] = window
            window.used = now
            while len(self._windows) > CACHE_WINDOWS:
                oldest = min(self._windows, key=lambda k: self._windows[k].used)
                del self._windows[oldest]
            return window

    def _forget(self, key: tuple[Any, ...], window: Window) -> None:
        with self._lock:
            if self._windows.get(key) is window:
                del self._windows[key]

    # --- public ----------------------------------------------------------------------

    def count(self, snapshot: Snapshot, subject: Subject, window: Any, lo: int, hi: int) -> int:
        """Events of ``subject`` with ``lo < t <= hi``, read in ``snapshot()`` (a read transaction).

        ``window`` names the question (its width as asked) for the cache. A window's lock is
        always taken before its snapshot: an in-memory store's snapshot holds the write lock,
        which :meth:`stats` gives up and takes again while it holds the window's lock.
        """
        with self._lock:
            full = self._windows.get((subject, window, True))
        if full is not None:  # the stats of the same question: as cheap to bring up to date
            with full.lock, snapshot() as conn:
                if self._update(conn, full, lo, hi, rebuild=False):
                    return full.total
        key = (subject, window, False)
        w = self._window(key, subject, full=False)
        with w.lock, snapshot() as conn:
            if self._update(conn, w, lo, hi, rebuild=True):
                return w.total
            return self._cold_count(conn, subject, lo, hi)  # an older snapshot than the tallies describe

    def stats(
        self,
        snapshot: Snapshot,
        subject: Subject,
        window_seconds: int,
        now: datetime,
        lo: int,
        hi: int,
        top_n: int,
        buckets: int,
        breathe: Breathe | None = None,
    ) -> WindowStats:
        """The :class:`WindowStats` of ``subject`` over ``(lo, hi]`` (``hi`` is ``now``), read in ``snapshot()``.

        ``breathe(conn)``, when given, ends the read transaction, lets writers in and starts a new
        one: a window tallied from scratch is then read a chunk at a time, and the answer describes
        the last snapshot (the in-memory store, whose reads hold off its writer, passes it).
        """
        key = (subject, window_seconds, True)
        w = self._window(key, subject, full=True)
        with w.lock, snapshot() as conn:
            for attempt in range(2):
                if not self._update(conn, w, lo, hi, rebuild=True, breathe=breathe):
                    break  # the snapshot is older than the tallies: answer from scratch, below
                try:
                    answer = _answer(conn, w, window_seconds, now, top_n, buckets)
                except _Stale:
                    w.valid = False  # a tally disagrees with the index: once more from the rows
                    if attempt:
                        raise
                    continue
                if w.tally.keys > CACHE_MAX_KEYS:
                    self._forget(key, w)
                return answer
            scratch = Window(subject, full=True)  # an older snapshot than the tallies describe: leave them be
            self._update(conn, scratch, lo, hi, rebuild=True)
            return _answer(conn, scratch, window_seconds, now, top_n, buckets)

    # --- keeping a window current --------------------------------------------------------

    @staticmethod
    def _version(conn: sqlite3.Connection, kind: int) -> tuple[int, int, int | None]:
        """(highest seq, stored events of ``kind``, prune serial) of the snapshot."""
        seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        rows = conn.execute("SELECT n FROM kind_counts WHERE kind = ?", (kind,)).fetchone()[0]
        row = conn.execute("SELECT value FROM meta WHERE key = 'prunes'").fetchone()
        return int(seq), int(rows), int(row[0]) if row is not None else None

    def _update(
        self,
        conn: sqlite3.Connection,
        w: Window,
        lo: int,
        hi: int,
        *,
        rebuild: bool,
        breathe: Breathe | None = None,
    ) -> bool:
        """Make ``w`` describe ``(lo, hi]`` in this snapshot, sliding it when the change is small.

        False, with ``w`` untouched, when the snapshot is older than what ``w`` describes, or when
        sliding is not possible and ``rebuild`` is False.
        """
        version = self._version(conn, w.subject.code)
        if w.valid and version[0] < w.seq:
            return False
        if w.valid and self._can_slide(w, lo, hi) and self._intact(conn, w, version):
            try:
                self._slide(conn, w, lo, hi, version[0])
            except _Stale:
                pass  # rebuilt below
            else:
                w.seq, w.rows, w.prunes = version
                return True
        if not rebuild:
            return False
        w.rebuilds += 1
        if not (w.full and breathe is not None and self._grow(conn, w, lo, hi, breathe)):
            self._rebuild(conn, w, lo, hi)
        return True

    @staticmethod
    def _can_slide(w: Window, lo: int, hi: int) -> bool:
        """The windows overlap, and moved by at most :data:`MAX_SLIDE` of the width."""
        if not (w.lo < hi and lo < w.hi and lo < hi):
            return False
        return abs(lo - w.lo) + abs(hi - w.hi) <= MAX_SLIDE * (hi - lo)

    def _intact(self, conn: sqlite3.Connection, w: Window, version: tuple[int, int, int | None]) -> bool:
        """Every row ``w`` counted is still stored in this snapshot (nothing pruned from its window)."""
        seq, rows, prunes = version
        if seq < w.seq:
            return False
        kind = w.subject.code
        if prunes == w.prunes:
            # Nothing was pruned: every row the tallies counted is still there, plus the new ones.
            added = conn.execute(
                "SELECT count(*) FROM events NOT INDEXED WHERE seq > ? AND seq <= ? AND kind = ?", (w.seq, seq, kind)
            ).fetchone()[0]
            return bool(rows == w.rows + added)
        if prunes is None or w.prunes is None or prunes < w.prunes:
            return False
        # Pruned since: fine when no pruned row can have been inside the window.
        for serial in range(w.prunes + 1, prunes + 1):
            record = self._records.get(serial)
            if record is None:  # another process pruned, or the record is gone
                return False
            deleted = record.get(kind)
            if deleted is not None and deleted[0] > 0 and deleted[1] > w.lo:
                return False
        return True

    def _slide(self, conn: sqlite3.Connection, w: Window, lo: int, hi: int, seq: int) -> None:
        """Apply the rows that left and entered ``w`` (sets ``w.valid`` False while it works)."""
        where, params = w.subject.where()
        old = f"FROM events INDEXED BY {w.subject.index} WHERE {where} AND t > ? AND t <= ? AND seq <= ?"
        ranges: list[tuple[int, int, int]] = []  # (sign, lo, hi) over the rows w has seen
        if lo > w.lo:
            ranges.append((-1, w.lo, lo))
        elif lo < w.lo:
            ranges.append((1, lo, w.lo))
        if hi < w.hi:
            ranges.append((-1, hi, w.hi))
        elif hi > w.hi:
            ranges.append((1, w.hi, hi))
        new = _stored_since(where)
        new_params = (w.seq, seq, *params, lo, hi)
        w.valid = False
        if w.full:
            for sign, a, b in ranges:
                self._tally(conn, w.tally, f"SELECT {_COLUMNS} {old}", (*params, a, b, w.seq), sign)
            if seq > w.seq:
                self._tally(conn, w.tally, f"SELECT {_COLUMNS} {new}", new_params, 1)
            w.total = w.tally.total
        else:
            total = w.total
            for sign, a, b in ranges:
                total += sign * conn.execute(f"SELECT count(*) {old}", (*params, a, b, w.seq)).fetchone()[0]
            if seq > w.seq:
                total += conn.execute(f"SELECT count(*) {new}", new_params).fetchone()[0]
            if total < 0:
                raise _Stale
            w.total = total
        w.lo, w.hi = lo, hi
        w.valid = True

    def _rebuild(self, conn: sqlite3.Connection, w: Window, lo: int, hi: int) -> None:
        """Tally ``(lo, hi]`` from the raw rows, in one snapshot."""
        w.valid = False
        version = self._version(conn, w.subject.code)
        if w.full:
            where, params = w.subject.where()
            w.tally = tally = Tally()
            sql = f"SELECT {_COLUMNS} FROM events INDEXED BY {w.subject.index} WHERE {where} AND t > ? AND t <= ?"
            cursor = conn.execute(sql, (*params, lo, hi))
            while rows := cursor.fetchmany(FETCH_CHUNK):
                tally.extend(rows)
            tally.finish()
            w.total = tally.total
        else:
            w.total = self._cold_count(conn, w.subject, lo, hi)
        w.lo, w.hi = lo, hi
        w.seq, w.rows, w.prunes = version
        w.valid = True

    def _grow(self, conn: sqlite3.Connection, w: Window, lo: int, hi: int, breathe: Breathe) -> bool:
        """Tally ``(lo, hi]`` about :data:`GROW_ROWS` rows at a time, calling ``breathe`` in between.

        The part tallied is caught up after each pause (rows stored meanwhile inside it); False
        when a prune may have deleted some of it (the caller then rebuilds in one go).
        """
        w.valid = False
        where, params = w.subject.where()
        index = w.subject.index
        in_range = f"FROM events INDEXED BY {index} WHERE {where} AND t > ? AND t <= ?"
        probe = f"SELECT t {in_range} ORDER BY t LIMIT 1 OFFSET ?"
        part = f"SELECT {_COLUMNS} {in_range} AND seq <= ?"
        arrived = f"SELECT {_COLUMNS} {_stored_since(where)}"
        w.tally = tally = Tally()
        w.lo = w.hi = lo
        w.seq, w.rows, w.prunes = self._version(conn, w.subject.code)
        while True:
            row = conn.execute(probe, (*params, w.hi, hi, GROW_ROWS)).fetchone()
            # up to the time of the row after the chunk (exclusive), or all rows of that time when the
            # whole chunk has it
            top = hi if row is None else row[0] - 1 if row[0] - 1 > w.hi else row[0]
            self._extend(conn, tally, part, (*params, w.hi, top, w.seq))
            w.hi = top
            if top >= hi:
                break
            breathe(conn)
            version = self._version(conn, w.subject.code)
            if not self._intact(conn, w, version):
                return False
            if version[0] > w.seq:
                self._extend(conn, tally, arrived, (w.seq, version[0], *params, lo, w.hi))
            w.seq, w.rows, w.prunes = version
        tally.finish()
        w.total = tally.total
        w.valid = True
        return True

    @staticmethod
    def _extend(conn: sqlite3.Connection, tally: Tally, sql: str, params: tuple[Any, ...]) -> None:
        cursor = conn.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_CHUNK):
            tally.extend(rows)

    @staticmethod
    def _tally(conn: sqlite3.Connection, tally: Tally, sql: str, params: Iterable[Any], sign: int) -> None:
        cursor = conn.execute(sql, tuple(params))
        while rows := cursor.fetchmany(FETCH_CHUNK):
            tally.apply(rows, sign)


# --- answers -----------------------------------------------------------------------------


def _top(counter: Mapping[str, int], n: int) -> list[Counted]:
    """The ``n`` largest counts, equal counts by key (as ``aggregate._top``)."""
    if n <= 0 or not counter:
        return []
    if len(counter) > 4 * n:
        cut = heapq.nlargest(n, counter.values())[-1]  # the n-th largest count: only keys at or above it
        items = [(k, c) for k, c in counter.items() if c >= cut]
    else:
        items = list(counter.items())
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return [Counted(key=k, count=c) for k, c in items[:n]]


def _edge(conn: sqlite3.Connection, index: str, where: str, params: tuple[Any, ...], lo: int, hi: int,
          last: bool) -> int | None:
    """The first (or last) ``t`` in ``(lo, hi]`` through ``index``: one index seek."""
    order = "DESC" if last else ""
    row = conn.execute(
        f"SELECT t FROM events INDEXED BY {index} WHERE {where} AND t > ? AND t <= ? ORDER BY t {order} LIMIT 1",
        (*params, lo, hi),
    ).fetchone()
    return None if row is None else int(row[0])


def _rate(conn: sqlite3.Connection, w: Window, size: int, count: int) -> list[int]:
    """Rate buckets of ``aggregate``: bucket ``count - 1 - (hi - t) // (size s)``.

    Tallied per second; only a second that a bucket boundary cuts (its sub-second offset is the
    same as ``hi``'s) is split, by counting its events up to the boundary in the index.
    """
    rate = [0] * count
    hi_second, offset = divmod(w.hi, E9)
    cut: list[tuple[int, int]] = []
    for second, n in w.tally.seconds.items():
        k = hi_second - second  # events of this second are k or k - 1 whole seconds old
        if k > 0 and k % size == 0:
            cut.append((second, n))
            continue
        idx = count - 1 - k // size
        if 0 <= idx < count:
            rate[idx] += n
    if cut:
        where, params = w.subject.where()
        sql = (
            f"SELECT count(*) FROM events INDEXED BY {w.subject.index} "
            f"WHERE {where} AND t >= ? AND t <= ? AND t > ? AND t <= ?"
        )
        for second, n in cut:
            k = hi_second - second
            older, newer = count - 1 - k // size, count - 1 - (k - 1) // size
            start = second * E9
            low = conn.execute(sql, (*params, start, start + offset, w.lo, w.hi)).fetchone()[0]
            if older >= 0:  # (below 0 only for the window's oldest second, whose events are all newer)
                rate[older] += low
            if newer >= 0:
                rate[newer] += n - low
    return rate


def _answer(
    conn: sqlite3.Connection, w: Window, window_seconds: int, now: datetime, top_n: int, buckets: int
) -> WindowStats:
    size, count = bucket_layout(window_seconds, buckets)
    kind = w.subject.kind
    empty = WindowStats(
        kind=kind,
        window_seconds=window_seconds,
        pid=w.subject.pid,
        command=w.subject.command,
        bucket_seconds=size,
        rate_buckets=[0] * count,
        until=now,
    )
    tally = w.tally
    if tally.total == 0:
        return empty
    top_n = max(0, top_n)
    where, params = w.subject.where()
    index = w.subject.index
    first = _edge(conn, index, where, params, w.lo, w.hi, last=False)
    last = _edge(conn, index, where, params, w.lo, w.hi, last=True)
    if first is None or last is None:  # cannot be: the tallies counted events in the window
        raise _Stale
    ranked = sorted(tally.attempts.items(), key=lambda kv: (-kv[1], kv[0]))[:PROCESS_LIMIT]
    pids: dict[str, list[int]] = defaultdict(list)
    for cmd, p in tally.pids:
        pids[cmd].append(p)
    # First/last seen of each shown process: index seeks (the pid index when the subject has a pid).
    proc_index = "events_pid" if w.subject.pid is not None else "events_command"
    processes: list[ProcessStat] = []
    for cmd, attempts in ranked:
        proc_where, proc_params = Subject(kind, w.subject.pid, cmd).where()
        seen = (
            _edge(conn, proc_index, proc_where, proc_params, w.lo, w.hi, last=False),
            _edge(conn, proc_index, proc_where, proc_params, w.lo, w.hi, last=True),
        )
        if seen[0] is None or seen[1] is None:
            raise _Stale
        processes.append(
            ProcessStat(
                command=cmd,
                pids=sorted(pids[cmd]),
                attempts=attempts,
                distinct_destinations=tally.distinct.get(cmd, 0),
                failures=tally.failures.get(cmd, 0),
                first_seen=_ns_to_time(seen[0]),
                last_seen=_ns_to_time(seen[1]),
            )
        )
    return empty.model_copy(
        update={
            "total": tally.total,
            "first_seen": _ns_to_time(first),
            "last_seen": _ns_to_time(last),
            "top_destinations": _top(tally.destinations, top_n),
            "protocols": _top(tally.protocols, top_n),
            "ports": _top(tally.ports, top_n) if kind == "connection" else [],
            "outcomes": _top(tally.outcomes, top_n),
            "processes": processes,
            "rate_buckets": _rate(conn, w, size, count),
        }
    )
