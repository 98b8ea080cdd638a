"""Files written as root (issue 11): exclusive, no links followed, private modes, scratch removed.

A second user (nobody, uid 65534, through ``subprocess.run(user=...)``) plants symbolic links at the
names root is about to write in a world-writable sticky directory like /tmp: the scratch store,
a ``--record`` file, a dashboard export. None may be followed. Every file the product creates is
0600 (the store, its -wal and -shm, exports, recordings), every directory 0700, and the scratch
directory is gone after every exit: a normal one, a failed start, SIGTERM and SIGHUP of the dashboard.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from netspy_tui.config import Settings
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry import embedded
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.hardening.conftest import (
    DEMO,
    REPO,
    TERMINATED,
    Child,
    Cli,
    assert_one_line_error,
    free_port,
    product_env,
    wait_until,
)
from tests.hardening.test_security import served_url
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Clock, wait_for

NOBODY = 65534


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as user and group nobody (no supplementary groups)."""
    return subprocess.run(
        list(argv), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=30
    )


def plant_link(target: Path, at: Path) -> bool:
    """nobody tries to put a symbolic link to ``target`` at ``at``; True if it is there."""
    return as_nobody("ln", "-s", str(target), str(at)).returncode == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_private_file(path: Path) -> None:
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
    assert stat.S_IMODE(st.st_mode) == 0o600, f"{path} is {oct(stat.S_IMODE(st.st_mode))}"


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user")


@pytest.fixture
def scratch_env(tmp_path: Path) -> dict[str, str]:
    """Product environment whose temp directory is one the test can list afterwards (an empty
    XDG_RUNTIME_DIR is not used)."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    return {"TMPDIR": str(tmpdir), "XDG_RUNTIME_DIR": ""}


# --- the scratch store ---------------------------------------------------------------------------


@pytest.mark.root
async def test_scratch_store_is_private_and_links_planted_at_its_names_are_not_followed(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_root()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_dir))  # the scratch would go to this shared /tmp
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))
    target = shared_dir / "stolen-events"
    planted: dict[str, bool] = {}
    opened: list[EventStore] = []
    real_store = embedded.EventStore

    def store_after_the_attack(path: Path, **kw: Any) -> EventStore:
        # the moment the old code left open: the name is known, the file not yet created
        for suffix in ("", "-wal", "-shm", "-journal"):
            planted[suffix] = plant_link(target, Path(f"{path}{suffix}"))
        store = real_store(path, **kw)
        opened.append(store)
        return store

    monkeypatch.setattr(embedded, "EventStore", store_after_the_attack)
    settings = Settings(replay=DEMO, replay_speed=0, collector="replay")
    async with embedded.open_embedded(settings) as source:
        assert source.collector is not None
        assert await asyncio.to_thread(source.collector.wait, 20)
        db = opened[0].path
        assert db is not None
        assert not await asyncio.to_thread(os.path.lexists, target), "root wrote its store through another user's link"
        assert planted == {"": False, "-wal": False, "-shm": False, "-journal": False}
        assert mode(db.parent) == 0o700 and db.parent.parent == shared_dir
        for suffix in ("", "-wal", "-shm"):
            assert_private_file(Path(f"{db}{suffix}"))
        assert (await source.info()).stored_events == len(DEMO.read_text().splitlines())
    assert not await asyncio.to_thread(os.path.lexists, target)
    assert not await asyncio.to_thread(db.parent.exists), "the scratch directory was left behind"


def test_a_failed_start_or_one_shot_leaves_no_scratch(cli: Cli, tmp_path: Path, scratch_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.jsonl"
    first = DEMO.read_text().splitlines()[0]
    bad.write_text(first + "\n{not json\n")  # the quick check of the first line passes; the full check fails
    existing = tmp_path / "existing.jsonl"
    existing.write_text("keep me\n")
    env = scratch_env
    runs = cli.many(
        [
            ["--tool", "list_connections", "--replay", str(bad)],
            ["--tool", "list_connections", "--replay", str(DEMO), "--record", str(existing)],
            ["--tool", "get_network_summary", "--replay", str(DEMO), "--replay-speed", "0"],
        ],
        env=env,
    )
    assert "bad.jsonl:2: bad JSON" in assert_one_line_error(runs[0], 2)
    assert "already exists" in assert_one_line_error(runs[1], 2)
    assert runs[2].returncode == 0, runs[2].stderr
    assert existing.read_text() == "keep me\n"
    assert list(Path(scratch_env["TMPDIR"]).iterdir()) == []


class PtyDashboard:
    """The dashboard as a user runs it: ``python -m netspy_tui`` on a pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netspy_tui", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
            cwd=REPO,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.screen = bytearray()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen.extend(data)

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_of_the_dashboard_remove_the_scratch_and_exports_go_to_the_export_dir(
    tmp_path: Path, scratch_env: dict[str, str], sig: signal.Signals
) -> None:
    exports = tmp_path / "my-exports"
    env = product_env(tmp_path, NETSPY_EXPORT_DIR=str(exports), **scratch_env)
    tmpdir = Path(scratch_env["TMPDIR"])
    app = PtyDashboard(["--replay", str(DEMO), "--replay-speed", "0"], env)
    try:
        db = wait_until(lambda: next(iter(tmpdir.glob("netspy-tui-*/events.sqlite3")), None), "the scratch store", 30)
        wait_until(lambda: Path(f"{db}-wal").exists(), "events stored", 30)
        assert mode(db.parent) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert_private_file(Path(f"{db}{suffix}"))
        wait_until(lambda: b"python3" in app.screen, "the dashboard drawn", 30)
        app.press(b"e")
        exported = wait_until(lambda: next(iter(exports.glob("netspy-connections-*.json")), None), "an export", 30)
        assert mode(exports) == 0o700
        assert_private_file(exported)
        app.proc.send_signal(sig)
        assert app.proc.wait(30) == 128 + sig
        wait_until(lambda: f"stopped by {sig.name}".encode() in app.screen, "the one-line reason", 10)
    finally:
        app.stop()
    assert list(tmpdir.iterdir()) == [], "the scratch store was left behind"
    log = tmp_path / "state" / "netspy-tui" / "netspy-tui.log"
    assert_private_file(log)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["repl", "mcp", "serve"])
