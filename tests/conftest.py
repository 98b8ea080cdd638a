"""Suite-wide: where root is required (``NETSPY_REQUIRE_EBPF=1``: CI's root job, ``.ci/run`` as root),
a test marked ``root`` or ``ebpf`` that skips is reported as a failure — it needed root and did not run.

tests/unit/test_markers.py checks that every root-only test carries one of the two markers.

Under pytest-xdist (``-n auto``) the tests marked ``root`` or ``ebpf`` (the kernel tests) are one group that one
worker runs in order (``--dist loadgroup``), first; a kernel test runs while no other test runs, except tests
marked ``quiet``: they make no network traffic, start no process and load no eBPF program, so nothing they do
reaches what a kernel test's collector reads. The other workers run the quiet tests first, beside the kernel
group. A quiet test that connects or sends on an IP socket (Python's audit events: not a send on a socket connected
before the test, nor a name lookup glibc makes), starts a process (subprocess, os, pty or multiprocessing) or makes
an eBPF system call through the collector's fails, naming what it did.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ROOT = os.environ.get("NETSPY_REQUIRE_EBPF") == "1"
ROOT_MARKERS = ("root", "ebpf")
QUIET = "quiet"
KERNEL_GROUP = "kernel"


def _lock_base(run: str) -> Path:
    return Path(tempfile.gettempdir()) / f"netspy-tests-{run}"


def pytest_configure(config: pytest.Config) -> None:
    """In pytest-xdist's controller: name the run (xdist would, after this hook) so that the controller
    knows the lock files its workers share and removes them when the run ends (pytest_unconfigure); and
    compile the tree's bytecode (:func:`_compile_the_tree`)."""
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "testrunuid", "") is None:
        config.option.testrunuid = uuid.uuid4().hex
    _compile_the_tree()


def _compile_the_tree() -> None:
    """The product's processes the tests start (``python -m netspy_tui`` in the repository, ``-m bench.run``) import
    from this tree. Where the environment sets PYTHONDONTWRITEBYTECODE (this project's CI machine does) nothing
    writes its bytecode, and each of those processes compiled every module of ours it imported: ~0.4 s of CPU
    each, hundreds of them a run. ``compileall`` writes it once (~1.5 s) whatever the variable says; an installed
    netspy-tui has its bytecode from pip the same way. A tree that cannot be written is left as it is."""
    import compileall

    root = Path(__file__).resolve().parents[1]
    for tree in ("netspy_tui", "bench", "tests"):
        compileall.compile_dir(root / tree, quiet=2)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = getattr(config.option, "testrunuid", None)
    if hasattr(config, "workerinput") or not run:
        return
    for name in ("turnstile", "lock"):
        Path(f"{_lock_base(run)}.{name}").unlink(missing_ok=True)


def _kind(item: pytest.Item) -> int:
    """0: a kernel test, 1: a quiet test, 2: any other (the order a run takes them in)."""
    kernel = any(item.get_closest_marker(m) for m in ROOT_MARKERS)
    quiet = item.get_closest_marker(QUIET) is not None
    if kernel and quiet:
        raise pytest.UsageError(f"{item.nodeid}: marked {QUIET!r} and a kernel marker; a kernel test is not quiet")
    return 0 if kernel else 1 if quiet else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Kernel tests first, as one xdist group (before xdist reads the groups: tryfirst), then the quiet tests,
    then the rest; each kind in the order collected."""
    kinds = {item.nodeid: _kind(item) for item in items}
    items.sort(key=lambda item: kinds[item.nodeid])
    for item in items:
        if kinds[item.nodeid] == 0:
            item.add_marker(pytest.mark.xdist_group(KERNEL_GROUP))


class QuietTestError(RuntimeError):
    """What a test marked quiet did that a kernel test beside it could see."""


_quiet: dict[str, Any] = {"test": None, "did": []}


def _refuse(what: str) -> None:
    _quiet["did"].append(what)
    raise QuietTestError(f"a test marked {QUIET!r} {what}: it may run beside a kernel test; remove the marker")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _quiet["test"] is None:
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        family = getattr(args[0], "family", None)
        if family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"made network traffic ({event} to {args[1]!r})")
    elif event in ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec"):
        _refuse(f"started a process ({event})")


sys.addaudithook(_audit)


def _no_syscalls() -> Any:
    _refuse("made an eBPF system call (netspy_tui.collector.ebpf.syscalls)")


def _no_spawn(*args: Any) -> Any:
    _refuse("started a process (multiprocessing)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if item.get_closest_marker(QUIET) is None:
        yield
        return
    import multiprocessing.util

    from netspy_tui.collector.ebpf import syscalls

    libc, spawn = syscalls._libc, multiprocessing.util.spawnv_passfds
    _quiet["test"], _quiet["did"] = item.nodeid, []
    syscalls._libc = _no_syscalls  # type: ignore[assignment]
    multiprocessing.util.spawnv_passfds = _no_spawn  # (multiprocessing's spawn and forkserver: no audit event)
    try:
        yield
    finally:
        syscalls._libc = libc  # type: ignore[assignment]
        multiprocessing.util.spawnv_passfds = spawn
        _quiet["test"] = None


@pytest.fixture(autouse=True)
def _kernel_tests_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``root`` or ``ebpf`` runs while no other test runs in any worker but quiet
    ones: the collector it starts follows the whole host, and another worker's connects and drops (thousands a
    second) moved what such tests read. A readers-writer lock over one file of the run: the other tests share it
    (quiet ones do not take it), a kernel test takes it alone, and a turnstile lets it in between two tests of the
    other workers (so it is not starved)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run or request.node.get_closest_marker(QUIET) is not None:
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
    if _quiet["test"] == item.nodeid and _quiet["did"]:
        if not report.failed:  # (the test's own code swallowed the QuietTestError)
            report.outcome = "failed"
            report.longrepr = f"a test marked {QUIET!r} " + "; ".join(dict.fromkeys(_quiet["did"]))
        _quiet["did"] = []
    if not (REQUIRE_ROOT and report.skipped) or hasattr(report, "wasxfail"):
        return
    marker = next((m for m in ROOT_MARKERS if item.get_closest_marker(m)), None)
    if marker is None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"NETSPY_REQUIRE_EBPF=1 but this test marked {marker!r} skipped: {reason}"
