"""`--log-file`: any command logs to a rotated file instead of stderr; secrets never reach it."""

from __future__ import annotations

from pathlib import Path

from netspy_tui.logs import MAX_BYTES
from tests.hardening.conftest import DEMO

TOKEN = "tok-logfile-secret-42"


def test_log_file_rotates_and_never_holds_the_token(run_cli, tmp_path: Path):
    log = tmp_path / "logs" / "netspy.log"
    log.parent.mkdir()
    log.write_text("old line\n" * (MAX_BYTES // 9 + 1))  # already at the size limit: the next record rotates it
    out = run_cli(
        "--tool",
        "get_network_summary",
        "--replay",
        str(DEMO),
        "--replay-speed",
        "0",
        "--duration",
        "600",
        "--verbose",
        "--log-file",
        str(log),
        "--token",
        TOKEN,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the log went to the file, not to stderr
    rotated = log.with_name("netspy.log.1")
    assert rotated.is_file() and rotated.read_text().startswith("old line\n")
    text = log.read_text()
    assert "DEBUG" in text and "old line" not in text
    assert TOKEN not in text + out.stdout


def test_an_unwritable_log_file_is_one_line_exit_2(run_cli, tmp_path: Path):
    out = run_cli("--tool", "server_status", "--log-file", str(tmp_path), "--server", "http://127.0.0.1:9")
    assert out.returncode == 2
    assert out.stderr.startswith(f"netspy-tui: cannot write the log file {tmp_path}: Is a directory")
    assert out.stderr.count("\n") == 1 and out.stdout == ""


def test_a_log_file_name_another_user_planted_is_never_followed_or_waited_on(run_cli, tmp_path: Path):
    """As every file netspy-tui writes as root: a link at the name (to a file, or dangling) is refused, not
    followed; a FIFO is refused, not waited on; a directory that does not exist is not made (a typo)."""
    import os

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "to-victim").symlink_to(victim)
    (tmp_path / "dangling").symlink_to(tmp_path / "made-through-the-link")
    os.mkfifo(tmp_path / "fifo")
    cases = {
        "to-victim": "it is a symbolic link",
        "dangling": "it is a symbolic link",
        "fifo": "it is a FIFO",
        "missing/x.log": f"directory {tmp_path}/missing does not exist",
    }
    for name, said in cases.items():
        out = run_cli("--tool", "server_status", "--log-file", str(tmp_path / name), "--server", "http://127.0.0.1:9",
                      timeout=20)  # fmt: skip
        assert out.returncode == 2, (name, out.stderr)
        assert said in out.stderr and out.stderr.count("\n") == 1 and out.stdout == "", (name, out.stderr)
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "made-through-the-link").exists() and not (tmp_path / "missing").exists()


def test_a_log_that_can_no_longer_be_written_says_so_once(tmp_path: Path, capsys):
    """A rollover that finds a link planted at the log's name: one line on stderr, then no more logging to the
    file — not a traceback at every later record."""
    import logging

    from netspy_tui.logs import setup_logging

    log = tmp_path / "x.log"
    try:
        setup_logging(log_file=log)
        handler = logging.getLogger().handlers[0]
        handler.maxBytes = 1  # (every record rolls the file over)
        logging.getLogger("t").warning("first")
        log.unlink()
        log.symlink_to(tmp_path / "elsewhere")
        for i in range(5):
            logging.getLogger("t").warning("more %d", i)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "stopped: refusing to write the log file" in err and "Traceback" not in err
        assert not (tmp_path / "elsewhere").exists()
    finally:
        setup_logging()


def test_what_a_server_or_the_kernel_said_is_logged_inert_newlines_kept(tmp_path: Path, capsys):
    """A record quoting untrusted text (a tool's failure, as the dashboard logs a failed poll; a process name) goes
    to the file or stderr with its escape sequences as visible escapes; a traceback keeps its lines."""
    import logging

    from netspy_tui.logs import setup_logging

    log = tmp_path / "x.log"
    hostile = "count_by_node.\x1b]0;PWNED\x07\x1b[2J\u202eevil"
    try:
        for target in (log, None):
            setup_logging(log_file=target)
            logging.getLogger("netspy_tui.tui.app").warning("poll failed: %s", hostile)
            try:
                raise ValueError(hostile)
            except ValueError:
                logging.getLogger("netspy_tui.tui.app").exception("a failure")
        for text in (log.read_text(), capsys.readouterr().err):
            assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
            assert "poll failed: count_by_node.\\x1b]0;PWNED\\x07\\x1b[2J\\u202eevil" in text
            assert "Traceback (most recent call last):\n" in text and "ValueError: count_by_node.\\x1b" in text
    finally:
        setup_logging()


def test_a_state_directory_that_cannot_be_made_costs_the_log_not_the_command(run_cli, tmp_path: Path):
    """XDG_STATE_HOME a file (or a read-only disk): the dashboard and --show-config ended in "unexpected error
    (NotADirectoryError …)", exit 1 (an audit's). They run without their own log and say why; an explicit
    --log-file there is still refused in one line."""
    import logging

    from netspy_tui.logs import setup_logging

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    shown = run_cli("--show-config", env={"XDG_STATE_HOME": str(blocked)})
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "unexpected error" not in shown.stderr
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        note = setup_logging(log_file=blocked / "netspy-tui" / "netspy-tui.log", make_dirs=True)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)
    assert note.startswith(f"no log file: cannot make {blocked / 'netspy-tui'} (Not a directory)"), note
    refused = run_cli("--tool", "server_status", "--replay", str(DEMO), "--log-file", str(blocked / "x.log"))
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
