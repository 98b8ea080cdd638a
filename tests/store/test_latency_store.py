"""Connect latency in the store: attempts grouped per second and key keep every sample (percentiles
stay exact), and a store written with one row per attempt is converted when it is opened."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.ebpf import decode
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.store import latency as L
from netspy_tui.store.sqlite import EventStore

pytestmark = pytest.mark.quiet

NS = 1_000_000_000


def _one_by_one(codec, recs: np.ndarray) -> dict[tuple, list[int]]:
    """What each measured attempt is, named record by record (the reference)."""
    out: dict[tuple, list[int]] = defaultdict(list)
    addr = recs.view(np.dtype({"names": ["lo", "hi"], "formats": ["<u8", "<u8"],
                               "offsets": [P.RECORD.fields["addr"][1], P.RECORD.fields["addr"][1] + 8],
                               "itemsize": P.RECORD.itemsize}))  # fmt: skip
    for i, r in enumerate(recs):
        resolved = r["flags"] & P.F_RESOLVED or r["kind"] == P.KIND_OUTCOME
        if r["length"] == 0 or r["kind"] == P.KIND_DROP or not r["flags"] & P.F_TCP or not resolved:
            continue
        dest, _, _, _, outcome, _ = codec.names(P.KIND_CONNECT, int(r["family"]), int(addr[i]["lo"]),
                                                int(addr[i]["hi"]), int(r["port"]), int(r["protocol"]),
                                                int(r["result"]), int(r["flags"]), int(r["code"]))  # fmt: skip
        command = bytes(r["comm"]).split(b"\0")[0].decode()
        out[(int(r["wall"]) // NS, int(r["pid"]), command, dest, outcome)].append(int(r["length"]))
    return out


def _grouped(rows: list[tuple]) -> dict[tuple, list[int]]:
    got: dict[tuple, list[int]] = defaultdict(list)
    for second, pid, command, dest, outcome, n, blob in rows:
        samples = np.frombuffer(blob, L.SAMPLE).tolist()
        assert len(samples) == n
        got[(second, pid, command, dest, outcome)] += samples
    return {k: sorted(v) for k, v in got.items()}


@pytest.mark.parametrize("shared_hashes", [False, True])
def test_grouped_rows_keep_every_attempt_of_every_key(monkeypatch, shared_hashes: bool) -> None:
    if shared_hashes:  # every key hashed by its last word alone: keys of one hash interleave when sorted
        monkeypatch.setattr(decode, "_MIX", np.uint64(0))
    recs = synth.storm_records(20_000, workers=3)
    rng = np.random.default_rng(4)
    recs["wall"] += (rng.integers(0, 4, len(recs)) * NS).astype(np.uint64)  # four seconds, out of order
    connects = recs["kind"] == P.KIND_CONNECT
    recs["port"][connects & (rng.random(len(recs)) < 0.3)] = 443  # a second destination
    ok = connects & (rng.random(len(recs)) < 0.2)
    recs["result"][ok], recs["code"][ok] = 0, 0  # some attempts succeeded
    recs["flags"][connects & (rng.random(len(recs)) < 0.1)] &= ~np.uint32(P.F_RESOLVED)  # still in progress
    recs["length"][connects] = rng.integers(1, 2_000_000, int(connects.sum()))
    codec = synth.codec()
    rows = codec.latency_rows(recs)
    want = _one_by_one(codec, recs)
    assert len(want) > 10  # (the test makes many keys)
    assert _grouped(rows) == {k: sorted(v) for k, v in want.items()}
    if not shared_hashes:
        assert len(rows) == len(want)  # one row per key and second


def test_a_store_with_one_row_per_attempt_is_converted_at_open(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    start = 1_800_000_000
    with EventStore(path):
        pass
    attempts = [(start * NS + i, 5, "curl", "10.0.0.9:443", "ok", us) for i, us in enumerate(range(100, 2100, 100))]
    attempts.append(((start + 1) * NS, 9, "wget", "[::1]:80", "refused", 1_000_000))
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE latency; CREATE TABLE connect_latency (t INTEGER NOT NULL, pid INTEGER NOT NULL, "
        "command TEXT NOT NULL, destination TEXT NOT NULL, outcome TEXT NOT NULL, latency_us INTEGER NOT NULL);"
    )
    conn.executemany("INSERT INTO connect_latency VALUES (?, ?, ?, ?, ?, ?)", attempts)
    conn.commit()
    conn.close()
    with EventStore(path) as store:
        stats = store.connect_latency(None, None, 10, now=datetime.fromtimestamp(start + 5, UTC))
        assert (stats.attempts, stats.max_us) == (21, 1_000_000)
        (curl,) = [g for g in stats.destinations if g.command == "curl"]
        assert (curl.p50_us, curl.p95_us, curl.attempts) == (1000, 1900, 20)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "connect_latency" not in tables
