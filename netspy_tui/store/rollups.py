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
from netspy_tui.models import Counted, EventKind, ProcessStat, WindowStats, ns_to_time, time_to_ns

KIND_CODE: dict[str, int] = {"connection": 0, "packet_drop": 1}

#: One rollup row as the writer hands it over.
#: (second, kind, pid, command, destination, port, protocol, outcome, failed, n, first_ns, last_ns)
Row = tuple[int, int, int, str, str, int, str, str, int, int, int, int]

ROWS = np.dtype(
    [
        ("second", "<i8"), ("kind", "u1"), ("failed", "u1"), ("outcome", "<u4"), ("protocol", "<u4"),
        ("port", "<i4"), ("command", "<u4"), ("destination", "<u4"), ("pid", "<i8"), ("n", "<i8"),
        ("first", "<i8"), ("last", "<i8"),
    ]
)  # fmt: skip
_KEY_FIELDS = ["kind", "failed", "outcome", "protocol", "port", "command", "destination", "pid"]


class Names:
    """Interned strings: commands, destinations, protocols, outcomes share one table (ids are
    indexes into :attr:`values`). Append-only, so readers can use any prefix without a lock."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

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


def to_array(rows: Sequence[Row], names: Names) -> np.ndarray:
    """Rollup rows -> a :data:`ROWS` array (strings interned in ``names``)."""
    out = np.empty(len(rows), ROWS)
    if not rows:
        return out
    cols = list(zip(*rows, strict=True))
    nid = names.id
    out["second"], out["kind"], out["pid"] = cols[0], cols[1], cols[2]
    out["command"] = [nid(v) for v in cols[3]]
    out["destination"] = [nid(v) for v in cols[4]]
    out["port"] = [p if p is not None else 0 for p in cols[5]]
    out["protocol"] = [nid(v) for v in cols[6]]
    out["outcome"] = [nid(v) for v in cols[7]]
    out["failed"], out["n"], out["first"], out["last"] = cols[8], cols[9], cols[10], cols[11]
    return out


def merge(rows: np.ndarray) -> np.ndarray:
    """Rows of one key summed into one (n added, first/last min/max of the rows that count);
    keys whose events netted out (an in-progress connect that moved to its outcome) dropped."""
    if len(rows) < 2:
        return rows[rows["n"] != 0] if len(rows) else rows
    keys = rows[["second", *_KEY_FIELDS]]
    uniq, inverse = np.unique(keys, return_inverse=True)
    if len(uniq) == len(rows):
        return rows[rows["n"] != 0]
    out = np.zeros(len(uniq), ROWS)
    for name in ("second", *_KEY_FIELDS):
        out[name] = uniq[name]
    np.add.at(out["n"], inverse, rows["n"])
    big = np.iinfo(np.int64).max
    positive = rows["n"] > 0
    out["first"] = big
    np.minimum.at(out["first"], inverse, np.where(positive, rows["first"], big))
    np.maximum.at(out["last"], inverse, np.where(positive, rows["last"], 0))
    out["first"][out["first"] == big] = 0
    return out[out["n"] != 0]


class Rollups:
    """The last ``horizon`` seconds of rollup rows in memory, by second.

    The writer calls :meth:`add` (seconds it has not loaded are left to SQLite: see
    :attr:`since`); readers call :meth:`rows` for a range and get a consistent snapshot.
    """

    def __init__(self, names: Names, horizon: int = 3660) -> None:
        self.names = names
        self.horizon = horizon
        self._seconds: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.since: int | None = None
        """Every row of every second >= since is here (None: nothing loaded yet)."""

    def load(self, since: int, rows: np.ndarray) -> None:
        """Start with everything SQLite holds from ``since`` on (called once, before any add)."""
        with self._lock:
            self._seconds = {}
            self.since = since
            self._add(rows)

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        with self._lock:
            if self.since is None:
                return
            self._add(rows[rows["second"] >= self.since])

    def _add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        seconds = rows["second"]
        order = np.argsort(seconds, kind="stable")
        rows, seconds = rows[order], seconds[order]
        cuts = np.flatnonzero(np.diff(seconds)) + 1
        for part in np.split(rows, cuts):
            second = int(part["second"][0])
            old = self._seconds.get(second)
            merged = merge(part if old is None else np.concatenate([old, part]))
            if len(merged):
                self._seconds[second] = merged
            else:
                self._seconds.pop(second, None)

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
                for second in [s for s in self._seconds if s < cutoff]:
                    del self._seconds[second]
                self.since = cutoff

    def covers(self, lo: int) -> bool:
        return self.since is not None and lo >= self.since

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Every row of the seconds lo..hi (inclusive)."""
        with self._lock:
            parts = [self._seconds[s] for s in range(lo, hi + 1) if s in self._seconds] if hi - lo < 8192 else [
                v for s, v in self._seconds.items() if lo <= s <= hi
            ]
        return np.concatenate(parts) if parts else np.empty(0, ROWS)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._seconds.values())


# --- figures ------------------------------------------------------------------------------------


def _select(rows: np.ndarray, names: Names, kind: EventKind, pid: int | None, command: str | None) -> np.ndarray | None:
    mask = rows["kind"] == KIND_CODE[kind]
    if pid is not None:
        mask &= rows["pid"] == pid
    if command is not None:
        cid = names.find(command)
        if cid is None:
            return None
        mask &= rows["command"] == cid
    return rows[mask]


