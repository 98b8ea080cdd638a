"""Traffic rows in the store: a window's figures are the exact sums of its seconds, whether read from
the per-second table or (whole minutes) the per-minute one."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore

NS = 1_000_000_000


def test_windows_sum_exactly_across_minutes_and_edges(tmp_path) -> None:
    rng = random.Random(15)
    start = 1_800_000_000 - 1_800_000_000 % 60 + 7  # not aligned to a minute
    rows = []
    for i in range(3000):
        second = start + rng.randrange(600)
        pid = rng.choice((10, 20, 30))
        direction = rng.choice((T.DIR_RX, T.DIR_TX))
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
            rx = sum(r[9] for r in inside if r[8] == T.DIR_RX)
            tx = sum(r[9] for r in inside if r[8] == T.DIR_TX)
            assert (stats.rx_bytes, stats.tx_bytes) == (rx, tx), (end, window, pid)
            assert sum(f.rx_bytes for f in stats.flows) == rx
            assert {p.command for p in stats.processes} == {r[2] for r in inside}
            assert stats.rx_rate == round(rx / window, 3)
