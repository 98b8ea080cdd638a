"""Suite-wide: where root is required (``NETSPY_REQUIRE_EBPF=1``: CI's root job, ``.ci/run`` as root),
a test marked ``root`` or ``ebpf`` that skips is reported as a failure — it needed root and did not run.

tests/unit/test_markers.py checks that every root-only test carries one of the two markers.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ROOT = os.environ.get("NETSPY_REQUIRE_EBPF") == "1"
ROOT_MARKERS = ("root", "ebpf")


def _lock_base(run: str) -> Path:
    return Path(tempfile.gettempdir()) / f"netspy-tests-{run}"


def pytest_configure(config: pytest.Config) -> None:
    """In pytest-xdist's controller: name the run (xdist would, after this hook) so that the controller
    knows the lock files its workers share and removes them when the run ends (pytest_unconfigure)."""
    if not hasattr(config, "workerinput") and getattr(config.option, "testrunuid", "") is None:
        config.option.testrunuid = uuid.uuid4().hex


def pytest_unconfigure(config: pytest.Config) -> None:
    run = getattr(config.option, "testrunuid", None)
    if hasattr(config, "workerinput") or not run:
        return
    for name in ("turnstile", "lock"):
        Path(f"{_lock_base(run)}.{name}").unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _kernel_tests_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``root`` or ``ebpf`` runs while no other test runs in any worker: the
    collector it starts follows the whole host, and another worker's connects and drops (thousands a second) moved
    what such tests read. A readers-writer lock over one file of the run: the other tests share it, a kernel test
    takes it alone, and a turnstile lets it in between two tests of the other workers (so it is not starved)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        yield
        return
    base = _lock_base(run)
    alone = any(request.node.get_closest_marker(m) for m in ROOT_MARKERS)
    fds = [os.open(f"{base}.{name}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600) for name in ("turnstile", "lock")]
    turnstile, lock = fds
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(lock, fcntl.LOCK_EX)  # (the turnstile held meanwhile: no other test starts)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # (and the locks with them)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_ROOT and report.skipped) or hasattr(report, "wasxfail"):
        return
    marker = next((m for m in ROOT_MARKERS if item.get_closest_marker(m)), None)
    if marker is None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"NETSPY_REQUIRE_EBPF=1 but this test marked {marker!r} skipped: {reason}"
