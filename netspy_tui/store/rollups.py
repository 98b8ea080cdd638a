"""Rollups: exact counts per second, and every window figure the tools report computed from them.

A rollup row says: in wall-clock second S, process (pid, command) made N events of one kind to one
destination/port with one protocol and one outcome (or drop reason), the first at F and the last
at L. The store's writer keeps them (from the kernel's counts, or derived from the events it
stores), in SQLite and, for the last hour, here in memory as numpy columns. A window's figures are
then a few vectorised passes over its rows: their cost grows with the number of distinct keys per
second, not with the number of events, and does not depend on whether raw events were kept.

Windows are whole seconds: "the last W seconds" at ``now`` are the seconds ``s`` with
``floor(now) - W < s <= floor(now)`` (:func:`window_seconds`), the definition
:func:`netspy_tui.analysis.aggregate.aggregate` also uses, so figures from rollups and from events
agree exactly (``tests/store`` holds them equal).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from netspy_tui.analysis.aggregate import PROCESS_LIMIT, bucket_layout, window_seconds
from netspy_tui.models import Counted, ProcessStat, Scope, WindowStats, ns_to_time, time_to_ns

KIND_CODE: dict[str, int] = {"connection": 0, "packet_drop": 1}

#: One rollup row as the writer hands it over.
#: (second, kind, pid, command, destination, port, protocol, outcome, failed, n, first_ns, last_ns)
Row = tuple[int, int, int, str, str, int, str, str, int, int, int, int]

ROWS = np.dtype(
    {
        "names": ["second", "pid", "port", "outcome", "protocol", "command", "destination", "kind", "failed",
                  "cp", "cd", "n", "first", "last"],
        "formats": ["<i8", "<i8", "<i4", "<u4", "<u4", "<u4", "<u4", "u1", "u1", "<u4", "<u4", "<i8", "<i8", "<i8"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 36, 37, 38, 42, 46, 54, 62],
        "itemsize": 70,
    }
)  # fmt: skip
"""One rollup row, packed: its key is the first :data:`KEY_BYTES` bytes. ``cp``/``cd`` number the
(command, pid) and (command, destination) pairs densely, so distinct counts need no sort."""
KEY_BYTES = 38
PROCS = np.dtype([("command", "<u4"), ("n", "<i8"), ("failures", "<i8"), ("first", "<i8"), ("last", "<i8")])
_BIG = np.iinfo(np.int64).max
#: (ids, weights): one column of a window's rows with the events each stands for
Marginal = tuple[np.ndarray, np.ndarray]


class Names:
    """Interned strings: commands, destinations, protocols, outcomes share one table (ids are
    indexes into :attr:`values`). Append-only, so readers can use any prefix without a lock."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self.pairs = (Pairs(), Pairs())  # (command, pid), (command, destination)

    def id(self, value: str) -> int:
        hit = self._ids.get(value)
        if hit is None:
            with self._lock:
                hit = self._ids.get(value)
                if hit is None:
                    hit = len(self.values)
                    self.values.append(value)
                    self._ids[value] = hit
        return hit

    def find(self, value: str) -> int | None:
        return self._ids.get(value)

    def ids(self, values: list[str]) -> list[int]:
        """The id of each of ``values``: those already interned looked up in one pass in C, each new one interned in
        the order first seen (a column of a batch's 5,000 rows: ~0.6 ms against ~1.4 when a set of the distinct ones
        was made first)."""
        got = list(map(self._ids.get, values))
        if None in got:
            intern = self.id
            got = [intern(value) if i is None else i for value, i in zip(values, got, strict=True)]
        return got  # type: ignore[return-value]  # (no None left)


class Pairs:
    """Dense ids for pairs of ints; :attr:`major`/:attr:`minor` give a pair back from its id.

    The pairs are found by a sorted array of 64-bit keys (16 bytes a pair; a dict of tuples costs
    ~180): a second's new pairs are inserted in one pass."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)  # sorted: major << 32 | minor
        self._id_of_key = np.zeros(0, np.uint32)  # parallel to _keys
        self._major = np.zeros(1024, np.int64)
        self._minor = np.zeros(1024, np.int64)
        self._n = 0
        self._lock = threading.Lock()

    def ids(self, major: Sequence[int], minor: Sequence[int]) -> list[int]:
        ids: list[int] = self.ids_of(np.array(major, np.int64), np.array(minor, np.int64)).tolist()
        return ids

    def ids_of(self, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
        """The id of each pair (major[i], minor[i]), new pairs numbered as they come."""
        if not len(major):
            return np.zeros(0, np.uint32)
        major, minor = major.astype(np.int64), minor.astype(np.int64)
        keys = (major << 32) | (minor & 0xFFFFFFFF)
        uniq, first_at, inverse = np.unique(keys, return_index=True, return_inverse=True)
        with self._lock:
            at = np.asarray(np.searchsorted(self._keys, uniq))
            found = np.zeros(len(uniq), bool)
            inside = at < len(self._keys)
            found[inside] = self._keys[at[inside]] == uniq[inside]
            if not found.all():
                new = np.flatnonzero(~found)
                start, end = self._n, self._n + len(new)
                if end > len(self._major):
                    size = max(end, 2 * len(self._major))
                    self._major = np.concatenate([self._major, np.zeros(size - len(self._major), np.int64)])
                    self._minor = np.concatenate([self._minor, np.zeros(size - len(self._minor), np.int64)])
                self._major[start:end] = major[first_at[new]]
                self._minor[start:end] = minor[first_at[new]]
                self._keys = np.insert(self._keys, at[new], uniq[new])
                self._id_of_key = np.insert(self._id_of_key, at[new], np.arange(start, end, dtype=np.uint32))
                self._n = end
                at = np.asarray(np.searchsorted(self._keys, uniq))
            ids = self._id_of_key[at]
        return ids[inverse.ravel()]

    def __len__(self) -> int:
        return self._n

    @property
    def major(self) -> np.ndarray:
        return self._major

    @property
    def minor(self) -> np.ndarray:
        return self._minor


_ROW_TUPLE = np.dtype(
    [("second", "<i8"), ("kind", "<i8"), ("pid", "<i8"), ("command", "O"), ("destination", "O"), ("port", "O"),
     ("protocol", "O"), ("outcome", "O"), ("failed", "<i8"), ("n", "<i8"), ("first", "<i8"), ("last", "<i8")]
)  # fmt: skip
"""A :data:`Row` as numpy reads it (strings and the port, which may be NULL, as objects)."""


def to_array(rows: Sequence[Row], names: Names) -> np.ndarray:
    """Rollup rows -> a :data:`ROWS` array (strings and pairs interned in ``names``)."""
    out = np.zeros(len(rows), ROWS)
    if not rows:
        return out
    cols = np.array(rows, _ROW_TUPLE)  # (one pass over the tuples: cheaper than zip(*rows) per column)
    for name in ("second", "kind", "pid", "failed", "n", "first", "last"):
        out[name] = cols[name]
    ports = cols["port"].tolist()
    out["port"] = [p or 0 for p in ports] if None in ports else ports
    for name in ("command", "destination", "protocol", "outcome"):
        out[name] = _ids(cols[name], names)
    out["cp"] = names.pairs[0].ids_of(out["command"], out["pid"])
    out["cd"] = names.pairs[1].ids_of(out["command"], out["destination"])
    return out


def _ids(values: Sequence[str] | np.ndarray, names: Names) -> np.ndarray:
    """Interned ids of many strings (:meth:`Names.ids`)."""
    return np.array(names.ids(values.tolist() if isinstance(values, np.ndarray) else list(values)), np.uint32)


def _keys(rows: np.ndarray) -> np.ndarray:
    """Each row's key as one opaque value (its first KEY_BYTES bytes)."""
    raw = np.ascontiguousarray(rows.view(np.uint8).reshape(len(rows), ROWS.itemsize)[:, :KEY_BYTES])
    return raw.view(f"V{KEY_BYTES}").ravel()


