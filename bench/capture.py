"""Capture: a loopback connect() storm with the eBPF collector attached, against bpftrace counting
the same tracepoint on the same load; the overhead on the storm's rate; the reader's CPU.

Load: ``connect_storm.c`` (compiled here into a temp dir): W worker processes, each making blocking
TCP connects to a bound-but-not-listening port on 127.0.0.1 (refused at once by the loopback
stack: nothing leaves the host), bounded by count and time. Each connect also makes the kernel drop
the SYN (``NO_SOCKET``), so the collector sees two events per connect.

Rounds (repeated, in turn, so each ratio compares runs made seconds apart): no tracer; bpftrace
(``tracepoint:syscalls:sys_enter_connect { @[pid] = count(); }``); the collector with a sink that
reads every event (the cheapest real consumer); and, fewer times, the collector feeding the real
store (``EmbeddedSource``). One more round runs bpftrace and the collector on the same storm at once.
Needs root (eBPF, tracefs); skips with a line saying so otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import synth
from bench.common import REPO, Context, Metric, metric, skipped

NAME = "capture"
TARGET_CAPTURE, TARGET_OVERHEAD, TARGET_READER_S = 1.0, 0.95, 0.13


def build_generator(tmp: Path) -> Path:
    exe = tmp / "connect_storm"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(REPO / "bench" / "connect_storm.c")], check=True,
                   capture_output=True, timeout=120)
    return exe


def storm(exe: Path, port: int, workers: int, count: int, seconds: float) -> tuple[dict[int, int], float]:
    """Run the storm; returns ({worker pid: connects made}, connects per second)."""
    r = subprocess.run([str(exe), str(port), str(workers), str(count), str(seconds)], capture_output=True,
                       text=True, timeout=seconds + 60, check=True)
    per: dict[int, int] = {}
    total = elapsed = 0
    for line in r.stdout.splitlines():
        a, b, c = line.split()
        if a == "total":
            total, elapsed = int(b), int(c)
        else:
            per[int(a)] = int(b)
    return per, total / (elapsed / 1e9)


class Bpftrace:
    """bpftrace counting sys_enter_connect per pid, from attach to SIGINT."""

    PROG = "tracepoint:syscalls:sys_enter_connect { @[pid] = count(); }"

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["bpftrace", "-e", self.PROG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "Attaching 1 probe..." once attached
        if "Attaching" not in line:
            self.proc.kill()
            raise RuntimeError(f"bpftrace did not attach: {line!r} {self.proc.stderr.read()[-300:]!r}")  # type: ignore[union-attr]
        time.sleep(1.0)  # bpftrace prints "Attaching" before the probe is live

    def stop(self) -> dict[int, int]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
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


def _collector_round(exe: Path, port: int, workers: int, count: int, seconds: float, store: bool) -> dict[str, Any]:
    from netspy_tui.collector.ebpf import EbpfCollector

    collector = EbpfCollector()
    counter = CountingSink(port)
    source = None
    if store:
        from netspy_tui.store.sqlite import EventStore
        from netspy_tui.telemetry.embedded import EmbeddedSource

        source = EmbeddedSource(None, EventStore(None), reason="bench")
        store_sink = source.sink

        def sink(batch: Sequence[Any]) -> None:
            counter(batch)
            store_sink(batch)
    else:
        sink = counter
    collector.start(sink)
    try:
        ev0, lost0, cpu0 = collector.stats.events, collector.stats.lost, collector.reader_cpu_seconds
        made, rate = storm(exe, port, workers, count, seconds)
        total = sum(made.values())
        deadline = time.monotonic() + 10
        while counter.total() < total and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(collector.poll_interval * 3)  # the drops of the last connects
        events = collector.stats.events - ev0
        cpu = collector.reader_cpu_seconds - cpu0
        lost = collector.stats.lost - lost0 + (source.store_sink.lost if source else 0)
    finally:
        collector.stop()
        if source is not None:
            source.store.close()
    return {"made": made, "rate": rate, "counts": dict(counter.counts), "events": events, "reader_cpu": cpu,
            "lost": lost}


def _kernel_only_round(exe: Path, port: int, workers: int, count: int, seconds: float) -> dict[str, Any]:
    """The programs attached, the reader asleep during the storm: a 128 MiB ring (its quarter-full
    wakeup is ~380k records away) and a 5 s poll timer, the storm shorter than both. What remains
    is the cost on the traced connect() path itself. The reader catches up at stop."""
    from netspy_tui.collector.ebpf import EbpfCollector

    collector = EbpfCollector(ring_bytes=128 << 20, poll_interval=5.0)
    counter = CountingSink(port)
    collector.start(counter)
    t0 = time.monotonic()
    try:
        made, rate = storm(exe, port, workers, count, seconds)
        during = time.monotonic() - t0
    finally:
        collector.stop()
    return {"made": made, "rate": rate, "counts": dict(counter.counts), "asleep": during < 4.5}


def _ratio_per_process(made: dict[int, int], counts: dict[int, int]) -> float:
    """The worst process's captured/made (1.0 = every connect of every process captured)."""
    return min((counts.get(pid, 0) / n for pid, n in made.items() if n), default=0.0)


