"""``--replay`` and ``--record`` as a user runs them: with a server, a full disk, a cut line, typos, empty files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import (
    DEMO,
    TERMINATED,
    Child,
    Cli,
    assert_one_line_error,
    free_port,
    product_env,
    wait_until,
)
from tests.hardening.test_security import served_url
from tests.tui.conftest import wait_for
from tests.tui.screen_text import screen_text


@pytest.fixture
def server():
    with FakeEbpfServer("current", events=[connection_json(pid=7, command="curl", ago=2)]) as srv:
        yield srv


def test_replay_and_record_are_never_silently_dropped_for_a_server(cli: Cli, server, tmp_path: Path) -> None:
    recording = tmp_path / "srv.jsonl"
    refused = cli.many(
        [
            ["--server", server.url, "--record", str(recording), "--tool", "get_network_summary"],
            ["--server", server.url, "--replay", str(tmp_path / "garbage.jsonl"), "--tool", "get_network_summary"],
        ]
    )
    assert "--record does not apply with --server" in assert_one_line_error(refused[0], 2)
    assert "--replay does not apply with --server" in assert_one_line_error(refused[1], 2)
    assert not recording.exists()
    # a flag beats the environment: --replay over NETSPY_SERVER, --server over NETSPY_REPLAY
    replayed = cli("--replay", str(DEMO), "--tool", "server_status", env={"NETSPY_SERVER": server.url})
    assert replayed.returncode == 0, replayed.stderr
    assert f"Source: replay of {DEMO}" in replayed.stdout
    served = cli("--server", server.url, "--tool", "server_status", env={"NETSPY_REPLAY": str(tmp_path / "none")})
    assert served.returncode == 0, served.stderr
    assert "Source: ebpf-server at" in served.stdout
    # both from the environment: neither beats the other
    both = cli("--tool", "server_status", env={"NETSPY_SERVER": server.url, "NETSPY_REPLAY": str(DEMO)})
    assert "replay (env NETSPY_REPLAY) does not apply with server (env NETSPY_SERVER)" in assert_one_line_error(both, 2)


#: In a network namespace of its own: something answering /health at localhost:8080 (the address the product
#: probes when no server is named), and the CLI run beside it with the arguments given; prints its stdout, stderr
#: and exit status as JSON.
_BESIDE_A_DEFAULT_SERVER = textwrap.dedent(
    """
    import http.server, json, subprocess, sys, threading
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "healthy"}')

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    run = subprocess.run([sys.executable, "-m", "netspy_tui", *sys.argv[1:]], capture_output=True, text=True)
    httpd.shutdown()
    print(json.dumps({"stdout": run.stdout, "stderr": run.stderr, "returncode": run.returncode}))
    """
)


@pytest.mark.root
def test_a_store_named_with_db_is_read_even_when_a_server_answers_at_the_default_address(
    cli: Cli, server, tmp_path: Path
) -> None:
    """``--db FILE`` names the store to read: a server answering at localhost:8080 (the default the product probes
    when no server is named) does not take its place; ``--db`` with ``--server`` on one command line is refused as
    ``--replay``/``--record`` are, and a flag beats the environment either way."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a network namespace with its own localhost:8080)")
    store = tmp_path / "h.sqlite3"
    made = cli("--replay", str(DEMO), "--db", str(store), "--tool", "server_status")
    assert made.returncode == 0, made.stderr
    beside = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", _BESIDE_A_DEFAULT_SERVER, "--db", str(store), "--tool",
         "server_status"],
        capture_output=True, text=True, timeout=120, env=product_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert beside.returncode == 0, beside.stderr
    read = json.loads(beside.stdout)
    assert read["returncode"] == 0, read
    assert f"Source: history in {store}" in read["stdout"], read
    both = cli("--server", server.url, "--db", str(store), "--tool", "server_status")
    assert "--db does not apply with --server" in assert_one_line_error(both, 2)
    flag = cli("--db", str(store), "--tool", "server_status", env={"NETSPY_SERVER": server.url})
    assert flag.returncode == 0 and f"Source: history in {store}" in flag.stdout, (flag.stdout, flag.stderr)
    served = cli("--server", server.url, "--tool", "server_status", env={"NETSPY_DB": str(store)})
    assert served.returncode == 0 and "Source: ebpf-server at" in served.stdout, (served.stdout, served.stderr)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 KiB tmpfs (the demo's recording needs ~100 KiB), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.root
def test_a_full_disk_fails_the_command_and_leaves_a_recording_that_replays(cli: Cli, small_disk: Path) -> None:
    recording = small_disk / "rec.jsonl"
    run = cli("--replay", str(DEMO), "--replay-speed", "0", "--record", str(recording), "--tool", "get_network_summary")
    assert run.returncode == 1, run.stderr
    lines = recording.read_bytes().splitlines(keepends=True)
    assert 0 < len(lines) < len(DEMO.read_bytes().splitlines()) and all(ln.endswith(b"\n") for ln in lines)
    assert run.stderr.count("\n") == 1, run.stderr  # (one line: said once, at the exit)
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        f"netspy-tui: recording to {recording} stopped after {len(lines)} events: No space left on device. "
        "Free disk space or choose another file for --record."
    )
    replayed = cli("--replay", str(recording), "--replay-speed", "0", "--tool", "server_status")
    assert replayed.returncode == 0, replayed.stderr
    assert f"Events seen: {len(lines)}, stored: {len(lines)}," in replayed.stdout


