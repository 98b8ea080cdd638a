"""DIAGNOSIS (not a bench area): where the many-small-writes workload's lost send() calls go.

Alternating rounds of the 64-byte loopback transfer (``bulk_transfer.c``, as ``bench/traffic.py`` runs it):

- ``none``: nothing attached;
- ``empty``: ``r0 = 0; exit`` on sock_send_length and sock_recv_length (tp_btf), no product process at all;
- ``programs``: the collector's programs and maps loaded and attached, no reader thread, no store;
- ``bytes`` / ``connects``: the same with only the byte programs / only the connect programs (the syscall
  tracepoints) left attached;
- ``nobytes``: every collector program but the two byte programs (sock_send_length / sock_recv_length not
  attached at all): the ceiling of counting TCP bytes from the kernel's own per-socket counters
  (``collector/ebpf/tcpcounters.py``, read per drain and at close) instead of a program per call;
- ``cgskb``: ``nobytes`` plus a pass-all cgroup_skb program on the cgroup2 root's ingress and egress: the
  per-packet hook UDP bytes would need where fentry on udp_sendmsg/udp_recvmsg is refused;
- ``product``: the collector feeding a file store as ``bench/traffic.py``'s product round runs it, with the CPU
  this process (the reader, the store's writer) used during the transfer.

Each mode's figures are against the ``none`` round of the same pass (the order of the modes rotates every
pass): send() calls/s, the sender's and receiver's CPU per call, the sender's alone (also as ns per call over
``none``'s: on a busy host the ratios shrink with everyone's load, the added ns much less). A pass during which
another process held eBPF programs is discarded (on a shared machine their programs run on the same calls;
``--keep``: kept, their cost is then in every mode and in ``none``). A last run
with BPF_ENABLE_STATS on counts each program's runs per send() call.

``--profile``: each mode's transfer runs under ``perf record -a -g`` (cpu-clock) instead, and the figures are
shares of the sender's own CPU samples, which the rest of a busy host's load hardly moves: under the two
tracepoints (the dispatch and the program; a JIT-compiled program's samples unwind straight to user space), in
the program itself, in the traced syscall slow path (where any syscall tracepoint with a program, the connect
programs', puts every syscall of every process), and the samples of this process. A sender that spends a share
``s`` of its CPU there makes at most ``1 - s`` of its calls: the ratio those costs alone allow.

``--beside CHECKOUT``: the byte programs of this checkout and of another one (a git worktree at another
commit; ``empty``: the empty program) attached side by side, so both run on every call of the same transfers,
with BPF_ENABLE_STATS on: each one's kernel time per run, and the paired difference per round (which one
attaches first alternates).

    python -m bench.traffic_floor [--rounds 7] [--seconds 2] [--modes empty,programs,product] [--profile]
    python -m bench.traffic_floor --beside /path/to/other/checkout [--rounds 16] [--seconds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.traffic import EmptyPrograms, build, foreign_bpf, product_round, transfer

CHUNK, MAX_BYTES = 64, 1 << 40
#: modes that keep only some of the collector's programs attached
#: (connect_enter: loaded only where connect() is followed at its entry too, as NETSPY_EBPF_CONNECT_ENTRY=1 forces)
KEEP = {"bytes": {"sock_send", "sock_recv"}, "connects": {"connect_enter", "connect_exit"},
        "nobytes": {"connect_enter", "connect_exit", "tcp_state", "conn_destroy", "tcp_retransmit", "skb_drop",
                    "conn_error"}}  # fmt: skip
#: frames of the two tracepoints' dispatch
DISPATCH = ("call_trace_sock_send_length", "call_trace_sock_recv_length", "__traceiter_sock_send_length",
            "__traceiter_sock_recv_length", "__bpf_trace_sock_msg_length", "bpf_trace_run3")  # fmt: skip
#: frames of a syscall's traced slow path
SYSCALL_TRACE = ("syscall_trace_enter", "syscall_exit_work", "perf_syscall_enter", "perf_syscall_exit")


def _programs_only(keep: set[str] | None = None) -> Any:
    """The collector's programs and maps, attached as ``EbpfCollector.start`` attaches them, with no reader;
    ``keep``: only these programs stay attached (the others are detached at once)."""
    from netspy_tui.collector.base import CollectorStats
    from netspy_tui.collector.ebpf.collector import _Session

    session = _Session(CollectorStats(), lambda events: None, 4 << 20, 0.05, 1.0, 0)
    try:
        session.load()
        for i, (name, _, _) in enumerate(session.loaded):
            if keep is not None and name not in keep:
                os.close(session.perf_fds[i])  # the link or perf event: detached
                session.perf_fds[i] = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # (closed by close())
    except BaseException:
        session.close()
        raise
    return session


class EmptyCgroupSkb:
    """``r0 = 1; exit`` (let every packet through) as cgroup_skb programs on the cgroup2 root's ingress and
    egress, linked (closing the links detaches them)."""

    def __init__(self) -> None:
        from netspy_tui.collector.ebpf import syscalls
        from netspy_tui.collector.ebpf.asm import R0, Asm
        from netspy_tui.names.workload import cgroup2_mount

        mount = cgroup2_mount()
        if mount is None:
            raise SystemExit("cgskb: no cgroup2 mount on this host")
        insns = Asm().mov(R0, 1).exit().assemble()
        self.fds: list[int] = []
        try:
            self.fds.append(os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for at in (syscalls.BPF_CGROUP_INET_INGRESS, syscalls.BPF_CGROUP_INET_EGRESS):
                prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_CGROUP_SKB, insns, "nsbench_cgskb", attach_type=at)
                self.fds.append(prog)
                self.fds.append(syscalls.link_create(prog, self.fds[0], at))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds.clear()


@contextlib.contextmanager
def _attached(mode: str) -> Iterator[None]:
    """What ``mode`` (not ``product``) attaches, for the duration of the block."""
    if mode == "cgskb":
        cg = EmptyCgroupSkb()
        try:
            with _attached("nobytes"):
                yield
        finally:
            cg.stop()
    elif mode == "empty":
        empty = EmptyPrograms()
        try:
            yield
        finally:
            empty.stop()
    elif mode in ("programs", *KEEP):
        session = _programs_only(KEEP.get(mode))
        try:
            yield
        finally:
            session.close()
    else:
        yield


def _round(mode: str, exe: Path, seconds: float, db: Path) -> dict[str, Any]:
    """One transfer with ``mode`` attached: :func:`transfer`'s figures (``own_ns`` too for ``product``)."""
    if mode == "product":
        return product_round(exe, CHUNK, MAX_BYTES, seconds, db)
    with _attached(mode):
        return transfer(exe, CHUNK, MAX_BYTES, seconds)


