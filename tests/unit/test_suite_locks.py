"""The suite's own machinery: a run in several workers (pytest-xdist) leaves no lock file behind, and a
test marked quiet (it runs beside kernel tests) cannot make traffic, start a process or call eBPF unnoticed.

tests/conftest.py serialises kernel tests with two lock files named after the run; the controller
removes them when the run ends.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_run_in_two_workers_removes_its_lock_files() -> None:
    run = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", f"--testrunuid={run}",
         "tests/unit/test_textsafe.py"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
    left = sorted(p.name for p in Path(tempfile.gettempdir()).glob(f"netspy-tests-{run}*"))
    assert left == []


QUIET_BUT_NOT = """
import multiprocessing
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.quiet


def test_connects() -> None:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", 9))
        except OSError:
            pass


def test_starts_a_process() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_starts_a_process_pool() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(sum, [1, 2]).result()


def test_calls_bpf() -> None:
    from netspy_tui.collector.ebpf import syscalls

    try:
        syscalls.map_create(2, 4, 4, 1, "x")
    except Exception:
        pass


def test_computes() -> None:
    assert sum(range(10)) == 45
"""


def test_a_quiet_test_that_connects_starts_a_process_or_calls_bpf_fails_and_says_what_it_did(
        tmp_path: Path) -> None:  # fmt: skip
    """A test marked quiet may run beside a kernel test: one that makes traffic, starts a process or makes an eBPF
    system call fails (even where its own code swallowed the error), and says which."""
    # (the suite's conftest as a plugin, in a directory of its own: a run collecting tests/ meanwhile never sees it)
    test = tmp_path / "test_quiet_probe.py"
    test.write_text(QUIET_BUT_NOT)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    quiet: a quiet test\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "-n", "0", "-rf",
         "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(test)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "4 failed, 1 passed in" in out, out
    assert "QuietTestError: a test marked 'quiet' made network traffic (socket.connect to ('127.0.0.1', 9))" in out
    assert "QuietTestError: a test marked 'quiet' started a process (subprocess.Popen)" in out
    assert "QuietTestError: a test marked 'quiet' started a process (multiprocessing)" in out
    # (swallowed by the test: its report says it)
    assert "a test marked 'quiet' made an eBPF system call (netspy_tui.collector.ebpf.syscalls)" in out
    assert "test_computes" not in out


def test_the_run_compiled_the_trees_bytecode_whatever_pythondontwritebytecode_says() -> None:
    """tests/conftest.py compiles the tree once when the run starts: the product processes tests start import from
    it, and under PYTHONDONTWRITEBYTECODE (CI's machine) each of them compiled it again."""
    for module in ("netspy_tui/cli.py", "netspy_tui/store/sqlite.py", "bench/run.py", "tests/hardening/conftest.py"):
        source = REPO / module
        pyc = Path(importlib.util.cache_from_source(str(source)))
        assert pyc.exists(), pyc
        assert pyc.stat().st_mtime >= source.stat().st_mtime, module
