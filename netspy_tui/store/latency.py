"""Connect latency: every TCP connect attempt whose handshake ended, as samples per second and key,
and its percentiles.

The kernel measures each attempt from the socket's CLOSE -> SYN_SENT (inside connect()) to the end
of its handshake (SYN_SENT -> ESTABLISHED or CLOSE) and puts it, in microseconds, in the connect's
ring record (collector/ebpf/programs.py). The writer groups a batch's attempts by second, process,
destination and outcome (``Codec.latency_rows``, numpy) and stores each group as one row whose
``samples`` blob holds every attempt's latency (uint32 microseconds): percentiles stay exact, and a
storm of refused connects costs a row per key and second, not per attempt. When raw records are
shed under load, the attempts they carried are not here (the store counts what it shed).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from netspy_tui.models import LatencyGroup, LatencyStats
from netspy_tui.store.traffic import select, subject_filter

NS = 1_000_000_000
SAMPLE = np.dtype("<u4")

SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    second      INTEGER NOT NULL,   -- when the attempts started, seconds since the epoch
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    destination TEXT    NOT NULL,   -- ip:port
    outcome     TEXT    NOT NULL,
    n           INTEGER NOT NULL,   -- attempts in samples
    samples     BLOB    NOT NULL    -- n latencies, uint32 microseconds, little-endian
);
CREATE INDEX IF NOT EXISTS latency_time ON latency (second);
"""
#: the table of one row per attempt that stores before this layout had (converted at open)
_OLD_TABLE = "connect_latency"

#: (second, pid, command, destination, outcome, n, samples)
Row = tuple[int, int, str, str, str, int, bytes]


def write(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    conn.executemany("INSERT INTO latency (second, pid, command, destination, outcome, n, samples) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip


def rows_of(attempts: Iterable[tuple[int, int, str, str, str, int]]) -> list[Row]:
    """Single attempts ``(t ns, pid, command, destination, outcome, latency_us)`` -> sample rows."""
    groups: dict[tuple[int, int, str, str, str], list[int]] = {}
    for t, pid, command, dest, outcome, latency in attempts:
        groups.setdefault((t // NS, pid, command, dest, outcome), []).append(latency)
    return [(*key, len(v), np.asarray(v, SAMPLE).tobytes()) for key, v in groups.items()]


def upgrade(conn: sqlite3.Connection) -> None:
    """Convert a store's per-attempt rows (the older layout) into sample rows, once, at open."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_OLD_TABLE,)).fetchone() is None:
        return
    sql = f"SELECT t, pid, command, destination, outcome, latency_us FROM {_OLD_TABLE}"  # noqa: S608 - a constant
    conn.execute("BEGIN IMMEDIATE")
    try:
        write(conn, rows_of(conn.execute(sql).fetchall()))
        conn.execute(f"DROP TABLE {_OLD_TABLE}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def prune(conn: sqlite3.Connection, second: int) -> None:
    conn.execute("DELETE FROM latency WHERE second < ?", (second,))


def read(conn: sqlite3.Connection, lo: int, hi: int, pid: int | None, command: str | None) -> list[tuple[Any, ...]]:
    """Attempts that started in the seconds lo..hi: ``(pid, command, destination, outcome, samples)``."""
    filters, params = subject_filter(pid, command)
    sql = f"SELECT pid, command, destination, outcome, samples FROM latency WHERE second >= ? AND second <= ?{filters}"
    return select(conn, sql, [lo, hi, *params])


def percentile(sorted_values: Sequence[int] | np.ndarray, q: float) -> int:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    if not len(sorted_values):
        return 0
    return int(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)])


def _group(command: str, destination: str, items: list[tuple[int, str, np.ndarray]]) -> LatencyGroup:
    values = np.sort(np.concatenate([v for _, _, v in items]))
    outcomes: dict[str, int] = {}
    for _, outcome, v in items:
        outcomes[outcome] = outcomes.get(outcome, 0) + len(v)
    return LatencyGroup(command=command, pids=sorted({p for p, _, _ in items}), destination=destination,
                        attempts=len(values), p50_us=percentile(values, 0.5), p95_us=percentile(values, 0.95),
                        max_us=int(values[-1]), outcomes=outcomes)  # fmt: skip


def stats(rows: Iterable[tuple[Any, ...]], window: int, pid: int | None, command: str | None, now: datetime,
          limit: int) -> LatencyStats:  # fmt: skip
    by_dest: dict[tuple[str, str], list[tuple[int, str, np.ndarray]]] = {}
    by_cmd: dict[str, list[tuple[int, str, np.ndarray]]] = {}
    everything: list[np.ndarray] = []
    for r_pid, r_cmd, dest, outcome, blob in rows:
        item = (r_pid, outcome, np.frombuffer(blob, SAMPLE))
        by_dest.setdefault((r_cmd, dest), []).append(item)
        by_cmd.setdefault(r_cmd, []).append(item)
        everything.append(item[2])
    values = np.sort(np.concatenate(everything)) if everything else np.empty(0, SAMPLE)
    dests = sorted((_group(c, d, items) for (c, d), items in by_dest.items()),
                   key=lambda g: (-g.p95_us, -g.attempts, g.command, g.destination))  # fmt: skip
    procs = sorted((_group(c, "", items) for c, items in by_cmd.items()),
                   key=lambda g: (-g.attempts, g.command))  # fmt: skip
    return LatencyStats(window_seconds=window, pid=pid, command=command, until=now, attempts=len(values),
                        p50_us=percentile(values, 0.5), p95_us=percentile(values, 0.95),
                        max_us=int(values[-1]) if len(values) else 0, processes=procs[:limit],
                        destinations=dests[:limit], total_destinations=len(dests))  # fmt: skip
