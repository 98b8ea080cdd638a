"""What every benchmark area shares: the metric record, statistics, machine facts, the table."""

from __future__ import annotations

import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Metric:
    """One row of the table. ``value`` is the median of ``samples`` (or a single figure).

    ``op`` says how ``value`` is compared with ``target`` (``<=`` or ``>=``); ``ratio`` is
    ``value / baseline`` when the figure has a baseline measured in the same run (for ratio
    metrics the value *is* the ratio, and ``baseline`` holds the baseline's own figure).
    """

    area: str
    name: str
    value: float | None
    unit: str = ""
    target: float | None = None
    op: str = "<="
    baseline: float | None = None
    baseline_label: str = ""
    samples: list[float] = field(default_factory=list)
    note: str = ""
    skipped: str = ""
    ratio: float | None = None
    """value / baseline (filled in when a baseline is given and no ratio was set)."""

    def __post_init__(self) -> None:
        self.set_baseline(self.baseline, self.baseline_label)

    def set_baseline(self, baseline: float | None, label: str, ratio: float | None = None) -> Metric:
        self.baseline, self.baseline_label = baseline, label
        if ratio is not None:
            self.ratio = ratio
        elif baseline and self.value is not None and self.ratio is None:
            self.ratio = self.value / baseline
        return self

    @property
    def runs(self) -> int:
        return len(self.samples) if self.samples else (1 if self.value is not None else 0)

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.samples), max(self.samples)) if len(self.samples) > 1 else None

    @property
    def passed(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["runs"] = self.runs
        d["spread"] = list(self.spread) if self.spread else None
        d["passed"] = self.passed
        return d


def metric(area: str, name: str, samples: Sequence[float], unit: str = "", **kw: Any) -> Metric:
    """A metric whose value is the median of ``samples``."""
    values = [float(s) for s in samples]
    return Metric(area, name, statistics.median(values) if values else None, unit, samples=values, **kw)


def skipped(area: str, name: str, why: str, unit: str = "", target: float | None = None, op: str = "<=") -> Metric:
    return Metric(area, name, None, unit, target=target, op=op, skipped=why)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_measured(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run a workload to completion: (its stdout, the CPU seconds it and its children used, user +
    system). Its own CPU per operation moves far less with the rest of a busy host's load than its
    wall-clock rate does: the steadier figure for what tracing adds to each operation."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.stdout, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def interrupt(proc: subprocess.Popen[str], tries: int = 3, timeout: float = 10.0) -> str:
    """SIGINT a tool that prints its results when interrupted (bpftrace) and return its stdout.
    bpftrace 0.17 here now and then stays in epoll_wait after the first SIGINT (seen twice in ~40
    runs under load); a second one ends it."""
    for _ in range(tries):
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return out
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.communicate()
    raise RuntimeError(f"{proc.args!r} did not stop after {tries} SIGINTs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """Environment for product subprocesses: no user config, no NETSPY_/OPENAI_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    env["NETSPY_CONFIG"] = "/nonexistent/netspy-bench.toml"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "memory_bytes": mem,
        "root": os.geteuid() == 0,
        "loadavg_at_start": load,  # (taken before the first area)
        "commit": commit,
    }


#: the speed probe's loop: additions in a pure-Python ``for`` loop
PROBE_LOOP = 1_000_000


def python_probe(rounds: int = 5) -> float:
    """Milliseconds a fixed pure-Python loop takes now (the median of ``rounds``): how fast this machine runs
    Python at this moment. A shared machine moves it by tens of per cent from one hour to the next, and every
    row of Python's time moves with it; ``bench.run`` takes it before each area, so a table says which hour it
    was measured on."""

    def loop() -> None:
        total = 0
        for i in range(PROBE_LOOP):
            total += i

    return statistics.median(timed(loop, rounds)) * 1000


def _fmt(v: float | None, unit: str = "x") -> str:
    if v is None:
        return "-"
    a = abs(v)
    if unit == "" and 0.5 <= a < 2:  # a ratio: show how far from 1
        return f"{v:.4f}"
    if a == 0:
        return "0"
    if a >= 100_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def table(metrics: Sequence[Metric]) -> str:
    """The printed table: metric, value, target, pass/fail, baseline/ratio, runs, spread."""
    header = ("metric", "value", "target", "ok", "baseline / ratio", "runs", "spread (min..max)")
    rows = [header]
    for m in metrics:
        name = f"{m.area}: {m.name}"
        if m.skipped:
            rows.append((name, "skipped", _target(m), "-", "", "0", m.skipped[:70]))
            continue
        value = f"{_fmt(m.value, m.unit)} {m.unit}".strip()
        ok = {True: "PASS", False: "FAIL", None: "-"}[m.passed]
        base = ""
        if m.baseline is not None:
            base = f"{m.baseline_label or 'baseline'} {_fmt(m.baseline, m.unit)}"
            if m.ratio is not None:
                base += f" (x{_fmt(m.ratio)})"
        spread = f"{_fmt(m.spread[0], m.unit)}..{_fmt(m.spread[1], m.unit)}" if m.spread else ""
        rows.append((name, value, _target(m), ok, base, str(m.runs), spread))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _target(m: Metric) -> str:
    return f"{m.op} {_fmt(m.target)}" if m.target is not None else ""


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


@dataclass
class Context:
    """What an area gets from the runner."""

    quick: bool
    tmp: Path
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)
    """Things one area made that another may reuse (e.g. the 1M-event store file)."""


class FailedPolls:
    """Counts a headless dashboard's polls that failed: ``FailedPolls(app).n`` (wraps ``app.poller.poll``)."""

    def __init__(self, app: Any) -> None:
        self.n = 0
        self._poll = app.poller.poll
        app.poller.poll = self

    async def __call__(self) -> Any:
        try:
            return await self._poll()
        except Exception:
            self.n += 1
            raise


def live_ebpf_missing(builds: str, tracepoint: str, missing: str) -> str:
    """Why an area that loads the eBPF collector beside bpftrace cannot run here ('' when it can):
    root, gcc (to build ``builds``), bpftrace, and ``tracepoint`` under tracefs (else ``missing``)."""
    if os.geteuid() != 0:
        return "not root: the eBPF collector and bpftrace need root (run the benchmark as root)"
    if shutil.which("gcc") is None:
        return f"no gcc to build the {builds}"
    if shutil.which("bpftrace") is None:
        return "no bpftrace (apt-get install -y bpftrace)"
    if not (Path("/sys/kernel/tracing/events") / tracepoint).is_dir():
        return missing
    return ""


class PtyReader:
    """What a program on a pseudo-terminal (its ``master`` side) has written so far: the last
    200 kB in :attr:`seen`."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.seen = b""

    def pump(self, until: float, *, first: bool = False) -> None:
        """Read until ``until`` (``time.perf_counter``), or only the first chunk with ``first``;
        returns early when the program has gone."""
        while time.perf_counter() < until:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.seen = (self.seen + chunk)[-200_000:]
                if first:
                    return