def total(rows: np.ndarray, names: Names, kind: EventKind, pid: int | None, command: str | None) -> int:
    sel = _select(rows, names, kind, pid, command)
    return int(sel["n"].sum()) if sel is not None and len(sel) else 0


def _top(values: list[str], counts: np.ndarray, ids: np.ndarray, n: int) -> list[Counted]:
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


def _unknown_if_empty(ids: np.ndarray, names: Names) -> np.ndarray:
    """An empty destination or protocol is reported as "unknown" (and counted with it)."""
    empty = names.find("")
    return np.where(ids == empty, names.id("unknown"), ids) if empty is not None else ids


def _by(ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids with a positive sum, their sums)."""
    sums = np.bincount(ids, weights=weights)
    nz = np.flatnonzero(sums > 0)
    return nz, sums[nz].astype(np.int64)


def window_stats(
    rows: np.ndarray,
    names: Names,
    kind: EventKind,
    pid: int | None,
    command: str | None,
    window: int,
    now: datetime,
    top_n: int,
    buckets: int,
) -> WindowStats:
    """The figures of :func:`netspy_tui.analysis.aggregate.aggregate` from rollup rows (which must
    cover the window's seconds; rows outside it are ignored)."""
    lo, hi = window_seconds(now, window)
    size, count = bucket_layout(window, buckets)
    empty = WindowStats(kind=kind, window_seconds=window, pid=pid, command=command, bucket_seconds=size,
                        rate_buckets=[0] * count, until=now)  # fmt: skip
    if not len(rows):
        return empty
    rows = rows[(rows["second"] >= lo) & (rows["second"] <= hi)]
    sel = _select(rows, names, kind, pid, command)
    if sel is None or not len(sel) or int(sel["n"].sum()) <= 0:
        return empty
    values = names.values
    n = sel["n"].astype(np.float64)
    counted = sel[sel["n"] > 0]
    rate = np.bincount(count - 1 - (hi - sel["second"]) // size, weights=n, minlength=count)
    dest_ids, dest_n = _by(_unknown_if_empty(sel["destination"], names), n)
    proto_ids, proto_n = _by(_unknown_if_empty(sel["protocol"], names), n)
    out_ids, out_n = _by(sel["outcome"], n)
    ports: list[Counted] = []
    if kind == "connection":
        port_ids, port_n = _by(sel["port"].astype(np.int64), n)
        ports = _top([str(p) for p in range(int(port_ids.max()) + 1)] if len(port_ids) else [], port_n, port_ids,
                     top_n)  # fmt: skip
    return WindowStats(
        kind=kind,
        window_seconds=window,
        pid=pid,
        command=command,
        total=int(sel["n"].sum()),
        first_seen=ns_to_time(int(counted["first"].min())) if len(counted) else None,
        last_seen=ns_to_time(int(counted["last"].max())) if len(counted) else None,
        top_destinations=_top(values, dest_n, dest_ids, top_n),
        protocols=_top(values, proto_n, proto_ids, top_n),
        ports=ports,
        outcomes=_top(values, out_n, out_ids, top_n),
        processes=_processes(sel, names),
        bucket_seconds=size,
        rate_buckets=[int(round(v)) for v in rate.tolist()],
        until=now,
    )


def _pairs(major: np.ndarray, minor: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(major, minor) pairs whose events did not net out: two int64 arrays (one sort, 1-D keys)."""
    keys = (major << 32) | minor
    uniq, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=n)
    keep = uniq[sums > 0]
    return keep >> 32, keep & 0xFFFFFFFF


def _processes(sel: np.ndarray, names: Names) -> list[ProcessStat]:
    values = names.values
    cmd = sel["command"].astype(np.int64)
    n = sel["n"]
    attempts = np.bincount(cmd, weights=n)
    failures = np.bincount(cmd, weights=n * sel["failed"])
    positive = n > 0
    big = np.iinfo(np.int64).max
    firsts = np.full(len(attempts), big, np.int64)
    lasts = np.zeros(len(attempts), np.int64)
    np.minimum.at(firsts, cmd[positive], sel["first"][positive])
    np.maximum.at(lasts, cmd[positive], sel["last"][positive])
    pids: dict[int, list[int]] = {}
    pid_cmd, pid = _pairs(cmd, sel["pid"] & 0xFFFFFFFF, n)
    for c, p in zip(pid_cmd.tolist(), pid.tolist(), strict=True):
        pids.setdefault(c, []).append(p)
    dest_cmd, dest = _pairs(cmd, sel["destination"].astype(np.int64), n)
    empty = names.find("")  # (an unknown destination is not a distinct destination)
    known = dest_cmd[dest != empty] if empty is not None else dest_cmd
    dests = np.bincount(known, minlength=len(attempts))
    out = []
    for c in np.flatnonzero(attempts > 0).tolist():
        if firsts[c] == big:
            continue
        out.append(
            ProcessStat(
                command=values[c],
                pids=sorted(pids.get(c, [])),
                attempts=int(round(attempts[c])),
                distinct_destinations=int(dests[c]),
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
