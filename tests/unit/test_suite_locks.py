"""The suite's own machinery: a run in several workers (pytest-xdist) leaves no lock file behind.

tests/conftest.py serialises kernel tests with two lock files named after the run; the controller
removes them when the run ends.
"""

from __future__ import annotations

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