def test_a_cut_last_line_is_skipped_and_said_a_bad_line_before_it_is_an_error(cli: Cli, tmp_path: Path) -> None:
    whole = DEMO.read_bytes().splitlines(keepends=True)[:10]
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(whole) + whole[10 - 1][:40])  # as a recorder killed mid-write leaves it
    run = cli("--replay", str(cut), "--replay-speed", "0", "--tool", "server_status")
    assert run.returncode == 0, run.stderr
    note = "line 11, the last, is cut short (the recording was interrupted): 1 event skipped"
    assert f"Note: recording {cut}: {note}" in run.stdout
    assert note in run.stderr
    assert "Events seen: 10" in run.stdout
    middle = tmp_path / "middle.jsonl"
    middle.write_bytes(b"".join(whole[:3]) + whole[3][:40] + b"\n" + b"".join(whole[4:]))
    bad = cli("--replay", str(middle), "--replay-speed", "0", "--tool", "server_status")
    assert f"{middle}:4: bad JSON" in assert_one_line_error(bad)


def test_a_line_whose_integers_the_store_cannot_hold_is_an_error_naming_it(cli: Cli, tmp_path: Path) -> None:
    # (an audit's: it passed the load check, the store dropped it as "malformed", and the command exited 0)
    lines = DEMO.read_text().splitlines()[:3]
    event = json.loads(lines[1])
    event["timestamp"] = 2**63
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join([lines[0], json.dumps(event), lines[2]]) + "\n")
    run = cli("--replay", str(big), "--replay-speed", "0", "--tool", "list_connections")
    assert f"{big}:2: timestamp: {2**63} does not fit in 64 bits" in assert_one_line_error(run, 2)


def test_a_line_whose_integers_no_kernel_makes_is_an_error_naming_it(cli: Cli, tmp_path: Path) -> None:
    # (an audit's: pid -5 and port 70000 were replayed and shown as they were; an aggregator refuses both)
    lines = DEMO.read_text().splitlines()[:3]
    cases = {"pid": (-5, "pid: must be 0 to 4194304, got -5"),
             "destination_port": (70000, "destination_port: must be 0 to 65535, got 70000")}  # fmt: skip
    runs = []
    for name, (value, _) in cases.items():
        event = json.loads(lines[1])
        event[name] = value
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join([lines[0], json.dumps(event), lines[2]]) + "\n")
        runs.append(["--replay", str(path), "--replay-speed", "0", "--tool", "list_connections"])
    for run, (name, (_, said)) in zip(cli.many(runs), cases.items(), strict=True):
        assert f"{tmp_path / name}.jsonl:2: {said}" in assert_one_line_error(run, 2)