def merge(rows: np.ndarray) -> np.ndarray:
    """Rows of one key summed into one (n added, first/last min/max of the rows that count);
    keys whose events netted out (an in-progress connect that moved to its outcome) dropped."""
    if len(rows) < 2:
        return rows[rows["n"] != 0] if len(rows) else rows
    uniq, first_at, inverse = np.unique(_keys(rows), return_index=True, return_inverse=True)
    if len(uniq) == len(rows):
        return rows[rows["n"] != 0]
    out = rows[first_at].copy()
    out["n"] = np.bincount(inverse.ravel(), weights=rows["n"], minlength=len(uniq)).astype(np.int64)
    positive = rows["n"] > 0
    out["first"] = _BIG
    np.minimum.at(out["first"], inverse.ravel(), np.where(positive, rows["first"], _BIG))
    out["last"] = 0
    np.maximum.at(out["last"], inverse.ravel(), np.where(positive, rows["last"], 0))
    out["first"][out["first"] == _BIG] = 0
    return out[out["n"] != 0]


#: the columns a second keeps, packed in one array (``n`` as float for bincount). The command, pid
#: and destination of a row are those of its pairs (``cp``, ``cd``: see :meth:`Names.pairs`), read
#: through :func:`derived` when a figure needs them, so a row costs 43 bytes instead of 75.
COLUMNS = ("protocol", "outcome", "port", "failed", "cp", "cd", "first", "last")
_KEPT = [("cp", "<u4"), ("cd", "<u4"), ("protocol", "<u4"), ("outcome", "<u4"), ("n", "<f8"), ("first", "<i8"),
         ("last", "<i8"), ("port", "<u2"), ("failed", "u1")]  # fmt: skip
SECOND = np.dtype([(name, "<i4" if name in ("n", "first", "last") else kind) for name, kind in _KEPT])
"""A second's rows as an hour holds them (31 bytes a row, not 43): ``n`` as int32, ``first`` and
``last`` as nanoseconds from the second's start (:data:`_NO_TIME` for 0, a row of corrections only).
A second whose rows do not fit (a count or a time beyond int32) keeps :data:`SECOND_WIDE`."""
SECOND_WIDE = np.dtype(_KEPT)
#: rows of several seconds (read from SQLite) keep their second
SECONDS = np.dtype([*_KEPT, ("second", "<i8")])
_I32 = np.iinfo(np.int32)
_NO_TIME = _I32.min
_TIMES = ("first", "last")


def _narrow(sums: np.ndarray) -> np.ndarray:
    """Whole-number sums as int32 when they fit (an hour holds 60 blocks of them), else int64."""
    whole = np.rint(sums)
    fits = not len(whole) or float(np.abs(whole).max()) <= _I32.max
    return whole.astype(np.int32 if fits else np.int64)


def _offsets(values: np.ndarray, base: int) -> np.ndarray | None:
    """``values`` (ns) as int32 offsets from ``base``, 0 as :data:`_NO_TIME`; None: one does not fit."""
    off = values - base
    unset = values == 0
    if not (unset | ((off > _NO_TIME) & (off <= _I32.max))).all():
        return None
    return np.where(unset, _NO_TIME, off)


#: columns a row's pairs give back: name -> (pair table, side)
DERIVED = {"command": (0, "major"), "pid": (0, "minor"), "destination": (1, "minor")}


def derived(cols: Any, name: str, names: Names) -> np.ndarray:
    """A column of ``cols`` (a :data:`SECOND` array or a dict of columns), kept or given back by
    the rows' pairs."""
    if name in (cols.dtype.names or () if isinstance(cols, np.ndarray) else cols):
        got: np.ndarray = cols[name]
        return got
    table, side = DERIVED[name]
    pairs = names.pairs[table]
    return getattr(pairs, side)[cols["cd" if table else "cp"]]


def _procs(cols: Any, command: np.ndarray) -> np.ndarray:
    """Per command: events, failures, first and last time (of the rows that count)."""
    n = np.asarray(cols["n"], np.float64)
    positive = n > 0
    return _per_id(command, n, n * cols["failed"], np.where(positive, cols["first"], _BIG),
                   np.where(positive, cols["last"], 0))  # fmt: skip


