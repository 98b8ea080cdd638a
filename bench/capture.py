"""Capture: a loopback connect() storm with the eBPF collector attached, against bpftrace counting
the same tracepoint on the same load; the overhead on the storm's rate; the reader's CPU.

Load: ``connect_storm.c`` (compiled here into a temp dir): W worker processes, each making blocking
TCP connects to a bound-but-not-listening port on 127.0.0.1 (refused at once by the loopback
stack: nothing leaves the host), bounded by count and time. Each connect also makes the kernel drop
the SYN (``NO_SOCKET``), so the collector sees two events per connect.

Rounds: the traced modes (bpftrace, ``tracepoint:syscalls:sys_enter_connect { @[pid] = count(); }``;
the collector feeding the real store, ``EmbeddedSource``, raw events kept; the same counting only; the
kernel side alone) in turn, each between two untraced storms, its ratio taken against their mean, the
order turned by one each round (so drift in the host's speed, and whatever a mode leaves behind, fall on
every mode alike); the figures are medians over the rounds. Then, outside the ratios, a round runs bpftrace
and the collector on the same storm at once, and another product round with ``BPF_ENABLE_STATS`` on gives
each program's kernel time per connect (only there: while it is on, every program run pays two clock reads,
which the ratios must not carry). The first round also runs the collector with a sink that reads every
event (a diagnosis).
Needs root (eBPF, tracefs); skips with a line saying so otherwise.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import synth
from bench.common import REPO, Context, Metric, interrupt, live_ebpf_missing, metric, run_measured, skipped

NAME = "capture"
TARGET_CAPTURE, TARGET_OVERHEAD, TARGET_KERNEL = 1.0, 0.90, 0.92
TARGET_CPU_RAW, TARGET_CPU_COUNT, TARGET_KEPT = 0.5, 0.1, 50_000.0
#: the traced modes whose storm rate is compared with untraced storms (see :func:`run`)
_RATIO_MODES = ["bpftrace", "product", "counting", "kernel"]


def build_generator(tmp: Path) -> Path:
    exe = tmp / "connect_storm"
    subprocess.run(
        ["gcc", "-O2", "-o", str(exe), str(REPO / "bench" / "connect_storm.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return exe


def storm(exe: Path, port: int, workers: int, count: int, seconds: float) -> tuple[dict[int, int], float, float]:
    """Run the storm; returns ({worker pid: connects made}, connects per second, the storm's own CPU
    microseconds per connect: socket, connect and close, kernel time of the programs included)."""
    out, cpu = run_measured([str(exe), str(port), str(workers), str(count), str(seconds)], seconds + 60)
    per: dict[int, int] = {}
    total = elapsed = 0
    for line in out.splitlines():
        a, b, c = line.split()
        if a == "total":
            total, elapsed = int(b), int(c)
        else:
            per[int(a)] = int(b)
    return per, total / (elapsed / 1e9), cpu / max(1, total) * 1e6


class Bpftrace:
    """bpftrace counting sys_enter_connect per pid, from attach to SIGINT."""

    PROG = "tracepoint:syscalls:sys_enter_connect { @[pid] = count(); }"

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["bpftrace", "-e", self.PROG], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "Attaching 1 probe..." once attached
        if "Attaching" not in line:
            self.proc.kill()
            raise RuntimeError(f"bpftrace did not attach: {line!r} {self.proc.stderr.read()[-300:]!r}")  # type: ignore[union-attr]
        time.sleep(1.0)  # bpftrace prints "Attaching" before the probe is live

    def stop(self) -> dict[int, int]:
        out = interrupt(self.proc)
        return {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"@\[(\d+)\]: (\d+)", out)}


class CountingSink:
    """Reads every event (the least any consumer does); counts the storm's connects per pid."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[int] = Counter()
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[Any]) -> None:
        port = self.port
        hits = [e.pid for e in batch if e.type == "connection" and e.destination_port == port]
        with self.lock:
            self.counts.update(hits)

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