def _figures(m: dict[str, Any], none: dict[str, Any]) -> dict[str, float]:
    """A round's figures against the pass's ``none`` round: calls/s and CPU per call as ratios (without / with)."""

    def per_call(r: dict[str, Any], key: str) -> float:
        return float(r[key] / r["tx_calls"])

    out = {"calls/s": m["tx_calls"] / m["ns"] / (none["tx_calls"] / none["ns"]),
           "CPU per call": per_call(none, "cpu_ns") / per_call(m, "cpu_ns"),
           "sender's CPU per call": per_call(none, "tx_cpu_ns") / per_call(m, "tx_cpu_ns"),
           "sender's ns per call over none": per_call(m, "tx_cpu_ns") - per_call(none, "tx_cpu_ns")}  # fmt: skip
    if "own_ns" in m:
        out["this process, % of a core"] = 100 * m["own_ns"] / m["ns"]
    return out


def _samples(data: Path) -> list[tuple[str, int, list[str]]]:
    """(comm, pid, stack of symbols, leaf first) of every sample ``perf record -g`` wrote to ``data``."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,ip,sym"], capture_output=True, text=True,
                         timeout=300, check=True).stdout  # fmt: skip
    samples = []
    for block in out.split("\n\n"):
        lines = block.strip("\n").splitlines()
        head = lines[0].rsplit(None, 1) if lines else []
        if len(head) != 2 or not head[1].isdigit():
            continue
        # stack lines: "<address> <symbol+offset or [unknown]> (<object>)"
        stack = [ln.split()[1].split("+")[0].split(".")[0] for ln in lines[1:] if len(ln.split()) > 1]
        samples.append((head[0].strip(), int(head[1]), stack))
    return samples


def _profiled(mode: str, exe: Path, seconds: float, tmp: Path) -> dict[str, float]:
    """One transfer with ``mode`` attached under ``perf record``: shares of the sender's CPU samples (%)."""
    data = tmp / "perf.data"
    wrapper = tmp / "perf-wrap"  # (product_round runs the transfer itself)
    wrapper.write_text(f'#!/bin/sh\nexec perf record -a -g -F 2999 -e cpu-clock -q -o {data} -- {exe} "$@"\n')
    wrapper.chmod(0o700)
    _round(mode, wrapper, seconds, tmp / "traffic.db")
    n: Counter[str] = Counter()
    for comm, pid, stack in _samples(data):
        n["this process"] += pid == os.getpid()
        if comm != "nsbench-tx":
            continue
        n["sender"] += 1
        in_prog = any(s.startswith("bpf_prog_") for s in stack)
        n["under the tracepoints"] += in_prog or any(s in DISPATCH for s in stack)
        n["in the programs"] += in_prog
        n["in traced syscall entry/exit"] += any(s in SYSCALL_TRACE for s in stack)
    data.unlink()
    return {key: 100 * n[key] / max(1, n["sender"]) for key in
            ("under the tracepoints", "in the programs", "in traced syscall entry/exit", "this process")}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--modes", default="empty,programs,product")
    ap.add_argument("--profile", action="store_true", help="shares of the sender's CPU samples (perf)")
    ap.add_argument("--beside", type=Path, help="another checkout: its byte programs' kernel time beside these")
    ap.add_argument("--keep", action="store_true", help="keep passes during which others held eBPF programs")
    ap.add_argument("--hold", choices=("bytes", "empty"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hold:
        _hold(args.hold == "empty")
        return
    modes = args.modes.split(",") + (["none"] if args.profile else [])
    res: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        exe = build(tmp)
        transfer(exe, 65536, MAX_BYTES, 0.3)  # warm-up
        if args.beside:
            _beside(args.beside if str(args.beside) == "empty" else args.beside.resolve(), exe, args.rounds,
                    args.seconds)  # fmt: skip
            return
        for r in range(args.rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            others = foreign_bpf()
            got: dict[str, dict[str, float]] = {}
            none = None if args.profile else transfer(exe, CHUNK, MAX_BYTES, args.seconds)
            for mode in order:
                others += foreign_bpf()
                if args.profile:
                    got[mode] = _profiled(mode, exe, args.seconds, tmp)
                else:
                    got[mode] = _figures(_round(mode, exe, args.seconds, tmp / "traffic.db"), none)  # type: ignore[arg-type]
            others += foreign_bpf()
            line = "; ".join(f"{mode} " + ", ".join(f"{k} {v:.3f}" for k, v in got[mode].items()) for mode in order)
            if others and not args.keep:
                print(f"pass {r + 1} DISCARDED (eBPF of pids {sorted(set(others))} too): {line}", flush=True)
                continue
            print(f"pass {r + 1}: {line}", flush=True)
            for mode in order:
                res[mode].append(got[mode])
        for mode, rounds in res.items():
            if rounds:
                print(f"{mode} (n={len(rounds)}): " + "; ".join(
                    f"{k} median {statistics.median(v):.3f} ({min(v):.3f}..{max(v):.3f})"
                    for k, v in ((k, [x[k] for x in rounds]) for k in rounds[0])))  # fmt: skip
        if not args.profile:
            _runs_per_call(exe, args.seconds)


def _hold(empty: bool) -> None:
    """``--hold``: the byte programs (``empty``: the empty program in their place) attached until stdin closes;
    their ids on stdout (for ``--beside``)."""
    from netspy_tui.collector.ebpf import syscalls

    if empty:
        programs = EmptyPrograms()
        # (fds: program, link, program, link; send first)
        ids = zip(("sock_send", "sock_recv"), (syscalls.prog_id(fd) for fd in programs.fds[::2]), strict=True)
        close = programs.stop
    else:
        session = _programs_only(KEEP["bytes"])
        ids = ((name, prog_id) for name, prog_id, _ in session.loaded if name in KEEP["bytes"])
        close = session.close
    try:
        print(" ".join(f"{name}={prog_id}" for name, prog_id in ids), flush=True)
        sys.stdin.read()
    finally:
        close()


def _run_stats(prog_id: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program, by id (it may be another process's)."""
    from netspy_tui.collector.ebpf import syscalls

    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<I", attr, 0, prog_id)
    fd = syscalls._bpf(syscalls.BPF_PROG_GET_FD_BY_ID, attr, f"opening program {prog_id}")
    try:
        run_ns, runs, _ = syscalls.prog_run_stats(fd)
    finally:
        os.close(fd)
    return run_ns, runs


def _beside(other: Path, exe: Path, rounds: int, seconds: float) -> None:
    """This checkout's byte programs and ``other``'s side by side: kernel ns per run of each, per round."""
    from netspy_tui.collector.ebpf import syscalls

    here = Path(__file__).resolve().parent.parent
    roots = {}
    for side, checkout in (("this", here), ("other", here if str(other) == "empty" else other)):
        # that checkout's product with this checkout's bench (an older one may have no --hold)
        roots[side] = exe.parent / f"beside-{side}"
        roots[side].mkdir(exist_ok=True)
        for package, src in (("netspy_tui", checkout), ("bench", here)):
            if not (roots[side] / package).exists():
                (roots[side] / package).symlink_to(src / package)

    def holder(side: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
        env = {**os.environ, "PYTHONPATH": str(roots[side])}
        what = "empty" if side == "other" and str(other) == "empty" else "bytes"
        proc = subprocess.Popen([sys.executable, "-m", "bench.traffic_floor", "--hold", what], cwd=roots[side], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None
        ids = dict(item.split("=") for item in proc.stdout.readline().split())
        return proc, {name: int(i) for name, i in ids.items()}

    per_run: dict[str, dict[str, list[float]]] = {"this": {}, "other": {}}
    for r in range(rounds):
        held = {side: holder(side) for side in ("this", "other")[:: 1 if r % 2 == 0 else -1]}
        try:
            stats_fd = syscalls.enable_stats()
            try:
                before = {side: {n: _run_stats(i) for n, i in ids.items()} for side, (_, ids) in held.items()}
                transfer(exe, CHUNK, MAX_BYTES, seconds)
                for side, (_, ids) in held.items():
                    for name, prog_id in ids.items():
                        (ns1, n1), (ns0, n0) = _run_stats(prog_id), before[side][name]
                        per_run[side].setdefault(name, []).append((ns1 - ns0) / max(1, n1 - n0))
            finally:
                os.close(stats_fd)
        finally:
            for proc, _ in held.values():
                proc.communicate("")
    for name in per_run["this"]:
        this, that = per_run["this"][name], per_run["other"].get(name, [])
        diff = [a - b for a, b in zip(this, that, strict=True)]
        print(f"{name}: this checkout {statistics.median(this):.1f} ns/run ({min(this):.1f}..{max(this):.1f}), "
              f"{other} {statistics.median(that):.1f} ({min(that):.1f}..{max(that):.1f}); paired this - other "
              f"median {statistics.median(diff):+.1f} ns ({min(diff):+.1f}..{max(diff):+.1f}), this faster in "
              f"{sum(d < 0 for d in diff)} of {len(diff)} rounds")  # fmt: skip


def _runs_per_call(exe: Path, seconds: float) -> None:
    """Each attached program's runs and kernel ns per send() call (BPF_ENABLE_STATS, programs only)."""
    from netspy_tui.collector.ebpf import syscalls

    stats_fd = syscalls.enable_stats()
    try:
        session = _programs_only()
        try:
            moved = transfer(exe, CHUNK, MAX_BYTES, seconds)
            for name, run_ns, runs, _ in session.program_stats():
                if runs:
                    print(f"stats: {name}: {runs / moved['tx_calls']:.4f} runs per send(), {run_ns / runs:.1f} ns/run")
        finally:
            session.close()
    finally:
        os.close(stats_fd)


if __name__ == "__main__":
    main()