def _per_id(command: np.ndarray, n: np.ndarray, failures: np.ndarray, first: np.ndarray, last: np.ndarray
            ) -> np.ndarray:  # fmt: skip
    """:data:`PROCS` of entries by command id, each id once (sorted): n and failures summed (whole numbers, exact in
    float64 in any order), the least first and the greatest last (and 0). One stable sort and a reduction per column
    (``ufunc.at`` and ``np.unique``'s sort cost twice as much for a second's thousand rows)."""
    order = np.argsort(command, kind="stable")
    ids = command[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1]))) if len(ids) else np.zeros(0, np.intp)
    procs = np.zeros(len(starts), PROCS)
    if len(starts):
        procs["command"] = ids[starts]
        procs["n"] = np.rint(np.add.reduceat(np.asarray(n, np.float64)[order], starts))
        procs["failures"] = np.rint(np.add.reduceat(np.asarray(failures, np.float64)[order], starts))
        procs["first"] = np.minimum.reduceat(np.asarray(first, np.int64)[order], starts)
        procs["last"] = np.maximum(np.maximum.reduceat(np.asarray(last, np.int64)[order], starts), 0)
    return procs


class Second:
    """One second's rows of one kind, packed (:data:`SECOND`: one array, not one per column: an
    hour holds 7,200 of them); ``second`` None: rows of several seconds, as read from SQLite for a
    window beyond the memory (:data:`SECONDS`)."""

    __slots__ = ("kind", "cols", "total", "second", "_base", "_by_command", "_keep")

    def __init__(self, rows: np.ndarray, names: Names, second: int | None = None) -> None:
        self.kind = int(rows["kind"][0]) if len(rows) else 0
        self.second = second
        self._base: int | None = None  # the times are offsets from it (a :data:`SECOND`)
        self._by_command: np.ndarray | None = None
        self._keep = True  # (False: its minute is behind the newest, see forget_procs)
        kept = {}
        dtype = SECONDS
        if second is not None:
            dtype, base = SECOND_WIDE, second * 1_000_000_000
            if not len(rows) or int(np.abs(rows["n"]).max()) <= _I32.max:
                kept = {name: _offsets(rows[name], base) for name in _TIMES}
                if all(v is not None for v in kept.values()):
                    dtype, self._base = SECOND, base
        self.cols = np.zeros(len(rows), dtype)
        for name in dtype.names or ():
            got = kept.get(name) if self._base is not None else None
            self.cols[name] = rows[name] if got is None else got
        self.total = int(rows["n"].sum())

    @classmethod
    def packed(cls, cols: np.ndarray, kind: int, second: int, total: int, narrow: bool) -> Second:
        """A second from the columns another one kept (:meth:`Rollups.dump`; ``narrow``: a
        :data:`SECOND`, else a :data:`SECOND_WIDE`)."""
        self = cls.__new__(cls)
        self.kind, self.cols, self.total, self.second = kind, cols, total, second
        self._base = second * 1_000_000_000 if narrow else None
        self._by_command = None
        self._keep = True
        return self

    def col(self, name: str) -> np.ndarray:
        """One kept column as the rows had it (times in ns since the epoch)."""
        got: np.ndarray = self.cols[name]
        if self._base is None or name not in _TIMES:
            return got
        return np.where(got == _NO_TIME, 0, got.astype(np.int64) + self._base)

    def rows(self, names: Names) -> np.ndarray:
        """The rows back from the columns and their pairs in ``names`` (not kept twice: a second's
        rows change rarely)."""
        out = np.zeros(len(self.cols), ROWS)
        for name in (*COLUMNS, *DERIVED):
            out[name] = self.col(name) if name in _TIMES else derived(self.cols, name, names)
        out["second"] = self.cols["second"] if self.second is None else self.second
        out["n"], out["kind"] = self.cols["n"], self.kind
        return out

    def seconds(self) -> np.ndarray:
        """Each row's second."""
        if self.second is None:
            return self.cols["second"]
        return np.full(len(self.cols), self.second, np.int64)

    def procs(self, names: Names) -> np.ndarray:
        """:data:`PROCS` of its rows (each command once), made at the first ask: a second's rows never change (rows
        landing in it make a new :class:`Second`), while every block rebuilt over it and every window with it at an
        edge asks again (a dashboard on an aggregator: each poll rebuilt the minute still arriving from its tens of
        thousands of rows; now from its seconds' few dozen of these each)."""
        got = self._by_command
        if got is None:
            cols = {name: self.col(name) for name in ("n", "failed", "first", "last")}
            got = _procs(cols, derived(self.cols, "command", names))
            if self._keep:
                self._by_command = got
        return got

    def forget_procs(self) -> None:
        """Drop the per-command sums :meth:`procs` kept and keep none from now on (each ask makes them): a window
        whose old edge is this second asks at every refresh, and over an hour that edge crosses every second."""
        self._by_command, self._keep = None, False

    def marginal(self, name: str, names: Names) -> Marginal:
        """(ids, weights) of one column: a row per key (ids may repeat)."""
        return derived(self.cols, name, names), self.cols["n"]

    def totals(self) -> tuple[Any, Any]:
        """(seconds, events in each)."""
        return (self.second,), (self.total,)


#: aligned seconds per :class:`Block`
BLOCK = 60
_PROC_COLS = ("cp", "n", "failed", "first", "last")
#: seconds behind the newest from which a built minute's seconds keep no per-command sums (:meth:`Second.procs`):
#: the minute before the newest one, where late rows still land, keeps them
KEEP_PROCS = 2 * BLOCK
#: the columns a whole window's figures count by (each summed per id in a block)
MARGINALS = ("cd", "destination", "protocol", "outcome", "port", "cp")


