"""The minute and hour tables a whole minute's fold makes are those of the two grouped statements."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from netspy_tui.store import spans as S
from netspy_tui.store.sqlite import _SCHEMA, _UPSERT_ROLLUP

pytestmark = pytest.mark.quiet

HOUR = 1_796_425_200  # a whole hour (seconds since the epoch)


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_SCHEMA + S.SCHEMA)
    return conn


def _rows(rng: random.Random, minute: int, negative: bool) -> list[tuple[Any, ...]]:
    """Per-second rollup rows of one minute: few keys, each in several seconds; with ``negative``, some
    rows with ``n`` 0 or below (an in-progress connect that moved on), also in a key's first second."""
    rows = []
    for _ in range(400):
        second = minute * 60 + rng.randrange(60)
        n = rng.choice([1, 1, 2, 5, 0, -1]) if negative else rng.choice([1, 1, 2, 5])
        t = second * 1_000_000_000 + rng.randrange(1_000_000_000)
        rows.append((second, rng.choice([0, 1]), rng.choice([10, 11]), rng.choice(["curl", "nginx"]),
                     rng.choice(["", "1.2.3.4:443", "10.0.0.1:53"]), rng.choice([443, 53]), "TCP",
                     rng.choice(["ok", "refused", "in_progress"]), 0, n, t, t + rng.randrange(1000)))  # fmt: skip
    return rows


def _coarse(conn: sqlite3.Connection) -> list[list[Any]]:
    return [list(conn.execute(f"SELECT * FROM {table} ORDER BY {unit}, {S.KEY}")) for table, unit, _ in S.SPANS]


@pytest.mark.parametrize("negative", [False, True])
def test_a_whole_minute_folds_to_what_grouping_the_seconds_gives(negative: bool) -> None:
    """Minute by minute (rows with ``n`` <= 0 in some, the hour's rows merged across its minutes, rows of a
    minute written in several batches), then a fold of several minutes at once, which groups as before: the
    coarse tables are row for row those the grouped statements make."""
    rng = random.Random(7 if negative else 8)
    fast, grouped = _db(), _db()
    minutes = [HOUR // 60 + i for i in (0, 1, 2, 59, 60, 61)]  # (two hours)
    for i, minute in enumerate(minutes):
        rows = _rows(rng, minute, negative and i % 2 == 0)
        for conn in (fast, grouped):
            conn.executemany(_UPSERT_ROLLUP, rows[:200])
            conn.executemany(_UPSERT_ROLLUP, rows[200:])
        lo = minute * 60
        S.fold(fast, lo, lo + 60)
        for sql in S._FOLDS:
            grouped.execute(sql, (lo, lo + 60))
        assert _coarse(fast) == _coarse(grouped)
    later = [minute + 100 for minute in minutes]
    for minute in later:
        rows = _rows(rng, minute, negative)
        for conn in (fast, grouped):
            conn.executemany(_UPSERT_ROLLUP, rows)
    S.fold(fast, later[0] * 60, (later[-1] + 1) * 60)
    for sql in S._FOLDS:
        grouped.execute(sql, (later[0] * 60, (later[-1] + 1) * 60))
    hour_rows, minute_rows = _coarse(fast)
    assert [hour_rows, minute_rows] == _coarse(grouped)
    assert len(minute_rows) > len(hour_rows) > 0
    assert sum(r[-3] for r in minute_rows) == sum(r[-3] for r in hour_rows)
    if negative:  # (what the test is about: rows that do not count, where a key starts and later)
        assert any(r[-3] <= 0 for r in fast.execute("SELECT * FROM rollup"))
