"""Traffic: what counting every byte in the kernel costs a loopback transfer, and whether the count is exact.

Load: ``bulk_transfer.c`` (compiled here into a temp dir): one TCP connection over 127.0.0.1, a
sender process writing fixed-size buffers (64 KiB: a bulk transfer; 64 bytes: many small writes)
for a bounded time or byte count, a receiver reading until EOF. Rounds, in turn, per workload: no
tracer; the product (``EbpfCollector`` feeding ``EmbeddedSource``'s store, a file); bpftrace alone
summing the same two tracepoints per pid; the product and bpftrace on the same transfer. Ratios are
against the untraced round just before. Exactness: the store's ``traffic`` totals for the sender's
and the receiver's pids against what the workload says it moved (and against bpftrace's sums).
Needs root (eBPF, tracefs), gcc and bpftrace; skips with a line saying so otherwise.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Context, Metric, interrupt, live_ebpf_missing, metric, run_measured, skipped

NAME = "traffic"
TARGET_BULK, TARGET_SMALL, TARGET_EXACT = 0.95, 0.90, 1.0
WORKLOADS = {"bulk": 65536, "small": 64}  # bytes per write()


def foreign_bpf() -> list[int]:
    """Other processes holding eBPF programs or BPF_ENABLE_STATS open: on this shared machine another
    session's collector or bpftrace runs on the same send() calls (and stats make every program read the
    clock twice), which makes a pass worthless."""
    me, pids = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in ("anon_inode:bpf-prog", "anon_inode:bpf-stats"):
                    pids.append(int(proc.name))
                    break
        except OSError:
            continue  # gone, or a kernel thread
    return pids


def build(tmp: Path) -> Path:
    exe = tmp / "bulk_transfer"
    subprocess.run(
        ["gcc", "-O2", "-o", str(exe), str(REPO / "bench" / "bulk_transfer.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return exe


def transfer(exe: Path, chunk: int, max_bytes: int, seconds: float) -> dict[str, int]:
    """Run one transfer: sender and receiver pids, bytes, calls, the sending time (ns), the CPU both
    processes used (``cpu_ns``: the kernel time of the programs included) and the sender's CPU while it
    sent (``tx_cpu_ns``)."""
    stdout, cpu = run_measured([str(exe), str(chunk), str(max_bytes), str(seconds)], seconds + 60)
    out: dict[str, int] = {"cpu_ns": int(cpu * 1e9)}
    for line in stdout.splitlines():
        parts = line.split()
        if parts[0] == "tx":
            out.update(tx_pid=int(parts[1]), tx_bytes=int(parts[2]), tx_calls=int(parts[3]), ns=int(parts[4]),
                       tx_cpu_ns=int(parts[5]))  # fmt: skip
        elif parts[0] == "rx":
            out.update(rx_pid=int(parts[1]), rx_bytes=int(parts[2]), rx_calls=int(parts[3]))
    return out


class Bpftrace:
    """bpftrace summing sock_send_length / sock_recv_length bytes per pid (as the collector counts them)."""

    PROG = (
        "tracepoint:sock:sock_send_length /args->ret > 0/ { @tx[pid] = sum(args->ret); } "
        "tracepoint:sock:sock_recv_length /args->ret > 0 && !(args->flags & 2)/ { @rx[pid] = sum(args->ret); }"
    )

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["bpftrace", "-e", self.PROG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "Attaching" not in line:
            self.proc.kill()
            raise RuntimeError(f"bpftrace did not attach: {line!r} {self.proc.stderr.read()[-300:]!r}")  # type: ignore[union-attr]
        time.sleep(1.0)  # "Attaching" comes before the probes are live

    def stop(self) -> dict[str, dict[int, int]]:
        out = interrupt(self.proc)
        sums: dict[str, dict[int, int]] = {"tx": {}, "rx": {}}
        for m in re.finditer(r"@(tx|rx)\[(\d+)\]: (\d+)", out):
            sums[m.group(1)][int(m.group(2))] = int(m.group(3))
        return sums


class EmptyPrograms:
    """The floor of any program on these tracepoints: ``r0 = 0; exit`` attached as the collector attaches its own
    (BTF-typed where the kernel allows, else raw tracepoint) to sock_send_length and sock_recv_length. What a
    send() pays with it is the tracepoints' dispatch alone, which no program can go under."""

    def __init__(self) -> None:
        from netspy_tui.collector.ebpf import btf, syscalls
        from netspy_tui.collector.ebpf.asm import R0, Asm

        insns = Asm().mov(R0, 0).exit().assemble()
        self.fds: list[int] = []
        self.kind = "tp_btf"
        try:
            for tp in ("sock_send_length", "sock_recv_length"):
                try:
                    prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACING, insns, "nsbench_empty",
                                              attach_type=syscalls.BPF_TRACE_RAW_TP,
                                              attach_btf_id=btf.vmlinux().raw_tracepoint_id(tp))  # fmt: skip
                    self.fds.append(prog)
                    self.fds.append(syscalls.raw_tracepoint_open(None, prog))
                except (OSError, btf.BtfError):
                    self.kind = "raw tracepoint"
                    prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT, insns, "nsbench_empty")
                    self.fds.append(prog)
                    self.fds.append(syscalls.raw_tracepoint_open(tp, prog))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        from netspy_tui.collector.ebpf import syscalls

        for fd in reversed(self.fds):
            syscalls.close_fd(fd)
        self.fds.clear()


