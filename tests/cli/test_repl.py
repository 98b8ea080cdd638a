"""`netspy-tui repl` driven through stdin (a pipe, as a script feeds it) and a pty (as a user types)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from netspy_tui.serve import BackgroundServer, create_app
from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import DEMO
from tests.mcp.test_inbound_tools import seeded_source


def test_repl_runs_seed_commands_and_survives_mistakes(run_cli):
    events = [connection_json(pid=99, command="curl", ago=2), connection_json(pid=98, command="nginx", ago=1)]
    with FakeEbpfServer("current", events=events) as srv:
        script = (
            "\n".join(
                [
                    "summary --process curl --duration 120",
                    "list --process nginx --max-events 5",
                    "summary --pid abc",
                    "frobnicate",
                    "tools",
                    "help",
                    "analyze --process curl",
                    "quit",
                ]
            )
            + "\n"
        )
        out = run_cli("repl", "--server", srv.url, input=script)
    assert out.returncode == 1, out.stderr  # two commands failed; the others still ran
    text = out.stdout
    assert "interactive mode" not in text and "Type 'help'" not in text  # piped: only the results
    assert "Process 'curl' made 1 outbound connection attempt over the last 120 seconds" in text
    assert "nginx" in text and "-> 93.184.216.34:443" in text
    assert "error:" not in text
    assert "error: --pid expects a whole number, not 'abc'" in out.stderr
    assert "error: Unknown command 'frobnicate'" in out.stderr
    assert "list_connections" in text and "Commands:" in text
    assert "Top destinations:" in text
    assert "netspy>" not in text  # input is piped: no prompt
    assert "Traceback" not in out.stderr


def test_repl_lists_the_connections_a_served_host_accepted(run_cli):
    """``list --direction inbound`` over ``--server`` of a netspy-tui ``serve`` (its ``/api/inbound``)."""
    source = seeded_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            script = "list --direction inbound\nlist --direction sideways\nlist --process curl\nquit\n"
            out = run_cli("repl", "--server", srv.url, input=script)
    finally:
        asyncio.run(source.aclose())
    assert out.returncode == 1, out.stderr  # the bad --direction failed
    text = out.stdout
    assert "4 of 4 inbound connections, newest first" in text
    assert "sshd            <- [fd00::7]:40000" in text and "inbound, accepted on 10.0.0.2:22" in text
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --direction must be one of outbound, inbound, all, not 'sideways'. "
                      "Usage: list [--pid N] [--process NAME] [--max-events N] [--since TIME] "
                      "[--until TIME] [--before TOKEN] [--direction outbound|inbound|all]."]  # fmt: skip
    assert "-> 93.184.216.34:443" in text  # the default is still the connect() attempts
    assert "Traceback" not in out.stderr


def test_tool_lists_the_connections_a_served_host_accepted(run_cli):
    """The one-shot ``--tool list_connections --direction inbound`` over ``--server`` of a netspy-tui ``serve``."""
    source = seeded_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            out = run_cli("--server", srv.url, "--tool", "list_connections", "--direction", "inbound")
            bad = run_cli("--server", srv.url, "--tool", "list_connections", "--direction", "sideways")
    finally:
        asyncio.run(source.aclose())
    assert out.returncode == 0, out.stderr
    assert "4 of 4 inbound connections, newest first" in out.stdout
    assert "sshd            <- [fd00::7]:40000" in out.stdout
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len([line for line in bad.stderr.splitlines() if line.strip()]) <= 3 and "sideways" in bad.stderr


def test_repl_ends_cleanly_at_end_of_input(run_cli):
    with FakeEbpfServer("current") as srv:
        out = run_cli("repl", "--server", srv.url, input="summary\n")
    assert out.returncode == 0
    assert "made 0 outbound connection attempts" in out.stdout


class Terminal:
    """The REPL on a pseudo-terminal: keys in, screen bytes out."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the REPL on the pty
            # (as a terminal starts it: SIGINT not ignored even when this run of the tests was started in the
            # background, which ignores it, so the REPL's Python would ignore ctrl-c too)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "netspy_tui", *args], env)
        self.screen = b""

    def expect(self, needle: bytes, count: int = 1, timeout: float = 30) -> None:
        """Wait until ``needle`` has appeared ``count`` times in the output (fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.screen.count(needle) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} x{count} in {self.screen[-2000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the REPL ended before {needle!r}: {self.screen[-2000:]!r}"
                self.screen += chunk

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_until_reading(self, timeout: float = 30) -> None:
        """Wait until the REPL's input thread is back in readline's wait for the next key: a thread asleep in
        ``select`` on the terminal alone (``nfds`` 1, stdin). A key that raises a signal (ctrl-c) must come then:
        a SIGINT in the moment between readline echoing a key and starting that wait is left pending until the
        next key (the REPL seemed to ignore the ctrl-c, 1 in ~100 on one loaded core)."""
        deadline = time.monotonic() + timeout
        tasks = Path(f"/proc/{self.pid}/task")
        while True:
            states = []
            for task in tasks.iterdir():
                try:
                    states.append(((task / "wchan").read_text(), (task / "syscall").read_text().split()[1:2]))
                except OSError:  # the thread ended meanwhile
                    continue
            if any("poll_schedule_timeout" in wchan and call == ["0x1"] for wchan, call in states):
                return
            assert time.monotonic() < deadline, f"no thread of the REPL is waiting for a key: {states}"
            time.sleep(0.01)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            with_output = select.select([self.fd], [], [], 0.1)[0]
            if with_output:
                try:
                    self.screen += os.read(self.fd, 4096)
                except OSError:
                    pass
        os.kill(self.pid, 9)
        raise AssertionError(f"the REPL did not exit: {self.screen[-2000:]!r}")


def test_repl_on_a_terminal_edits_completes_and_remembers(cli_env, tmp_path: Path):
    env = {**cli_env, "TERM": "xterm"}
    term = Terminal(["repl", "--replay", str(DEMO), "--replay-speed", "0"], env)
    term.expect(b"netspy> ")
    term.type(b"summ\t")  # tab completes the command name (the command bar's completion)
    term.expect(b"summary ")
    term.type(b"--dur\t")  # ... and the command's flags
    term.expect(b"--duration ")
    term.type(b"600\r")
    term.expect(b"over the last 600 seconds")
    term.expect(b"netspy> ", count=2)
    term.type(b"\x1b[A")  # up arrow: the previous line comes back
    term.expect(b"summary --duration 600", count=2)
    term.type(b"\x01\x1b[3~\x1b[3~\x1b[3~\x1b[3~\x1b[3~\x1b[3~\x1b[3~analyze\r")  # edit it: ctrl-a, delete, type
    term.expect(b"Top destinations:")
    term.expect(b"netspy> ", count=3)
    term.type(b"\x04")  # ctrl-d on an empty line leaves
    assert term.wait() == 0
    os.close(term.fd)
    history = (tmp_path / "state" / "netspy-tui" / "repl_history").read_text()
    assert "summary --duration 600" in history and "analyze --duration 600" in history


def _one_command(env: dict[str, str], command: bytes) -> bytes:
    term = Terminal(["repl", "--replay", str(DEMO), "--replay-speed", "0"], env)
    term.expect(b"netspy> ")
    term.type(command + b"\r")
    term.expect(b"netspy> ", count=2)
    term.type(b"\x04")
    assert term.wait() == 0
    os.close(term.fd)
    return term.screen


def test_the_history_never_writes_or_reads_through_a_link_planted_at_its_name(cli_env, tmp_path: Path):
    """Root's REPL with a HOME another user prepared (sudo may keep it): a link at the history's name is
    neither read nor written through; the history is a new 0600 file of ours put in its place."""
    victim = tmp_path / "victim"
    victim.write_text("DATA\n")
    victim.chmod(0o644)
    state = tmp_path / "state" / "netspy-tui"
    state.mkdir(parents=True, mode=0o700)
    history = state / "repl_history"
    history.symlink_to(victim)
    screen = _one_command({**cli_env, "TERM": "xterm"}, b"summary --duration 600")
    assert b"over the last 600 seconds" in screen
    assert victim.read_text() == "DATA\n" and victim.stat().st_mode & 0o777 == 0o644
    assert not history.is_symlink() and history.stat().st_mode & 0o777 == 0o600
    assert "summary --duration 600" in history.read_text() and "DATA" not in history.read_text()
    assert [p.name for p in state.iterdir()] == ["repl_history"]  # (no scratch file left beside it)


@pytest.mark.root
def test_no_history_in_a_directory_another_user_can_write(cli_env, tmp_path: Path):
    state = tmp_path / "state" / "netspy-tui"
    state.mkdir(parents=True, mode=0o700)
    os.chown(state, 1000, 1000)  # (another user's state directory: they could swap names in it at any time)
    (state / "repl_history").write_text("theirs\n")
    screen = _one_command({**cli_env, "TERM": "xterm"}, b"summary --duration 600")
    assert b"no REPL history:" in screen and b"belongs to another user (uid 1000)" in screen
    assert (state / "repl_history").read_text() == "theirs\n"


def test_piped_repl_prints_no_prompt(run_cli):
    out = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input="summary --duration 600\nquit\n")
    assert out.returncode == 0, out.stderr
    assert "over the last 600 seconds" in out.stdout
    assert "netspy>" not in out.stdout and "\x1b" not in out.stdout


def test_ctrl_c_at_the_prompt_leaves_the_terminal_as_it_was(cli_env):
    import termios

    term = Terminal(["repl", "--replay", str(DEMO), "--replay-speed", "0"], {**cli_env, "TERM": "xterm"})
    term.expect(b"netspy> ")
    term.type(b"summ")  # readline has the terminal in its own mode while the user types
    term.expect(b"summ")
    before_exit = termios.tcgetattr(term.fd)
    assert not before_exit[3] & termios.ICANON  # (the master reads the terminal's modes)
    term.wait_until_reading()
    term.type(b"\x03")  # ctrl-c leaves the REPL ...
    assert term.wait() == 130
    after = termios.tcgetattr(term.fd)  # ... and the terminal's modes are back: echo, line editing
    os.close(term.fd)
    assert after[3] & termios.ICANON and after[3] & termios.ECHO


def test_ctrl_c_the_kernel_hands_to_the_reading_thread_still_leaves(cli_env):
    """The kernel gives a process's SIGINT to any thread that does not block it: here, as it may at random,
    to the thread reading the terminal. The REPL must still leave at once (it waited for the next key: the
    interpreter's handler runs in the main thread, whose event loop nothing woke)."""
    import signal

    term = Terminal(["repl", "--replay", str(DEMO), "--replay-speed", "0"], {**cli_env, "TERM": "xterm"})
    term.expect(b"netspy> ")
    term.wait_until_reading()
    reading = [
        int(task.name)
        for task in Path(f"/proc/{term.pid}/task").iterdir()
        if int(task.name) != term.pid
        and "poll_schedule_timeout" in (task / "wchan").read_text()
        and (task / "syscall").read_text().split()[1:2] == ["0x1"]  # select() on the terminal alone
    ]
    assert reading, "no thread of the REPL waits for a key"
    os.kill(reading[0], signal.SIGINT)  # (a thread's id: the signal goes to that thread first)
    assert term.wait() == 130
    os.close(term.fd)


def test_traffic_and_latency_commands_call_their_tools(run_cli):
    """A recording has no byte counts: the tools say so instead of showing zeros as if measured."""
    out = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input="traffic\nlatency --process curl\nquit\n")
    assert out.returncode == 0, out.stderr
    # (its own reason: "needs the eBPF collector on a kernel with …" blamed the kernel for a recording's)
    assert "Traffic is not counted here: a recording holds no byte counts (replay)." in out.stdout
    assert "Connect latency is not measured here: a recording holds no connect timings (replay)." in out.stdout


