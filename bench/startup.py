"""Start-up: ``--tool`` end to end against a local ``netspy-tui serve``; launch-to-first-paint of the
dashboard in a real pseudo-terminal; its idle CPU with no traffic; the ``-X importtime`` profile; ``serve``
from launch to its first answer, and the CPU it took.

The server is ``python -m netspy_tui serve --replay FILE --replay-speed 0`` on 127.0.0.1 (a
recording of 5,000 synthetic events from the last minute): no root needed, same API as the
Go server. Baselines for the one-shot, in alternating rounds: ``python -c pass`` (the interpreter's own
start) and ``python -c`` importing the MCP client and server classes (the SDK's import floor).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import statistics
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import synth
from bench.common import PY, REPO, Context, Metric, PtyReader, child_env, free_port, metric
from netspy_tui.collector.replay import Recorder

NAME = "startup"
TARGET_TOOL_S, TARGET_PAINT_S, TARGET_IDLE_CPU = 0.6, 0.5, 0.5
TARGET_DATA_S, TARGET_TRICKLE_CPU, TRICKLE_RATE = 1.5, 5.0, 100
#: Launches of the 100 events/s row in a full run (the median is the figure).
TRICKLE_RUNS = 3
#: ``--tool`` end to end against importing the MCP client and server classes alone (issue 17: <= 1.2x).
TARGET_TOOL_RATIO = 1.2
TOOL = ["--tool", "get_network_summary"]
#: The SDK's import floor: what any process holding the in-process MCP pair imports at least.
MCP_FLOOR = "from mcp.client import Client; from mcp.server.mcpserver import MCPServer"


class Server:
    """``netspy-tui serve`` on a free loopback port, stopped on exit. Ready once its summary counts at least half of
    ``events``, or with ``events`` 0 once ``/health`` answers; ``started`` is when it was launched."""

    def __init__(self, recording: Path, events: int, env: dict[str, str], step: float = 0.1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [PY, "-m", "netspy_tui", "serve", "--replay", str(recording), "--replay-speed", "0",
                "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        try:
            self._wait_ready(events, step)
        except BaseException:
            self.close()
            raise

    def _ready(self, events: int) -> bool:
        if not events:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        r = httpx.get(f"{self.url}/api/connection-summary", params={"duration_seconds": 3600}, timeout=2)
        return r.status_code == 200 and r.json().get("count", 0) >= events * 0.5

    def _wait_ready(self, events: int, step: float) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            try:
                if self._ready(events):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("serve did not answer within 60 s")
            time.sleep(step)

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, cwd=REPO, timeout=60)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-4:])} exited {r.returncode}: {r.stderr.decode()[-300:]}")
    return elapsed


def serve_start(recording: Path, env: dict[str, str]) -> dict[str, float]:
    """``serve --replay FILE`` from launch to its first ``/health`` answer: the seconds, and the CPU the process
    had used by then (user + system)."""
    server = Server(recording, 0, env, step=0.01)
    try:
        ready = time.perf_counter() - server.started
        cpu = psutil.Process(server.proc.pid).cpu_times()
    finally:
        server.close()
    return {"ready_s": ready, "cpu_s": cpu.user + cpu.system}


def importtime(url: str, env: dict[str, str], top: int = 15) -> list[dict[str, Any]]:
    """Top-level imports of the --tool path by cumulative time (``python -X importtime``)."""
    r = subprocess.run(
        [PY, "-X", "importtime", "-m", "netspy_tui", *TOOL, "--server", url],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append(
                {
                    "module": m.group(4),
                    "self_ms": int(m.group(1)) / 1000,
                    "cumulative_ms": int(m.group(2)) / 1000,
                    "depth": len(m.group(3)) // 2,
                }
            )
    # the modules that pull in the most: depth <= 2 (below netspy_tui's own entry points)
    heavy = sorted((r for r in rows if r["depth"] <= 2), key=lambda r: -r["cumulative_ms"])
    total = sum(r["self_ms"] for r in rows)
    return [{"total_import_ms": round(total, 1)}] + heavy[:top]


def dashboard_in_pty(url: str, env: dict[str, str], idle_seconds: float, marker: bytes, speed: str = "0",
                     settle_seconds: float = 2.0) -> dict[str, float]:  # fmt: skip
    """Launch the dashboard on a 160x45 pseudo-terminal: seconds to the first frame (the tab bar
    drawn), to the first data (``marker`` on screen), then, ``settle_seconds`` later, its CPU share over
    ``idle_seconds``.
    ``url`` is an eBPF server's, or ``replay:FILE`` for the embedded source replaying FILE at
    ``speed`` (0: at once; 1: at the recording's own pace)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 160, 0, 0))
    replay = url.removeprefix("replay:")
    source = ["--replay", replay, "--replay-speed", speed] if replay != url else ["--server", url]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "netspy_tui", *source, "--interval", "1"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    os.close(slave)
    screen = PtyReader(master)
    first_paint = first_data = None

    def pump(until: float) -> None:
        screen.pump(until, first=True)

    try:
        deadline = t0 + 30
        while first_data is None and time.perf_counter() < deadline:
            pump(time.perf_counter() + 0.05)
            now = time.perf_counter()
            if first_paint is None and b"Connections" in screen.seen:
                first_paint = now - t0
            if first_paint is not None and marker in screen.seen:
                first_data = now - t0
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited early: {screen.seen[-300:]!r}")
        if first_data is None:
            raise TimeoutError(f"no dashboard frame with data within 30 s: {screen.seen[-300:]!r}")
        # settle, then measure idle CPU (the server gets no new events)
        settle = time.perf_counter() + settle_seconds
        while time.perf_counter() < settle:
            pump(settle)
        p = psutil.Process(proc.pid)
        c0, w0 = sum(p.cpu_times()[:2]), time.perf_counter()
        end = w0 + idle_seconds
        while time.perf_counter() < end:
            pump(end)
        c1, w1 = sum(p.cpu_times()[:2]), time.perf_counter()
        rss = p.memory_info().rss
        os.write(master, b"q")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return {
        "first_paint": first_paint or 0.0,
        "first_data": first_data,
        "idle_cpu_pct": (c1 - c0) / (w1 - w0) * 100,
        "rss_mb": rss / 2**20,
    }


def _env(tmp: Path) -> dict[str, str]:
    return child_env(
        HOME=str(tmp / "home"),
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        TERM="xterm-256color",
        COLORTERM="truecolor",
    )


def _trickle_recording(tmp: Path) -> Path:
    """A quiet host: TRICKLE_RATE events a second for a minute (replayed at its own pace: arriving in real time)."""
    trickle = tmp / "trickle.jsonl"
    with Recorder(lambda batch: None, trickle) as rec:
        for batch in synth.event_batches(TRICKLE_RATE * 60, 60, seed=5):
            rec(batch)
    return trickle


def trickle_run(recording: Path, env: dict[str, str], seconds: float) -> dict[str, float]:
    """The dashboard on the embedded source replaying ``recording`` at its own pace: its CPU over ``seconds`` from
    5 s after the first data (steady state: the first names asked, the first panels)."""
    return dashboard_in_pty(f"replay:{recording}", env, seconds, b"Connections (", speed="1", settle_seconds=5.0)


def run(ctx: Context) -> list[Metric]:
    events = 1_000 if ctx.quick else 5_000
    repeat = 2 if ctx.quick else 7
    env = _env(ctx.tmp)
    # The server is `serve --replay` (no root): its store is filled by the product's replay path,
    # from a recording, and a recording holds built events, so synth.event_batches makes the file.
    # No store is filled here.
    recording = ctx.tmp / "startup-recording.jsonl"
    with Recorder(lambda batch: None, recording) as rec:
        for batch in synth.event_batches(events, 60, seed=3):
            rec(batch)
    server = Server(recording, events, env)
    ms: list[Metric] = []
    try:
        base: list[float] = []
        floor: list[float] = []
        tool: list[float] = []
        for _ in range(repeat):  # alternating rounds: the shared machine's drift hits all three alike
            base.append(_run([PY, "-c", "pass"], env))
            floor.append(_run([PY, "-c", MCP_FLOOR], env))
            tool.append(_run([PY, "-m", "netspy_tui", *TOOL, "--server", server.url], env))
        ms.append(metric(NAME, "python -c pass (interpreter floor)", base, "s"))
        floor_m = metric(NAME, "python -c importing the MCP client and server classes (SDK floor)", floor, "s")
        ms.append(floor_m)
        tool_m = metric(NAME, "--tool get_network_summary end to end", tool, "s", target=TARGET_TOOL_S)
        ms.append(tool_m.set_baseline(metric(NAME, "", base).value, "python"))
        ratio = [t / f for t, f in zip(tool, floor, strict=True)]
        ms.append(
            metric(
                NAME, "--tool end to end / SDK floor, same round", ratio, "x", target=TARGET_TOOL_RATIO
            ).set_baseline(floor_m.value, "SDK floor", ratio=statistics.median(ratio))
        )
        profile = importtime(server.url, env)
        ctx.shared["startup_extra"] = {"importtime_tool_path": profile}
        ms.append(
            Metric(
                NAME,
                "--tool import time (sum of -X importtime self)",
                profile[0]["total_import_ms"],
                "ms",
                note=", ".join(f"{p['module']} {p['cumulative_ms']:.0f}" for p in profile[1:6]),
            )
        )
        if ctx.quick:  # the pty launch takes a few seconds; the full run measures it
            return ms
        n_runs, idle = 3, 10.0
        runs = [dashboard_in_pty(server.url, env, 0.1, b"nginx") for i in range(n_runs)]
        # idle: a server with one event and nothing arriving after it (a recording of no events is refused: there
        # is nothing to replay)
        lone = ctx.tmp / "one-event.jsonl"
        with Recorder(lambda batch: None, lone) as rec:
            for batch in synth.event_batches(1, 1, seed=7):
                rec(batch)
        quiet = Server(lone, 1, env)
        try:
            idle_run = dashboard_in_pty(quiet.url, env, idle, b"Connections (1)")
        finally:
            quiet.close()
        # the embedded source (its store notifies the dashboard: nothing is fetched while nothing arrives)
        idle_embedded = dashboard_in_pty(f"replay:{lone}", env, idle, b"Connections (1)")
        trickle = _trickle_recording(ctx.tmp)
        # (three runs, the median: one run of the same build read 5.8-7.5 % within an hour)
        busy_runs = [trickle_run(trickle, env, idle) for _ in range(TRICKLE_RUNS)]
        ms.append(
            metric(
                NAME,
                "dashboard launch to first paint (pty 160x45)",
                [r["first_paint"] for r in runs],
                "s",
                target=TARGET_PAINT_S,
            )
        )
        ms.append(
            metric(
                NAME,
                "dashboard launch to first data on screen",
                [r["first_data"] for r in runs],
                "s",
                target=TARGET_DATA_S,
            )
        )
        ms.append(
            Metric(
                NAME,
                f"dashboard idle CPU, real terminal, {idle:.0f} s, no traffic",
                idle_run["idle_cpu_pct"],
                "%",
                target=TARGET_IDLE_CPU,
                note=f"HTTP source with no events (serve: pushed over /api/changes), interval 1 s; "
                f"RSS {idle_run['rss_mb']:.0f} MB",
            )
        )
        ms.append(
            Metric(
                NAME,
                f"dashboard idle CPU, real terminal, {idle:.0f} s, embedded source, no traffic",
                idle_embedded["idle_cpu_pct"],
                "%",
                target=TARGET_IDLE_CPU,
                note=f"replay of a one-event recording, interval 1 s; RSS {idle_embedded['rss_mb']:.0f} MB",
            )
        )
        ms.append(
            metric(
                NAME,
                f"dashboard CPU, real terminal, {idle:.0f} s, embedded source, {TRICKLE_RATE} events/s",
                [r["idle_cpu_pct"] for r in busy_runs],
                "%",
                target=TARGET_TRICKLE_CPU,
                note=f"a recording of {TRICKLE_RATE} events/s replayed at its own pace, from 5 s after the first "
                f"data, interval 1 s; {len(busy_runs)} launches, the median; "
                f"RSS {busy_runs[-1]['rss_mb']:.0f} MB",
            )
        )
        ms.append(Metric(NAME, "dashboard RSS, real terminal, HTTP source (5,000 events)", runs[0]["rss_mb"], "MB"))
        starts = [serve_start(recording, env) for _ in range(5)]
        note = "serve --replay of the 5,000-event recording; MCP at /mcp is made at its first request"
        ms.append(metric(NAME, "serve launch to its first /health answer", [r["ready_s"] for r in starts], "s",
                         note=note))  # fmt: skip
        ms.append(metric(NAME, "serve CPU (user+system) by its first /health answer", [r["cpu_s"] for r in starts],
                         "s", note=note))  # fmt: skip
    finally:
        server.close()
    return ms


if __name__ == "__main__":
    # `python -m bench.startup --trickle N`: only the "embedded source, 100 events/s" row, N times (the area's other
    # rows take minutes); run it from two checkouts in turn to compare them.
    import argparse
    import tempfile

    p = argparse.ArgumentParser(prog="python -m bench.startup")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trickle", type=int, metavar="N", help="runs of the 100 events/s row")
    which.add_argument("--serve", type=int, metavar="N", help="runs of the two serve start rows")
    a = p.parse_args()
    if a.serve is not None:
        with tempfile.TemporaryDirectory(prefix="netspy-bench-") as tmp:
            recording = Path(tmp) / "startup-recording.jsonl"
            with Recorder(lambda batch: None, recording) as rec:
                for batch in synth.event_batches(5_000, 60, seed=3):
                    rec(batch)
            starts = [serve_start(recording, _env(Path(tmp))) for _ in range(a.serve)]
        for key in ("ready_s", "cpu_s"):
            values = [r[key] for r in starts]
            print(f"{key}: median {statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f}), {REPO}")
        raise SystemExit(0)
    with tempfile.TemporaryDirectory(prefix="netspy-bench-") as tmp:
        recording = _trickle_recording(Path(tmp))
        cpu = []
        for _ in range(a.trickle):
            cpu.append(trickle_run(recording, _env(Path(tmp)), 10.0)["idle_cpu_pct"])
            print(f"{cpu[-1]:.2f} %", flush=True)
    print(f"median {statistics.median(cpu):.2f} % ({min(cpu):.2f}-{max(cpu):.2f}) over {len(cpu)} runs, {REPO}")
