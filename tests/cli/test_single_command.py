"""`netspy-tui --tool ...` as a subprocess against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from tests.factories import connection_json, drop_json
from tests.fake_ebpf_server import FakeEbpfServer


@pytest.fixture
def server():
    events = [connection_json(pid=4242, command="curl", ip="93.184.216.34", port=443, ago=5 + i) for i in range(5)] + [
        connection_json(pid=7, command="nginx", ip="10.0.0.2", port=5432, ago=3),
        drop_json(ago=2),
    ]
    with FakeEbpfServer("current", events=events) as srv:
        yield srv


def test_summary_prints_the_seed_line(run_cli, server):
    out = run_cli("--tool", "get_network_summary", "--process", "curl", "--server", server.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Process 'curl' made 5 outbound connection attempts over the last 60 seconds"


def test_server_from_env_and_json_output(run_cli, server):
    out = run_cli(
        "--tool", "list_connections", "--pid", "4242", "--max-events", "2", "--json", env={"NETSPY_SERVER": server.url}
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["tool"] == "list_connections" and not doc["is_error"]
    assert doc["data"]["returned"] == 2 and doc["data"]["total_count"] == 5
    assert doc["data"]["events"][0]["pid"] == 4242


@pytest.mark.parametrize(
    ("tool", "extra", "expect"),
    [
        ("analyze_patterns", ["--process", "curl"], "Top destinations: 93.184.216.34:443 5"),
        ("get_packet_drop_summary", [], "All processes had 1 packet drop over the last 60 seconds"),
        ("list_packet_drops", [], "TCP_DROP"),
        ("list_processes", ["--duration", "120"], "curl"),
        ("server_status", [], "Source: ebpf-server at"),
        ("analyze_packet_drops", [], "Drop reasons: TCP_DROP 1"),
    ],
)
def test_each_data_tool(run_cli, server, tool, extra, expect):
    out = run_cli("--tool", tool, *extra, "--server", server.url)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tool", "get_network_summary", "--pid", "-1"], "argument --pid: must be greater than 0"),
        (["--tool", "get_network_summary", "--pid", "abc"], "expected a whole number, got 'abc'"),
        (["--tool", "get_network_summary", "--duration", "0"], "argument --duration: must be greater than 0"),
        (["--tool", "list_connections", "--max-events", "1e9"], "expected a whole number"),
        (["--tool", "no_such_tool"], "argument --tool: invalid choice: 'no_such_tool'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--tool", "ai_insights"], "--tool ai_insights needs --summary-text TEXT"),
        (["--tool", "get_network_summary", "--duration", "99999999"], "duration must be <= 604800"),
    ],
)
def test_bad_flags_are_one_line_with_exit_2(run_cli, server, args, fragment):
    out = run_cli(*args, "--server", server.url)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "--raw-rate", "-1"], "argument --raw-rate: must be 0 or more, got -1"),
        (["serve", "--raw-rate", "many"], "argument --raw-rate: expected a whole number, got 'many'"),
        (["serve", "--aggregate", "--raw-rate", "100"], "--raw-rate does not apply to serve --aggregate"),
    ],
)
def test_a_bad_raw_rate_is_one_line_with_exit_2(run_cli, args, fragment):
    """``--raw-rate`` (raw events the host keeps a second) takes 0 (no cap) or more, and only where a collector
    runs; the help says what it sheds."""
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "shed, counted and reported as shed, and every count stays exact" in " ".join(
        run_cli("serve", "--help").stdout.split()
    )


def test_unreachable_server_is_one_line_exit_1(run_cli):
    srv = FakeEbpfServer().start()
    url = srv.url
    srv.stop()
    out = run_cli("--tool", "get_network_summary", "--server", url)
    assert out.returncode == 1
    assert out.stderr.startswith(f"netspy-tui: Cannot reach the eBPF server at {url} (connection refused)")
    assert out.stderr.count("\n") == 1


def test_server_errors_are_one_line_exit_1(run_cli, server):
    server.fail_with(500, "boom")
    out = run_cli("--tool", "get_network_summary", "--server", server.url)
    assert out.returncode == 1 and "answered 500" in out.stderr and "boom" in out.stderr
    assert out.stderr.count("\n") == 1


def test_ai_insights_without_a_key_says_how_to_set_one(run_cli):
    out = run_cli("--tool", "ai_insights", "--summary-text", "curl made 5 connections")
    assert out.returncode == 1
    assert "No AI model is configured" in out.stderr and "OPENAI_API_KEY" in out.stderr


def test_show_config_masks_secrets(run_cli):
    secrets = {"NETSPY_TOKEN": "tok-123456", "OPENAI_API_KEY": "sk-abcdef-0123456789"}
    for extra in ([], ["--verbose"]):
        out = run_cli("--show-config", "--server", "http://x:1", *extra, env=secrets)
        assert out.returncode == 0, out.stderr
        assert "tok-123456" not in out.stdout + out.stderr and "sk-abcdef" not in out.stdout + out.stderr
        assert "command line" in out.stdout and "env NETSPY_TOKEN" in out.stdout
        key_line = next(line for line in out.stdout.splitlines() if line.startswith("openai_api_key "))
        assert key_line.split() == ["openai_api_key", "********", "env", "OPENAI_API_KEY"]


def test_a_url_password_with_a_bracket_is_never_shown(run_cli):
    """urlsplit refuses "pa[ssword99" (it reads an IPv6 host) while the HTTP client takes the URL: the password
    was printed by --show-config and in the error and the log (an audit's)."""
    env = {"NETSPY_SERVER": "http://user:pa[ssword99@127.0.0.1:9/"}
    shown = run_cli("--show-config", env=env)
    failed = run_cli("--tool", "get_network_summary", "--verbose", env=env)
    assert shown.returncode == 0 and failed.returncode == 1, (shown.stderr, failed.stderr)
    assert "http://user:****@127.0.0.1:9/" in shown.stdout
    assert "Cannot reach the eBPF server at http://user:****@127.0.0.1:9" in failed.stderr
    for out in (shown, failed):
        assert "ssword99" not in out.stdout + out.stderr


def test_verbose_never_logs_the_token(run_cli, server):
    out = run_cli("--tool", "list_connections", "--server", server.url, "--token", "tok-verysecret", "--verbose")
    assert out.returncode == 0
    assert "tok-verysecret" not in out.stdout + out.stderr
    assert server.requests[-1].headers["authorization"] == "Bearer tok-verysecret"


def test_the_go_netspys_single_dash_flags_work_as_it_took_them(run_cli, server):
    """Go's flag package takes ``-tool x`` and ``-pid=5``: the README says the Go netspy's flags work unchanged,
    and ``-tool get_network_summary`` was "argument command: invalid choice: 'get_network_summary'" (an audit's)."""
    go = run_cli("-server", server.url, "-tool", "get_network_summary", "-pid=4242", "-duration", "3600")
    ours = run_cli("--server", server.url, "--tool", "get_network_summary", "--pid", "4242", "--duration", "3600")
    assert go.returncode == 0 and ours.returncode == 0, (go.stderr, ours.stderr)
    assert go.stdout == ours.stdout and go.stdout.startswith("pid 4242 made ")
    # a word of one dash that names no flag is still refused, in one line; after "--" words are values
    bogus = run_cli("-server", server.url, "-tool", "get_network_summary", "-bogus")
    assert bogus.returncode == 2 and bogus.stderr.startswith("netspy-tui: error: unrecognized arguments: -bogus")


def test_server_status_says_why_a_server_is_degraded_when_no_loss_says_it(run_cli):
    """An aggregator whose store cannot be written is "degraded" with its reason in /health's detail: over --server
    server_status said only "(degraded)" and "Detail: aggregator API" (an audit's)."""
    why = "the store of 1 node cannot be written (node fill2: database or disk is full)"
    health = {"status": "degraded", "component": "netspy-tui", "uptime": "1m", "version": "x", "detail": why}
    with FakeEbpfServer("current", events=[connection_json(ago=2)], health=health) as srv:
        out = run_cli("--server", srv.url, "--tool", "server_status")
    assert out.returncode == 0, out.stderr
    assert f"Detail: the server is degraded: {why}; current API" in out.stdout, out.stdout


def test_a_process_name_longer_than_the_kernels_says_what_it_is_there(run_cli):
    """A process name is the kernel's comm, 15 characters: "systemd-resolved" matched nothing, "made 0", and no
    word of why (an audit's). The summary says what the kernel calls it."""
    events = [connection_json(pid=77, command="systemd-resolve", ip="10.0.0.53", port=53, ago=2)]
    with FakeEbpfServer("current", events=events) as srv:
        long = run_cli("--server", srv.url, "--tool", "get_network_summary", "--process", "systemd-resolved")
        short = run_cli("--server", srv.url, "--tool", "get_network_summary", "--process", "systemd-resolve")
    assert long.returncode == 0 and short.returncode == 0, (long.stderr, short.stderr)
    assert long.stdout.splitlines() == [
        "Process 'systemd-resolved' made 0 outbound connection attempts over the last 60 seconds",
        "Process names are the kernel's, at most 15 characters: 'systemd-resolved' is 'systemd-resolve' there.",
    ], long.stdout
    assert short.stdout.startswith("Process 'systemd-resolve' made 1 outbound") and "kernel's" not in short.stdout


def test_a_list_or_analysis_of_a_name_longer_than_the_kernels_says_what_it_is_there(run_cli):
    """The same for the list and the pattern tools of both kinds: empty, and why."""
    events = [connection_json(pid=77, command="systemd-resolve", ip="10.0.0.53", port=53, ago=2)]
    note = "Process names are the kernel's, at most 15 characters: 'systemd-resolved' is 'systemd-resolve' there."
    with FakeEbpfServer("current", events=events) as srv:
        for tool in ("list_connections", "analyze_patterns", "list_packet_drops", "analyze_packet_drops"):
            out = run_cli("--server", srv.url, "--tool", tool, "--process", "systemd-resolved")
            assert out.returncode == 0, (tool, out.stderr)
            assert note in out.stdout.splitlines(), (tool, out.stdout)
        found = run_cli("--server", srv.url, "--tool", "list_connections", "--process", "systemd-resolve")
    assert "10.0.0.53:53" in found.stdout and "kernel's" not in found.stdout, found.stdout


def test_an_unknown_flag_with_a_value_is_named_not_its_value(run_cli):
    """``--bogus x`` was "invalid choice: 'x' (choose from 'tui', 'repl', 'mcp', 'serve')": argparse took the value
    for a command (an audit's). The flag is named, as ``serve --bogus 7`` names it."""
    out = run_cli("--tool", "list_processes", "--bogus", "x")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "netspy-tui: error: unrecognized arguments: --bogus x (see netspy-tui --help)\n", out.stderr
    typo = run_cli("frob")  # (a command that does not exist is still said as one)
    assert typo.returncode == 2 and "invalid choice: 'frob'" in typo.stderr


def test_list_processes_ranks_by_packet_drops_with_kind(run_cli):
    """The README's list_processes takes ``kind``; --tool had no flag for it."""
    events = [drop_json(pid=812, command="nginx", ago=2), connection_json(pid=77, command="curl", ago=2)]
    with FakeEbpfServer("current", events=events) as srv:
        out = run_cli("--server", srv.url, "--tool", "list_processes", "--kind", "packet_drop")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "Top processes by packet drops over the last 60 seconds:", out.stdout
    assert "nginx" in out.stdout and "curl" not in out.stdout
