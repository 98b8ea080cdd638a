"""Quit: from ``q`` to the process gone, for the dashboard as users run it in a real terminal.

Two sources: the embedded replay (no root needed: ``--replay FILE --replay-speed 0``) and, as root,
the embedded eBPF collector (``--collector ebpf``: programs attached, ring and count maps read,
the store's writer running). Each run launches the dashboard on a 120x35 pseudo-terminal, waits for
data on screen and two more seconds of polls, writes ``q`` and times until the process has exited.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time

from bench.common import PY, REPO, Context, Metric, PtyReader, child_env, metric, skipped
from tests.hardening.conftest import DEMO

NAME = "quit"
TARGET_S = 0.5


def quit_time(argv: list[str], marker: bytes, env: dict[str, str]) -> float:
    """Seconds from writing ``q`` to the process's exit."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 35, 120, 0, 0))
    proc = subprocess.Popen([PY, "-m", "netspy_tui", *argv], stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=REPO, start_new_session=True)  # fmt: skip
    os.close(slave)
    screen = PtyReader(master)
    pump = screen.pump

    try:
        deadline = time.perf_counter() + 30
        while marker not in screen.seen:
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError(f"no data on screen: {screen.seen[-300:]!r}")
            pump(time.perf_counter() + 0.1)
        pump(time.perf_counter() + 2.0)
        t0 = time.perf_counter()
        os.write(master, b"q")
        while proc.poll() is None:
            pump(time.perf_counter() + 0.005)
            if time.perf_counter() - t0 > 20:
                raise TimeoutError("the dashboard did not quit within 20 s")
        return time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def run(ctx: Context) -> list[Metric]:
    # (no server: the embedded source. NETSPY_SERVER here once made both runs a dashboard of a dead server, which
    # said LIVE without data until the header stopped saying LIVE with nothing live)
    env = {**child_env(), "TERM": "xterm-256color"}
    runs = 2 if ctx.quick else 5
    out = [
        metric(
            NAME,
            "q to process gone: embedded replay (pty 120x35)",
            [quit_time(["--replay", str(DEMO), "--replay-speed", "0"], b"LIVE", env) for _ in range(runs)],
            "s",
            target=TARGET_S,
        ),  # fmt: skip
    ]
    name = "q to process gone: embedded eBPF collector (pty 120x35)"
    if os.geteuid() != 0:
        out.append(skipped(NAME, name, "not root: the eBPF collector needs root", "s", TARGET_S))
    else:
        samples = [quit_time(["--collector", "ebpf"], b"LIVE", env) for _ in range(runs)]
        out.append(metric(NAME, name, samples, "s", target=TARGET_S))
    return out
