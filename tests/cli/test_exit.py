"""How a command ends (issue 17): ``netspy-tui`` runs :func:`netspy_tui.cli.main`, then ends the process
without the interpreter's teardown — after the ``atexit`` handlers and with stdout and stderr flushed —
unless a thread the interpreter would wait for is still running."""

from __future__ import annotations

import atexit
import json
import os
import threading
import tomllib
from pathlib import Path

import pytest

from netspy_tui import cli
from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer


class _Ended(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.fixture
def ending(monkeypatch):
    """os._exit and the atexit run replaced by recorders: what _exit did, in order."""
    done: list[str] = []

    def fake_exit(code: int) -> None:
        done.append(f"os._exit({code})")
        raise _Ended(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: done.append("atexit"))
    return done


def test_exit_runs_atexit_then_ends_the_process(ending):
    with pytest.raises(_Ended) as ended:
        cli._exit(3)
    assert ended.value.code == 3
    assert ending == ["atexit", "os._exit(3)"]


def test_exit_waits_the_ordinary_way_while_a_thread_runs(ending):
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="still-working")  # not a daemon: exit waits for it
    worker.start()
    try:
        with pytest.raises(SystemExit) as exited:
            cli._exit(4)
        assert exited.value.code == 4
        assert ending == []  # neither the atexit run nor os._exit: Python's own exit joins the thread
    finally:
        release.set()
        worker.join()


def test_a_daemon_thread_does_not_hold_the_exit(ending):
    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=True)
    worker.start()
    try:
        with pytest.raises(_Ended):
            cli._exit(0)
    finally:
        release.set()
        worker.join()


@pytest.fixture(scope="module")
def server():
    events = [connection_json(pid=100 + i, command=f"proc{i % 7}", ago=1 + i % 50) for i in range(600)]
    with FakeEbpfServer("current", events=events) as srv:
        yield srv


def test_a_long_answer_on_a_pipe_is_complete_and_the_log_flushed(run_cli, server, tmp_path):
    """The process ends without the interpreter's teardown: whatever was written is still all there."""
    log = tmp_path / "netspy.log"
    out = run_cli(
        "--tool", "list_connections", "--max-events", "500", "--json", "--server", server.url,
        "--verbose", "--log-file", str(log),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # stdout flushed to the last byte (a pipe, block-buffered)
    assert doc["data"]["returned"] == 500 and len(doc["data"]["events"]) == 500
    assert "DEBUG" in log.read_text()


def test_the_exit_code_is_kept(run_cli):
    srv = FakeEbpfServer().start()
    srv.stop()  # nothing answers there now
    out = run_cli("--tool", "get_network_summary", "--server", srv.url)
    assert out.returncode == 1
    assert out.stderr.startswith("netspy-tui: ") and out.stderr.count("\n") == 1


def test_the_installed_command_ends_through_run():
    """The ``netspy-tui`` script (as ``python -m netspy_tui`` does) calls run(), not main()."""
    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["netspy-tui"] == "netspy_tui.cli:run"
