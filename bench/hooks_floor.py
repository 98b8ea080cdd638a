"""DIAGNOSIS (not a bench area): what following connect() costs by the hook alone, before any program work.

The collector follows connects on the ``syscalls/sys_exit_connect`` tracepoint alone where the kernel lets it read
a task's saved registers (x86_64 with BTF), else on ``sys_enter_connect`` too; any program on a syscall
tracepoint also puts every other syscall of every process through the kernel's traced entry and exit.
The alternative is the cgroup connect hook (``BPF_CGROUP_INET4_CONNECT`` at the
cgroup v2 root: runs on IPv4 connects only), which sees no return code. This runs the capture area's
loopback storm (``connect_storm.c``, 2 workers, every connect refused) in alternating rounds:

- ``none``: nothing attached;
- ``syscall tracepoints``: ``r0 = 0; exit`` on both connect tracepoints;
- ``syscall exit``: the same on ``sys_exit_connect`` alone (what the collector attaches where it can);
- ``cgroup connect4``: ``r0 = 1; exit`` (allow) attached to the cgroup v2 root.

It prints each mode's connects/s against ``none``'s and the storm's CPU per connect over ``none``'s. Root,
gcc and a cgroup v2 mount are needed; every program is detached and closed before it returns.

    sudo python -m bench.hooks_floor [--rounds 9] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.capture import build_generator, storm
from bench.common import free_port
from netspy_tui.collector.ebpf import syscalls, tracefs

BPF_PROG_ATTACH, BPF_PROG_DETACH = 8, 9
BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18
BPF_CGROUP_INET4_CONNECT = 10


def _program(r0: int) -> bytes:
    """``r0 = r0; exit``"""
    return struct.pack("<BBhi", 0xB7, 0, 0, r0) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``…/unified`` on a hybrid host)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return fields[1]
    raise SystemExit("no cgroup v2 mount: the cgroup connect hook needs one")


@contextlib.contextmanager
def syscall_tracepoints(names: tuple[str, ...] = ("sys_enter_connect", "sys_exit_connect")) -> Iterator[None]:
    prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACEPOINT, _program(0), "floor_tp")
    fds: list[int] = []
    try:
        for name in names:
            tp = tracefs.tracepoint("/sys/kernel/tracing", "syscalls", name)
            fds.append(syscalls.perf_event_open_tracepoint(tp.id))  # (a tracepoint's program runs on every CPU)
            syscalls.attach_bpf(fds[-1], prog)
        yield
    finally:
        for fd in fds:
            os.close(fd)
        os.close(prog)


@contextlib.contextmanager
def cgroup_connect4() -> Iterator[None]:
    prog = syscalls.prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, _program(1), "floor_cg4",
                              attach_type=BPF_CGROUP_INET4_CONNECT)  # fmt: skip
    cgroup = os.open(cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIII", attr, 0, cgroup, prog, BPF_CGROUP_INET4_CONNECT, 0)
    try:
        syscalls._bpf(BPF_PROG_ATTACH, attr, "attaching the cgroup connect4 program")
        try:
            yield
        finally:
            syscalls._bpf(BPF_PROG_DETACH, attr, "detaching the cgroup connect4 program")
    finally:
        os.close(cgroup)
        os.close(prog)


MODES: list[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]] = [
    ("none", contextlib.nullcontext),
    ("syscall tracepoints", syscall_tracepoints),
    ("syscall exit", lambda: syscall_tracepoints(("sys_exit_connect",))),
    ("cgroup connect4", cgroup_connect4),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        exe, port = build_generator(Path(tmp)), free_port()
        for r in range(args.rounds):
            for name, attached in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:  # (the order rotates each round)
                with attached():
                    _, rate, cpu_us = storm(exe, port, 2, 10**9, args.seconds)
                results[name].append((rate, cpu_us))
    base_rate = statistics.median(rate for rate, _ in results["none"])
    base_cpu = statistics.median(cpu for _, cpu in results["none"])
    print(f"medians of {args.rounds} alternating rounds, storm of {args.seconds} s, 2 workers")
    for name, runs in results.items():
        rate, cpu = statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)
        print(f"{name:20s} {rate:11,.0f} connects/s  x{rate / base_rate:.3f}   "
              f"CPU per connect {cpu:.3f} us ({(cpu - base_cpu) * 1000:+.0f} ns)")  # fmt: skip


if __name__ == "__main__":
    main()