def _collector_round(exe: Path, port: int, workers: int, count: int, seconds: float) -> dict[str, Any]:
    """The collector with the cheapest real consumer: a sink that reads every event (a diagnosis,
    not the product path)."""
    from netspy_tui.collector.ebpf import EbpfCollector

    collector = EbpfCollector()
    counter = CountingSink(port)
    collector.start(counter)
    try:
        ev0, lost0, cpu0 = collector.stats.events, collector.stats.lost, collector.reader_cpu_seconds
        made, rate, _ = storm(exe, port, workers, count, seconds)
        total = sum(made.values())
        deadline = time.monotonic() + 10
        while counter.total() < total and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(collector.poll_interval * 3)  # the drops of the last connects
        events = collector.stats.events - ev0
        cpu = collector.reader_cpu_seconds - cpu0
        lost = collector.stats.lost - lost0
    finally:
        collector.stop()
    return {
        "made": made,
        "rate": rate,
        "counts": dict(counter.counts),
        "events": events,
        "reader_cpu": cpu,
        "lost": lost,
    }


def _product_round(
    exe: Path, port: int, workers: int, count: int, seconds: float, db: Path, raw: bool = True
) -> dict[str, Any]:
    """The product path: the eBPF collector feeding the store the product uses (a file, its writer
    thread, rollups), figures read back with the store's own queries, as the tools do."""
    from netspy_tui.collector.ebpf import EbpfCollector
    from netspy_tui.models import Scope
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = EventStore(db)
    collector = EbpfCollector(raw_connects=raw, raw_drops=raw)
    source = EmbeddedSource(collector, store, reason="bench")
    collector.start(source.sink)
    source._started_at = time.monotonic()
    try:
        cpu0 = collector.reader_cpu_seconds
        t0 = time.time()
        made, rate, cpu_us = storm(exe, port, workers, count, seconds)
        time.sleep(collector.drain_interval * 2.5)
        program_stats = collector.program_stats()
        # Read the figures once the collector has delivered everything (stop detaches, then reads
        # the ring and drains the counts a last time) and the writer has stored it: under a storm
        # the reader may deliver the last second's counts later than 2.5 drain intervals.
        collector.stop()
        store.flush(60)
        window = int(time.time() - t0) + 5
        per_pid = {pid: store.count(Scope("connection", pid, None, window)) for pid in made}
        stats = store.stats(Scope("connection", None, "nsbench-gen", window))
        kept = store.kept(Scope("connection", None, "nsbench-gen", window)) + store.kept(
            Scope("packet_drop", None, None, window)
        )
        losses = store.losses()
        reader = collector.reader_cpu_seconds - cpu0
        writer = store._writer_thread.cpu_seconds if store._writer_thread is not None else 0.0
    finally:
        collector.stop()
        store.flush(60)
        store.close()
    storm_seconds = sum(made.values()) / rate
    return {
        "made": made,
        "rate": rate,
        "cpu_us": cpu_us,
        "counts": per_pid,
        "outcomes": {c.key: c.count for c in stats.outcomes},
        "total": stats.total,
        "kept": kept,
        "kept_rate": kept / storm_seconds,
        "losses": losses,
        "reader_cpu": reader,
        "writer_cpu": writer,
        "programs": program_stats,
    }


def _kernel_only_round(exe: Path, port: int, workers: int, count: int, seconds: float) -> dict[str, Any]:
    """The programs attached and counting, no raw records and no drain during the storm (the counts
    are drained at stop): what remains is the cost on the traced connect() path itself."""
    from netspy_tui.collector.base import Batch
    from netspy_tui.collector.ebpf import EbpfCollector

    got: list[Batch] = []

    class Keep:
        def ingest(self, batch: Batch) -> None:
            got.append(batch)

        def __call__(self, events: Any) -> None:  # pragma: no cover - batches only
            pass

    collector = EbpfCollector(raw_connects=False, raw_drops=False, drain_interval=60.0)
    collector.start(Keep())
    try:
        made, rate, cpu_us = storm(exe, port, workers, count, seconds)
    finally:
        collector.stop()
    counted: Counter[int] = Counter()
    for b in got:
        if b.counts is not None:
            keys, values = b.counts
            mine = (keys["kind"] == 1) & (keys["port"] == port)
            for tgid, n in zip(keys["tgid"][mine].tolist(), values["n"][mine].tolist(), strict=True):
                counted[tgid] += n
    return {"made": made, "rate": rate, "cpu_us": cpu_us, "counts": dict(counted)}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _ratio_per_process(made: dict[int, int], counts: dict[int, int]) -> float:
    """The worst process's captured/made (1.0 = every connect of every process captured)."""
    return min((counts.get(pid, 0) / n for pid, n in made.items() if n), default=0.0)