def test_repl_narrows_to_a_node_or_workload_and_groups_by_node_on_an_aggregator(run_cli):
    """On an aggregator the REPL takes what `--tool` takes: `--node`, `--workload`, and `top --group-by`."""
    from netspy_tui.fleet.source import FleetSource
    from netspy_tui.fleet.store import FleetStore
    from netspy_tui.serve.aggregate import INGEST_PATH, AggregatorApi, IngestLimits
    from tests.fleet.test_fleet_mcp import fleet_events

    fleet = FleetStore(None)
    assert not fleet.ingest(fleet_events()).rejected
    app = create_app(
        FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits("t")), own_auth_paths=[INGEST_PATH]
    )
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        script = "list --node node-b\ntop --group-by node\nsummary --workload nginx.service\nlist --node\n"
        out = run_cli("repl", "--server", server.url, input=script)
    finally:
        server.stop()
        fleet.close()
    assert out.returncode == 1, out.stderr  # the last command failed; the others ran
    text = out.stdout
    assert "5 of 5 connection events" in text and "Only node node-b." in text  # node-b's 5 curl connects only
    assert "node-a" in text and "node-c" in text  # top grouped by node: one row each
    assert "made 3 outbound connection attempts" in text and "Only workload nginx.service." in text
    assert (
        out.stderr == "error: --node needs a value. Usage: list [--pid N] [--process NAME] [--max-events N] "
        "[--since TIME] [--until TIME] [--before TOKEN] [--direction outbound|inbound|all].\n"
    )