class Block:
    """A whole window's figures for :data:`BLOCK` aligned seconds of one kind, summed per id: what
    :func:`window_stats` reads for every full block inside a window without a pid or command filter,
    so an hour costs the distinct ids of 60 minutes instead of the rows of 3,600 seconds. Built by
    the writer when its minute is over and rebuilt when a late row lands in it; sums keep their
    sign (an in-progress connect moving out nets out across blocks), so figures stay exact."""

    __slots__ = ("second", "total", "procs", "_marginals", "_seconds", "_totals")

    def __init__(self, start: int, secs: Sequence[Second], names: Names, keep_procs: bool = True) -> None:
        self.second = start
        self._seconds = np.array([s.second for s in secs], np.int64)
        self._totals = np.array([s.total for s in secs], np.float64)
        self.total = sum(s.total for s in secs)
        weights = np.concatenate([s.cols["n"] for s in secs])
        self._marginals: dict[str, Marginal] = {}
        for name in MARGINALS:
            if name == "destination":  # a (command, destination) pair's sums, per destination
                cd, sums = self._marginals["cd"]
                ids = names.pairs[1].minor[cd]
                sums = np.bincount(ids, weights=sums)
            else:
                sums = np.bincount(np.concatenate([s.cols[name] for s in secs]), weights=weights)
            keep = np.flatnonzero(sums != 0)
            self._marginals[name] = keep.astype(np.uint32), _narrow(sums[keep])
        if keep_procs:  # (each second's sums kept: rebuilt as late rows land, from them)
            self.procs = _reduced(procs_of(secs, names))
        else:  # one pass over all the rows: no per-second sums made only to be dropped
            cols = {name: np.concatenate([s.col(name) for s in secs]) for name in _PROC_COLS}
            self.procs = _procs(cols, derived(cols, "command", names))

    def marginal(self, name: str, names: Names) -> Marginal:
        return self._marginals[name]

    def totals(self) -> tuple[Any, Any]:
        return self._seconds, self._totals

    @classmethod
    def packed(cls, start: int, total: int, fields: dict[str, np.ndarray]) -> Block:
        """A block from the arrays :func:`_block_fields` took from another one."""
        self = cls.__new__(cls)
        self.second, self.total, self.procs = start, total, fields["procs"].view(PROCS)
        self._seconds, self._totals = fields["seconds"], fields["totals"]
        self._marginals = {name: (fields[f"{name}_ids"], _narrow(fields[f"{name}_sums"])) for name in MARGINALS}
        return self


#: a :class:`Block`'s arrays, by name (:func:`_block_fields`)
_BLOCK_FIELDS = ("procs", "seconds", "totals", *(f"{m}_{p}" for m in MARGINALS for p in ("ids", "sums")))


def _block_fields(blocks: Sequence[Block]) -> dict[str, list[np.ndarray]]:
    """Each of :data:`_BLOCK_FIELDS` of every block (sums as int64, the procs as raw bytes)."""
    out: dict[str, list[np.ndarray]] = {
        "procs": [b.procs.view(np.uint8) for b in blocks],
        "seconds": [b._seconds for b in blocks],
        "totals": [b._totals for b in blocks],
    }
    for m in MARGINALS:
        out[f"{m}_ids"] = [b._marginals[m][0] for b in blocks]
        out[f"{m}_sums"] = [b._marginals[m][1].astype(np.int64) for b in blocks]
    return out


class Span:
    """A whole window's figures for rows of any seconds (read from SQLite, one row per key and
    unit: an hour of ``rollup_hour``, the minutes and seconds at a long window's edge), summed
    per id like a :class:`Block`; the rate counts each row at its second."""

    __slots__ = ("second", "total", "procs", "_marginals", "_seconds", "_totals")

    def __init__(self, rows: np.ndarray, names: Names) -> None:
        rows = rows[rows["n"] != 0]
        self.second = int(rows["second"].min()) if len(rows) else 0
        n = rows["n"].astype(np.float64)
        self.total = int(rows["n"].sum())
        self._seconds, at = np.unique(rows["second"], return_inverse=True)
        self._totals = np.bincount(at.ravel(), weights=n, minlength=len(self._seconds))
        self._marginals: dict[str, Marginal] = {}
        for name in MARGINALS:
            sums = np.bincount(rows[name].astype(np.int64), weights=n)
            keep = np.flatnonzero(sums != 0)
            self._marginals[name] = keep.astype(np.uint32), sums[keep]
        self.procs = _procs({"n": n, "failed": rows["failed"], "first": rows["first"], "last": rows["last"]},
                            rows["command"])  # fmt: skip

    def __len__(self) -> int:
        return len(self._marginals["cd"][0])

    def marginal(self, name: str, names: Names) -> Marginal:
        return self._marginals[name]

    def totals(self) -> tuple[Any, Any]:
        return self._seconds, self._totals


def procs_of(parts: Sequence[Second | Block | Span], names: Names) -> np.ndarray:
    """:data:`PROCS` of ``parts`` (commands may repeat): the sums each part keeps."""
    out = [p.procs(names) if isinstance(p, Second) else p.procs for p in parts]
    return concat_procs(out) if out else np.zeros(0, PROCS)


def _reduced(procs: np.ndarray) -> np.ndarray:
    """:data:`PROCS` entries (commands may repeat) summed per command, each once, by id: what :func:`_procs` gives
    for all the rows they were made of (first and last over the entries that have them)."""
    return _per_id(procs["command"], procs["n"], procs["failures"], procs["first"], procs["last"])


def concat_procs(parts: Sequence[np.ndarray]) -> np.ndarray:
    """:data:`PROCS` arrays joined (:func:`_joined`)."""
    return parts[0] if len(parts) == 1 else _joined(parts, PROCS)