def offline_ingest(quick: bool) -> list[Metric]:
    """Store-writer CPU per 100,000 storm-shaped records: one transaction per batch (the records as
    chunks, their counts as rollups), the work the writer thread does for the live collector."""
    from netspy_tui.collector.base import Batch
    from netspy_tui.store.sqlite import EventStore

    n = 20_000 if quick else 200_000
    recs = synth.storm_records(n)
    codec = synth.codec()
    batches = [Batch(records=recs[i : i + 4096], counts=synth.counts(recs[i : i + 4096]), codec=codec)
               for i in range(0, n, 4096)]  # fmt: skip
    samples = []
    for _ in range(2 if quick else 5):
        store = EventStore(None, retention_seconds=None, max_rows=None)
        t0 = time.thread_time()
        for b in batches:
            store.write([b])
        samples.append((time.thread_time() - t0) / n * 1e5)
        assert store.row_count() == n
        store.close()
    return [
        metric(NAME, "store writer: write storm records and their counts, offline, per 100k events", samples, "s CPU"),
    ]


def run(ctx: Context) -> list[Metric]:
    ms = offline_ingest(ctx.quick)
    no_tracefs = "tracefs is not mounted at /sys/kernel/tracing (mount -t tracefs nodev /sys/kernel/tracing)"
    why = live_ebpf_missing("connect() generator", "", no_tracefs)
    if why:
        ctx.log(f"capture: SKIPPED live part: {why}")
        return ms + [
            skipped(
                NAME,
                "product: store count / bpftrace count, same storm, worst process",
                why,
                target=TARGET_CAPTURE,
                op=">=",
            ),
            skipped(NAME, "product: connects/s with the collector / without", why, target=TARGET_OVERHEAD, op=">="),
        ]
    from netspy_tui.collector.ebpf import syscalls

    exe = build_generator(ctx.tmp)
    db = ctx.tmp / "capture.db"
    nproc = os.cpu_count() or 1
    rounds = 1 if ctx.quick else 5
    count, seconds = (20_000, 1.0) if ctx.quick else (400_000, 4.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        port = closed.getsockname()[1]
        for _ in range(2):
            storm(exe, port, nproc, count // 4, 1.0)  # warm-up: the first storms after a quiet spell run slow
        res: dict[str, list[Any]] = {k: [] for k in ("none", "bpftrace", "product", "stats", "product_bt",
                                                      "counting", "kernel", "diagnosis")}  # fmt: skip
        # each traced mode's untraced reference: the mean of the untraced storms just before and just after it
        refs: dict[str, list[tuple[float, float]]] = {k: [] for k in _RATIO_MODES}

        def traced(mode: str) -> None:
            if mode == "bpftrace":
                bt = Bpftrace()
                made, rate, cpu_us = storm(exe, port, nproc, count, seconds)
                res["bpftrace"].append((made, rate, bt.stop(), cpu_us))
            elif mode == "product":
                res["product"].append(_product_round(exe, port, nproc, count, seconds, db))
            elif mode == "counting":
                res["counting"].append(_product_round(exe, port, nproc, count, seconds, db, raw=False))
            else:
                res["kernel"].append(_kernel_only_round(exe, port, nproc, count, seconds))

        for r in range(rounds):
            # the traced modes in turn, each between two untraced storms, the order turned by one each round:
            # a mode is compared with storms seconds away on both sides, and no mode always follows another
            order = _RATIO_MODES[r % len(_RATIO_MODES) :] + _RATIO_MODES[: r % len(_RATIO_MODES)]
            ctx.log(f"capture: round {r + 1}/{rounds} ({nproc} workers): {', '.join(order)}")
            before = storm(exe, port, nproc, count, seconds)
            res["none"].append(before)
            for mode in order:
                traced(mode)
                after = storm(exe, port, nproc, count, seconds)
                res["none"].append(after)
                refs[mode].append(((before[1] + after[1]) / 2, (before[2] + after[2]) / 2))
                before = after
            # per-program kernel time in a round of its own: while BPF_ENABLE_STATS is on, every
            # program run (bpftrace's too) pays two clock reads, which the ratios must not carry
            stats_fd = syscalls.enable_stats()
            try:
                res["stats"].append(_product_round(exe, port, nproc, count, seconds, db))
            finally:
                os.close(stats_fd)
            bt = Bpftrace()  # the product and bpftrace on the same storm: their counts, side by side
            both = _product_round(exe, port, nproc, count, seconds, db)
            res["product_bt"].append((both, bt.stop()))
            if r == 0:
                res["diagnosis"].append(_collector_round(exe, port, nproc, count, seconds))
    # --- figures ---------------------------------------------------------------------------
    rates_none = [r for _, r, _ in res["none"]]
    cpu_none = [c for _, _, c in res["none"]]
    base = float(np.median(rates_none))
    bt_overhead = [b[1] / n for b, (n, _) in zip(res["bpftrace"], refs["bpftrace"], strict=True)]
    overhead = [p["rate"] / n for p, (n, _) in zip(res["product"], refs["product"], strict=True)]
    counting_overhead = [p["rate"] / n for p, (n, _) in zip(res["counting"], refs["counting"], strict=True)]
    kernel = [k["rate"] / n for k, (n, _) in zip(res["kernel"], refs["kernel"], strict=True)]
    # the same as CPU per connect (without / with: 1.0 = tracing adds nothing to a connect)
    cpu_product = [n / p["cpu_us"] for p, (_, n) in zip(res["product"], refs["product"], strict=True)]
    cpu_counting = [n / p["cpu_us"] for p, (_, n) in zip(res["counting"], refs["counting"], strict=True)]
    cpu_kernel = [n / k["cpu_us"] for k, (_, n) in zip(res["kernel"], refs["kernel"], strict=True)]
    cpu_bpftrace = [n / b[3] for b, (_, n) in zip(res["bpftrace"], refs["bpftrace"], strict=True)]
    vs_bt = [min((p["counts"].get(pid, 0) / bt.get(pid, 1) for pid in p["made"]), default=0.0)
             for p, bt in res["product_bt"]]  # fmt: skip
    vs_made = [_ratio_per_process(p["made"], p["counts"]) for p in res["product"] + res["counting"]]
    outcome_exact = [p["outcomes"].get("refused", 0) / max(1, sum(p["made"].values())) for p in res["product"]]
    made_events = [2 * sum(p["made"].values()) for p in res["product"]]  # each connect: the connect + its drop
    kept = [p["kept"] for p in res["product"]]
    shed = [p["losses"].get("shed", 0) + p["losses"].get("ring_full", 0) for p in res["product"]]
    balance = [(k + s) / m for k, s, m in zip(kept, shed, made_events, strict=True)]
    kept_rate = [p["kept_rate"] for p in res["product"]]
    cpu_raw = [(p["reader_cpu"] + p["writer_cpu"]) / sum(p["made"].values()) * 1e5 for p in res["product"]]
    reader_raw = [p["reader_cpu"] / sum(p["made"].values()) * 1e5 for p in res["product"]]
    writer_raw = [p["writer_cpu"] / sum(p["made"].values()) * 1e5 for p in res["product"]]
    cpu_count = [(p["reader_cpu"] + p["writer_cpu"]) / sum(p["made"].values()) * 1e5 for p in res["counting"]]
    per_prog: dict[str, list[float]] = {}
    for p in res["stats"]:
        connects = sum(p["made"].values())
        for name, run_ns, _, _ in p["programs"]:
            per_prog.setdefault(name, []).append(run_ns / connects / 1000)
    diag = res["diagnosis"][0] if res["diagnosis"] else None
    ms += [
        metric(NAME, f"storm rate without tracing ({nproc} workers)", rates_none, "connects/s"),
        metric(
            NAME,
            "product: store count / bpftrace count, same storm, worst process",
            vs_bt,
            target=TARGET_CAPTURE,
            op=">=",
            note="every round; the store's count_by_pid against bpftrace's",
        ),
        metric(
            NAME,
            "product: store count / connects made, worst process",
            vs_made,
            target=TARGET_CAPTURE,
            op=">=",
            note="raw events kept and counting-only rounds",
        ),
        metric(
            NAME, "product: refused outcomes counted / connects made", outcome_exact, target=TARGET_CAPTURE, op=">="
        ),
        metric(
            NAME,
            "product: raw events kept + shed / made",
            balance,
            target=1.0,
            op=">=",
            note=f"made {int(np.median(made_events)):,} events a storm (connect + drop each)",
        ),
        metric(
            NAME,
            "product: raw events kept per second during the storm",
            kept_rate,
            "events/s",
            target=TARGET_KEPT,
            op=">=",
        ),
        metric(NAME, "product: raw events shed or lost per storm", shed, "events"),
        metric(
            NAME, "product: connects/s with the collector / without", overhead, target=TARGET_OVERHEAD, op=">="
        ).set_baseline(float(np.median(bt_overhead)), "bpftrace ratio", ratio=None),
        metric(NAME, "connects/s with bpftrace / without", bt_overhead),
        metric(
            NAME,
            "product counting only (no raw events): connects/s with / without",
            counting_overhead,
            target=TARGET_OVERHEAD,
            op=">=",
        ),
        metric(
            NAME,
            "kernel side alone (counting, nothing read during the storm): with / without",
            kernel,
            target=TARGET_KERNEL,
            op=">=",
        ),
        metric(
            NAME,
            "product: reader + writer CPU per 100k connects, raw events kept",
            cpu_raw,
            "s",
            target=TARGET_CPU_RAW,
            note=f"median reader {_median(reader_raw):.3f} s + writer {_median(writer_raw):.3f} s",
        ),
        metric(
            NAME,
            "product: reader + writer CPU per 100k connects, counting only",
            cpu_count,
            "s",
            target=TARGET_CPU_COUNT,
        ),
        metric(NAME, "storm CPU per connect without tracing (socket, connect, close)", cpu_none, "us"),
        metric(
            NAME,
            "CPU per connect: without / with the collector, raw events kept",
            cpu_product,
            note="the storm's own CPU (steadier than its rate on a busy host)",
        ).set_baseline(float(np.median(cpu_bpftrace)), "bpftrace", ratio=None),
        metric(NAME, "CPU per connect: without / with the collector, counting only", cpu_counting),
        metric(NAME, "CPU per connect: without / with the kernel side alone", cpu_kernel),
        *[metric(NAME, f"kernel time per connect: {name}", v, "us") for name, v in sorted(per_prog.items())],
    ]
    if diag is not None:
        ms.append(
            metric(
                NAME,
                "DIAGNOSIS counting sink (not the product): captured / made, worst process",
                [_ratio_per_process(diag["made"], diag["counts"])],
                note=f"base rate {base:,.0f}/s",
            )
        )
    ctx.shared["capture_extra"] = {
        "storm": {"workers": nproc, "count_per_worker": count, "max_seconds": seconds, "rounds": rounds},
        "product_rates": [p["rate"] for p in res["product"]],
        "bpftrace_rates": [b[1] for b in res["bpftrace"]],
        "none_rates": rates_none,
        "product_losses": [p["losses"] for p in res["product"]],
    }
    return ms