def offline_decode(quick: bool) -> Metric:
    """Decoder.feed CPU per 100,000 records of the storm's shape (no kernel; synthetic records)."""
    n = 20_000 if quick else 200_000
    recs = synth.storm_records(n)
    dec = synth.decoder()
    samples = []
    for _ in range(3 if quick else 7):
        t0 = time.thread_time()
        for i in range(0, n, 4096):
            dec.feed(recs[i : i + 4096], now_ns=synth.TS_NOW)
        samples.append((time.thread_time() - t0) / n * 1e5)
    return metric(NAME, "decoder only, offline storm-shaped records, per 100k events", samples, "s CPU",
                  target=TARGET_READER_S)


def columnar_prototype(quick: bool) -> list[Metric]:
    """Reader-thread CPU per 100k events: today's decode + ``store.add_events`` against the columnar
    prototype (:mod:`bench.columnar`), same records, same store schema."""
    from bench.columnar import ingest_columnar, rows
    from netspy_tui.store.sqlite import EventStore

    n = 20_000 if quick else 100_000
    recs = synth.storm_records(n)
    # the prototype's bodies parse to the same events as the product's (ids aside)
    dec_a, dec_b = synth.decoder(), synth.decoder()
    dec_b.clock._offset_ns = dec_a.clock._offset_ns
    product = dec_a.feed(recs[:200], now_ns=synth.TS_NOW)
    _, bodies, _ = rows(dec_b, recs[:200], 0)
    got = sorted((json.loads(b) for _, b in bodies), key=lambda e: e["timestamp"])
    want = sorted((json.loads(e.model_dump_json()) for e in product), key=lambda e: e["timestamp"])
    for g, w in zip(got, want, strict=True):
        g.pop("id"), w.pop("id")
        if g != w and g.get("time", "").endswith(".000000Z"):
            g["time"] = g["time"].replace(".000000Z", "Z")
        assert g == w, (g, w)
    out: dict[str, list[float]] = {"product": [], "proto": [], "proto_rows": []}
    for _ in range(2 if quick else 5):
        for label in out:
            store = EventStore(None, retention_seconds=None, max_rows=None)
            dec = synth.decoder()
            t0 = time.thread_time()
            for i in range(0, n, 4096):
                chunk = recs[i : i + 4096]
                if label == "product":
                    store.add_events(dec.feed(chunk, now_ns=synth.TS_NOW))
                elif label == "proto":
                    ingest_columnar(dec, store, chunk)
                else:
                    rows(dec, chunk, i)
            out[label].append((time.thread_time() - t0) / n * 1e5)
            if label != "proto_rows":
                assert store.row_count() == n
            store.close()
    base = float(np.median(out["product"]))
    return [
        metric(NAME, "decode + store ingest today, offline, per 100k events", out["product"], "s CPU"),
        metric(NAME, "PROTOTYPE columnar decode + store ingest, per 100k", out["proto"], "s CPU")
        .set_baseline(base, "today"),
        metric(NAME, "PROTOTYPE columnar decode to store rows only, per 100k", out["proto_rows"], "s CPU",
               target=TARGET_READER_S),
    ]


