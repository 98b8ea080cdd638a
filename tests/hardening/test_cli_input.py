"""Bad command-line input, bad environment and a bad config file: one line on stderr, the right exit code.

Every case runs ``python -m netspy_tui`` as a subprocess (several at a time). Cases already in
tests/cli/test_single_command.py (negative pid, non-numeric pid, zero duration, ``1e9`` max events,
unknown tool, unknown flag, missing --summary-text, duration beyond the tool's range) are not repeated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.conftest import DEMO, REPO, Cli, Run, assert_one_line_error, product_env

#: (arguments, exit code, a fragment of the one line on stderr). Flag and setting errors exit 2 before
#: any data source is opened; values only a tool's schema can judge exit 1 after it answered.
FLAG_CASES: list[tuple[list[str], int, str]] = [
    (["--tool", "list_connections", "--pid", "0"], 2, "argument --pid: must be greater than 0, got 0"),
    (["--tool", "list_connections", "--max-events", "0"], 2, "argument --max-events: must be greater than 0"),
    (["--tool", "get_network_summary", "--duration", "abc"], 2, "expected a whole number, got 'abc'"),
    # (int() took these: Arabic-Indic digits read as 2048, "1_000" as 1000; an audit's)
    (["--tool", "list_connections", "--pid", "\u0662\u0660\u0664\u0668"], 2, "expected a whole number, got '\u0662"),
    (["--tool", "get_network_summary", "--duration", "1_000"], 2, "expected a whole number, got '1_000'"),
    (["--timeout", "-1"], 2, "argument --timeout: must be greater than 0"),
    (["--timeout", "nan"], 2, "argument --timeout: must be greater than 0, got nan"),
    (["--window", "0"], 2, "argument --window: must be greater than 0"),
    (["serve", "--port", "0"], 2, "argument --port: must be greater than 0"),
    (["serve", "--port", "70000"], 2, "must be a port number 1-65535, got 70000"),
    (["mcp", "--http", "--port", "http"], 2, "argument --port: expected a whole number, got 'http'"),
    (["--replay-speed", "fast"], 2, "argument --replay-speed: invalid float value: 'fast'"),
    (["--collector", "bogus"], 2, "argument --collector: invalid choice: 'bogus'"),
    (["frobnicate"], 2, "argument command: invalid choice: 'frobnicate'"),
    (["--tool", "list_connections", "--pid", "\x1b[2J\x1b]0;owned\x07"], 2, "got '\\x1b[2J\\x1b]0;owned\\x07'"),
    (["--process"], 2, "argument --process: expected one argument"),
]

#: Values the settings model refuses (after argparse accepted them): exit 2 naming the setting.
SETTING_CASES: list[tuple[list[str], int, str]] = [
    (["--tool", "list_connections", "--timeout", "inf"], 2, "argument --timeout: must be a finite number, got inf"),
    (["--interval", "0.01", "--show-config"], 2, "invalid setting interval"),
    (["--window", "999999999", "--show-config"], 2, "invalid setting window"),
    (["--tool", "list_connections", "--replay-speed", "nan", "--replay", str(DEMO)], 2, "invalid setting replay_speed"),
    (
        ["--tool", "list_connections", "--server", "notaurl"],
        2,
        "invalid setting server: 'notaurl' is not a usable eBPF server URL (it must start with http:// or https://)",
    ),
    (["--tool", "list_connections", "--server", "http://[::1"], 2, "is not a usable eBPF server URL (Invalid port"),
    (["--tool", "list_connections", "--server", "http://256.1.1.1:99999"], 2, "Invalid IPv4 address"),
    (["--tool", "list_connections", "--server", "http://"], 2, "it has no host name"),
    (["serve", "--token", "   ", "--replay", str(DEMO)], 2, "invalid setting token: the token is empty"),
    # (an audit's, 2026-12-07: each was taken, then lost data or crashed a thread while the command exited 0)
    (
        ["--tool", "list_connections", "--replay", str(DEMO), "--replay-speed", "1e-9"],
        2,
        "invalid setting replay_speed: must be 0 (as fast as it can) or at least 0.001",
    ),  # fmt: skip
    (["serve", "--aggregate", "--db", ""], 2, "argument --db: must name a file or directory, not be empty"),
    (["--tool", "list_connections", "--record", " "], 2, "argument --record: must name a file or directory"),
    (["serve", "--host", "..", "--replay", str(DEMO)], 2, "argument --host: expected an IP address or a host name"),
    (["serve", "--host", "a" * 70, "--replay", str(DEMO)], 2, "argument --host: expected an IP address or a host"),
    (["mcp", "--http", "--host", "[::1]"], 2, "to listen on (an IPv6 one without brackets), got '[::1]'"),
    (
        ["serve", "--aggregate", "--ingest-processes", "99999999999999999999"],
        2,
        "argument --ingest-processes: must be at most 64",
    ),  # fmt: skip
    (
        ["--tool", "list_connections", "--token", "tökén-secret", "--server", "http://127.0.0.1:9"],
        2,
        "invalid setting token: the token must be printable ASCII without spaces",
    ),
]


def test_bad_flags_and_settings_are_one_line_with_exit_2(cli: Cli) -> None:
    cases = FLAG_CASES + SETTING_CASES
    runs = cli.many([args for args, _, _ in cases])
    for (args, code, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, code)
        assert fragment in line, (args, line)
        assert "tökén-secret" not in line  # a refused token is never echoed


def test_out_of_range_values_exit_2_with_the_tools_own_bounds(cli: Cli) -> None:
    """The CLI checks --tool flags against the MCP schema's bounds (one definition) before any source
    opens: exit 2, one line, the tool's wording with the flag's name."""
    cases = [
        (["--max-events", "1001"], "Invalid arguments for list_connections: --max-events must be <= 1000."),
        (["--pid", "99999999999999999999"], "Invalid arguments for list_connections: --pid must be <= 4194304."),
        (["--process", ""], "Invalid arguments for list_connections: --process must not be empty."),
        (
            ["--since", "yesterday"],
            "Invalid arguments for list_connections: --since must be an RFC3339 time "
            "(e.g. 2026-11-24T12:00:00Z), not 'yesterday'.",
        ),
        (["--since", "\x1b[31myesterday"], "not '\\x1b[31myesterday'"),
        (
            ["--since", "2026-12-05T13:00:00Z", "--until", "2026-12-05T12:00:00Z"],
            "Invalid arguments for list_connections: --since must be earlier than --until.",
        ),
        (
            ["--since", "2026-12-05T13:00:00+01:00", "--until", "2026-12-05T12:00:00Z"],
            "Invalid arguments for list_connections: --since must be earlier than --until.",
        ),
        (
            ["--max-events", "99999999999999999999", "--process", ""],
            "--max-events must be <= 1000; --process must not be empty.",
        ),
    ]
    # no server answers at this URL: an exit 2 here comes before any attempt to reach it
    runs = cli.many([["--tool", "list_connections", "--server", "http://127.0.0.1:9", *args] for args, _ in cases])
    runs.append(cli("--tool", "get_network_summary", "--duration", "604801", "--server", "http://127.0.0.1:9"))
    cases.append((["--duration", "604801"], "Invalid arguments for get_network_summary: --duration must be <= 604800."))
    for (args, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 2)
        assert fragment in line, (args, line)


def test_flags_that_do_not_apply_are_refused_with_exit_2(cli: Cli) -> None:
    cases = [
        (["serve", "--http"], "--http does not apply to serve (it is an option of mcp) (see netspy-tui serve --help)"),
        (["repl", "--tool", "server_status"], "--tool does not apply to repl"),
        (["--tool", "server_status", "repl"], "--tool does not apply to repl"),
        (["--server", "http://127.0.0.1:9", "serve"], "--server does not apply to serve"),
        (["mcp", "--port", "9000"], "--host and --port apply to mcp --http"),
        (["--pid", "5"], "--pid does not apply to the dashboard (it is an option of --tool)"),
        (
            ["--tool", "list_processes", "--pid", "5"],
            "--tool list_processes takes no --pid (its flags: --kind, --duration, --limit, --group-by, --node, "
            "--workload)",
        ),
        (["--tool", "list_connections", "--window", "60"], "--window does not apply to --tool"),
        # traffic and latency are kept per process: the flags the refusal lists are the ones that work
        (
            ["--tool", "get_traffic", "--workload", "host"],
            "--tool get_traffic takes no --workload (its flags: --pid, --process, --duration, --limit, --node)",
        ),
        (
            ["--tool", "get_connect_latency", "--workload", "host"],
            "--tool get_connect_latency takes no --workload (its flags: --pid, --process, --duration, --limit, --node)",
        ),
        (["repl", "--interval", "2"], "--interval does not apply to repl (it is an option of the dashboard)"),
        (["serve", "--bogus"], "unrecognized arguments: --bogus (see netspy-tui serve --help)"),
        (["tui", "--json"], "--json does not apply to the dashboard"),
    ]
    runs = cli.many([args for args, _ in cases])
    for (args, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 2)
        assert fragment in line, (args, line)


def test_each_command_has_its_own_help(cli: Cli) -> None:
    runs = cli.many([["mcp", "--help"], ["serve", "--help"], ["repl", "--help"], ["tui", "--help"], ["--help"]])
    mcp, serve, repl, tui, top = (run.stdout for run in runs)
    assert all(run.returncode == 0 for run in runs)
    assert mcp.startswith("usage: netspy-tui mcp") and "  --http " in mcp and "  --pid " not in mcp
    assert serve.startswith("usage: netspy-tui serve") and "  --http " not in serve and "  --server " not in serve
    assert repl.startswith("usage: netspy-tui repl") and "  --port " not in repl and "  --tool " not in repl
    assert "  --interval " in tui and "  --tool " not in tui
    assert "  --tool TOOL " in top and "  --http " not in top and "{tui,repl,mcp,serve}" in top


def test_an_endless_retention_is_refused_from_the_environment_and_the_config_file(cli: Cli, tmp_path: Path) -> None:
    # (an audit's: inf was taken, and every write failed at the first prune: events lost, an aggregator's ingest 500s)
    config = tmp_path / "retention.toml"
    config.write_text("retention = inf\n")
    for env in ({"NETSPY_RETENTION": "inf"}, {"NETSPY_RETENTION": "1e300"}, {"NETSPY_CONFIG": str(config)}):
        line = assert_one_line_error(cli("--show-config", env=env), 2)
        assert "invalid setting retention: Input should be less than or equal to 315360000" in line, (env, line)


def test_bad_environment_and_config_file(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("server = [unclosed\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('timeout = "abc"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('sever = "http://127.0.0.1:9"\ntimeout = 3\n')
    env_name = tmp_path / "env-name.toml"
    env_name.write_text('OPENAI_API_KEY = "sk-in-the-file-1234"\n')
    huge = tmp_path / "huge.toml"
    huge.write_text("# padding\n" * 110_000)  # 1.1 MB of comments: valid TOML, but no config file is that big
    typed = {}  # TOML values are typed: taken as written, not converted as the environment's text is
    for name, line in {"flag": "retries = true", "word": 'dns = "yes"', "empty": 'model = ""'}.items():
        typed[name] = tmp_path / f"{name}.toml"
        typed[name].write_text(line + "\n")
    cases = [
        (
            {"NETSPY_CONFIG": str(typed["flag"])},
            f"invalid setting retries in the config file {typed['flag']}: expected a whole number",
        ),
        ({"NETSPY_CONFIG": str(typed["word"])}, "invalid setting dns in the config file"),
        ({"NETSPY_CONFIG": str(typed["empty"])}, "model in the config file"),
        ({"NETSPY_CONFIG": str(typo)}, f"unknown setting 'sever' (did you mean 'server'?) in the config file {typo}"),
        ({"NETSPY_CONFIG": str(env_name)}, "unknown setting 'OPENAI_API_KEY' (did you mean 'openai_api_key'?)"),
        ({"NETSPY_CONFIG": str(tmp_path)}, f"the config file {tmp_path} is a directory, not a file"),
        ({"NETSPY_CONFIG": str(huge)}, f"the config file {huge} is larger than 1 MiB"),
        ({"NETSPY_CONFIG": str(broken)}, f"cannot read the config file {broken}: not valid TOML"),
        ({"NETSPY_CONFIG": str(binary)}, f"cannot read the config file {binary}: not UTF-8 text"),
        ({"NETSPY_CONFIG": str(wrong)}, "invalid setting timeout in the config file"),
        ({"NETSPY_RETRIES": "many"}, "invalid setting retries: Input should be a valid integer"),
        ({"NETSPY_SERVER": "localhost:8080"}, "invalid setting server: 'localhost:8080' is not a usable"),
        ({"NETSPY_TOKEN": "two words"}, "the token must be printable ASCII without spaces"),
    ]
    runs = [cli("--tool", "server_status", env=env) for env, _ in cases]
    for (env, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 2)
        assert fragment in line, (env, line)
        assert "two words" not in line and "sk-in-the-file" not in line


def test_unusable_files_are_one_line_exit_1(cli: Cli, tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello\n")
    cases = [
        (["--tool", "list_connections", "--db", str(not_a_db)], "cannot open the event store", "not a database"),
        (
            ["--tool", "list_connections", "--replay", str(DEMO), "--record", "/proc/such.jsonl"],
            "cannot write recording /proc/such.jsonl",
            "--record",
        ),
        (
            ["serve", "--replay", str(DEMO), "--db", "/proc/such.db", "--port", "1"],
            "cannot open the event store /proc/such.db",
            "a directory you can write",
        ),
    ]
    runs = cli.many([args for args, _, _ in cases])
    for (args, first, second), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 1)
        assert first in line and second in line, (args, line)


@pytest.mark.root
def test_a_db_this_user_cannot_write_is_a_bad_value_exit_2_and_the_hint_names_the_scratch_file(tmp_path: Path) -> None:
    """As a user: --db in a directory of root's (a non-root user's /var/lib), and on a read-only file system. The
    user is uid 0 without any capability (no root override of file modes: a user's view of them), the read-only
    file system a tmpfs mounted read-only in a mount namespace of the command's own."""
    if os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("unshare")):
        pytest.skip("needs root, setpriv and unshare")
    roots = tmp_path / "var-lib"
    roots.mkdir()
    roots.chmod(0o555)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    as_user = ["setpriv", "--securebits=+noroot,+noroot_locked", "--bounding-set=-all", "--inh-caps=-all"]
    mount_ro = 'mount -t tmpfs -o ro,size=1m,mode=0755 none "$0" && exec "$@"'
    on_read_only = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_ro, str(readonly)]
    for wrap, db, why in ((as_user, roots / "x.sqlite3", "Permission denied"),
                          (on_read_only, readonly / "x.sqlite3", "Read-only file system")):  # fmt: skip
        args = ("--tool", "server_status", "--replay", str(DEMO), "--db", str(db))
        done = subprocess.run([*wrap, sys.executable, "-m", "netspy_tui", *args], env=product_env(tmp_path),
                              cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        line = assert_one_line_error(Run(args, done.returncode, done.stdout, done.stderr), 2)
        assert f"cannot open the event store {db}: " in line and why in line, line
        assert "leave out --db: events then go to a scratch file removed on exit" in line, line
        assert "in memory" not in line, line
        assert not db.exists()


def test_an_infinite_replay_speed_is_instant(cli: Cli) -> None:
    run = cli("--tool", "get_network_summary", "--replay", str(DEMO), "--replay-speed", "inf", "--duration", "600")
    assert run.returncode == 0, run.stderr
    assert "outbound connection attempts" in run.stdout


def test_a_port_in_use_is_one_sentence_never_a_traceback(cli: Cli) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        runs = cli.many(
            [
                ["serve", "--port", port, "--replay", str(DEMO), "--replay-speed", "0"],
                ["mcp", "--http", "--port", port, "--replay", str(DEMO), "--replay-speed", "0"],
            ]
        )
    for run in runs:
        assert run.returncode == 1 and "Traceback" not in run.stderr, run
        # one line that says why (uvicorn's own ERROR line before it said it twice, in two voices: an audit's)
        assert run.stderr.splitlines() == [
            f"netspy-tui: Could not listen on 127.0.0.1:{port} (error while attempting to bind on address "
            f"('127.0.0.1', {port}): address already in use). Pick another --port, or stop what listens there."
        ], run.stderr
