"""Rollups per minute and per hour, next to the per-second ones: long windows read few rows.

The writer adds every rollup row to ``rollup`` (its second) and, once the row's minute is over, folds
the minute into ``rollup_minute`` and ``rollup_hour`` (the same key, summed per minute and per hour)
with one grouped statement (:func:`fold`); a row that comes after its minute was folded goes to all
three at once. The store keeps the boundary (:data:`FOLDED`): seconds before it agree in every
table, seconds from it on are read per second.
A window the in-memory hour does not cover (a day, a week) reads its whole hours from the hour
table, the whole minutes at its ends from the minute table and the seconds at its very ends from
the second table: a day costs 24 hours of keys plus at most two hours of minutes and two minutes of
seconds, not 86,400 seconds of rows. Counts stay exact to the second; a coarse row is placed at the
first second of its minute or hour, so a rate bucket of a long window may take a minute's or an
hour's events a little early. Without a pid or command filter such a window does less still: the
store reads the memory from its first whole hour on and each whole hour and minute before it from
:class:`Units` (their sums, kept after the first read), and sums only the seconds before the
first whole minute in SQLite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

KEY = "kind, pid, command, destination, port, protocol, outcome"
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    {unit}      INTEGER NOT NULL,   -- wall-clock second since the epoch // {size}
    kind        INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    destination TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    protocol    TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    failed      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    first       INTEGER NOT NULL,
    last        INTEGER NOT NULL,
    PRIMARY KEY ({unit}, {key})
) WITHOUT ROWID;
"""
#: (table, unit column, seconds per unit), coarsest first
SPANS = (("rollup_hour", "hour", 3600), ("rollup_minute", "minute", 60))
SCHEMA = "".join(_TABLE.format(name=t, unit=u, size=s, key=KEY) for t, u, s in SPANS)
#: how a row is added to one of the same key (``first``/``last`` those of the rows that count)
_MERGE = (
    "ON CONFLICT DO UPDATE SET n = n + excluded.n, "
    "first = CASE WHEN excluded.n > 0 AND excluded.first < first THEN excluded.first ELSE first END, "
    "last = CASE WHEN excluded.n > 0 AND excluded.last > last THEN excluded.last ELSE last END"
)
_UPSERT = "INSERT INTO {name} ({unit}, {key}, failed, n, first, last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
_UPSERTS = [(_UPSERT.format(name=t, unit=u, key=KEY) + _MERGE, s) for t, u, s in SPANS]
COLUMNS = "second, kind, pid, command, destination, port, protocol, outcome, failed, n, first, last"


_GROUPED = (
    "max(failed), sum(n), coalesce(min(CASE WHEN n > 0 THEN first END), min(first)), "
    "coalesce(max(CASE WHEN n > 0 THEN last END), max(last))"
)
_FOLD = (
    "INSERT INTO {name} ({unit}, {key}, failed, n, first, last) SELECT second / {size}, {key}, {grouped} "
    "FROM rollup WHERE second >= ? AND second < ? GROUP BY second / {size}, {key} {merge}"
)
_FOLDS = [_FOLD.format(name=t, unit=u, size=s, key=KEY, grouped=_GROUPED, merge=_MERGE) for t, u, s in SPANS]
# One whole minute (the writer's usual fold): its rows into the minute table (summed per key, or as they are),
# then the minute's rows as they are into the hour table
_MINUTE_SUMMED = (
    f"INSERT INTO rollup_minute (minute, {KEY}, failed, n, first, last) SELECT ?, {KEY}, {_GROUPED} "
    f"FROM rollup WHERE second >= ? AND second < ? GROUP BY {KEY} {_MERGE}"
)
_MINUTE_AS_IS = (
    f"INSERT INTO rollup_minute (minute, {KEY}, failed, n, first, last) SELECT ?, {KEY}, failed, n, first, last "
    f"FROM rollup WHERE second >= ? AND second < ? {_MERGE}"
)
_HOUR_OF_MINUTE = (
    f"INSERT INTO rollup_hour (hour, {KEY}, failed, n, first, last) SELECT minute / 60, {KEY}, failed, n, first, "
    f"last FROM rollup_minute WHERE minute = ? {_MERGE}"
)
_NOT_POSITIVE = "SELECT EXISTS (SELECT 1 FROM rollup WHERE second >= ? AND second < ? AND n <= 0)"
#: meta key: the first second whose per-second rows are not yet in the minute and hour tables
FOLDED = "coarse_from"
#: seconds a minute is left open after the newest row written, for rows of the last drain to land in it
GRACE = 5


