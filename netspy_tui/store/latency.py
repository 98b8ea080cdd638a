"""Connect latency: one row per TCP connect attempt whose handshake ended, and its percentiles.

The kernel measures each attempt from the socket's CLOSE -> SYN_SENT (inside connect()) to the end
of its handshake (SYN_SENT -> ESTABLISHED or CLOSE) and puts it, in microseconds, in the connect's
ring record (collector/ebpf/programs.py). Rows come from those records: when raw records are shed
under load, the attempts they carried are not here (the store counts what it shed).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from netspy_tui.models import LatencyGroup, LatencyStats
from netspy_tui.store.traffic import select, subject_filter

NS = 1_000_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS connect_latency (
    t           INTEGER NOT NULL,   -- when the attempt started, ns since the epoch
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    destination TEXT    NOT NULL,   -- ip:port
    outcome     TEXT    NOT NULL,
    latency_us  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS connect_latency_time ON connect_latency (t);
"""

#: (t, pid, command, destination, outcome, latency_us)
Row = tuple[int, int, str, str, str, int]


def write(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    conn.executemany("INSERT INTO connect_latency (t, pid, command, destination, outcome, latency_us) "
                     "VALUES (?, ?, ?, ?, ?, ?)", rows)  # fmt: skip


def prune(conn: sqlite3.Connection, second: int) -> None:
    conn.execute("DELETE FROM connect_latency WHERE t < ?", (second * NS,))


def read(conn: sqlite3.Connection, lo: int, hi: int, pid: int | None, command: str | None) -> list[tuple[Any, ...]]:
    """Attempts that started in the seconds lo..hi: ``(pid, command, destination, outcome, latency_us)``."""
    filters, params = subject_filter(pid, command)
    sql = f"SELECT pid, command, destination, outcome, latency_us FROM connect_latency WHERE t >= ? AND t < ?{filters}"
    return select(conn, sql, [lo * NS, (hi + 1) * NS, *params])


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    if not sorted_values:
        return 0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _group(command: str, destination: str, items: list[tuple[int, str, int]]) -> LatencyGroup:
    values = sorted(v for _, _, v in items)
    outcomes: dict[str, int] = {}
    for _, outcome, _ in items:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return LatencyGroup(command=command, pids=sorted({p for p, _, _ in items}), destination=destination,
                        attempts=len(values), p50_us=percentile(values, 0.5), p95_us=percentile(values, 0.95),
                        max_us=values[-1], outcomes=outcomes)  # fmt: skip


def stats(rows: Iterable[tuple[Any, ...]], window: int, pid: int | None, command: str | None, now: datetime,
          limit: int) -> LatencyStats:  # fmt: skip
    by_dest: dict[tuple[str, str], list[tuple[int, str, int]]] = {}
    by_cmd: dict[str, list[tuple[int, str, int]]] = {}
    everything: list[int] = []
    for r_pid, r_cmd, dest, outcome, latency in rows:
        item = (r_pid, outcome, latency)
        by_dest.setdefault((r_cmd, dest), []).append(item)
        by_cmd.setdefault(r_cmd, []).append(item)
        everything.append(latency)
    everything.sort()
    dests = sorted((_group(c, d, items) for (c, d), items in by_dest.items()),
                   key=lambda g: (-g.p95_us, -g.attempts, g.command, g.destination))  # fmt: skip
    procs = sorted((_group(c, "", items) for c, items in by_cmd.items()),
                   key=lambda g: (-g.attempts, g.command))  # fmt: skip
    return LatencyStats(window_seconds=window, pid=pid, command=command, until=now, attempts=len(everything),
                        p50_us=percentile(everything, 0.5), p95_us=percentile(everything, 0.95),
                        max_us=everything[-1] if everything else 0, processes=procs[:limit],
                        destinations=dests[:limit], total_destinations=len(dests))  # fmt: skip
