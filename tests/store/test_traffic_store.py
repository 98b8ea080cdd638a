"""Traffic rows in the store: a window's figures are the exact sums of its seconds, whether read from
the per-second table or (whole minutes) the per-minute one."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from netspy_tui.collector.base import DIR_RX, DIR_TX
from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore

pytestmark = pytest.mark.quiet

NS = 1_000_000_000


def test_windows_sum_exactly_across_minutes_and_edges(tmp_path) -> None:
    rng = random.Random(15)
    start = 1_800_000_000 - 1_800_000_000 % 60 + 7  # not aligned to a minute
    rows = []
    for i in range(3000):
        second = start + rng.randrange(600)
        pid = rng.choice((10, 20, 30))
        direction = rng.choice((DIR_RX, DIR_TX))
        port = rng.choice((80, 443))
        rows.append((second, pid, f"p{pid}", "TCP", "10.0.0.1", 40000 + pid, "10.0.0.9", port, direction,
                     rng.randrange(1, 100_000), 1, second * NS + i, second * NS + i))  # fmt: skip
    with EventStore(tmp_path / "t.sqlite3") as store:
        with store._write_lock:  # (the writer's transaction, without a collector)
            conn = store._writer
            conn.execute("BEGIN IMMEDIATE")
            T.write(conn, rows)
            conn.execute("COMMIT")
        for end, window, pid in ((start + 599, 600, None), (start + 400, 200, 20), (start + 130, 61, None),
                                 (start + 59, 1, 30), (start + 700, 3600, None)):  # fmt: skip
            now = datetime.fromtimestamp(end + 0.5, UTC)
            stats = store.traffic(pid, None, window, limit=1000, now=now)
            inside = [r for r in rows if end - window < r[0] <= end and (pid is None or r[1] == pid)]
            rx = sum(r[9] for r in inside if r[8] == DIR_RX)
            tx = sum(r[9] for r in inside if r[8] == DIR_TX)
            assert (stats.rx_bytes, stats.tx_bytes) == (rx, tx), (end, window, pid)
            assert sum(f.rx_bytes for f in stats.flows) == rx
            assert {p.command for p in stats.processes} == {r[2] for r in inside}
            assert stats.rx_rate == round(rx / window, 3)


def test_connect_latency_percentiles_are_nearest_rank_values_of_real_attempts(tmp_path) -> None:
    from netspy_tui.store import latency as L  # noqa: PLC0415

    start = 1_800_000_000
    rows = [(start * NS + i, 5, "curl", "10.0.0.9:443", "ok", us) for i, us in enumerate(range(100, 2100, 100))]
    rows += [((start + 1) * NS, 6, "curl", "10.0.0.8:80", "refused", 7), ((start + 1) * NS, 9, "wget", "[::1]:80",
             "ok", 1_000_000)]  # fmt: skip
    with EventStore(tmp_path / "l.sqlite3") as store:
        with store._write_lock:
            store._writer.execute("BEGIN IMMEDIATE")
            L.write(store._writer, L.rows_of(rows))
            store._writer.execute("COMMIT")
        stats = store.connect_latency(None, None, 10, now=datetime.fromtimestamp(start + 5, UTC))
        assert (stats.attempts, stats.max_us) == (22, 1_000_000)
        slowest, *_ = stats.destinations
        assert (slowest.command, slowest.destination, slowest.p50_us, slowest.attempts) == ("wget", "[::1]:80",
                                                                                         1_000_000, 1)  # fmt: skip
        (curl443,) = [g for g in stats.destinations if g.destination == "10.0.0.9:443"]
        # 20 attempts of 100..2000 us: p50 is the 10th value, p95 the 19th
        assert (curl443.p50_us, curl443.p95_us, curl443.max_us, curl443.outcomes) == (1000, 1900, 2000, {"ok": 20})
        curl = store.connect_latency(None, "curl", 10, now=datetime.fromtimestamp(start + 5, UTC))
        assert [(g.command, g.pids, g.attempts) for g in curl.processes] == [("curl", [5, 6], 21)]
        assert store.connect_latency(None, None, 3, now=datetime.fromtimestamp(start + 5, UTC)).attempts == 0