class Rollups:
    """The last ``horizon`` seconds of rollup rows in memory, by second and kind.

    The writer calls :meth:`add` (seconds it has not loaded are left to SQLite: see
    :attr:`since`); readers call :meth:`seconds` for a range and get a consistent snapshot.
    """

    def __init__(self, names: Names, horizon: int = 3660) -> None:
        self.names = names
        """The ids of every row held here. Replaced, never changed, by :meth:`compact`: read it
        together with the rows (:meth:`snapshot`)."""
        self._compacted = _sizes(names)
        self.horizon = horizon
        self._seconds: dict[tuple[int, int], Second] = {}  # (second, kind) -> rows
        self._blocks: dict[tuple[int, int], Block] = {}  # (first second, kind) -> the block's sums
        self._unbuilt: set[tuple[int, int]] = set()  # blocks with rows and no (current) sums
        self._newest = -(2**62)
        self._lock = threading.RLock()
        self.since: int | None = None
        """Every row of every second >= since is here (None: nothing loaded yet)."""

    def load(self, since: int, rows: np.ndarray) -> None:
        """Start with everything SQLite holds from ``since`` on (one row per key already)."""
        with self._lock:
            self._seconds, self._blocks, self._unbuilt = {}, {}, set()
            self.since = since
            self._add(rows, merged=True)

    def extend(self, since: int, rows: np.ndarray) -> None:
        """Rows SQLite holds for the seconds ``since`` up to the current :attr:`since` (one row per
        key already): the memory now reaches back to ``since``."""
        with self._lock:
            if self.since is None or since >= self.since:
                return
            self._add(rows[(rows["second"] >= since) & (rows["second"] < self.since)], merged=True)
            self.since = since

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        with self._lock:
            if self.since is None:
                return
            self._add(rows[rows["second"] >= self.since])

    def _add(self, rows: np.ndarray, merged: bool = False) -> None:
        if not len(rows):
            return
        part_key = rows["second"] * 2 + rows["kind"]
        order = np.argsort(part_key, kind="stable")
        rows, part_key = rows[order], part_key[order]
        cuts = np.flatnonzero(np.diff(part_key)) + 1
        for part in np.split(rows, cuts):
            key = (int(part["second"][0]), int(part["kind"][0]))
            old = self._seconds.get(key)
            if old is None and merged:
                new = part[part["n"] != 0]
            else:
                new = merge(part if old is None else concat([old.rows(self.names), part]))
            if len(new):
                self._seconds[key] = Second(new, self.names, key[0])
            else:
                self._seconds.pop(key, None)
            block = (key[0] - key[0] % BLOCK, key[1])
            self._blocks.pop(block, None)
            self._unbuilt.add(block)
            self._newest = max(self._newest, key[0])
        # the minutes that are over get their sums now, so that no window has to build them
        for block in [b for b in self._unbuilt if b[0] + BLOCK <= self._newest]:
            self._build(*block)

    def _build(self, start: int, kind: int) -> Block | None:
        self._unbuilt.discard((start, kind))
        got = (self._seconds.get((s, kind)) for s in range(start, start + BLOCK))
        secs = [g for g in got if g is not None]
        if not secs:
            self._blocks.pop((start, kind), None)
            return None
        # rows seldom land in a minute this far behind the newest: its seconds' per-command sums are not kept (an
        # hour of them is ~14 MB of a dashboard's memory; a window's edge second makes its own again)
        keep = start + KEEP_PROCS > self._newest
        block = self._blocks[(start, kind)] = Block(start, secs, self.names, keep_procs=keep)
        if not keep:
            for sec in secs:
                sec.forget_procs()
        return block

    def prune(self, newest: int, retention_cutoff: int | None = None) -> None:
        """Forget seconds older than the horizon before ``newest`` (SQLite still has them) or
        older than ``retention_cutoff`` (SQLite deleted them too)."""
        with self._lock:
            if self.since is None:
                return
            cutoff = newest - self.horizon
            if retention_cutoff is not None:
                cutoff = max(cutoff, retention_cutoff)
            if cutoff > self.since:
                for key in [k for k in self._seconds if k[0] < cutoff]:
                    del self._seconds[key]
                for key in [k for k in self._blocks if k[0] < cutoff]:
                    del self._blocks[key]
                self._unbuilt = {k for k in self._unbuilt if k[0] >= cutoff}
                self.since = cutoff

    def covers(self, lo: int) -> bool:
        return self.since is not None and lo >= self.since

    def seconds(self, kind: int, lo: int, hi: int) -> list[Second]:
        """The seconds lo..hi (inclusive) of ``kind`` that hold rows, oldest first."""
        with self._lock:
            if hi - lo < 16384:
                got = (self._seconds.get((s, kind)) for s in range(lo, hi + 1))
                return [g for g in got if g is not None]
            return [v for (s, k), v in sorted(self._seconds.items()) if k == kind and lo <= s <= hi]

    def snapshot(self, kind: int, lo: int, hi: int, *, blocks: bool) -> tuple[list[Second | Block], Names]:
        """The seconds lo..hi of ``kind`` (:meth:`window` with ``blocks``, else :meth:`seconds`)
        and the names their ids refer to."""
        with self._lock:
            names = self.names
            parts: list[Second | Block] = [*self.seconds(kind, lo, hi)] if not blocks else self.window(kind, lo, hi)
        return parts, names

    def compact(self) -> bool:
        """Forget names and pairs no row refers to any more (processes and destinations of the past
        hour and older), when they have more than doubled since the last time: a host that keeps
        meeting new destinations does not grow without bound. Every second and block is rebuilt
        with new ids under a new :attr:`names`; snapshots taken before keep the old ones."""
        with self._lock:
            old = self.names
            grown = [now > 2 * then + slack for now, then, slack in
                     zip(_sizes(old), self._compacted, (4096, 4096, 16384), strict=True)]  # fmt: skip
            if not any(grown):
                return False
            new = Names()
            secs = list(self._seconds.items())
            if secs:
                cp_live = np.unique(np.concatenate([s.cols["cp"] for _, s in secs]))
                cd_live = np.unique(np.concatenate([s.cols["cd"] for _, s in secs]))
                string_cols = [s.cols[c] for _, s in secs for c in ("protocol", "outcome")]
                string_cols += [old.pairs[0].major[cp_live], old.pairs[1].major[cd_live], old.pairs[1].minor[cd_live]]
                live = np.unique(np.concatenate([c.astype(np.int64) for c in string_cols]))
                remap = np.zeros(len(old.values), np.uint32)
                remap[live] = [new.id(old.values[i]) for i in live.tolist()]
                cp_map = np.zeros(len(old.pairs[0]), np.uint32)
                cd_map = np.zeros(len(old.pairs[1]), np.uint32)
                cp_major, cp_minor = old.pairs[0].major, old.pairs[0].minor
                cd_major, cd_minor = old.pairs[1].major, old.pairs[1].minor
                cp_map[cp_live] = new.pairs[0].ids(remap[cp_major[cp_live]].tolist(), cp_minor[cp_live].tolist())
                cd_map[cd_live] = new.pairs[1].ids(remap[cd_major[cd_live]].tolist(),
                                                   remap[cd_minor[cd_live]].tolist())  # fmt: skip
                for key, sec in secs:
                    rows = sec.rows(old)
                    for col in ("command", "destination", "protocol", "outcome"):
                        rows[col] = remap[rows[col]]
                    rows["cp"], rows["cd"] = cp_map[rows["cp"]], cd_map[rows["cd"]]
                    self._seconds[key] = Second(rows, new, key[0])
            self.names = new
            self._compacted = _sizes(new)
            self._unbuilt |= set(self._blocks)
            self._blocks = {}
            for block in [b for b in self._unbuilt if b[0] + BLOCK <= self._newest]:
                self._build(*block)
            return True

    def window(self, kind: int, lo: int, hi: int) -> list[Second | Block]:
        """The seconds lo..hi of ``kind`` for a whole window's figures: a :class:`Block` for every
        full block inside, single seconds at the edges, oldest first."""
        start = -(-lo // BLOCK) * BLOCK  # the first block that starts inside
        end = (hi + 1) // BLOCK * BLOCK  # ... and where the last full one ends
        if end <= start:
            return self.seconds(kind, lo, hi)
        with self._lock:
            parts: list[Second | Block] = []
            edge = (self._seconds.get((s, kind)) for s in range(lo, start))
            parts.extend(g for g in edge if g is not None)
            for b in range(start, end, BLOCK):
                block = self._blocks.get((b, kind))
                if block is None and (b, kind) in self._unbuilt:
                    block = self._build(b, kind)
                if block is not None:
                    parts.append(block)
            edge = (self._seconds.get((s, kind)) for s in range(end, hi + 1))
            parts.extend(g for g in edge if g is not None)
            return parts

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v.cols) for v in self._seconds.values())

    def dump(self) -> dict[str, np.ndarray] | None:
        """Everything held, as a few plain arrays (:meth:`restore` takes them back): a store closed
        cleanly keeps them, so reopening it does not rebuild the hour from one SQLite row per key.
        None: nothing loaded."""
        with self._lock:
            if self.since is None:
                return None
            names = self.names
            out: dict[str, np.ndarray] = {
                "state": np.array([self.since, self._newest, *self._compacted], np.int64),
                "unbuilt": np.array(sorted(self._unbuilt), np.int64).reshape(-1, 2),
            }
            text = "".join(names.values).encode("utf-8", "surrogatepass")
            out["names"] = np.frombuffer(text, np.uint8)
            out["name_ends"] = np.cumsum([len(v) for v in names.values], dtype=np.int64)  # (in characters)
            for i, pairs in enumerate(names.pairs):
                n = len(pairs)
                out[f"pairs{i}"] = np.stack([pairs.major[:n], pairs.minor[:n], pairs._keys, pairs._id_of_key])
            secs = sorted(self._seconds.items())
            narrow = [sec._base is not None for _, sec in secs]  # (a SECOND, else a SECOND_WIDE)
            out["seconds"] = np.array([(s, k, is_narrow, sec.total, len(sec.cols)) for ((s, k), sec), is_narrow
                                       in zip(secs, narrow, strict=True)], np.int64).reshape(-1, 5)  # fmt: skip
            for dtype, name, kept in ((SECOND, "narrow", True), (SECOND_WIDE, "wide", False)):
                parts = [sec.cols for (_, sec), n in zip(secs, narrow, strict=True) if n is kept]
                out[name] = _joined(parts, dtype)
            blocks = sorted(self._blocks.items())
            out["blocks"] = np.array([(s, k, b.total) for (s, k), b in blocks], np.int64).reshape(-1, 3)
            for field, parts in _block_fields([b for _, b in blocks]).items():
                out[f"block_{field}"] = np.concatenate(parts) if parts else np.zeros(0)
                out[f"block_{field}_len"] = np.array([len(p) for p in parts], np.int64)
            return out

    def restore(self, arrays: Any) -> None:
        """Hold what :meth:`dump` gave (``arrays``: its dict, or an ``np.load`` of it) instead of
        anything held now; ValueError (nothing changed) when the arrays do not fit together."""
        index, blocks_index = arrays["seconds"], arrays["blocks"]
        fits = [
            index[index[:, 2] == 1, 4].sum() == len(arrays["narrow"]),
            index[index[:, 2] == 0, 4].sum() == len(arrays["wide"]),
            *(len(arrays[f"block_{f}_len"]) == len(blocks_index)
              and arrays[f"block_{f}_len"].sum() == len(arrays[f"block_{f}"]) for f in _BLOCK_FIELDS),
        ]  # fmt: skip
        if not all(fits):
            raise ValueError("the kept rows do not match their index")
        names = Names()
        text = bytes(arrays["names"]).decode("utf-8", "surrogatepass")
        ends = arrays["name_ends"].tolist()
        if (ends[-1] if ends else 0) != len(text):
            raise ValueError("the kept names do not match their index")
        names.values = [text[a:b] for a, b in zip([0, *ends], ends, strict=False)]
        names._ids = {v: i for i, v in enumerate(names.values)}
        for i, pairs in enumerate(names.pairs):
            major, minor, keys, ids = arrays[f"pairs{i}"]
            pairs._major, pairs._minor, pairs._keys, pairs._id_of_key = major, minor, keys, ids.astype(np.uint32)
            pairs._n = len(major)
        seconds: dict[tuple[int, int], Second] = {}
        # (each second and block gets its own copy: a view would keep the whole hour alive until
        # its last second is pruned)
        packed = (arrays["wide"], arrays["narrow"])  # (by the index's narrow flag, 0 or 1)
        at = [0, 0]
        for s, k, narrow, total, n in arrays["seconds"].tolist():
            cols = packed[narrow][at[narrow] : at[narrow] + n].copy()
            at[narrow] += n
            seconds[(s, k)] = Second.packed(cols, k, s, total, narrow == 1)
        fields = {}
        for field in _BLOCK_FIELDS:
            cuts = np.cumsum(arrays[f"block_{field}_len"])[:-1]
            fields[field] = [part.copy() for part in np.split(arrays[f"block_{field}"], cuts)]
        blocks = {}
        for i, (s, k, total) in enumerate(arrays["blocks"].tolist()):
            blocks[(s, k)] = Block.packed(s, total, {field: parts[i] for field, parts in fields.items()})
        since, newest, *compacted = arrays["state"].tolist()
        with self._lock:
            self.names, self._compacted = names, (compacted[0], compacted[1], compacted[2])
            self._seconds, self._blocks = seconds, blocks
            self._unbuilt = {(s, k) for s, k in arrays["unbuilt"].tolist()}
            self._newest = newest
            self.since = since


