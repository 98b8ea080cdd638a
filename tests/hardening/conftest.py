"""Shared helpers of the hardening suite: product subprocesses, run several at once, wait for conditions."""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tests" / "data" / "demo.jsonl"
#: The exit status of a command :meth:`Child.stop` ended (SIGTERM: cleaned up, then 128 + signal).
TERMINATED = 128 + signal.SIGTERM


def product_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No ambient netspy/OpenAI settings, private config and state dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_STATE_HOME"] = str(tmp / "state")
    env["NETSPY_CONFIG"] = str(tmp / "config" / "none.toml")
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """``python -m netspy_tui ARGS`` as a user runs it; :meth:`many` runs a batch in parallel."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> Run:
        done = subprocess.run(
            [sys.executable, "-m", "netspy_tui", *args],
            input=input,
            capture_output=True,
            text=True,
            errors="backslashreplace",
            env=product_env(self.tmp, **(env or {})),
            timeout=timeout,
            cwd=REPO,
        )
        return Run(tuple(args), done.returncode, done.stdout, done.stderr)

    def many(self, calls: Sequence[Sequence[str]], env: dict[str, str] | None = None, timeout: float = 60) -> list[Run]:
        with ThreadPoolExecutor(max_workers=min(8, len(calls) or 1)) as pool:
            return list(pool.map(lambda a: self(*a, env=env, timeout=timeout), calls))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable sticky directory, like /tmp, that nobody can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="netspy-shared-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def assert_one_line_error(run: Run, exit_code: int | None = None) -> str:
    """The run failed with exactly one line on stderr, no traceback, nothing on stdout; returns the line."""
    what = f"{run.args}: rc={run.returncode} stderr={run.stderr!r}"
    assert run.returncode != 0, what
    if exit_code is not None:
        assert run.returncode == exit_code, what
    assert "Traceback" not in run.stderr, what
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("netspy-tui: "), what
    assert "\x1b" not in run.stderr, what
    assert run.stdout == "", what
    return run.stderr.strip()


def free_port() -> int:
    """A port on 127.0.0.1 nothing is bound to, for a server started next (or for nothing to listen on). Drawn below
    the kernel's ephemeral range, where every bind() to port 0 and every connect() takes its port: a port bind(0)
    handed out and released here could be taken, before the server binds it, by a listener or connection of a test
    on another xdist worker; below that range, only another draw like this one could."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100 if low > 11_000 else 0):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # (in use, or its connections not yet gone)
                continue
        return port
    with socket.socket() as s:  # (no room below the range here)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: loss causes the rest of the host makes that leave the counts inexact, whatever a test does: a TCP connection of
#: another process (another xdist worker's client, say) open before the collector started and closed since; a run of
#: the collector's programs the kernel skipped (another worker's connects interrupted by softirqs' state changes)
HOST_INEXACT = frozenset({"tcp_tail_uncounted", "kernel_skipped"})


def exact_but_for_the_host(losses: dict[str, int], counts_exact: bool) -> bool:
    """A served ``counts_exact`` agrees with the ``losses`` it comes with, and is True but for :data:`HOST_INEXACT`."""
    from netspy_tui.models import LOSS_CAUSES  # noqa: PLC0415

    inexact = {cause for cause, n in losses.items() if n and not LOSS_CAUSES.get(cause, ("", False))[1]}
    return counts_exact is (not inexact) and inexact <= HOST_INEXACT


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 15.0, step: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class Child:
    """A long-running product subprocess whose stderr (and optionally stdout) lines are collected."""

    def __init__(self, args: Sequence[str], env: dict[str, str], *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netspy_tui", *args],
            env=env,
            cwd=REPO,
            text=True,
            errors="backslashreplace",
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        for name, stream, sink in (("out", self.proc.stdout, self.out), ("err", self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(name, stream, sink), daemon=True).start()

    def _pump(self, name: str, stream: Any, sink: list[str]) -> None:
        for line in iter(stream.readline, ""):
            sink.append(line)
            self._lines.put((name, line))

    def wait_for(self, needle: str, timeout: float = 20.0, stream: str = "err") -> str:
        """The first line (new or already seen) on ``stream`` containing ``needle``."""
        sink = self.err if stream == "err" else self.out
        return str(
            wait_until(
                lambda: (
                    next((ln for ln in list(sink) if needle in ln), None)
                    or (self.proc.poll() is not None and self._dead(needle))
                ),
                f"{needle!r} on std{stream}",
                timeout,
            )
        )

    def _dead(self, needle: str) -> None:
        time.sleep(0.2)  # let the pump threads drain
        raise AssertionError(
            f"process exited ({self.proc.returncode}) before {needle!r}; stderr: {''.join(self.err)[-2000:]}"
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start product subprocesses that are terminated after the test."""
    children: list[Child] = []

    def start(*args: str, env: dict[str, str] | None = None, stdin: bool = False) -> Child:
        child = Child(args, product_env(tmp_path, **(env or {})), stdin=stdin)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()
