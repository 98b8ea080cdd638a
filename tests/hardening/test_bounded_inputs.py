"""``--replay`` with input that is not a recording (issue 11): one line, at once, in bounded memory.

Each case runs ``python -m netspy_tui`` under a small parent that reports the child's peak resident
memory (``ru_maxrss`` of its waited-for child) and wall time. The old code read ``/dev/zero`` until
it held gigabytes, spent 18 s and 4 GB on a 2 GB sparse file, and waited for ever on a FIFO. The
bounds here are generous (a busy machine is not a failure); those were orders of magnitude beyond.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netspy_tui.collector.replay import MAX_LINE_BYTES
from tests.hardening.conftest import REPO, Run, assert_one_line_error, product_env

#: Peak resident memory allowed for the failing CLI (it imports pydantic, the models, the replay code).
MAX_RSS_MB = 300
#: The error must come within this many seconds (~0.5 s is typical; startup on a loaded machine varies).
MAX_SECONDS = 10.0

_MEASURE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
limit = 4 << 30  # the old code would grow without bound: stop it at 4 GiB of address space
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    done = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]), preexec_fn=cap,
                          errors="backslashreplace")
    code, out, err = done.returncode, done.stdout, done.stderr
except subprocess.TimeoutExpired as exc:
    code, out, err = None, "", "timed out"
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "out": out, "err": err, "rss_kb": rss, "seconds": time.monotonic() - start}))
"""


def measured(tmp: Path, *args: str) -> tuple[Run, float, float]:
    """(the run, its peak RSS in MB, its wall time in seconds)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(MAX_SECONDS * 3), sys.executable, "-m", "netspy_tui", *args],
        capture_output=True,
        text=True,
        env=product_env(tmp),
        cwd=REPO,
        timeout=120,
    )
    result = json.loads(done.stdout)
    code = result["code"] if result["code"] is not None else -1
    return Run(tuple(args), code, result["out"], result["err"]), result["rss_kb"] / 1024, result["seconds"]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "events.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def sparse(tmp_path: Path) -> Path:
    """2 GB of NULs that take no disk space."""
    path = tmp_path / "sparse.jsonl"
    with path.open("wb") as f:
        f.truncate(2 * 1000**3)
    return path


@pytest.mark.parametrize("kind", ["/dev/zero", "sparse", "fifo"])
def test_garbage_replay_is_one_line_at_once_in_bounded_memory(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    path = Path(kind) if kind.startswith("/") else request.getfixturevalue(kind)
    for command in (["--tool", "list_connections"], ["serve", "--port", "1"]):
        run, rss_mb, seconds = measured(tmp_path, *command, "--replay", str(path))
        line = assert_one_line_error(run, 2)
        expected = {
            "/dev/zero": "it is a character device, not a regular file",
            "sparse": f":1: longer than {MAX_LINE_BYTES >> 20} MiB with no line end",
            "fifo": "it is a FIFO (named pipe), not a regular file",
        }[kind]
        assert expected in line and str(path) in line, line
        assert rss_mb < MAX_RSS_MB, f"{kind}: {rss_mb:.0f} MB resident"
        assert seconds < MAX_SECONDS, f"{kind}: {seconds:.1f} s"


def test_a_long_line_later_in_a_recording_is_refused_with_its_line_number(tmp_path: Path) -> None:
    demo = (REPO / "tests" / "data" / "demo.jsonl").read_text().splitlines()
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(demo[:3]) + "\n" + "[" * (MAX_LINE_BYTES + 1) + "\n")
    run, rss_mb, _ = measured(tmp_path, "--tool", "list_connections", "--replay", str(path))
    assert f"{path}:4: longer than {MAX_LINE_BYTES >> 20} MiB with no line end" in assert_one_line_error(run, 2)
    assert rss_mb < MAX_RSS_MB