def own_cpu_ns() -> int:
    """CPU time (ns, user + system) every thread of this process has used so far, ended ones included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def product_round(exe: Path, chunk: int, max_bytes: int, seconds: float, db: Path) -> dict[str, Any]:
    """The product path: the collector feeding a file store; then the store's own traffic figures, and the
    CPU this process (the collector's reader, the store's writer) used while the transfer ran (``own_ns``)."""
    from netspy_tui.collector.ebpf import EbpfCollector
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = EventStore(db)
    source = EmbeddedSource(EbpfCollector(), store)
    asyncio.run(source.start())
    assert source.collector is not None
    try:
        own = own_cpu_ns()
        moved = transfer(exe, chunk, max_bytes, seconds)
        moved["own_ns"] = own_cpu_ns() - own
        runs = {name: run_ns / max(1, n) for name, run_ns, n, _ in source.collector.program_stats()}
    finally:
        source.collector.stop()  # drains the last counts
    try:
        store.flush(60)
        tx = store.traffic(moved["tx_pid"], None, 600)
        rx = store.traffic(moved["rx_pid"], None, 600)
    finally:
        store.close()
    return {**moved, "store_tx": tx.tx_bytes, "store_rx": rx.rx_bytes, "send_ns": runs.get("sock_send", 0.0),
            "recv_ns": runs.get("sock_recv", 0.0)}  # fmt: skip


def run(ctx: Context) -> list[Metric]:
    why = live_ebpf_missing(
        "transfer generator",
        "sock/sock_send_length",
        "no sock/sock_send_length tracepoint (Linux 6.3 or later, tracefs at /sys/kernel/tracing)",
    )
    if why:
        ctx.log(f"traffic: SKIPPED: {why}")
        return [skipped(NAME, "bulk transfer: bytes/s with the collector / without", why, target=TARGET_BULK, op=">="),
                skipped(NAME, "small writes: send() calls/s with the collector / without", why, target=TARGET_SMALL,
                        op=">=")]  # fmt: skip

    exe = build(ctx.tmp)
    db = ctx.tmp / "traffic.db"
    others = foreign_bpf()
    if others:
        ctx.log(f"traffic: WARNING: processes {others} hold eBPF programs: theirs may run on the same calls")
    rounds = 1 if ctx.quick else 3
    seconds = 0.5 if ctx.quick else 2.0
    max_bytes = 1 << 40  # bounded by time
    transfer(exe, WORKLOADS["bulk"], max_bytes, 0.3)  # warm-up
    ms: list[Metric] = []
    extra: dict[str, Any] = {}
    for workload, chunk in WORKLOADS.items():
        _workload(ctx, exe, db, workload, chunk, rounds, seconds, max_bytes, ms, extra)
    ctx.shared["traffic_extra"] = {"chunk_bytes": WORKLOADS, "seconds": seconds, "rounds": rounds, **extra}
    return ms


def _workload(ctx: Context, exe: Path, db: Path, workload: str, chunk: int, rounds: int, seconds: float,
              max_bytes: int, ms: list[Metric], extra: dict[str, Any]) -> None:  # fmt: skip
    """One workload's rounds and figures (appended to ``ms``)."""
    from netspy_tui.collector.ebpf import syscalls

    res: dict[str, list[Any]] = {k: [] for k in ("none", "product", "bpftrace", "both", "empty", "stats")}
    floor = workload == "small" and not ctx.quick  # DIAGNOSIS: the tracepoints' own dispatch cost
    for r in range(rounds):
        ctx.log(f"traffic: {workload} round {r + 1}/{rounds}")
        res["none"].append(transfer(exe, chunk, max_bytes, seconds))
        if floor:
            empty = EmptyPrograms()
            try:
                res["empty"].append((transfer(exe, chunk, max_bytes, seconds), empty.kind))
            finally:
                empty.stop()
        res["product"].append(product_round(exe, chunk, max_bytes, seconds, db))
        # per-program kernel time in a round of its own: while BPF_ENABLE_STATS is on, every program
        # run (bpftrace's and the empty program's too) pays two clock reads, which the ratios must not carry
        stats_fd = syscalls.enable_stats()
        try:
            res["stats"].append(product_round(exe, chunk, max_bytes, seconds, db))
        finally:
            os.close(stats_fd)
        bt = Bpftrace()
        moved = transfer(exe, chunk, max_bytes, seconds)
        res["bpftrace"].append((moved, bt.stop()))
        bt = Bpftrace()
        both = product_round(exe, chunk, max_bytes, seconds, db)
        res["both"].append((both, bt.stop()))

    def rate(m: dict[str, int], calls: bool = False) -> float:
        return (m["tx_calls"] if calls else m["tx_bytes"]) / (m["ns"] / 1e9)

    calls = workload == "small"

    def cost(m: dict[str, int], per_call: bool = calls) -> float:
        """CPU (ns) the two processes spent per write() (small) or per byte (bulk)."""
        return m["cpu_ns"] / (m["tx_calls"] if per_call else m["tx_bytes"])

    cpu_product = [cost(n) / cost(p) for p, n in zip(res["product"], res["none"], strict=True)]
    cpu_bpftrace = [cost(n) / cost(m) for (m, _), n in zip(res["bpftrace"], res["none"], strict=True)]
    none = [rate(m, calls) for m in res["none"]]
    product = [rate(p, calls) / n for p, n in zip(res["product"], none, strict=True)]
    bpftrace = [rate(m, calls) / n for (m, _), n in zip(res["bpftrace"], none, strict=True)]
    exact = [min(p["store_tx"] / p["tx_bytes"], p["store_rx"] / p["rx_bytes"])
             for p in res["product"] + res["stats"] + [b for b, _ in res["both"]]]  # fmt: skip
    vs_bt = [min(p["store_tx"] / max(1, bt["tx"].get(p["tx_pid"], 0)),
                 p["store_rx"] / max(1, bt["rx"].get(p["rx_pid"], 0))) for p, bt in res["both"]]  # fmt: skip
    bt_exact = [min(bt["tx"].get(m["tx_pid"], 0) / m["tx_bytes"], bt["rx"].get(m["rx_pid"], 0) / m["rx_bytes"])
                for m, bt in res["bpftrace"]]  # fmt: skip
    if calls:
        ms.append(metric(NAME, "small writes (64 B): send() calls/s without tracing", none, "calls/s"))
        ms.append(metric(NAME, "small writes: send() calls/s with the collector / without", product,
                         target=TARGET_SMALL, op=">=").set_baseline(float(np.median(bpftrace)), "bpftrace ratio",
                                                                    ratio=None))  # fmt: skip
        ms.append(metric(NAME, "small writes: send() calls/s with bpftrace / without", bpftrace))
        if res["empty"]:
            dispatch = [rate(m, calls) / n for (m, _), n in zip(res["empty"], none, strict=True)]
            ms.append(metric(NAME, "DIAGNOSIS: small writes with an empty program on the same two tracepoints / "
                             "without", dispatch, note=f"r0 = 0; exit, attached as {res['empty'][0][1]}: the "
                             "dispatch floor no program goes under"))  # fmt: skip
    else:
        ms.append(metric(NAME, "bulk transfer (64 KiB writes): MB/s without tracing", [n / 1e6 for n in none],
                         "MB/s"))  # fmt: skip
        ms.append(metric(NAME, "bulk transfer: bytes/s with the collector / without", product, target=TARGET_BULK,
                         op=">=").set_baseline(float(np.median(bpftrace)), "bpftrace ratio",
                                               ratio=None))  # fmt: skip
        ms.append(metric(NAME, "bulk transfer: bytes/s with bpftrace / without", bpftrace))
    what = "CPU per write()" if calls else "CPU per byte"
    ms.append(metric(NAME, f"{workload}: {what} of sender + receiver, without / with the collector", cpu_product,
                     note="steadier than the rate on a busy host").set_baseline(
                         float(np.median(cpu_bpftrace)), "bpftrace", ratio=None))  # fmt: skip
    if calls:
        sender = [n["tx_cpu_ns"] / n["tx_calls"] / (p["tx_cpu_ns"] / p["tx_calls"])
                  for p, n in zip(res["product"], res["none"], strict=True)]  # fmt: skip
        ms.append(metric(NAME, "small: the sender's own CPU per write(), without / with the collector", sender,
                         note="what the rate would be were the sender alone on its core"))  # fmt: skip
        ms.append(metric(NAME, "small: the collector's process CPU while the transfer runs",
                         [100 * p["own_ns"] / p["ns"] for p in res["product"]], "% of a core",
                         note="reader and store writer: on 2 cores it competes with the transfer"))  # fmt: skip
    ms.append(metric(NAME, f"{workload}: store bytes / bytes moved, worst direction", exact, target=TARGET_EXACT,
                     op=">=", note="the store's traffic() for the sender's and the receiver's pid"))  # fmt: skip
    ms.append(metric(NAME, f"{workload}: store bytes / bpftrace's sum, same transfer, worst direction", vs_bt,
                     target=TARGET_EXACT, op=">="))  # fmt: skip
    ms.append(metric(NAME, f"{workload}: bpftrace's sum / bytes moved, worst direction", bt_exact))
    for prog, key in (("sock_send", "send_ns"), ("sock_recv", "recv_ns")):
        ms.append(metric(NAME, f"{workload}: kernel time per run: {prog}", [p[key] for p in res["stats"]], "ns",
                         note="BPF_ENABLE_STATS, in a round of its own"))  # fmt: skip
    extra[workload] = {"none": res["none"], "product": res["product"],
                       "bpftrace": [m for m, _ in res["bpftrace"]], "stats": res["stats"]}  # fmt: skip