def test_record_in_a_missing_directory_is_refused_like_db(cli: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "no" / "such" / "x.jsonl"
    runs = cli.many(
        [
            ["--replay", str(DEMO), "--replay-speed", "0", "--record", str(typo), "--tool", "get_network_summary"],
            ["--replay", str(DEMO), "--replay-speed", "0", "--db", str(typo), "--tool", "get_network_summary"],
        ]
    )
    for run, flag in zip(runs, ("--record", "--db"), strict=True):
        line = assert_one_line_error(run, 2)
        assert line == f"netspy-tui: {flag} {typo}: directory {typo.parent} does not exist. Create it first."
    assert not (tmp_path / "no").exists()


def test_a_replay_file_that_is_missing_a_directory_or_empty_is_a_bad_value(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    missing = tmp_path / "missing.jsonl"
    cases = [
        (missing, f"netspy-tui: cannot read recording {missing}: No such file or directory."),
        (tmp_path, f"netspy-tui: cannot read recording {tmp_path}: it is a directory, not a regular file."),
        (empty, f"netspy-tui: recording {empty} holds no events: there is nothing to replay."),
    ]
    runs = cli.many([["--replay", str(path), "--tool", "get_network_summary"] for path, _ in cases])
    for (_, start), run in zip(cases, runs, strict=True):
        assert assert_one_line_error(run, 2).startswith(start)


def test_a_one_shot_replays_the_whole_recording_at_once_unless_given_a_speed(cli: Cli) -> None:
    connects = sum('"type": "connection"' in line or '"type":"connection"' in line for line in DEMO.open())
    week = ["--tool", "get_network_summary", "--duration", "604800", "--replay", str(DEMO)]
    default, instant = cli.many([week, [*week, "--replay-speed", "0"]])
    assert default.returncode == instant.returncode == 0, default.stderr + instant.stderr
    assert (
        default.stdout
        == instant.stdout
        == (f"All processes made {connects} outbound connection attempts over the last 604800 seconds\n")
    )
    # only a one-shot: the dashboard (and the REPL, serve) keep the recording's own pace
    shown = cli.many([[*week, "--show-config"], ["--replay", str(DEMO), "--show-config"]])
    speeds = [next(ln for ln in run.stdout.splitlines() if ln.startswith("replay_speed")).split() for run in shown]
    assert speeds[0][:2] == ["replay_speed", "0.0"] and speeds[1] == ["replay_speed", "1.0", "default"]


def test_a_record_setting_is_for_sessions_and_its_errors_say_where_it_came_from(cli: Cli, tmp_path: Path) -> None:
    recording = tmp_path / "session.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(f'record = "{recording}"\n')
    one_shot = ["--replay", str(DEMO), "--tool", "get_network_summary"]
    for env in ({"NETSPY_CONFIG": str(config)}, {"NETSPY_RECORD": str(recording)}):
        runs = [cli(*one_shot, env=env) for _ in range(2)]  # (the first used up the name: the second exited 2)
        assert [run.returncode for run in runs] == [0, 0], runs[1].stderr
        assert not recording.exists()
    recording.write_text("")
    cases = [
        ({"NETSPY_CONFIG": str(config)}, [], f"record (file {config})"),
        ({"NETSPY_RECORD": str(recording)}, [], "record (env NETSPY_RECORD)"),
        ({}, ["--record", str(recording)], "--record"),
    ]
    for env, extra, given in cases:
        run = cli("serve", "--port", "1", "--replay", str(DEMO), *extra, env=env)
        assert assert_one_line_error(run, 2) == (
            f"netspy-tui: refusing to write the recording {recording}: it already exists. An existing file or "
            f"link is never overwritten: choose a new file name for {given}."
        )
    # an explicit --record with a one-shot that runs no collector would record nothing
    nothing = cli("--tool", "get_network_summary", "--record", str(tmp_path / "new.jsonl"))
    assert "--record applies to a one-shot --tool only with --replay" in assert_one_line_error(nothing, 2)


@pytest.mark.root
async def test_a_server_whose_recording_stopped_says_so_in_health_status_and_the_dashboard_header(
    small_disk: Path, spawn: Callable[..., Child]
) -> None:
    """The recording fills its disk while ``serve`` goes on storing events: an operator sees it stopped where
    they look (``/health``, ``--tool server_status``, the dashboard's header), not only in the server's log."""
    recording = small_disk / "rec.jsonl"
    port = free_port()
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--record", str(recording),
                  "--port", str(port))  # fmt: skip
    url = served_url(child, "the eBPF server API")
    health = wait_until(lambda: (h := httpx.get(url + "/health", timeout=10).json())["recording"]["error"] and h,
                        "the recording's failure in /health")  # fmt: skip
    written = len(recording.read_bytes().splitlines())
    assert health["recording"] == {
        "path": str(recording),
        "events": written,
        "error": f"recording to {recording} stopped after {written} events: No space left on device. "
        "Free disk space or choose another file for --record.",
    }
    assert health["status"] == "healthy"  # (every event is still stored: only the recording stopped)
    status = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"Recording stopped: recording to {recording} stopped after {written} events" in status.stdout
    http = HttpSource(url, retries=0)
    try:
        async with open_gateway(http) as gateway:
            app = NetspyApp(gateway, interval=0.2)
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_for(pilot, lambda: app.polls >= 1, "the first data")
                await wait_for(pilot, lambda: "recording stopped" in screen_text(app), "the header's note")
                assert f"recording stopped after {written:,} events" in screen_text(app)
    finally:
        await http.aclose()
    assert child.stop() == TERMINATED


def test_a_recording_that_works_is_said_in_server_status(cli: Cli, tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    run = cli("--replay", str(DEMO), "--replay-speed", "0", "--record", str(recording), "--tool", "server_status")
    assert run.returncode == 0, run.stderr
    written = len(recording.read_bytes().splitlines())
    assert written and f"Recording to {recording}: {written:,} events written" in run.stdout, run.stdout


def test_a_replay_says_it_moved_the_times_and_can_keep_the_recorded_ones(cli: Cli, tmp_path: Path) -> None:
    """A recording of yesterday replays with its times moved so its newest event lands now (windows of the
    last N seconds show it), which server_status says; --replay-times recorded keeps them, and --since/--until
    then find the events at their own times, shown with their date."""
    old = tmp_path / "yesterday.jsonl"
    # (a day and an hour ago, whatever the date: a fixed date moved by 2 days once the clock passed it by 2)
    start = (datetime.now(UTC) - timedelta(days=1, hours=1)).replace(microsecond=0)
    lines = [connection_json(pid=9, command="curl", time=start + timedelta(seconds=i)) for i in range(3)]
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    status = cli("--replay", str(old), "--tool", "server_status")
    assert status.returncode == 0, status.stderr
    assert f"Note: replay of {old}: every time moved 1 day, " in status.stdout, status.stdout
    assert "later, so its newest event lands now (--replay-times recorded keeps the recording's own times)" in (
        status.stdout
    )
    iso = "%Y-%m-%dT%H:%M:%SZ"
    window = [
        "--since",
        (start - timedelta(seconds=30)).strftime(iso),
        "--until",
        (start + timedelta(seconds=30)).strftime(iso),
    ]
    moved = cli("--replay", str(old), "--tool", "list_connections", *window)
    assert moved.returncode == 0 and "No connection events" in moved.stdout, moved.stdout
    kept = cli("--replay", str(old), "--replay-times", "recorded", "--tool", "list_connections", *window)
    assert kept.returncode == 0, kept.stderr
    shown = (start + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S.000  pid 9")
    assert "3 of 3 connection events" in kept.stdout and shown in kept.stdout, kept.stdout
    kept_status = cli("--replay", str(old), "--replay-times", "recorded", "--tool", "server_status")
    assert f"Detail: replay of {old} as fast as possible, at its recorded times" in kept_status.stdout
    assert "every time moved" not in kept_status.stdout


def test_replay_flags_without_a_replay_are_refused(cli: Cli) -> None:
    for flag, value in (("--replay-speed", "2"), ("--replay-times", "recorded")):
        run = cli(flag, value, "--tool", "server_status")
        assert f"{flag} applies only with --replay: nothing is replayed" in assert_one_line_error(run, 2)


def test_a_servers_notes_reach_server_status_from_afar(spawn: Callable[..., Child], tmp_path: Path) -> None:
    """What the served collector notes (here a recording's cut last line, skipped) is in its /health and in
    `--server URL --tool server_status`, as in the serving host's own server_status."""
    cut = tmp_path / "cut.jsonl"
    whole = DEMO.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(whole[:5]) + whole[5][:30])
    port = free_port()
    child = spawn("serve", "--replay", str(cut), "--replay-speed", "0", "--port", str(port))
    url = served_url(child, "the eBPF server API")
    notes = httpx.get(url + "/health", timeout=10).json()["notes"]
    assert notes[0].startswith(f"recording {cut}: line 6, the last, is cut short"), notes
    assert notes[1].startswith(f"replay of {cut}: every time moved"), notes
    status = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"Note: {notes[0]}" in status.stdout and f"Note: {notes[1]}" in status.stdout, status.stdout
    assert child.stop() == TERMINATED


def test_a_remote_recording_state_of_the_wrong_type_does_not_break_server_status(cli: Cli) -> None:
    health = {"status": "healthy", "component": "x", "uptime": "1s", "version": "1",
              "recording": {"path": "/r.jsonl", "events": "many", "error": None}}  # fmt: skip
    with FakeEbpfServer("current", health=health) as srv:
        run = cli("--server", srv.url, "--tool", "server_status")
    assert run.returncode == 0, run.stderr
    assert "Recording to /r.jsonl: ? events written" in run.stdout, run.stdout