def test_sigterm_of_a_session_reading_stdin_or_serving_removes_the_scratch(
    spawn: Callable[..., Child], scratch_env: dict[str, str], command: str
) -> None:
    """The REPL and MCP over stdio wait in a thread reading stdin (which no cancellation interrupts);
    ``serve`` has uvicorn's graceful shutdown for SIGTERM and ours for SIGHUP."""
    tmpdir = Path(scratch_env["TMPDIR"])
    extra = ["--port", str(free_port())] if command == "serve" else []
    child = spawn(command, "--replay", str(DEMO), *extra, env=scratch_env, stdin=True)
    wait_until(lambda: next(iter(tmpdir.glob("netspy-tui-*/events.sqlite3")), None), "the scratch store", 30)
    sig = signal.SIGHUP if command == "serve" else signal.SIGTERM
    child.proc.send_signal(sig)
    assert child.proc.wait(30) == 128 + sig
    wait_until(lambda: any(f"netspy-tui: stopped by {sig.name}." in line for line in child.err), "the reason", 10)
    assert list(tmpdir.iterdir()) == [], "the scratch store was left behind"


# --- --db ------------------------------------------------------------------------------------------


def test_db_that_is_a_link_a_device_or_in_a_shared_directory_is_refused(
    cli: Cli, tmp_path: Path, shared_dir: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    real = private / "real.sqlite3"
    real.write_bytes(b"")
    link = private / "link.sqlite3"
    link.symlink_to(real)
    planted_side = private / "side.sqlite3"
    (private / "side.sqlite3-wal").symlink_to(tmp_path / "elsewhere")
    journal = Path("/dev/null-journal")
    if journal.exists():
        journal.unlink()  # left by the old code (`serve --db /dev/null`)
    cases = [
        (link, "it is a symbolic link, not a regular file"),
        (Path("/dev/null"), "it is a character device, not a regular file"),
        (shared_dir / "events.sqlite3", "is writable by other users"),
        (planted_side, "side.sqlite3-wal is a symbolic link"),
    ]
    runs = cli.many([["--tool", "list_connections", "--replay", str(DEMO), "--db", str(db)] for db, _ in cases])
    for (db, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 2)
        assert f"refusing the store {db}" in line and fragment in line, line
    assert real.read_bytes() == b"" and not (tmp_path / "elsewhere").exists()
    assert not journal.exists() and list(shared_dir.iterdir()) == []


def test_store_files_and_directories_are_private(cli: Cli, tmp_path: Path) -> None:
    # (a --db never creates directories: one whose directory is missing is refused, see test_readme_walk.py)
    db = tmp_path / "events.sqlite3"
    run = cli("--tool", "get_network_summary", "--replay", str(DEMO), "--replay-speed", "0", "--db", str(db))
    assert run.returncode == 0, run.stderr
    assert_private_file(db)
    # while a store is open its -wal and -shm exist: the same mode, whatever the umask
    previous = os.umask(0o022)
    try:
        with EventStore(tmp_path / "open.sqlite3") as store:
            store.add_events([connection(pid=i) for i in range(10)])
            for suffix in ("", "-wal", "-shm"):
                assert_private_file(tmp_path / f"open.sqlite3{suffix}")
    finally:
        os.umask(previous)
    # a store an older version left world-readable is tightened when opened
    old = tmp_path / "old.sqlite3"
    EventStore(old).close()
    old.chmod(0o644)
    EventStore(old).close()
    assert_private_file(old)


# --- --record --------------------------------------------------------------------------------------


@pytest.mark.root
def test_record_never_follows_a_planted_link_nor_overwrites(cli: Cli, shared_dir: Path, tmp_path: Path) -> None:
    needs_root()
    target = shared_dir / "victim"
    link = shared_dir / "netspy-record.jsonl"
    assert plant_link(target, link)
    existing = shared_dir / "existing.jsonl"
    existing.write_text("keep me\n")
    fresh = tmp_path / "fresh.jsonl"  # (its directory must exist: a typo never leaves new directories behind)
    base = ["--tool", "list_connections", "--replay", str(DEMO), "--replay-speed", "0", "--record"]
    linked, exists, ok = cli.many([[*base, str(link)], [*base, str(existing)], [*base, str(fresh)]])
    line = assert_one_line_error(linked, 2)
    assert f"refusing to write the recording {link}: it already exists as a symbolic link" in line
    assert "already exists" in assert_one_line_error(exists, 2)
    assert not os.path.lexists(target) and existing.read_text() == "keep me\n"
    assert ok.returncode == 0, ok.stderr
    assert_private_file(fresh)
    assert fresh.read_text().count("\n") == len(DEMO.read_text().splitlines())


# --- dashboard exports -------------------------------------------------------------------------------


@asynccontextmanager
async def dashboard(source: MemorySource, **kw: Any) -> AsyncIterator[tuple[NetspyApp, Pilot[int]]]:
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=Clock(), **kw)
        async with app.run_test(size=(160, 45)) as pilot:
            drawn = app.dashboard
            await wait_for(pilot, lambda: drawn.rendered is not None and drawn.connections.row_count > 0, "rows")
            yield app, pilot


