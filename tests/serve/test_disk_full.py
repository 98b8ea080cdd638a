"""``serve --db`` on a full disk (a small tmpfs the test mounts, then fills as another program would), and on a
damaged store file, driven as an operator does: the real ``serve`` on 127.0.0.1, the CLI, SIGTERM.

- The counts of what a full disk refuses are held in memory and written once there is room again; raw events are
  the bounded detail (counted as ``unstored``, counts exact). Counts still refused at exit are a loss
  (``store_error``): said on stderr, and recorded in the store's losses table at the next start.
- ``/health`` answers 503 with why (not the bare "System not initialized" of a server still
  starting); a remote ``server_status`` and dashboard show why; the state is logged once, not per request.
- A start on a still-full disk, or on a store with damaged pages, is one line naming the cause, exit 2.
"""

# ruff: noqa: F811 (the hardening suite's fixtures, imported: cli, spawn)
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.store.sqlite import EventStore
from tests.factories import connection
from tests.hardening.conftest import (  # noqa: F401
    TERMINATED,
    Cli,
    assert_one_line_error,
    cli,
    exact_but_for_the_host,
    free_port,
    spawn,
    wait_until,
)
from tests.hardening.test_faults_embedded import fill, tiny_filesystem
from tests.hardening.test_security import served_url


def get(url: str) -> tuple[int, Any]:
    """GET ``url``: (status, JSON body, or the text of one that is not JSON)."""
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def refused_connects(n: int) -> int:
    """``n`` connects from a child process to a port nothing listens on (each refused: a connect and a drop); the
    child's pid (this process's own requests to the server are connects too)."""
    code = textwrap.dedent(f"""
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for _ in range({n}):
            with socket.socket() as s:
                try:
                    s.connect(("127.0.0.1", port))
                except ConnectionRefusedError:
                    pass
    """)
    done = subprocess.Popen([sys.executable, "-c", code])
    assert done.wait(60) == 0
    return done.pid


def connects_of(url: str, pid: int) -> int:
    status, body = get(f"{url}/api/connection-summary?pid={pid}&duration_seconds=600")
    assert status == 200, body
    return int(body["count"])


def start_serve(spawn: Any, db: Path) -> tuple[Any, str]:
    child = spawn("serve", "--collector", "ebpf", "--port", str(free_port()), "--db", str(db))
    try:
        return child, served_url(child, "the eBPF server API")
    except AssertionError as exc:
        if "eBPF" in str(exc) and not os.environ.get("NETSPY_REQUIRE_EBPF"):
            pytest.skip(f"the eBPF collector cannot start here: {exc}")
        raise


def filled_and_refusing(url: str, mount: Path) -> tuple[int, dict[str, Any]]:
    """Fill the disk, make 300 refused connects; the /health answer once a write was refused."""
    fill(mount / "filler")
    pid = refused_connects(300)
    wait_until(lambda: connects_of(url, pid) == 300, "the live count of the 300 connects", timeout=30)
    return pid, wait_until(lambda: (h := get(f"{url}/health"))[0] == 503 and h[1], "/health 503", timeout=30)


@pytest.mark.ebpf
def test_counts_a_full_disk_refuses_are_held_and_written_when_there_is_room_again(spawn, cli: Cli, tmp_path: Path):
    with tiny_filesystem(tmp_path / "disk", "8m") as mount:
        db = mount / "h.sqlite3"
        child, url = start_serve(spawn, db)
        first, health = filled_and_refusing(url, mount)
        # /health: 503 with why, in the healthy answer's shape; every value a string (the contract's 503)
        assert health["status"] == "unhealthy", health
        assert f"cannot write to the event store {db}: database or disk is full" in health["detail"]
        assert "Free disk space" in health["detail"] and "are held in memory until the store takes them" in health[
            "detail"]  # fmt: skip
        assert all(isinstance(v, str) for v in health.values()), health
        # /api/losses has what is held in memory, not yet in the store's losses table
        status, losses = get(f"{url}/api/losses?duration_seconds=60")
        assert status == 200 and losses["losses"].get("unstored", 0) > 0
        assert exact_but_for_the_host(losses["losses"], losses["counts_exact"]), losses
        assert "store_error" not in losses["losses"]
        # a remote server_status says why, not "still starting"
        remote = cli("--server", url, "--tool", "server_status")
        assert remote.returncode == 1, remote
        assert "database or disk is full" in remote.stdout and "still starting" not in remote.stdout + remote.stderr
        assert remote.stderr.startswith("netspy-tui: the source is unhealthy: the server is unhealthy: store: ")
        # a dashboard over --server says why in its header
        asyncio.run(dashboard_says(url, "the server is unhealthy: store: cannot write to the event store"))
        # the state is logged once, not at each of these requests: again only when what it says changed (the loss
        # causes it names are the host's: another process's connection open at the start and closed since adds one)
        for _ in range(10):
            assert get(f"{url}/health")[0] == 503
        said = "health check: source unhealthy: "
        logged = [re.sub(r"\d[\d,.]*", "#", line.split(said, 1)[1]) for line in "".join(child.err).splitlines()
                  if said in line]  # fmt: skip
        assert logged and all(a != b for a, b in zip(logged, logged[1:], strict=False)), child.err

        os.remove(mount / "filler")  # room again: the next write stores what was held
        pid = refused_connects(20)
        wait_until(lambda: connects_of(url, pid) == 20, "the 20 connects counted", timeout=30)
        wait_until(lambda: get(f"{url}/health")[0] == 200, "/health 200 again", timeout=30)
        assert child.stop() == TERMINATED
        err = "".join(child.err)
        assert "written again; the counts held in memory for" in err and "could not be written" not in err
        assert "health check: source degraded again" in err or "health check: source healthy again" in err
        # every connect is counted in the file (read back by a one-shot over it), those held in memory too
        for who, n in ((first, 300), (pid, 20)):
            summary = cli("--db", str(db), "--tool", "get_network_summary", "--pid", str(who), "--duration", "600")
            assert summary.returncode == 0 and f"made {n} outbound connection attempts" in summary.stdout, summary


