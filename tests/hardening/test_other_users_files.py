"""Root never takes settings from, nor writes through, what another user planted (a shared HOME, /tmp).

netspy-tui runs as root, and ``sudo -E`` keeps the user's ``HOME``: the config file, the dashboard's log and
its export directory may then sit in a directory that user owns. Another user (nobody, uid 65534: files
``chown``-ed to it, links planted by it in a sticky directory like /tmp) must not be able to:

* give root settings (the server root sends its token to, the AI endpoint it sends the API key to) with a
  config file of theirs, or hang it with a FIFO there;
* have root append its log to their file, or make root create its log in their directory;
* redirect an export or a screenshot with a link at the export directory;
* redirect ``--db`` (or the aggregator's ``--db`` directory, and its chmod) with a link of theirs.

Each refusal is one line and exit 2 on the command line, a toast in the dashboard; nothing is written.
These checks are the product's own: they hold whatever ``fs.protected_symlinks`` says.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection
from tests.hardening.conftest import DEMO, Cli, assert_one_line_error, free_port, product_env, wait_until
from tests.hardening.test_files_as_root import (
    NOBODY,
    PtyDashboard,
    dashboard,
    mode,
    needs_root,
    plant_link,
    toasts,
)
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Clock, wait_for

pytestmark = pytest.mark.root


def nobodys(path: Path) -> Path:
    """``path`` (made by the test) given to nobody, as a link's own owner for a link."""
    os.lchown(path, NOBODY, NOBODY)
    return path