def write(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Per-second rollup rows into the minute and hour tables (inside the caller's transaction): for
    rows of seconds already folded (:func:`fold`), i.e. rows that came late."""
    for sql, size in _UPSERTS:
        conn.executemany(sql, [(r[0] // size, *r[1:]) for r in rows])


def fold(conn: Any, lo: int, hi: int) -> None:
    """Sum the per-second rows of seconds lo..hi-1 into the minute and hour tables, in SQLite (inside
    the caller's transaction). The writer folds each minute once it is over, so the coarse tables
    cost a grouped statement per minute instead of two upserts per rollup row.

    One whole minute (``lo`` its first second: the writer's fold once its data moved past a minute) costs
    one sort at most instead of two: its rows are summed per key into the minute table, and those rows are
    the hour's part of it as they are (one per key: nothing left to group). When no row of the minute has
    ``n <= 0`` (every rollup row of an aggregator), the minute needs no sort either: upserting its rows one
    by one sums them as grouping would (``first``/``last`` are then the min/max of them all; ``failed`` follows
    from the key's kind and outcome). The minute
    table holds nothing of a minute the writer has not folded yet (a late row goes there only for a second
    before the boundary), so what it holds of this one after the first statement is this fold's sums.
    The answer is the same as the two grouped statements' (a test compares them)."""
    if lo % 60 or hi - lo != 60:
        for sql in _FOLDS:
            conn.execute(sql, (lo, hi))
        return
    minute = lo // 60
    summed = conn.execute(_NOT_POSITIVE, (lo, hi)).fetchone()[0]
    conn.execute(_MINUTE_SUMMED if summed else _MINUTE_AS_IS, (minute, lo, hi))
    conn.execute(_HOUR_OF_MINUTE, (minute,))


def folded_from(conn: Any) -> int:
    """The store's fold boundary (see :data:`FOLDED`). A store that has none (new, or written when
    every row went to the coarse tables at once) starts after its newest per-second row."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (FOLDED,)).fetchone()
    if row is not None:
        return int(row[0])
    newest = conn.execute("SELECT max(second) FROM rollup").fetchone()[0]
    return 0 if newest is None else int(newest) + 1


def prune(conn: Any, second: int) -> None:
    """Forget the minutes and hours that start before ``second`` (the per-second rows before it are
    deleted in the same transaction): a coarse row never holds counts of seconds retention deleted,
    so every table agrees on what is kept. :func:`select` starts a window at the oldest second
    kept, so a unit cut by retention is read from the finer rows that are left."""
    for table, unit, size in SPANS:
        conn.execute(f"DELETE FROM {table} WHERE {unit} < ?", (-(-second // size),))


def _split(lo: int, hi: int, size: int) -> tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int]]:
    """Seconds lo..hi as (seconds before the first whole unit, whole units [a, b) or None, seconds
    after the last whole unit); second ranges inclusive, empty when lo > hi."""
    first = -(-lo // size)
    end = (hi + 1) // size
    if first >= end:
        return (lo, hi), None, (hi + 1, hi)
    return (lo, first * size - 1), (first, end), (end * size, hi)


def oldest(conn: Any) -> int | None:
    """The oldest second with a per-second row (None: none): where every window starts at the earliest."""
    row = conn.execute("SELECT min(second) FROM rollup").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def select(
    where: str, params: Sequence[Any], lo: int, hi: int, floor: int | None = None, folded: int | None = None
) -> tuple[str, list[Any]]:
    """SQL (and parameters) for the rollup rows of seconds lo..hi matching ``where`` (over the key
    columns), from the coarsest tables that fit; columns as :data:`COLUMNS`, ``second`` the first
    second of a coarse row. ``floor``: the oldest second kept (:func:`oldest`); nothing before it.
    ``folded``: the fold boundary (:data:`FOLDED`); seconds from it on are read per second."""
    if floor is not None:
        lo = max(lo, floor)
    parts: list[str] = []
    args: list[Any] = []

    def seconds(a: int, b: int) -> None:
        if a <= b:
            parts.append(f"SELECT {COLUMNS} FROM rollup WHERE {where} AND second >= ? AND second <= ?")
            args.extend([*params, a, b])

    def cover(a: int, b: int, level: int) -> None:
        if a > b:
            return
        if level >= len(SPANS):
            seconds(a, b)
            return
        table, unit, size = SPANS[level]
        left, whole, right = _split(a, b, size)
        cover(*left, level + 1)
        if whole is not None:
            parts.append(f"SELECT {unit} * {size} AS second, {KEY}, failed, n, first, last FROM {table} "
                         f"WHERE {where} AND {unit} >= ? AND {unit} < ?")  # fmt: skip
            args.extend([*params, *whole])
        cover(*right, level + 1)

    if folded is not None and hi >= folded:
        seconds(max(lo, folded), hi)
        hi = min(hi, folded - 1)
    cover(lo, hi, 0)
    if not parts:
        parts.append(f"SELECT {COLUMNS} FROM rollup WHERE 0")
    return " UNION ALL ".join(parts), args


def summed(sql: str, args: list[Any], hi: int, bucket: int) -> tuple[str, list[Any]]:
    """:func:`select`'s rows summed per key and rate bucket (``bucket`` seconds, counted back from
    ``hi``) in SQLite: a long window hands Python one row per key and bucket, not per key and hour.
    ``first``/``last`` are those of the rows that count (``n`` > 0), as the rollups keep them."""
    return (
        f"SELECT max(second), {KEY}, max(failed), sum(n), coalesce(min(CASE WHEN n > 0 THEN first END), 0), "
        f"coalesce(max(CASE WHEN n > 0 THEN last END), 0) FROM ({sql}) GROUP BY {KEY}, (? - second) / ?",
        [*args, hi, bucket],
    )


class Units(Generic[T]):
    """Whole hours (or minutes) of one kind, summed: what a long window reads for every unit older
    than the memory, kept after their first use, so a day asked twice reads SQLite for the seconds
    at its edge only.

    The writer calls :meth:`forget` for the units it writes (a late row) or retention cuts; a sum
    built from a read that started before such a change is not kept (:attr:`generation`).
    Bounded in units and in their size, the least recently used first out."""

    def __init__(self, limit: int, size: Callable[[T], int], budget: int) -> None:
        self._kept: dict[tuple[int, int], tuple[object, T]] = {}  # (unit, kind) -> (names of its ids, sums)
        self._limit, self._size, self._budget = limit, size, budget
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, unit: int, kind: int, names: object) -> T | None:
        """The unit's sums if kept, with ids of ``names``."""
        with self._lock:
            got = self._kept.pop((unit, kind), None)
            if got is None:
                return None
            self._kept[(unit, kind)] = got  # (most recently used last)
            return got[1] if got[0] is names else None

    def put(self, unit: int, kind: int, names: object, value: T, generation: int) -> None:
        """Keep a unit's sums read when :attr:`generation` was ``generation``."""
        with self._lock:
            if generation != self.generation or self._size(value) > self._budget:
                return
            self._kept[(unit, kind)] = (names, value)
            while len(self._kept) > self._limit or sum(self._size(v) for _, v in self._kept.values()) > self._budget:
                del self._kept[next(iter(self._kept))]

    def forget(self, lo: int | None = None, hi: int | None = None) -> None:
        """Drop the units lo..hi (inclusive; None: unbounded); every one with neither."""
        with self._lock:
            self.generation += 1
            for key in [k for k in self._kept if (lo is None or k[0] >= lo) and (hi is None or k[0] <= hi)]:
                del self._kept[key]