def run(ctx: Context) -> list[Metric]:
    ms = [offline_decode(ctx.quick), *columnar_prototype(ctx.quick)]
    why = ""
    if os.geteuid() != 0:
        why = "not root: the eBPF collector and bpftrace need root (run the benchmark as root)"
    elif shutil.which("gcc") is None:
        why = "no gcc to build the connect() generator"
    elif shutil.which("bpftrace") is None:
        why = "no bpftrace (apt-get install -y bpftrace)"
    elif not Path("/sys/kernel/tracing/events").is_dir():
        why = "tracefs is not mounted at /sys/kernel/tracing (mount -t tracefs nodev /sys/kernel/tracing)"
    if why:
        ctx.log(f"capture: SKIPPED live part: {why}")
        return ms + [
            skipped(NAME, "events captured / connects made, worst process", why, target=TARGET_CAPTURE, op=">="),
            skipped(NAME, "connects/s with collector / without", why, target=TARGET_OVERHEAD, op=">="),
            skipped(NAME, "reader CPU per 100k events (live)", why, "s", target=TARGET_READER_S),
        ]
    exe = build_generator(ctx.tmp)
    nproc = os.cpu_count() or 1
    rounds = 1 if ctx.quick else 5
    count, seconds = (20_000, 1.0) if ctx.quick else (200_000, 3.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        port = closed.getsockname()[1]
        storm(exe, port, nproc, count // 10, 0.5)  # warm-up
        res: dict[str, list[Any]] = {"none": [], "bpftrace": [], "collector": [], "store": [], "none1": [],
                                     "collector1": [], "both": [], "kernel": [], "none_short": []}
        for r in range(rounds):
            ctx.log(f"capture: round {r + 1}/{rounds} ({nproc} workers)")
            res["none"].append(storm(exe, port, nproc, count, seconds))
            bt = Bpftrace()
            made, rate = storm(exe, port, nproc, count, seconds)
            res["bpftrace"].append((made, rate, bt.stop()))
            res["collector"].append(_collector_round(exe, port, nproc, count, seconds, store=False))
            short = min(seconds, 1.0)
            res["none_short"].append(storm(exe, port, nproc, count, short))
            res["kernel"].append(_kernel_only_round(exe, port, nproc, count, short))
            if r < max(1, rounds // 2):
                res["store"].append(_collector_round(exe, port, nproc, count, seconds, store=True))
                res["none1"].append(storm(exe, port, 1, count, seconds))
                res["collector1"].append(_collector_round(exe, port, 1, count, seconds, store=False))
        ctx.log("capture: bpftrace and the collector on the same storm")
        bt = Bpftrace()
        both = _collector_round(exe, port, nproc, count, seconds, store=False)
        bt_counts = bt.stop()
    # --- figures ---------------------------------------------------------------------------
    rates_none = [r for _, r in res["none"]]
    capture = [_ratio_per_process(c["made"], c["counts"]) for c in res["collector"]]
    bt_capture = [_ratio_per_process(m, counts) for m, _, counts in res["bpftrace"]]
    overhead = [c["rate"] / n for c, n in zip(res["collector"], rates_none, strict=True)]
    bt_overhead = [b[1] / n for b, n in zip(res["bpftrace"], rates_none, strict=True)]
    reader = [c["reader_cpu"] / c["events"] * 1e5 for c in res["collector"] if c["events"]]
    lost = [float(c["lost"]) for c in res["collector"]]
    store_capture = [_ratio_per_process(c["made"], c["counts"]) for c in res["store"]]
    store_reader = [c["reader_cpu"] / c["events"] * 1e5 for c in res["store"] if c["events"]]
    store_lost = [float(c["lost"]) for c in res["store"]]
    over1 = [c["rate"] / n for c, (_, n) in zip(res["collector1"], res["none1"], strict=True)]
    kernel = [k["rate"] / n for k, (_, n) in zip(res["kernel"], res["none_short"], strict=True) if k["asleep"]]
    kernel_capture = [_ratio_per_process(k["made"], k["counts"]) for k in res["kernel"]]
    same = min((both["counts"].get(pid, 0) / bt_counts.get(pid, 1) for pid in both["made"]), default=0.0)
    bt_vs_made = min((bt_counts.get(pid, 0) / n for pid, n in both["made"].items()), default=0.0)
    ms += [
        metric(NAME, f"storm rate without tracing ({nproc} workers)", rates_none, "connects/s",
               note="target >= 50,000/s if a generator here reaches it"),
        metric(NAME, "events captured / connects made, worst process (collector)", capture, target=TARGET_CAPTURE,
               op=">=").set_baseline(float(np.median(bt_capture)), "bpftrace"),
        Metric(NAME, "collector count / bpftrace count, same storm, worst process", same, target=TARGET_CAPTURE,
               op=">=", note=f"bpftrace/made {bt_vs_made:.4f}"),
        metric(NAME, "records lost per storm (collector)", lost, "events", target=0.0),
        metric(NAME, "connects/s with collector / without", overhead, target=TARGET_OVERHEAD, op=">=")
        .set_baseline(float(np.median(bt_overhead)), "bpftrace ratio", ratio=None),
        metric(NAME, "connects/s with bpftrace / without", bt_overhead, target=TARGET_OVERHEAD, op=">="),
        metric(NAME, "connects/s with collector / without, 1 worker (a core spare)", over1, target=TARGET_OVERHEAD,
               op=">="),
        metric(NAME, "connects/s, programs attached but reader asleep / without (kernel side only)", kernel,
               target=TARGET_OVERHEAD, op=">=", note="1 s storms; the reader drains the 128 MiB ring at stop"),
        metric(NAME, "captured / made, reader asleep during the storm", kernel_capture, target=TARGET_CAPTURE,
               op=">="),
        metric(NAME, "reader CPU per 100k events (live, counting sink)", reader, "s", target=TARGET_READER_S),
        metric(NAME, "reader CPU per 100k events (live, store sink)", store_reader, "s"),
        metric(NAME, "captured / made with the store sink, worst process", store_capture, target=TARGET_CAPTURE,
               op=">="),
        metric(NAME, "records lost per storm with the store sink", store_lost, "events", target=0.0),
    ]
    ctx.shared["capture_extra"] = {"storm": {"workers": nproc, "count_per_worker": count, "max_seconds": seconds,
                                             "rounds": rounds},
                                   "collector_rates": [c["rate"] for c in res["collector"]],
                                   "bpftrace_rates": [b[1] for b in res["bpftrace"]],
                                   "none_rates": rates_none}
    return ms