def _sizes(names: Names) -> tuple[int, int, int]:
    return len(names.values), len(names.pairs[0]), len(names.pairs[1])


def concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Row arrays joined (:func:`_joined`)."""
    return parts[0] if len(parts) == 1 else _joined(parts, ROWS)


def _joined(parts: Sequence[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    """Structured arrays of ``dtype`` joined as raw bytes (numpy's structured concatenation checks
    every field of every part: ten times slower for thousands of seconds)."""
    raw = f"V{dtype.itemsize}"
    return np.concatenate([np.zeros(0, raw), *(p.view(raw) for p in parts)]).view(dtype)


def seconds_of(rows: np.ndarray, kind: int, names: Names) -> list[Second]:
    """Rows read from SQLite (one per key, any seconds) as one multi-second :class:`Second`."""
    rows = rows[rows["kind"] == kind]
    return [Second(rows, names)] if len(rows) else []


# --- figures ------------------------------------------------------------------------------------


def _columns(
    secs: Sequence[Second], names: Names, lo: int, hi: int, pid: int | None, command: str | None, per_second: bool
) -> dict[str, np.ndarray] | None:
    """The window's rows matching ``pid``/``command`` as columns, with each row's second, command,
    pid and destination (None: the command was never seen)."""
    cid = None
    if command is not None:
        cid = names.find(command)
        if cid is None:
            return None

    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    cols = {name: joined([s.col(name) for s in secs]) for name in (*COLUMNS, "n")}
    cols["second"] = joined([s.seconds() for s in secs])
    mask = None if per_second else (cols["second"] >= lo) & (cols["second"] <= hi)
    if pid is not None or cid is not None:
        major, minor = names.pairs[0].major, names.pairs[0].minor  # (arrays are replaced, not changed, as they grow)
        wanted = np.ones(len(major), bool)
        if pid is not None:
            wanted &= minor == pid
        if cid is not None:
            wanted &= major == cid
        mask = wanted[cols["cp"]] if mask is None else mask & wanted[cols["cp"]]
    if mask is not None:
        cols = {k: v[mask] for k, v in cols.items()}
    for name in DERIVED:
        cols[name] = derived(cols, name, names)
    return cols


def total(secs: Sequence[Second], names: Names, pid: int | None, command: str | None) -> int:
    """Events in ``secs`` (already only the seconds wanted)."""
    if pid is None and command is None:
        return sum(s.total for s in secs)
    if not secs:
        return 0
    cols = _columns(secs, names, -(2**62), 2**62, pid, command, True)
    return int(np.rint(cols["n"].sum())) if cols is not None else 0


class _PortNames:
    """Port numbers as :func:`_top`'s names: each one's string, made only for the ports it keeps
    (a list of every number up to the highest port seen was ~4 ms of a window's figures)."""

    def __getitem__(self, port: int) -> str:
        return str(port)


def _top(values: Sequence[str] | _PortNames, counts: np.ndarray, ids: np.ndarray, n: int) -> list[Counted]:
    """The n largest counts, ties by key; ``ids``/``counts`` parallel, counts > 0."""
    if not len(ids) or n <= 0:
        return []
    if len(ids) > n:
        kth = np.partition(counts, len(counts) - n)[len(counts) - n]
        keep = counts >= kth
        ids, counts = ids[keep], counts[keep]
    items = sorted(((values[i], int(c)) for i, c in zip(ids.tolist(), counts.tolist(), strict=True)),
                   key=lambda kv: (-kv[1], kv[0]))  # fmt: skip
    return [Counted(key=k, count=c) for k, c in items[:n]]


def _by(ids: np.ndarray, weights: np.ndarray, names: Names | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids with a positive sum, their sums); with ``names``, an empty destination or protocol is
    reported as "unknown" (and counted with it: merged after summing, not per entry)."""
    sums = np.bincount(ids, weights=weights)
    empty = names.find("") if names is not None else None
    if names is not None and empty is not None and empty < len(sums) and sums[empty]:
        unknown = names.id("unknown")
        if unknown >= len(sums):
            sums = np.concatenate([sums, np.zeros(unknown + 1 - len(sums))])
        sums[unknown] += sums[empty]
        sums[empty] = 0
    nz = np.flatnonzero(sums > 0.5)
    return nz, np.rint(sums[nz]).astype(np.int64)


def _positive(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ids whose weights sum above zero, sorted: without a negative weight (nothing nets out)
    an id's presence decides, which is twice as fast as summing ~500k entries of an hour."""
    if not len(ids):
        return ids.astype(np.intp)
    if weights.min() >= 0:
        seen = np.zeros(int(ids.max()) + 1, bool)
        seen[ids if weights.all() else ids[weights > 0]] = True
        return np.flatnonzero(seen)
    return np.flatnonzero(np.bincount(ids, weights=weights) > 0.5)


def window_stats(
    secs: Sequence[Second | Block | Span],
    names: Names,
    scope: Scope,
    now: datetime,
    top_n: int,
    buckets: int,
) -> WindowStats:
    """The figures of :func:`netspy_tui.analysis.aggregate.aggregate` from the window's seconds
    (blocks of seconds count only without a pid or command filter: see :meth:`Rollups.window`)."""
    kind, pid, command, window = scope.kind, scope.pid, scope.command, scope.window
    lo, hi = window_seconds(now, window)
    size, count = bucket_layout(window, buckets)
    empty = WindowStats(kind=kind, window_seconds=window, pid=pid, command=command, bucket_seconds=size,
                        rate_buckets=[0] * count, until=now)  # fmt: skip
    per_second = all(s.second is not None for s in secs)
    if per_second:
        secs = [s for s in secs if lo <= s.second <= hi]  # type: ignore[operator]
    if not secs:
        return empty
    if per_second and pid is None and command is None:  # the whole window: sums kept per part
        grand = sum(s.total for s in secs)
        if grand <= 0:
            return empty
        seconds, totals = zip(*(s.totals() for s in secs), strict=True)
        rate = np.bincount(count - 1 - (hi - np.concatenate(seconds)) // size, weights=np.concatenate(totals),
                           minlength=count)  # fmt: skip
        procs = procs_of(secs, names)

        def by(name: str) -> tuple[np.ndarray, np.ndarray]:
            ids, weights = zip(*(s.marginal(name, names) for s in secs), strict=True)
            return np.concatenate(ids), np.concatenate(weights)
    else:
        sel = _columns(secs, names, lo, hi, pid, command, per_second)  # type: ignore[arg-type]
        if sel is None or not len(sel["n"]):
            return empty
        n = sel["n"]
        grand = int(np.rint(n.sum()))
        if grand <= 0:
            return empty
        rate = np.bincount(count - 1 - (hi - sel["second"]) // size, weights=n, minlength=count)
        procs = _procs(sel, sel["command"])

        def by(name: str) -> tuple[np.ndarray, np.ndarray]:
            return sel[name], n

    values = names.values
    dest_ids, dest_n = _by(*by("destination"), names)
    proto_ids, proto_n = _by(*by("protocol"), names)
    out_ids, out_n = _by(*by("outcome"))
    ports: list[Counted] = []
    if kind == "connection":
        port_ids, port_n = _by(*by("port"))
        ports = _top(_PortNames(), port_n, port_ids, top_n)
    per_command = _per_command(procs)
    processes = _processes(by("cp"), by("cd"), per_command, names)
    attempts, _, firsts, lasts = per_command
    counts = (attempts > 0.5) & (firsts != _BIG)  # the commands whose events did not net out
    first, last = (int(firsts[counts].min()), int(lasts[counts].max())) if counts.any() else (None, None)
    return WindowStats(
        kind=kind,
        window_seconds=window,
        pid=pid,
        command=command,
        total=grand,
        first_seen=ns_to_time(first) if first is not None else None,
        last_seen=ns_to_time(last) if last is not None else None,
        top_destinations=_top(values, dest_n, dest_ids, top_n),
        protocols=_top(values, proto_n, proto_ids, top_n),
        ports=ports,
        outcomes=_top(values, out_n, out_ids, top_n),
        processes=processes,
        bucket_seconds=size,
        rate_buckets=[int(round(v)) for v in rate.tolist()],
        until=now,
    )


def _per_command(procs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:data:`PROCS` entries (any seconds) summed per command id: (events, failures, first, last),
    indexed by command id (first is _BIG for a command with no row that counts)."""
    cmd = procs["command"].astype(np.int64)
    width = int(cmd.max()) + 1 if len(cmd) else 0
    attempts = np.bincount(cmd, weights=procs["n"], minlength=width)
    failures = np.bincount(cmd, weights=procs["failures"], minlength=width)
    live = procs["first"] != _BIG
    firsts = np.full(width, _BIG, np.int64)
    lasts = np.zeros(width, np.int64)
    np.minimum.at(firsts, cmd[live], procs["first"][live])
    np.maximum.at(lasts, cmd[live], procs["last"][live])
    return attempts, failures, firsts, lasts


def _processes(cp_by: Marginal, cd_by: Marginal, per_command: tuple[np.ndarray, ...], names: Names
               ) -> list[ProcessStat]:  # fmt: skip
    values = names.values
    attempts, failures, firsts, lasts = per_command
    width = len(attempts)
    # pids and destinations that count: pairs whose events did not net out (dense ids: no sort)
    cp_pairs, cd_pairs = names.pairs
    cp = _positive(*cp_by)
    pid_cmd, pid = cp_pairs.major[cp], cp_pairs.minor[cp]
    cd = _positive(*cd_by)
    dest_cmd, dest = cd_pairs.major[cd], cd_pairs.minor[cd]
    empty = names.find("")  # (an unknown destination is not a distinct destination)
    known = dest_cmd[dest != empty] if empty is not None else dest_cmd
    dests = np.bincount(known, minlength=width)
    pids: dict[int, list[int]] = {}
    for c, p in zip(pid_cmd.tolist(), pid.tolist(), strict=True):
        pids.setdefault(c, []).append(p)
    out = []
    for c in np.flatnonzero(attempts > 0.5).tolist():
        if firsts[c] == _BIG:
            continue
        out.append(
            ProcessStat(
                command=values[c],
                pids=sorted(pids.get(c, [])),
                attempts=int(round(attempts[c])),
                distinct_destinations=int(dests[c]) if c < len(dests) else 0,
                failures=int(round(failures[c])),
                first_seen=ns_to_time(int(firsts[c])),
                last_seen=ns_to_time(int(lasts[c])),
            )
        )
    out.sort(key=lambda p: (-p.attempts, p.command))
    return out[:PROCESS_LIMIT]


def rows_from_events(events: Iterable[Any]) -> list[Row]:
    """Rollup rows for events that carry no kernel counts (procfs, replay, a recording): one row
    per event's key, summed."""
    from netspy_tui.analysis.aggregate import is_failure, outcome_key  # noqa: PLC0415

    acc: dict[tuple[Any, ...], list[int]] = {}
    for e in events:
        t = time_to_ns(e.time)
        if e.type == "connection":
            key = (t // 1_000_000_000, 0, e.pid, e.command, e.destination or "", e.destination_port,
                   e.protocol or "", outcome_key(e), 1 if is_failure(e) else 0)  # fmt: skip
        else:
            key = (t // 1_000_000_000, 1, e.pid, e.command, e.destination or "", 0, e.protocol or "",
                   outcome_key(e), 1)  # fmt: skip
        hit = acc.get(key)
        if hit is None:
            acc[key] = [1, t, t]
        else:
            hit[0] += 1
            hit[1] = min(hit[1], t)
            hit[2] = max(hit[2], t)
    return [(*k, *v) for k, v in acc.items()]  # type: ignore[misc]
