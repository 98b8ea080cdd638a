"""Whole-window figures read per-minute block sums (rollups.Block) instead of every second's rows.
They must equal the per-second figures and a read-only view of the file exactly, including an
in-progress connect that moves to its outcome minutes later (the -1/+1 rows net out across
blocks) and rows that land in a minute after its block was built."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.decode import Codec
from netspy_tui.models import Scope, ns_to_time
from netspy_tui.store import EventStore
from netspy_tui.store import rollups as R

pytestmark = pytest.mark.quiet

NS = 1_000_000_000
COMMS = [b"curl", b"nginx", b"ssh", b"backup"]


def _counts(rng: np.random.Generator, seconds: np.ndarray, results: np.ndarray, n: np.ndarray,
            kind: int = P.KIND_CONNECT) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    size = len(seconds)
    keys = np.zeros(size, P.COUNT_KEY)
    keys["second"], keys["kind"], keys["result"] = seconds, kind, results
    pick = rng.integers(0, len(COMMS), size)
    keys["comm"] = np.array(COMMS, "S16")[pick]
    keys["tgid"] = 100 + pick * 10 + rng.integers(0, 2, size)
    keys["family"], keys["protocol"] = P.AF_INET, 6
    keys["addr"][:, 0], keys["addr"][:, 3] = 10, rng.integers(1, 40, size)
    keys["port"] = np.array([443, 80, 22], np.uint16)[rng.integers(0, 3, size)]
    values = np.zeros(size, P.COUNT_VALUE)
    values["n"] = n
    values["first"] = seconds.astype(np.uint64) * NS + rng.integers(0, NS // 2, size).astype(np.uint64)
    values["last"] = values["first"] + rng.integers(0, NS // 2, size).astype(np.uint64)
    return keys, values


def test_block_sums_equal_every_second_and_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    now_s = time.time_ns() // NS
    span = 420  # seven minutes: whole blocks with edges on both sides of any window
    codec = Codec({3: "NO_SOCKET", 12: "NETFILTER_DROP"})
    secs = now_s - span + np.sort(rng.integers(0, span, 6000))
    done = _counts(rng, secs, rng.choice([0, 0, 0, 111, 110], len(secs)), np.ones(len(secs), np.int64))
    drops = _counts(rng, secs[::3], rng.choice([3, 12], len(secs[::3])), np.ones(len(secs[::3]), np.int64),
                    P.KIND_DROP)  # fmt: skip
    # in-progress connects: +1 pending when made, later -1 pending and +1 with the outcome
    started = secs[::7]
    moved = np.minimum(started + rng.integers(1, 200, len(started)), now_s)
    pend = _counts(np.random.default_rng(5), started, np.full(len(started), P.RESULT_PENDING),
                   np.ones(len(started), np.int64))  # fmt: skip
    out_keys, out_values = pend[0].copy(), pend[1].copy()
    out_keys["second"] = moved
    out_values["first"] = moved.astype(np.uint64) * NS + np.uint64(NS // 2)  # the state change's time
    out_values["last"] = out_values["first"]
    back_keys, back_values = out_keys.copy(), out_values.copy()
    back_values["n"] = -1
    out_keys["result"] = rng.choice([0, 111], len(started))
    path = tmp_path / "blocks.db"
    store = EventStore(path, retention_seconds=None, max_rows=None)
    try:
        store.write([Batch(counts=done, codec=codec), Batch(counts=drops, codec=codec),
                     Batch(counts=pend, codec=codec)])  # fmt: skip
        assert store.rollups._blocks, "minutes that are over have their sums"
        # the moves land after their blocks were built: the blocks must be rebuilt, not reused
        store.write([Batch(counts=(np.concatenate([back_keys, out_keys]), np.concatenate([back_values, out_values])),
                           codec=codec)])  # fmt: skip
        with EventStore(path, readonly=True) as view:
            for offset in (0, 17, 59, 60, 61, 130):
                now = ns_to_time(now_s * NS) - timedelta(seconds=offset, microseconds=250_000)
                for kind, code in (("connection", 0), ("packet_drop", 1)):
                    for window in (60, 61, 119, 180, 300, 3600):
                        got = store.stats(Scope(kind, None, None, window), now=now, top_n=50)  # type: ignore[arg-type]
                        lo, hi = R.window_seconds(now, window)
                        each_second = R.window_stats(
                            store.rollups.seconds(code, lo, hi), store.names, Scope(kind, window=window), now, 50, 60
                        )  # type: ignore[arg-type]
                        assert got == each_second, (offset, kind, window)
                        v = view.stats(Scope(kind, None, None, window), now=now, top_n=50)  # type: ignore[arg-type]
                        assert got == v, (offset, kind, window)
                        if window >= 180:
                            parts = store.rollups.window(code, lo, hi)
                            assert any(isinstance(p, R.Block) for p in parts)
        # in-progress connects that moved out count only once, with their outcome
        whole = store.stats(Scope("connection", None, None, 3600))
        assert whole.total == len(secs) + len(started)
        assert "in_progress" not in {c.key for c in whole.outcomes}
    finally:
        store.close()


def test_names_no_row_uses_are_forgotten_and_figures_do_not_change(tmp_path: Path) -> None:
    """A host that met 20,000 destinations an hour ago and a few now: once those rows leave memory,
    their names and pairs go too (memory stays bounded), and every figure stays the same."""
    rng = np.random.default_rng(3)
    now_s = time.time_ns() // NS
    codec = Codec({})
    old = _counts(rng, np.full(20_000, now_s - 7200), np.zeros(20_000, np.int64), np.ones(20_000, np.int64))
    old[0]["addr"][:, 1] = np.arange(20_000) // 256  # 20,000 distinct addresses
    old[0]["addr"][:, 2] = np.arange(20_000) % 256
    recent_secs = now_s - 200 + np.sort(rng.integers(0, 200, 3000))
    recent = _counts(rng, recent_secs, rng.choice([0, 111], 3000), np.ones(3000, np.int64))
    store = EventStore(tmp_path / "names.db", retention_seconds=None, max_rows=None)
    try:
        store.write([Batch(counts=old, codec=codec), Batch(counts=recent, codec=codec)])
        now = ns_to_time(now_s * NS)
        before = [store.stats(Scope(k, None, c, w), now=now) for k in ("connection", "packet_drop")  # type: ignore[arg-type]
                  for c in (None, "curl") for w in (60, 300, 3600)]  # fmt: skip
        grown = len(store.names.values)
        assert grown > 20_000
        store.prune(now)  # the rows of two hours ago leave memory (SQLite keeps them)
        assert len(store.names.values) < 200 and len(store.names.pairs[1]) < 1000
        after = [store.stats(Scope(k, None, c, w), now=now) for k in ("connection", "packet_drop")  # type: ignore[arg-type]
                 for c in (None, "curl") for w in (60, 300, 3600)]  # fmt: skip
        assert after == before
        store.write([Batch(counts=_counts(rng, np.full(5, now_s), np.zeros(5, np.int64), np.ones(5, np.int64)),
                           codec=codec)])  # fmt: skip
        assert store.stats(Scope("connection", None, None, 60), now=now).total == before[0].total + 5
        with EventStore(tmp_path / "names.db", readonly=True) as view:  # two hours ago: from the file
            # (the store's last hour comes from memory, second by second; the view places a coarse
            # row's events at its first second: only the rate sparkline may differ)
            got, want = (s.stats(Scope("connection", None, None, 3 * 3600), now=now) for s in (store, view))
            assert got.model_copy(update={"rate_buckets": []}) == want.model_copy(update={"rate_buckets": []})
            assert sum(got.rate_buckets) == sum(want.rate_buckets) == want.total
    finally:
        store.close()


def _second_rows(n: list[int], first: list[int], last: list[int], second: int) -> np.ndarray:
    rows = np.zeros(len(n), R.ROWS)
    rows["second"], rows["n"], rows["first"], rows["last"] = second, n, first, last
    rows["cp"], rows["cd"], rows["port"] = np.arange(len(n)), np.arange(len(n)) + 7, 443
    return rows


def test_a_second_keeps_its_rows_in_31_bytes_and_gives_them_back_exactly() -> None:
    names = R.Names()
    s = 1_790_000_000
    base = s * NS
    # a time at the second's start and end, a row of corrections only (no time: 0)
    rows = _second_rows([3, -1, 1], [base, 0, base + NS - 1], [base + 5, 0, base + NS - 1], s)
    sec = R.Second(rows, names, s)
    assert sec.cols.dtype == R.SECOND and R.SECOND.itemsize == 31
    back = sec.rows(names)
    for name in ("n", "first", "last", "cp", "cd", "port"):
        assert back[name].tolist() == rows[name].tolist(), name
    assert sec.total == 3


def test_a_second_whose_rows_do_not_fit_keeps_them_wide() -> None:
    names = R.Names()
    s = 1_790_000_000
    base = s * NS
    late = _second_rows([1, 2], [base, base + 1], [base + 3 * NS, base + 2], s)  # a last time 3 s on
    huge = _second_rows([2**31 + 5], [base], [base], s)  # a count beyond int32
    for rows in (late, huge):
        sec = R.Second(rows, names, s)
        assert sec.cols.dtype == R.SECOND_WIDE
        back = sec.rows(names)
        for name in ("n", "first", "last"):
            assert back[name].tolist() == rows[name].tolist(), name


def test_rollup_rows_from_sqlite_become_the_packed_array() -> None:
    """``to_array``: each column where it belongs, strings interned once, a NULL port as 0."""
    names = R.Names()
    rows = [
        (10, 0, 7, "curl", "1.2.3.4", 443, "tcp", "ok", 0, 3, 100, 200),
        (10, 0, 7, "curl", "1.2.3.4", None, "tcp", "ok", 0, 1, 5, 6),
        (11, 1, 2**40, "nginx", "::1", 80, "udp", "NO_SOCKET", 1, 2, 2**62, 2**62 + 1),
    ]
    arr = R.to_array(rows, names)
    back = [
        (int(r["second"]), int(r["kind"]), int(r["pid"]), names.values[r["command"]], names.values[r["destination"]],
         int(r["port"]), names.values[r["protocol"]], names.values[r["outcome"]], int(r["failed"]), int(r["n"]),
         int(r["first"]), int(r["last"]))
        for r in arr
    ]  # fmt: skip
    assert back == [rows[0], (*rows[1][:5], 0, *rows[1][6:]), rows[2]]
    assert sorted(names.values) == sorted({"curl", "1.2.3.4", "tcp", "ok", "nginx", "::1", "udp", "NO_SOCKET"})
    assert arr["cp"][0] == arr["cp"][1] != arr["cp"][2]
    assert len(R.to_array([], names)) == 0


def test_procs_per_command_are_the_sums_by_hand() -> None:
    """``_procs`` (a command's events, failures, first and last time of the rows that count) against a loop over the
    rows; and parts' procs summed per command (``_reduced``: a block's from its seconds') equal the procs of all their
    rows, commands that net out, rows of corrections and commands with no row that counts included."""
    rng = np.random.default_rng(7)
    size = 400
    cols = {"n": rng.choice([1, 1, 2, -1, 0], size).astype(np.float64), "failed": rng.integers(0, 2, size),
            "first": rng.integers(1, 10**18, size), "last": rng.integers(1, 10**18, size)}  # fmt: skip
    command = rng.integers(0, 9, size).astype(np.int64)
    command[command == 8] = 3  # (a gap in the ids)
    want: dict[int, list[int]] = {}
    for i in range(size):
        got = want.setdefault(int(command[i]), [0, 0, R._BIG, 0])
        n = int(cols["n"][i])
        got[0] += n
        got[1] += n * int(cols["failed"][i])
        if n > 0:
            got[2], got[3] = min(got[2], int(cols["first"][i])), max(got[3], int(cols["last"][i]))
    procs = R._procs(cols, command)
    assert {int(p["command"]): [int(p[f]) for f in ("n", "failures", "first", "last")] for p in procs} == want
    assert procs["command"].tolist() == sorted(want)
    cuts = [0, 1, 57, 200, 201, 399, size]
    parts = [R._procs({k: v[a:b] for k, v in cols.items()}, command[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert R._reduced(R.concat_procs(parts)).tobytes() == procs.tobytes()


def test_a_minute_asked_while_it_fills_has_the_figures_of_all_its_rows(tmp_path: Path) -> None:
    """A dashboard on an aggregator asks for the window while rows keep landing in its newest minute, some in seconds
    already asked for: at every ask, and after the last rows, the figures equal those of a store given the same rows
    at once (a second's per-command sums are kept between asks: they must follow the rows that land in it)."""
    rng = np.random.default_rng(23)
    now_s = time.time_ns() // NS
    codec = Codec({3: "NO_SOCKET"})
    secs = now_s - 150 + np.sort(rng.integers(0, 150, 3000))
    batches = []
    for part in np.array_split(np.arange(len(secs)), 6):
        batches.append(Batch(counts=_counts(rng, secs[part], rng.choice([0, 111, 110], len(part)),
                                            np.ones(len(part), np.int64)), codec=codec))  # fmt: skip
        late = secs[part][::40]  # rows for seconds that earlier batches filled (and asks read)
        batches.append(Batch(counts=_counts(rng, late, np.zeros(len(late), np.int64), np.ones(len(late), np.int64)),
                             codec=codec))  # fmt: skip
    now = ns_to_time(now_s * NS)
    scopes = [Scope("connection", None, None, w) for w in (60, 120, 3600)]
    store = EventStore(tmp_path / "asked.db", retention_seconds=None, max_rows=None)
    try:
        for i, batch in enumerate(batches):
            store.write([batch])
            asked = [store.stats(s, now=now, top_n=50) for s in scopes]
            fresh = EventStore(tmp_path / f"fresh-{i}.db", retention_seconds=None, max_rows=None)
            try:
                fresh.write(batches[: i + 1])
                assert asked == [fresh.stats(s, now=now, top_n=50) for s in scopes], i
            finally:
                fresh.close()
        assert asked[-1].total == len(secs) + sum(len(s[::40]) for s in np.array_split(secs, 6))
    finally:
        store.close()


def test_minutes_behind_the_newest_keep_no_per_command_sums_and_answer_the_same(tmp_path: Path) -> None:
    """A dashboard holds an hour of seconds in memory (1,000,000 events in it: the RSS budget of 200 MB): per-command
    sums kept for every second of it (built with each minute's block) cost ~14 MB. Only the minute before the newest
    (where late rows still land), the newest and the seconds a window asks for at its edges keep them; the figures of
    every window are the same after a second ask."""
    rng = np.random.default_rng(29)
    now_s = time.time_ns() // NS
    codec = Codec({3: "NO_SOCKET"})
    secs = now_s - 600 + np.sort(rng.integers(0, 600, 6000))
    batch = Batch(counts=_counts(rng, secs, rng.choice([0, 111], len(secs)), np.ones(len(secs), np.int64)), codec=codec)
    now = ns_to_time(now_s * NS)
    scopes = [Scope("connection", None, None, w) for w in (60, 150, 3600)]
    store = EventStore(tmp_path / "kept.db", retention_seconds=None, max_rows=None)
    try:
        store.write([batch])
        first = [store.stats(s, now=now, top_n=50) for s in scopes]
        rollups = store.rollups
        newest = max(second for second, _ in rollups._seconds)
        kept = {second for (second, _), sec in rollups._seconds.items() if sec._by_command is not None}
        # the newest two minutes and the seconds at the windows' old edges (asked themselves, not in a block)
        assert newest in kept and len(kept) <= 4 * R.BLOCK < len(rollups._seconds)
        assert [store.stats(s, now=now, top_n=50) for s in scopes] == first
    finally:
        store.close()