@pytest.mark.root
def test_nothing_is_made_in_a_directory_of_another_user(cli_env, tmp_path: Path):
    """Root's REPL with another user's state directory (sudo keeping their HOME): no history, and no directory
    of root's left in theirs (a root-owned 0700 one would lock them out of their own state)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, 1000, 1000)
    screen = _one_command({**cli_env, "TERM": "xterm"}, b"summary --duration 600")
    assert b"no REPL history:" in screen
    assert list(state.iterdir()) == []


def test_on_a_terminal_the_repl_says_what_it_waits_for_when_the_server_does_not_answer(cli_env):
    """A server that takes the connection and never answers: the REPL says at once where it is connecting (the
    first prompt or the one-line error comes after the server's timeouts), not a blank terminal."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # (accepted by the kernel, never read or answered)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        term = Terminal(["repl", "--server", url], {**cli_env, "TERM": "xterm"})
        try:
            term.expect(f"Connecting to {url}".encode(), timeout=10)
        finally:
            os.kill(term.pid, 9)
            os.waitpid(term.pid, 0)
            os.close(term.fd)


def test_a_servers_text_in_an_error_reaches_stderr_inert(run_cli):
    # A summary whose map keys the model refuses: the error quotes the key the server chose (an audit's finding:
    # the repl wrote it raw, setting the terminal's title and clearing its screen; --tool cleaned it)
    key = "\x1b]0;PWNED\x07\x1b[2J"
    body = {"window_seconds": 60, "events": [], "count": 0, "total_count": 0, "count_by_node": {key: "x"},
            "losses": {key: "x"}, "events_by_pid": {}, "status": "ok"}  # fmt: skip
    with FakeEbpfServer("current") as srv:
        srv.reply_raw(json.dumps(body).encode(), path="/api/connection-summary")
        out = run_cli("repl", "--server", srv.url, input="summary\n")
    assert out.returncode == 1 and "error:" in out.stderr
    assert "\\x1b]0;PWNED" in out.stderr  # (what it said, visible)
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr


def test_help_on_an_80_column_terminal_fits_it(cli_env, run_cli):
    """help on an 80-column terminal printed 136-column lines the terminal wrapped mid-description; there each
    description goes under its usage. From a pipe the two-column layout is kept (one layout for scripts)."""
    screen = _one_command({**cli_env, "TERM": "xterm", "COLUMNS": "80"}, b"help").decode(errors="replace")
    # (the banner names the source once: it said "replay of X (embedded) (replay of X as fast as possible)")
    banner = screen[: screen.index("\r\n")]
    assert banner.endswith(f"Source: replay of {DEMO} as fast as possible (embedded)"), banner
    assert "\r\n      count outbound connection attempts" in screen
    help_lines = screen[screen.index("Commands:") : screen.rindex("netspy> ")].splitlines()
    assert max(len(line) for line in help_lines) <= 80
    piped = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input="help\n")
    assert piped.returncode == 0, piped.stderr
    assert any("summary [--pid N]" in line and "count outbound" in line for line in piped.stdout.splitlines())
