"""Bad command-line input, bad environment and a bad config file: one line on stderr, the right exit code.

Every case runs ``python -m netspy_tui`` as a subprocess (several at a time). Cases already in
tests/cli/test_single_command.py (negative pid, non-numeric pid, zero duration, ``1e9`` max events,
unknown tool, unknown flag, missing --summary-text, duration beyond the tool's range) are not repeated.
"""

from __future__ import annotations

from pathlib import Path

from tests.hardening.conftest import DEMO, Cli, assert_one_line_error

#: (arguments, exit code, a fragment of the one line on stderr). Flag and setting errors exit 2 before
#: any data source is opened; values only a tool's schema can judge exit 1 after it answered.
FLAG_CASES: list[tuple[list[str], int, str]] = [
    (["--tool", "list_connections", "--pid", "0"], 2, "argument --pid: must be greater than 0, got 0"),
    (["--tool", "list_connections", "--max-events", "0"], 2, "argument --max-events: must be greater than 0"),
    (["--tool", "get_network_summary", "--duration", "abc"], 2, "expected a whole number, got 'abc'"),
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
    (["--tool", "list_connections", "--timeout", "inf"], 2, "invalid setting timeout: Input should be less than"),
    (["--tool", "list_connections", "--interval", "0.01"], 2, "invalid setting interval"),
    (["--tool", "list_connections", "--window", "999999999"], 2, "invalid setting window"),
    (["--tool", "list_connections", "--replay-speed", "nan", "--replay", str(DEMO)], 2, "invalid setting replay_speed"),
    (["--tool", "list_connections", "--server", "notaurl"], 2,
     "invalid setting server: 'notaurl' is not a usable eBPF server URL (it must start with http:// or https://)"),
    (["--tool", "list_connections", "--server", "http://[::1"], 2, "is not a usable eBPF server URL (Invalid port"),
    (["--tool", "list_connections", "--server", "http://256.1.1.1:99999"], 2, "Invalid IPv4 address"),
    (["--tool", "list_connections", "--server", "http://"], 2, "it has no host name"),
    (["serve", "--token", "   ", "--replay", str(DEMO)], 2, "invalid setting token: the token is empty"),
    (["--tool", "list_connections", "--token", "tökén-secret", "--server", "http://127.0.0.1:9"], 2,
     "invalid setting token: the token must be printable ASCII without spaces"),
]


def test_bad_flags_and_settings_are_one_line_with_exit_2(cli: Cli) -> None:
    cases = FLAG_CASES + SETTING_CASES
    runs = cli.many([args for args, _, _ in cases])
    for (args, code, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, code)
        assert fragment in line, (args, line)
        assert "tökén-secret" not in line  # a refused token is never echoed


def test_values_only_the_tool_can_judge_exit_1(cli: Cli) -> None:
    """Replay as the source: the tool's schema answers, one line, exit 1."""
    cases = [
        (["--pid", "99999999999999999999999"], "Invalid arguments for list_connections: pid must be <= 4194304."),
        (["--max-events", "99999999999999999999", "--process", ""],
         "Invalid arguments for list_connections: process_name must not be empty; max_events must be <= 1000."),
        (["--since", "\x1b[31myesterday"], "since: '\\x1b[31myesterday' is not an RFC3339 time"),
    ]
    runs = cli.many([["--tool", "list_connections", "--replay", str(DEMO), "--replay-speed", "0", *args]
                     for args, _ in cases])
    for (args, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 1)
        assert fragment in line, (args, line)


def test_bad_environment_and_config_file(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('server = [unclosed\n')
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('timeout = "abc"\n')
    cases = [
        ({"NETSPY_CONFIG": str(broken)}, f"cannot read the config file {broken}: not valid TOML"),
        ({"NETSPY_CONFIG": str(binary)}, f"cannot read the config file {binary}: not UTF-8 text"),
        ({"NETSPY_CONFIG": str(wrong)}, "invalid setting timeout: Input should be a valid number"),
        ({"NETSPY_RETRIES": "many"}, "invalid setting retries: Input should be a valid integer"),
        ({"NETSPY_SERVER": "localhost:8080"}, "invalid setting server: 'localhost:8080' is not a usable"),
        ({"NETSPY_TOKEN": "two words"}, "the token must be printable ASCII without spaces"),
    ]
    runs = [cli("--tool", "server_status", env=env) for env, _ in cases]
    for (env, fragment), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 2)
        assert fragment in line, (env, line)
        assert "two words" not in line


def test_unusable_files_are_one_line_exit_1(cli: Cli, tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello\n")
    cases = [
        (["--tool", "list_connections", "--replay", str(tmp_path / "missing.jsonl")],
         "cannot read recording", "No such file or directory"),
        (["--tool", "list_connections", "--replay", str(tmp_path)], "cannot read recording", "is a directory"),
        (["--tool", "list_connections", "--db", str(not_a_db)], "cannot open the event store", "not a database"),
        (["--tool", "list_connections", "--replay", str(DEMO), "--record", "/proc/no/such.jsonl"],
         "cannot write recording /proc/no/such.jsonl", "--record"),
        (["serve", "--replay", str(DEMO), "--db", "/proc/no/such.db", "--port", "1"],
         "cannot open the event store /proc/no/such.db", "writable file"),
    ]
    runs = cli.many([args for args, _, _ in cases])
    for (args, first, second), run in zip(cases, runs, strict=True):
        line = assert_one_line_error(run, 1)
        assert first in line and second in line, (args, line)


def test_an_infinite_replay_speed_is_instant(cli: Cli) -> None:
    run = cli("--tool", "get_network_summary", "--replay", str(DEMO), "--replay-speed", "inf", "--duration", "600")
    assert run.returncode == 0, run.stderr
    assert "outbound connection attempts" in run.stdout