def toasts(app: NetspyApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


def exports_in(directory: Path) -> list[Path]:
    return [p for p in directory.glob("netspy-*.json") if not p.is_symlink()]


async def export(app: NetspyApp, pilot: Pilot[int], directory: Path) -> Path:
    """Press ``e``; the one export file written."""
    await pilot.press("e")
    await wait_for(pilot, lambda: bool(exports_in(directory)), "the export")
    [path] = exports_in(directory)
    return path


async def test_json_export_is_inert_private_and_its_full_path_is_shown(tmp_path: Path) -> None:
    hostile = ["evil\u202eexe.txt", "csi\x9b31m", "nul\x00byte"]
    events = [
        connection(pid=100 + i, command=name, time=DEMO_NOW - timedelta(seconds=5)) for i, name in enumerate(hostile)
    ]
    directory = tmp_path / "not" / "yet"
    async with dashboard(MemorySource(events, clock=Clock()), export_dir=directory) as (app, pilot):
        path = await export(app, pilot, directory)
        assert str(path) in toasts(app) and path.is_absolute()
    raw = path.read_text(encoding="utf-8")
    for ch in ("\u202e", "\x9b", "\x00"):
        assert ch not in raw, f"raw {ch!r} in the JSON export"
    assert sorted(c["command"] for c in json.loads(raw)["connections"]) == sorted(hostile)  # same values
    assert_private_file(path)
    assert mode(directory) == 0o700 and mode(directory.parent) == 0o700


async def test_exports_default_to_the_per_user_state_directory_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    exports = tmp_path / "state" / "netspy-tui" / "exports"
    async with dashboard(MemorySource([connection(time=DEMO_NOW)], clock=Clock())) as (app, pilot):
        path = await export(app, pilot, exports)
        assert str(path) in toasts(app)
    assert path.parent == exports and mode(exports) == 0o700
    assert list(cwd.iterdir()) == []


@pytest.mark.root
async def test_export_skips_a_link_another_user_planted_at_the_predicted_name(shared_dir: Path) -> None:
    needs_root()
    target = shared_dir / "victim"
    predicted = shared_dir / f"netspy-connections-{DEMO_NOW:%Y%m%dT%H%M%SZ}.json"
    assert await asyncio.to_thread(plant_link, target, predicted)
    async with dashboard(MemorySource([connection(time=DEMO_NOW)], clock=Clock()), export_dir=shared_dir) as (
        app,
        pilot,
    ):
        path = await export(app, pilot, shared_dir)
        assert path == predicted.with_name(predicted.stem + "-1.json")
        assert str(path) in toasts(app)
    assert predicted.is_symlink() and not target.exists(), "root wrote an export through another user's link"
    assert_private_file(path)


def test_a_second_writer_of_one_db_is_refused_and_readers_read_on(spawn, cli, tmp_path: Path) -> None:  # noqa: ANN001
    """Two collectors on one --db file would store every event twice: while `serve --db` writes it, another
    session on it is one line, exit 2; a one-shot --tool --db reads its history; once the server stopped, the
    file is free again."""
    db = tmp_path / "events.sqlite3"
    child = spawn("serve", "--db", str(db), "--replay", str(DEMO), "--replay-speed", "0", "--port", str(free_port()))
    served_url(child, "the eBPF server API")
    second = cli("repl", "--db", str(db), "--replay", str(DEMO), "--replay-speed", "0", input="summary\nquit\n")
    line = assert_one_line_error(second, 2)
    assert line.startswith(f"netspy-tui: the event store {db} is being written by another netspy-tui process."), line
    reader = cli("--db", str(db), "--tool", "get_network_summary", "--duration", "604800")
    assert reader.returncode == 0 and "made" in reader.stdout, reader.stderr
    assert child.stop() == TERMINATED
    again = cli("repl", "--db", str(db), "--replay", str(DEMO), "--replay-speed", "0", input="quit\n")
    assert again.returncode == 0, again.stderr


# --- what an audit found (2026-12-07): each reproduced first, each a way another user redirected root's writes --


def owned_by_nobody(path: Path) -> Path:
    path.mkdir(mode=0o755)
    os.chown(path, NOBODY, NOBODY)
    return path


@pytest.mark.root
def test_a_log_file_or_recording_under_another_users_directory_is_refused(cli: Cli, tmp_path: Path) -> None:
    # nobody owned a directory on the way: it could swap "logs" for a link to a directory of root's between the
    # check and the open (renameat2 RENAME_EXCHANGE), or before a rollover renamed the old logs by name
    needs_root()
    theirs = owned_by_nobody(tmp_path / "theirs")
    logs = theirs / "logs"
    logs.mkdir(mode=0o700)  # (root's own directory, under theirs)
    base = ["--tool", "get_network_summary", "--replay", str(DEMO), "--replay-speed", "0"]
    logged, recorded = cli.many([[*base, "--verbose", "--log-file", str(logs / "x.log")],
                                 [*base, "--record", str(logs / "rec.jsonl")]])  # fmt: skip
    for run, what in ((logged, "the log file"), (recorded, "the recording")):
        line = assert_one_line_error(run, 2)
        assert f"{theirs} belongs to another user (uid {NOBODY})" in line and what in line
    assert list(logs.iterdir()) == []


@pytest.mark.root
def test_the_repl_keeps_no_history_copy_under_a_tmpdir_of_another_user(tmp_path: Path) -> None:
    # su (without -) or sudo keeps a user's TMPDIR: the REPL's scratch directory there could be renamed away and
    # a link put in its place, and readline wrote its history copy by name into root's files
    needs_root()
    from netspy_tui import safefs

    theirs = owned_by_nobody(tmp_path / "tmp")
    previous = tempfile.tempdir
    tempfile.tempdir = str(theirs)
    try:
        with pytest.raises(safefs.UnsafePath, match=f"belongs to another user \\(uid {NOBODY}\\)"):
            safefs.scratch_dir()
    finally:
        tempfile.tempdir = previous
    assert list(theirs.iterdir()) == []  # (nothing made there)


@pytest.mark.root
async def test_an_export_directory_others_can_write_that_is_not_sticky_is_refused(tmp_path: Path) -> None:
    # anyone could rename root's export away and put a forged one in its place; a sticky one (like /tmp) is fine
    open_dir, sticky = tmp_path / "open", tmp_path / "sticky"
    for path, bits in ((open_dir, 0o777), (sticky, 0o1777)):
        path.mkdir()
        path.chmod(bits)
    source = MemorySource([connection(ago=1)], label="test")
    async with dashboard(source, export_dir=open_dir) as (app, pilot):
        await pilot.press("e")
        await wait_for(pilot, lambda: "is writable by other users" in toasts(app), "the refusal")
    assert list(open_dir.iterdir()) == []
    async with dashboard(source, export_dir=sticky) as (app, pilot):
        assert_private_file(await export(app, pilot, sticky))


@pytest.mark.root
def test_a_store_side_file_left_readable_is_made_private_before_events_go_in(tmp_path: Path) -> None:
    # a crash left a 0644 -wal/-shm beside a store (an older version, another umask): SQLite reuses them as they
    # are, and other users could read every event written into the -wal
    # (a crash's files: copied from a store while open; SQLite itself tightens only an empty side file)
    live, db = tmp_path / "live.sqlite3", tmp_path / "events.sqlite3"
    with EventStore(live) as store:
        store.add_events([connection(pid=i) for i in range(10)])
        store.flush(10)
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{live}{suffix}", f"{db}{suffix}")
            os.chmod(f"{db}{suffix}", 0o600 if not suffix else 0o644)
    assert os.path.getsize(f"{db}-wal") > 0
    with EventStore(db) as store:
        store.add_events([connection(pid=i) for i in range(10)])
        for suffix in ("-wal", "-shm"):
            assert_private_file(Path(f"{db}{suffix}"))
