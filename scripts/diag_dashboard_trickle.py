"""DIAGNOSIS (not a bench): the dashboard's CPU with 100 events/s arriving, as bench/startup.py measures it, run
repeatedly and side by side for checkouts of the code (A/B on a shared machine), with the main thread apart.

Each round starts ``python -m netspy_tui --replay REC --replay-speed 1 --interval 1`` from each checkout in turn
(its directory as the working directory and PYTHONPATH) on a 160x45 pseudo-terminal, waits for the first data,
settles ``--settle`` seconds and reads the process's CPU over ``--seconds`` (psutil), and its main thread's
(/proc/PID/task/PID: Textual's loop, the poll's MCP round trip, the tables, painting). The rest is the other
threads: the replay feeding the store, reverse DNS, the store's queries.

    python scripts/diag_dashboard_trickle.py --rounds 4 /path/to/checkout-a /path/to/checkout-b

REC is made as bench/startup.py makes it (6,000 synthetic events over 60 s). Rounds alternate the checkouts:
compare medians, and expect a spread of ±0.5 points on a shared machine.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import synth  # noqa: E402
from bench.common import PY, PtyReader, child_env  # noqa: E402
from netspy_tui.collector.replay import Recorder  # noqa: E402

RATE = 100


def _task_cpu(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(checkout: Path, recording: Path, home: Path, settle: float, seconds: float) -> tuple[float, float]:
    """(process CPU %, main thread CPU %) of one dashboard started from ``checkout``."""
    env = child_env(HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"),
                    TERM="xterm-256color", COLORTERM="truecolor", PYTHONPATH=str(checkout))  # fmt: skip
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 160, 0, 0))
    proc = subprocess.Popen(
        [PY, "-m", "netspy_tui", "--replay", str(recording), "--replay-speed", "1", "--interval", "1"],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=checkout, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    screen = PtyReader(master)
    try:
        deadline = time.perf_counter() + 30
        while b"Connections (" not in screen.seen:
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError(f"no data on screen from {checkout}: {screen.seen[-300:]!r}")
            screen.pump(time.perf_counter() + 0.05, first=True)
        screen.pump(time.perf_counter() + settle)
        p = psutil.Process(proc.pid)
        c0, m0, w0 = sum(p.cpu_times()[:2]), _task_cpu(proc.pid, proc.pid), time.perf_counter()
        screen.pump(w0 + seconds)
        c1, m1, w1 = sum(p.cpu_times()[:2]), _task_cpu(proc.pid, proc.pid), time.perf_counter()
        os.write(master, b"q")
        quit_by = time.perf_counter() + 10
        while proc.poll() is None and time.perf_counter() < quit_by:
            screen.pump(time.perf_counter() + 0.1)  # (read what it draws meanwhile: a full terminal would stall it)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return (c1 - c0) / (w1 - w0) * 100, (m1 - m0) / (w1 - w0) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netspy-trickle-") as tmp:
        recording = Path(tmp) / "trickle.jsonl"
        with Recorder(lambda batch: None, recording) as rec:
            for batch in synth.event_batches(RATE * 60, 60, seed=5):
                rec(batch)
        runs: dict[Path, list[tuple[float, float]]] = {c: [] for c in args.checkouts}
        for r in range(args.rounds):
            for checkout in args.checkouts:
                cpu, main_thread = measure(checkout.resolve(), recording, Path(tmp) / "home", args.settle, args.seconds)
                runs[checkout].append((cpu, main_thread))
                print(f"round {r + 1} {checkout}: {cpu:.2f} % (main thread {main_thread:.1f} %)", flush=True)
        for checkout, got in runs.items():
            cpus, mains = [c for c, _ in got], [m for _, m in got]
            print(f"{checkout}: median {statistics.median(cpus):.2f} % ({min(cpus):.2f}-{max(cpus):.2f}), "
                  f"main thread {statistics.median(mains):.1f} %, other threads "
                  f"{statistics.median([c - m for c, m in got]):.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