@pytest.mark.ebpf
def test_counts_still_refused_at_exit_are_said_and_recorded_at_the_next_start(spawn, cli: Cli, tmp_path: Path):
    with tiny_filesystem(tmp_path / "disk", "8m") as mount:
        db = mount / "h.sqlite3"
        child, url = start_serve(spawn, db)
        filled_and_refusing(url, mount)
        assert child.stop() == TERMINATED  # (SIGTERM, the disk still full)
        err = "".join(child.err)
        assert err.rstrip().endswith("netspy-tui: stopped by SIGTERM."), err
        said = re.search(r"the counts of ([\d,]+) connects and ([\d,]+) drops could not be written \(at close: "
                         r"database or disk is full\): lost", err)  # fmt: skip
        assert said and int(said[1].replace(",", "")) >= 300, err
        assert f"recorded in {db}-lost; the next start adds it to the store's losses" in err

        os.remove(mount / "filler")  # room again: the next start records the loss in the store
        child, url = start_serve(spawn, db)
        status, losses = get(f"{url}/api/losses?duration_seconds=600")
        assert status == 200 and losses["losses"]["store_error"] >= 300 and losses["counts_exact"] is False
        assert child.stop() == TERMINATED
        assert "the last run could not record" in "".join(child.err)
        # and a one-shot over the file says the counts are incomplete
        summary = cli("--db", str(db), "--tool", "get_network_summary", "--duration", "600")
        assert summary.returncode == 0, summary
        assert "events whose counts could not be stored (store write failed)" in summary.stdout
        assert "counts are incomplete" in summary.stdout


@pytest.mark.root
def test_a_start_on_a_still_full_disk_is_the_writers_one_line(cli: Cli, tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "disk", "8m") as mount:
        db = mount / "h.sqlite3"
        at = datetime.now(UTC) - timedelta(seconds=30)
        with EventStore(db) as store:  # (a store a previous run wrote and closed)
            store.add_events([connection(pid=7, command="curl", time=at) for _ in range(100)])
        fill(mount / "filler")
        run = cli("serve", "--collector", "procfs", "--port", str(free_port()), "--db", str(db), timeout=30)
    line = assert_one_line_error(run, 2)
    # (SQLite says "disk I/O error" when it cannot make the store's shared-memory file on the full disk)
    said = re.fullmatch(rf"netspy-tui: cannot (?:open|write to) the event store {re.escape(str(db))}: (?:database or "
                        r"disk is full|disk I/O error \(no free space left on its file system\))\. Free disk space or "
                        r"choose another store file\.", line)  # fmt: skip
    assert said, line


def damaged(path: Path) -> None:
    """A store closed cleanly, then 300 random bytes overwritten in every 7th page from 40 KiB on."""
    at = datetime.now(UTC) - timedelta(seconds=30)
    with EventStore(path) as store:
        for _ in range(10):
            store.add_events([connection(pid=100 + j, command=f"c{j}", port=j, time=at) for j in range(500)])
    rng = random.Random(7)
    size = path.stat().st_size
    with path.open("r+b") as f:
        for offset in range(40 * 1024, size, 7 * 4096):
            f.seek(offset + rng.randrange(0, 4096 - 300))
            f.write(rng.randbytes(300))


def garbage(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(50_000))


@pytest.mark.parametrize(("spoil", "said"), [(damaged, "database disk image is malformed ("),
                                              (garbage, "file is not a database")])  # fmt: skip
def test_serve_refuses_a_damaged_store_at_start_naming_the_damage(cli: Cli, tmp_path: Path, spoil, said) -> None:
    """Not a start that then loses every event, advising to free disk space: one line, exit 2."""
    db = tmp_path / "store" / "h.sqlite3"
    db.parent.mkdir(mode=0o700)
    spoil(db)
    run = cli("serve", "--collector", "procfs", "--port", str(free_port()), "--db", str(db), timeout=30)
    line = assert_one_line_error(run, 2)
    assert f"the event store {db}: {said}" in line, line
    assert line.endswith("The file is damaged: move it away and start with a fresh store file."), line
    assert "disk space" not in line and "directory you can write" not in line


async def dashboard_says(url: str, needle: str) -> None:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.telemetry.client import HttpSource
    from netspy_tui.tui.app import NetspyApp
    from tests.tui.scenes import wait_for

    source = HttpSource(url, retries=0)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2)
            async with app.run_test(size=(200, 45)) as pilot:
                await wait_for(pilot, lambda: needle in app.dashboard.status.build().plain, "the header's reason")
                assert "○ unhealthy" in app.dashboard.status.build().plain
    finally:
        await source.aclose()