class Listener:
    """An HTTP server on 127.0.0.1 that answers nothing useful and remembers every request's path and token."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append((self.path, self.headers.get("Authorization", "")))
                self.send_response(404)
                self.end_headers()

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


def plain(screen: bytearray) -> str:
    """What a terminal shows, roughly: the bytes written without escape sequences, blanks and borders as a space."""
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(screen)).decode("utf-8", "replace")
    return re.sub(r"[\s│▌]+", " ", text)


def default_config_env(**extra: str) -> dict[str, str]:
    """For :class:`Cli`: NETSPY_CONFIG empty (unset), so the file at $XDG_CONFIG_HOME/netspy-tui/config.toml is read."""
    return {"NETSPY_CONFIG": "", **extra}


# --- the config file -------------------------------------------------------------------------------


def test_another_users_config_file_is_refused_and_nothing_is_sent_where_it_says(
    cli: Cli, tmp_path: Path, listener: Listener
) -> None:
    needs_root()
    config = tmp_path / "config" / "netspy-tui" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'server = "{listener.url}"\nopenai_base_url = "{listener.url}/v1"\n')
    nobodys(config)
    env = default_config_env(NETSPY_TOKEN="root-secret-token")
    run = cli("--tool", "server_status", env=env, timeout=30)
    line = assert_one_line_error(run, 2)
    assert f"refusing the config file {config}: it belongs to another user (uid {NOBODY})" in line, line
    assert listener.seen == [], "root sent requests where another user's config file said"
    # the same for NETSPY_CONFIG, and for a file of root's that others (or its group) could write
    os.lchown(config, 0, 0)
    config.chmod(0o664)
    run = cli("--show-config", env={"NETSPY_CONFIG": str(config)})
    assert "it is writable by its group (mode 0664)" in assert_one_line_error(run, 2)
    config.chmod(0o644)  # root's own, only root can write: read
    run = cli("--show-config", env={"NETSPY_CONFIG": str(config)})
    assert run.returncode == 0 and f"file {config}" in run.stdout, run.stderr


def test_a_fifo_or_another_users_link_at_the_config_file_is_one_line_never_a_hang(cli: Cli, tmp_path: Path) -> None:
    needs_root()
    config = tmp_path / "config" / "netspy-tui" / "config.toml"
    config.parent.mkdir(parents=True)
    os.mkfifo(config)
    # (the old code opened the FIFO blocking: both runs hung until the timeout)
    tool = cli("--tool", "server_status", "--replay", str(DEMO), env=default_config_env(), timeout=30)
    shown = cli("--show-config", env={"NETSPY_CONFIG": str(config)}, timeout=30)
    for run in (tool, shown):
        line = assert_one_line_error(run, 2)
        assert f"refusing the config file {config}: it is a FIFO (named pipe), not a regular file" in line, line
    # a link of one's own to a file of one's own (dotfiles) is followed; another user's link is not
    config.unlink()
    real = tmp_path / "dotfiles.toml"
    real.write_text("interval = 2.5\n")
    config.symlink_to(real)
    run = cli("--show-config", env={"NETSPY_CONFIG": str(config)})
    assert run.returncode == 0 and "2.5" in run.stdout, run.stderr
    nobodys(config)
    line = assert_one_line_error(cli("--show-config", env={"NETSPY_CONFIG": str(config)}), 2)
    assert f"{config} is a symbolic link of another user (uid {NOBODY})" in line, line


# --- the log -----------------------------------------------------------------------------------------


def test_log_file_of_another_user_is_refused_and_not_appended_to(cli: Cli, shared_dir: Path) -> None:
    needs_root()
    log = shared_dir / "x.log"
    log.touch()
    log.chmod(0o666)
    nobodys(log)
    run = cli("--log-file", str(log), "--verbose", "--tool", "server_status", "--server", "http://127.0.0.1:9")
    line = assert_one_line_error(run, 2)
    assert f"refusing to write the log file {log}: it is another user's file (uid {NOBODY})" in line, line
    assert "a regular file of yours" in line
    assert log.stat().st_size == 0, "root appended its log to another user's file"


@pytest.mark.slow
def test_dashboard_with_another_users_state_home_runs_without_a_log_and_says_so(tmp_path: Path) -> None:
    needs_root()
    state = tmp_path / "state"  # (a HOME kept by sudo -E: its directories are the user's)
    state.mkdir()
    nobodys(state)
    app = PtyDashboard(["--replay", str(DEMO), "--replay-speed", "0"], product_env(tmp_path))
    try:
        wait_until(lambda: b"python3" in app.screen, "the dashboard drawn", 30)
        note = "no log file: refusing the log file's directory"  # (the toast's first line; the path follows)
        wait_until(lambda: note in plain(app.screen), "the note that no log is kept", 30)
    finally:
        app.stop()
    assert list(state.iterdir()) == [], "root made its log in another user's directory"


# --- exports and screenshots ----------------------------------------------------------------------------


async def test_export_directory_through_another_users_link_or_directory_writes_nothing(tmp_path: Path) -> None:
    needs_root()
    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o700)
    base = tmp_path / "state" / "netspy-tui"
    base.mkdir(parents=True)
    exports = base / "exports"
    exports.symlink_to(victim)
    nobodys(exports)  # `ln -s /root ~/.local/state/netspy-tui/exports` by the HOME's user
    users = tmp_path / "users-state"
    users.mkdir()
    nobodys(users)
    cases = [
        (exports, f"{exports} is a symbolic link of another user (uid {NOBODY})"),
        (users / "netspy-tui" / "exports", f"{users} belongs to another user (uid {NOBODY})"),
    ]
    for directory, why in cases:
        source = MemorySource([connection(time=DEMO_NOW)], clock=Clock())
        async with dashboard(source, export_dir=directory) as (app, pilot):
            await pilot.press("e")
            await wait_for(pilot, lambda: "Export failed" in toasts(app), "the export refused")
            app.action_screenshot()
            await wait_for(pilot, lambda: "Screenshot not saved" in toasts(app), "the screenshot refused")
            shown = toasts(app)
            assert f"refusing the export directory {directory}: {why}" in shown, shown
            assert "Traceback" not in shown
    assert list(victim.iterdir()) == [] and list(users.iterdir()) == [], "root wrote through another user's path"


# --- --db ------------------------------------------------------------------------------------------------


def test_db_through_another_users_link_is_refused(cli: Cli, tmp_path: Path, shared_dir: Path) -> None:
    needs_root()
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    link = shared_dir / "agg"
    assert plant_link(victim, link)  # nobody: `ln -s /root/victim /tmp/agg`
    db = link / "events.sqlite3"
    chained = tmp_path / "roots-link"  # root's own link to the planted one: the walk follows links in links
    chained.symlink_to(link)
    serve = ["serve", "--aggregate", "--db", str(link), "--port", str(free_port())]
    one_shot = ["--tool", "list_connections", "--replay", str(DEMO), "--db"]
    runs = cli.many([[*one_shot, str(db)], [*one_shot, str(chained / "events.sqlite3")], serve], timeout=30)
    why = f"{link} is a symbolic link of another user (uid {NOBODY})"
    for run in runs:
        assert why in assert_one_line_error(run, 2)
    assert list(victim.iterdir()) == []
    # the aggregator never changes a mode through a link (the old code made the link's target 0700)
    victim.chmod(0o755)
    assert why in assert_one_line_error(cli(*serve, timeout=30), 2)
    assert mode(victim) == 0o755 and stat.S_ISLNK(os.lstat(link).st_mode)


# --- --record --------------------------------------------------------------------------------------------


def test_record_through_another_users_link_is_refused_and_nothing_is_created(
    cli: Cli, tmp_path: Path, shared_dir: Path
) -> None:
    needs_root()
    theirs = tmp_path / "nobodys-home"  # nobody's own directory, and nobody's link to it in a shared one
    theirs.mkdir()
    nobodys(theirs)
    link = shared_dir / "rec"
    assert plant_link(theirs, link)  # nobody: `ln -s ~nobody /tmp/rec`
    run = cli("--tool", "list_connections", "--replay", str(DEMO), "--record", str(link / "rec.jsonl"), timeout=30)
    line = assert_one_line_error(run, 2)
    why = f"{link} is a symbolic link of another user (uid {NOBODY})"
    assert f"refusing to write the recording {link / 'rec.jsonl'}: {why}" in line, line
    assert list(theirs.iterdir()) == [], "root created its recording in another user's directory"


def test_record_through_another_users_link_then_dot_dot_is_refused(cli: Cli, tmp_path: Path, shared_dir: Path) -> None:
    needs_root()
    home = tmp_path / "nobodys-home"
    (home / "sub").mkdir(parents=True)
    nobodys(home)
    nobodys(home / "sub")
    link = shared_dir / "sub"
    assert plant_link(home / "sub", link)
    # the kernel follows the link, then goes to its target's parent: nobody's home, not the shared directory
    record = f"{link}/../rec.jsonl"
    run = cli("--tool", "list_connections", "--replay", str(DEMO), "--record", record, timeout=30)
    line = assert_one_line_error(run, 2)
    assert f"{link} is a symbolic link of another user (uid {NOBODY})" in line, line
    assert sorted(p.name for p in home.iterdir()) == ["sub"], "root created its recording in another user's directory"
    assert list(shared_dir.iterdir()) == [link]


def test_aggregator_db_through_another_users_link_then_dot_dot_makes_nothing(
    cli: Cli, tmp_path: Path, shared_dir: Path
) -> None:
    needs_root()
    home = tmp_path / "nobodys-home"
    (home / "sub").mkdir(parents=True)
    (home / "x").mkdir()
    for path in (home, home / "sub", home / "x"):
        nobodys(path)
    link = shared_dir / "sub"
    assert plant_link(home / "sub", link)
    # `link/../x` is nobody's x to the kernel; folded as text it was the shared directory's x, made there first
    run = cli("serve", "--aggregate", "--db", f"{link}/../x", "--port", str(free_port()), timeout=30)
    line = assert_one_line_error(run, 2)
    assert f"{link} is a symbolic link of another user (uid {NOBODY})" in line, line
    assert list(shared_dir.iterdir()) == [link], "root made the store directory before refusing it"
    assert list((home / "x").iterdir()) == []
