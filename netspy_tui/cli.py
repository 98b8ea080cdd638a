"""Command line: the dashboard (default), single-command ``--tool`` mode, ``repl``, ``mcp``, ``serve``.

Errors are one line on stderr: exit 2 for bad flags or values, 1 when the server or collector
fails. Textual is imported only on the dashboard path, so ``--tool`` and ``mcp`` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from netspy_tui import __version__
from netspy_tui.errors import NetspyError, UsageError, sole_exception, user_error
from netspy_tui.httplimits import LIMITS_HELP, MAX_INGEST_BODY_BYTES
from netspy_tui.mcp_tools import ALL_TOOLS
from netspy_tui.textsafe import clean, token_problem

if TYPE_CHECKING:
    from netspy_tui.ai.settings import AISettings
    from netspy_tui.config import Settings

log = logging.getLogger("netspy_tui")

TOOLS = ALL_TOOLS
#: What a command line can run: the dashboard (default), one ``--tool`` call, or a subcommand.
RUNS = ("tui", "tool", "repl", "mcp", "serve")
SUBCOMMANDS = ("tui", "repl", "mcp", "serve")
SHELLS = ("bash", "zsh", "fish", "tcsh")
_ALL = frozenset(RUNS)
_CLIENTS = _ALL - {"serve"}  # serve always runs the embedded collector: no --server, no client timeout
_NAMES = {"tui": "the dashboard", "tool": "--tool", "repl": "repl", "mcp": "mcp", "serve": "serve"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    commands: dict[str, argparse.ArgumentParser]
    """The subcommands' parsers (on the top-level parser)."""

    argv: Sequence[str] = ()
    """The arguments being parsed (see :func:`parse_args`)."""

    def error(self, message: str) -> NoReturn:
        bad = re.match(r"argument command: invalid choice: '(.*)' \(choose from", message)
        if bad and bad.group(1) in self.argv:
            # ``--bogus x``: argparse leaves the unknown flag and takes its value for a command ("invalid choice:
            # 'x'"), blaming the value; the flag is what is wrong
            i = list(self.argv).index(bad.group(1))
            flag = self.argv[i - 1] if i else ""
            if flag.startswith("-") and flag.split("=", 1)[0] not in self._option_string_actions:
                message = f"unrecognized arguments: {flag} {bad.group(1)}"
        # argparse echoes the offending argument: never let it write escapes to the terminal
        sys.stderr.write(f"netspy-tui: error: {clean(message, 600)} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", text, re.ASCII):  # (int() also takes "1_000" and "٢٠٤٨")
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{clean(text, 30)}'")
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _path(text: str) -> Path:
    if not text.strip():  # (Path("") is the working directory: an aggregator's --db "" made its stores there)
        raise argparse.ArgumentTypeError("must name a file or directory, not be empty (leave it out for the default)")
    return Path(text)


def _count_or_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text[:30]}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


#: the most ingest-checking processes taken (each is ~50 MB; more than the cores cannot help)
MAX_INGEST_PROCESSES = 64


def _processes(text: str) -> int:
    value = _count_or_zero(text)
    if value > MAX_INGEST_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INGEST_PROCESSES}, got {text[:30]}")
    return value


def _dns_server(text: str) -> str:
    from netspy_tui.names.resolver import parse_server

    try:
        parse_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text[:30]}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text[:30]}")
    if not math.isfinite(value):  # (inf would never come round: a forwarder that never posts)
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:30]}")
    return value


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


def _bind_host(text: str) -> str:
    """An address to listen on: an IP address or a host name (a name the resolver cannot read, e.g. a byte that is
    not ASCII or a label over 63 characters, was uvicorn's traceback)."""
    import ipaddress

    host = text.strip()
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        what = "an IP address or a host name to listen on (an IPv6 one without brackets)"
        raise argparse.ArgumentTypeError(f"expected {what}, got {clean(text, 60)!r}")
    return host


def _allow_host(text: str) -> str:
    from netspy_tui.serve.hosts import allow_host_entry

    try:
        return allow_host_entry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _forward_url(text: str) -> str:
    """An aggregator's base URL or its ingest URL -> the ingest URL, parsed as the forwarder's HTTP client parses
    it (a host it cannot read would be retried for ever)."""
    from urllib.parse import urlsplit

    from netspy_tui.serve.forward import INGEST_PATH  # (the agent's module: it runs next)
    from netspy_tui.textsafe import redact_url

    shown = clean(redact_url(text.strip()), 80)  # (a password in the URL is never echoed)
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s):// URL of an aggregator, got '{shown}'")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # (a port beyond 65535 or not a number; 0 is none a server listens on)
        raise argparse.ArgumentTypeError(f"the port of '{shown}' is not a port (1-65535)")
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    url = parts._replace(path=path, query="", fragment="").geturl()
    import httpx

    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"'{shown}' is not a usable aggregator URL ({clean(exc, 80)})") from None
    return url


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One flag and the runs it applies to: the one table behind every parser, --help and check."""

    flags: tuple[str, ...]
    runs: frozenset[str]
    group: str
    kwargs: dict[str, Any]

    @property
    def dest(self) -> str:
        return self.flags[-1].lstrip("-").replace("-", "_")


def _opt(*flags: str, runs: frozenset[str] | set[str], group: str, **kwargs: Any) -> Option:
    return Option(flags, frozenset(runs), group, kwargs)


SOURCE, TOOL, UI = "data source", "single command (the Go netspy's flags)", "dashboard"
NET, GENERAL = "server", "general"
OPTIONS: tuple[Option, ...] = (
    _opt(
        "--server",
        runs=_CLIENTS,
        group=SOURCE,
        metavar="URL",
        help="eBPF server URL (env NETSPY_SERVER; default: http://localhost:8080 if an eBPF server answers there, "
        "else the embedded collector)",
    ),
    _opt(
        "--token",
        runs=_ALL,
        group=SOURCE,
        metavar="TOKEN",
        help="bearer token: sent to the server, or required by serve / mcp --http (env NETSPY_TOKEN)",
    ),
    _opt(
        "--timeout",
        runs=_CLIENTS,
        group=SOURCE,
        type=_positive_float,
        metavar="S",
        help="HTTP read timeout in seconds (10)",
    ),
    _opt(
        "--collector",
        runs=_ALL,
        group=SOURCE,
        choices=("auto", "ebpf", "procfs", "replay"),
        help="embedded collector (auto: eBPF if it loads, else procfs sampling)",
    ),
    _opt(
        "--raw-rate",
        runs=_ALL,
        group=SOURCE,
        type=_count_or_zero,
        metavar="N",
        help="eBPF: raw events the host keeps per second, all CPUs together, at most (50000; 0: no cap); the "
        "rest are shed, counted and reported as shed, and every count stays exact",
    ),
    _opt("--replay", runs=_ALL, group=SOURCE, type=_path, metavar="FILE", help="replay a JSON-lines recording"),
    _opt(
        "--replay-speed",
        runs=_ALL,
        group=SOURCE,
        type=float,
        metavar="X",
        help="replay speed (1 = real time, 0 = instant)",
    ),
    _opt(
        "--replay-times",
        runs=_ALL,
        group=SOURCE,
        choices=("now", "recorded"),
        help="now: move the replay's times so its newest event lands now (the default: windows of the last N "
        "seconds show it); recorded: keep the recording's own times",
    ),
    _opt(
        "--record",
        runs=_ALL,
        group=SOURCE,
        type=_path,
        metavar="FILE",
        help="also write collected events to FILE (JSON lines)",
    ),
    _opt(
        "--db",
        runs=_ALL,
        group=SOURCE,
        type=_path,
        metavar="FILE",
        help="SQLite file keeping history across restarts (default: a private scratch file, removed on exit)",
    ),
    _opt(
        "--tool",
        runs={"tool"},
        group=TOOL,
        choices=TOOLS,
        metavar="TOOL",
        help="run one MCP tool and exit: " + ", ".join(TOOLS),
    ),
    _opt("--pid", runs={"tool"}, group=TOOL, type=_positive_int, help="filter on a process id"),
    _opt("--process", runs={"tool"}, group=TOOL, metavar="NAME", help="filter on a process name (kernel comm)"),
    _opt(
        "--duration",
        runs={"tool"},
        group=TOOL,
        type=_positive_int,
        metavar="S",
        help="time window in seconds (60; contextual_analysis: 300)",
    ),
    _opt("--max-events", runs={"tool"}, group=TOOL, type=_positive_int, metavar="N", help="most events to list (100)"),
    _opt("--limit", runs={"tool"}, group=TOOL, type=_positive_int, metavar="N", help="most rows of each top list (20)"),
    _opt("--since", runs={"tool"}, group=TOOL, metavar="TIME", help="only events newer than this RFC3339 time"),
    _opt(
        "--until",
        runs={"tool"},
        group=TOOL,
        metavar="TIME",
        help="only events at or before this RFC3339 time (lists are newest first: this pages back)",
    ),  # fmt: skip
    _opt(
        "--before",
        runs={"tool"},
        group=TOOL,
        metavar="TOKEN",
        help="only events after the one of this page token (the --before a list's hint names): pages back, "
        "each event once, also through many events of one time",
    ),  # fmt: skip
    _opt("--node", runs={"tool"}, group=TOOL, metavar="NAME", help="only this node (an aggregator's; or this host)"),
    _opt("--workload", runs={"tool"}, group=TOOL, metavar="NAME", help="only this workload (e.g. nginx.service)"),
    _opt(
        "--kind",
        runs={"tool"},
        group=TOOL,
        choices=("connection", "packet_drop"),
        help="list_processes: rank processes by connection attempts (default) or by packet drops",
    ),  # fmt: skip
    _opt(
        "--group-by",
        runs={"tool"},
        group=TOOL,
        choices=("process", "workload", "node"),
        help="list_processes: rank processes, or sum them by workload or node",
    ),  # fmt: skip
    _opt(
        "--direction",
        runs={"tool"},
        group=TOOL,
        choices=("outbound", "inbound", "all"),
        help="list_connections: connect() attempts (outbound, the default), accepted connections (inbound), or all",
    ),  # fmt: skip
    _opt("--summary-text", runs={"tool"}, group=TOOL, metavar="TEXT", help="text for ai_insights"),
    _opt("--query", runs={"tool"}, group=TOOL, metavar="TEXT", help="question for contextual_analysis"),
    _opt("--json", runs={"tool"}, group=TOOL, action="store_true", help="print the structured result as JSON"),
    _opt("--interval", runs={"tui"}, group=UI, type=_positive_float, metavar="S", help="refresh interval (1 s)"),
    _opt("--window", runs={"tui"}, group=UI, type=_positive_int, metavar="S", help="time window in seconds (60)"),
    _opt("--http", runs={"mcp"}, group=NET, action="store_true", help="serve streamable HTTP at /mcp instead of stdio"),
    _opt("--host", runs={"mcp", "serve"}, group=NET, type=_bind_host, metavar="ADDR", help="bind address (127.0.0.1)"),
    _opt(
        "--allow-host",
        runs={"mcp", "serve"},
        group=NET,
        action="append",
        type=_allow_host,
        metavar="NAME",
        help="also answer requests whose Host/Origin is NAME (repeatable; '*.SUFFIX' allows every name ending in "
        ".SUFFIX, e.g. '*.svc.cluster.local'; '*' turns the check off)",
    ),
    _opt(
        "--forward",
        runs={"serve"},
        group=NET,
        type=_forward_url,
        metavar="URL",
        help="also send every event to an ebpf-server aggregator (its URL or its /api/events/ingest), "
        "from the store in order, resuming after outages",
    ),
    _opt(
        "--forward-token",
        runs={"serve"},
        group=NET,
        metavar="TOKEN",
        help="bearer token for the aggregator (env NETSPY_FORWARD_TOKEN)",
    ),
    _opt(
        "--forward-interval",
        runs={"serve"},
        group=NET,
        type=_positive_float,
        metavar="S",
        help="seconds between posts to the aggregator when fewer than a full batch (5,000 events) wait "
        "(2 s; a full batch goes at once)",
    ),
    _opt(
        "--aggregate",
        runs={"serve"},
        group=NET,
        action="store_true",
        help="be an ebpf-server aggregator: take agents' events at POST /api/events/ingest and answer every "
        "query across nodes (no collector here; --db DIR keeps the nodes' events across restarts)",
    ),
    _opt(
        "--ingest-token",
        runs={"serve"},
        group=NET,
        metavar="TOKEN",
        help="serve --aggregate: the bearer token agents must send (env NETSPY_INGEST_TOKEN; required when "
        "not bound to loopback)",
    ),
    *(
        _opt(flag, runs={"serve"}, group=NET, type=_positive_int, metavar="N", help=f"serve --aggregate: {what}")
        for flag, what in (
            ("--ingest-max-events", "most events in one ingest batch (5000)"),
            ("--ingest-rate", "most events per second from one node; more is answered 429 and retried (50000)"),
        )
    ),
    _opt(
        "--ingest-processes",
        runs={"serve"},
        group=NET,
        type=_processes,
        metavar="N",
        help="serve --aggregate: processes that read and check ingest bodies while this one stores them (the "
        "CPUs it may use, a container's limit included, but one, at most 2; 0: this process does it all)",
    ),
    _opt(
        "--metrics-top",
        runs={"serve"},
        group=NET,
        type=_positive_int,
        metavar="N",
        help='/metrics labels at most N processes per metric, the rest as process="other" (20)',
    ),
    _opt(
        "--port", runs={"mcp", "serve"}, group=NET, type=_port, metavar="N", help="port (mcp --http: 8000, serve: 8080)"
    ),
    _opt(
        "--no-dns",
        runs=_ALL - {"serve"},
        group=GENERAL,
        action="store_true",
        help="show addresses only: no reverse DNS and no /etc/hosts lookups",
    ),
    _opt(
        "--dns-server",
        runs=_ALL - {"serve"},
        group=GENERAL,
        type=_dns_server,
        metavar="ADDR[:PORT]",
        help="ask this name server for reverse DNS instead of /etc/resolv.conf's",
    ),
    _opt(
        "--model",
        runs=_ALL,
        group=GENERAL,
        metavar="NAME",
        help="AI model name (env NETSPY_MODEL; in the config file: model)",
    ),
    _opt(
        "--show-config",
        runs=_ALL,
        group=GENERAL,
        action="store_true",
        help="print every setting with its source and exit",
    ),
    _opt(
        "--log-file",
        runs=_ALL,
        group=GENERAL,
        type=_path,
        metavar="FILE",
        help="write the log to FILE, rotated at 5 MiB with 3 old files kept (default: stderr; the dashboard: "
        "~/.local/state/netspy-tui/netspy-tui.log)",
    ),
    _opt(
        "-v",
        "--verbose",
        runs=_ALL,
        group=GENERAL,
        action="store_true",
        help="debug logging (on stderr, or in the log file), secrets masked",
    ),
)
_TOP_LEVEL = frozenset({"tui", "tool"})
_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}

#: The flags each tool takes (``--json`` and the data-source flags apply to every tool).
TOOL_FLAGS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("get_network_summary", "analyze_patterns", "get_packet_drop_summary", "analyze_packet_drops"),
        ("pid", "process", "duration", "node", "workload"),
    ),
    "list_connections": ("pid", "process", "max_events", "since", "until", "before", "node", "workload", "direction"),
    "list_packet_drops": ("pid", "process", "max_events", "since", "until", "before", "node", "workload"),
    "list_processes": ("kind", "duration", "limit", "group_by", "node", "workload"),
    # (kept per process, not per workload: they take no --workload)
    **dict.fromkeys(("get_traffic", "get_connect_latency"), ("pid", "process", "duration", "limit", "node")),
    "server_status": (),
    "ai_insights": ("summary_text",),
    "contextual_analysis": ("query", "pid", "process", "duration", "node", "workload"),
}
#: Flag dest -> MCP tool argument; and each argument's name as the user typed it.
_ARGUMENT = {
    "pid": "pid",
    "process": "process_name",
    "duration": "duration",
    "max_events": "max_events",
    "limit": "limit",
    "since": "since",
    "until": "until",
    "before": "before",
    "summary_text": "summary_text",
    "query": "query",
    "node": "node",
    "workload": "workload",
    "group_by": "group_by",
    "direction": "direction",
    "kind": "kind",
}
_FLAG_OF = {argument: "--" + dest.replace("_", "-") for dest, argument in _ARGUMENT.items()}


class _Completion(argparse.Action):
    """``--completion SHELL``: print the completion script shtab generates from this parser, and exit."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        import shtab

        for action in _all_actions(parser):
            if action.metavar == "FILE":
                action.complete = shtab.FILE  # type: ignore[attr-defined]
        sys.stdout.write(shtab.complete(parser, str(values)))  # the shell to complete for (a name, never run)
        raise SystemExit(0)


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                actions += _all_actions(sub)
    return actions


def _add_options(parser: argparse.ArgumentParser, runs: frozenset[str], *, shared: bool) -> None:
    groups: dict[str, Any] = {}
    for option in OPTIONS:
        if not option.runs & runs:
            continue
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        kwargs = dict(option.kwargs)
        if shared and option.runs & _TOP_LEVEL:
            kwargs["default"] = argparse.SUPPRESS  # given before the command or after it: either counts
        groups[option.group].add_argument(*option.flags, **kwargs)


_ABOUT = {
    "tui": ("the live dashboard (what netspy-tui runs without a command)", "netspy-tui [tui] [options]"),
    "repl": (
        "line-mode shell with the Go netspy's commands (summary, list, analyze, insights, ...)",
        "netspy-tui repl [options]",
    ),
    "mcp": (
        "serve the MCP tools to outside agents over stdio, or streamable HTTP with --http",
        "netspy-tui mcp [--http [--host ADDR] [--port N]] [options]",
    ),
    "serve": (
        "serve the eBPF server's HTTP API (and MCP at /mcp) from the embedded collector, or aggregate agents' "
        "events across nodes (--aggregate)",
        "netspy-tui serve [--host ADDR] [--port N] [--token TOKEN] [--forward URL | --aggregate] [options]",
    ),
}


def build_parser() -> _Parser:
    p = _Parser(
        prog="netspy-tui",
        usage="netspy-tui [options]                 the dashboard\n"
        "       netspy-tui --tool TOOL [options]     one MCP tool call (the Go netspy's flags)\n"
        "       netspy-tui {tui,repl,mcp,serve} ...  (netspy-tui COMMAND --help: its options)\n"
        "       netspy-tui --completion {bash,zsh,fish,tcsh}",
        description="Live network-connection telemetry (eBPF) in a terminal dashboard, with MCP tools and AI.",
    )
    p.add_argument("--version", action="version", version=f"netspy-tui {__version__}")
    p.add_argument(
        "--completion",
        choices=SHELLS,
        action=_Completion,
        help="print the shell completion script and exit, e.g. netspy-tui --completion bash "
        "> ~/.local/share/bash-completion/completions/netspy-tui",
    )
    _add_options(p, _TOP_LEVEL, shared=False)
    p.set_defaults(command=None, http=False, host=None, port=None)
    sub = p.add_subparsers(dest="command", title="commands", parser_class=_Parser)
    p.commands = {}
    for name in SUBCOMMANDS:
        about, usage = _ABOUT[name]
        cmd = sub.add_parser(
            name,
            prog=f"netspy-tui {name}",
            help=about,
            usage=usage,
            description=about[:1].upper() + about[1:] + "." + (f" {LIMITS_HELP}" if name in ("mcp", "serve") else ""),
        )
        _add_options(cmd, frozenset({name}), shared=True)
        p.commands[name] = cmd
    return p


def _misplaced(flag: str, run: str) -> str:
    """'--http does not apply to serve (it is an option of mcp)'."""
    option = _BY_FLAG.get(flag)
    where = ""
    if flag == "--tool":
        where = " (it runs one tool instead: netspy-tui --tool TOOL)"
    elif option is not None:
        where = " (it is an option of " + ", ".join(_NAMES[r] for r in RUNS if r in option.runs) + ")"
    return f"{flag} does not apply to {_NAMES[run]}{where}"


def _long_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and of its commands."""
    flags = {f for action in parser._actions for f in action.option_strings if f.startswith("--")}
    for command in getattr(parser, "commands", {}).values():
        flags |= _long_flags(command)
    return flags


def go_style(argv: Sequence[str], long_flags: set[str]) -> list[str]:
    """The Go netspy's flags as it took them (Go's flag package: ``-tool x``, ``-pid=5``) read as ``--tool x``,
    ``--pid=5``: a word of one dash that names a long flag, up to a ``--`` (after it, words are values)."""
    out: list[str] = []
    for i, word in enumerate(argv):
        if word == "--":
            return out + list(argv[i:])
        if len(word) > 2 and word[0] == "-" and word[1].isalpha() and "-" + word.split("=", 1)[0] in long_flags:
            word = "-" + word
        out.append(word)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, then check that every flag given applies to what runs; exit 2 with one line if one does not."""
    parser = build_parser()
    argv = go_style(sys.argv[1:] if argv is None else argv, _long_flags(parser))
    parser.argv = argv
    ns, extra = parser.parse_known_args(argv)
    run = ns.command or ("tool" if ns.tool else "tui")
    ns.run = run
    where = parser.commands[ns.command] if ns.command else parser  # its errors point at its own --help
    if extra:
        flag = extra[0].split("=", 1)[0]
        if flag in _BY_FLAG:
            where.error(_misplaced(flag, run))
        where.error(f"unrecognized arguments: {' '.join(extra)}")
    for option in OPTIONS:
        if getattr(ns, option.dest, None) not in (None, False) and run not in option.runs:
            where.error(_misplaced(option.flags[-1], run))
    if run == "mcp" and not ns.http and (ns.host is not None or ns.port is not None):
        where.error("--host and --port apply to mcp --http (without --http, mcp serves stdio)")
    if run == "serve":
        _check_aggregate(ns, where)
    if run == "tool":
        takes = TOOL_FLAGS[ns.tool]
        for dest, argument in _ARGUMENT.items():
            if getattr(ns, dest) is not None and dest not in takes:
                flags = ", ".join(_FLAG_OF[_ARGUMENT[d]] for d in takes) or "none but --json"
                where.error(f"--tool {ns.tool} takes no {_FLAG_OF[argument]} (its flags: {flags})")
    return ns


_INGEST_FLAGS = (("ingest_token", "--ingest-token"), ("ingest_max_events", "--ingest-max-events"),
                 ("ingest_rate", "--ingest-rate"), ("ingest_processes", "--ingest-processes"))  # fmt: skip
_COLLECTOR_FLAGS = (("forward", "--forward"), ("replay", "--replay"), ("collector", "--collector"),
                    ("record", "--record"), ("raw_rate", "--raw-rate"))  # fmt: skip


_FORWARD_FLAGS = (("forward_token", "--forward-token"), ("forward_interval", "--forward-interval"))


def _check_aggregate(ns: argparse.Namespace, where: argparse.ArgumentParser) -> None:
    """The aggregator runs no collector; the ingest flags belong to it, the forwarding flags to --forward."""
    if not ns.forward:
        for dest, flag in _FORWARD_FLAGS:
            if getattr(ns, dest, None) is not None:
                where.error(f"{flag} applies to serve --forward only")
    if ns.aggregate:
        for dest, flag in _COLLECTOR_FLAGS:
            if getattr(ns, dest, None) not in (None, False):
                where.error(f"{flag} does not apply to serve --aggregate (it runs no collector: its agents do)")
        return
    for dest, flag in _INGEST_FLAGS:
        if getattr(ns, dest, None) is not None:
            where.error(f"{flag} applies to serve --aggregate only")


def tool_arguments(ns: argparse.Namespace) -> dict[str, Any]:
    """The --tool flags as MCP tool arguments, checked against the tools' own bounds (UsageError if not)."""
    from netspy_tui.mcp_tools.schemas import argument_problem

    name = ns.tool
    if name == "ai_insights" and not ns.summary_text:
        raise UsageError("--tool ai_insights needs --summary-text TEXT")
    if name == "contextual_analysis" and not ns.query:
        raise UsageError("--tool contextual_analysis needs --query TEXT")
    args = {_ARGUMENT[dest]: getattr(ns, dest) for dest in TOOL_FLAGS[name] if getattr(ns, dest) is not None}
    problem = argument_problem(name, args, _FLAG_OF)
    if problem:
        raise UsageError(problem)
    return args


def _settings(ns: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    """The one settings model (config file, env, these flags), validated once; UsageError if a value is bad."""
    from netspy_tui.config import load_settings

    cli = {
        "server": ns.server,
        "token": ns.token,
        "timeout": ns.timeout,
        "collector": "replay" if ns.replay and not ns.collector else ns.collector,
        "replay": ns.replay,
        "replay_speed": ns.replay_speed,
        "replay_times": ns.replay_times,
        "raw_rate": ns.raw_rate,
        "record": ns.record,
        "db": ns.db,
        "interval": ns.interval,
        "window": ns.window,
        "model": ns.model,
        "dns": False if getattr(ns, "no_dns", False) else None,
        "dns_server": getattr(ns, "dns_server", None),
    }
    settings, sources = load_settings(cli)
    _mask_secrets(settings)
    if ns.run == "tool" and ns.replay_speed is None and settings.replay_speed != 0:
        # One answer cannot wait for a replay at the recording's own pace (it saw the first second): a one-shot
        # replays at once, over the whole recording, unless its command line gives --replay-speed.
        settings = settings.model_copy(update={"replay_speed": 0.0})
        sources = {**sources, "replay_speed": "a one-shot --tool replays at once (without --replay-speed)"}
    if ns.run == "tool" and settings.record is not None and ns.record is None:
        # Recording is for sessions (the dashboard, serve): a record setting would be used up by the first one-shot.
        settings = settings.model_copy(update={"record": None})
        sources = {**sources, "record": f"{sources['record']}, not used by a one-shot --tool"}
    settings, sources = _server_or_collector(settings, sources, ns.run)
    for flag, given in (("--replay-speed", ns.replay_speed), ("--replay-times", ns.replay_times)):
        if given is not None and settings.replay is None:
            raise UsageError(f"{flag} applies only with --replay: nothing is replayed",
                             f"add --replay FILE, or drop {flag}")  # fmt: skip
    if ns.run == "tool" and settings.record is not None and settings.replay is None:
        raise UsageError("--record applies to a one-shot --tool only with --replay: it runs no collector",
                         "drop --record, or record a session: netspy-tui serve --record FILE")  # fmt: skip
    return settings, sources


#: How strongly each place a setting comes from holds (the precedence: file < env < command line).
_RANK = {"command": 3, "env": 2, "file": 1}  # (by the first word of the source)


def _given(name: str, source: str) -> str:
    """'--record' when the command line gave the setting, else 'record (env NETSPY_RECORD)'."""
    return "--" + name.replace("_", "-") if source == "command line" else f"{name} ({source})"


def _server_or_collector(settings: Settings, sources: dict[str, str], run: str) -> tuple[Settings, dict[str, str]]:
    """A server is read, or the embedded collector replays, records and keeps its store: never both. Of ``server``
    and ``replay``/``record``/``db``, the one given with the higher precedence wins (``--replay`` over
    ``NETSPY_SERVER``, ``--server`` over a ``record`` in the config file); both given at one level is refused
    (exit 2)."""
    if settings.server is None or run == "serve":  # (serve runs its collector whatever NETSPY_SERVER says)
        return settings, sources
    rank = {name: _RANK.get(sources[name].split(" ", 1)[0], 0) for name in ("server", "replay", "record", "db")}
    for name in ("replay", "record", "db"):
        if getattr(settings, name) is None or settings.server is None:
            continue
        if rank[name] == rank["server"]:
            raise UsageError(
                f"{_given(name, sources[name])} does not apply with {_given('server', sources['server'])}: a server "
                "is read as it is, only the embedded collector replays, records or keeps a store",
                f"drop {_given(name, sources[name])} or {_given('server', sources['server'])}",
            )
        loser = "server" if rank[name] > rank["server"] else name
        winner = name if loser == "server" else "server"
        settings = settings.model_copy(update={loser: None})
        sources = {**sources, loser: f"{sources[loser]}, not used: {_given(winner, sources[winner])} wins"}
    return settings, sources


def _check_directory(name: str, path: Path | None, source: str) -> None:
    """A store or recording the user named must be in a directory that exists: a typo must not leave a tree
    of new directories behind (only the scratch store's directory is made, by netspy-tui itself)."""
    if path is None:
        return
    if name == "db":
        path = Path(path).expanduser()  # (the store expands ~ too)
    directory = Path(os.path.abspath(path)).parent
    if not directory.is_dir():
        exists = os.path.lexists(directory)
        raise UsageError(
            f"{_given(name, source)} {clean(str(path), 200)}: "
            + (
                f"{clean(str(directory), 200)} is not a directory"
                if exists
                else f"directory {clean(str(directory), 200)} does not exist"
            ),  # fmt: skip
            "choose a path under a directory" if exists else "create it first",
        )


#: the tokens a server reads from the environment, and the flag that overrides each
_SERVER_TOKENS = (("NETSPY_TOKEN", "token"), ("NETSPY_INGEST_TOKEN", "ingest_token"),
                  ("NETSPY_FORWARD_TOKEN", "forward_token"))  # fmt: skip


def _check_server_tokens(ns: argparse.Namespace) -> None:
    """A server's token variable that is set but empty (an unfilled Kubernetes Secret, a ``$TOKEN`` that
    expanded to nothing) is refused at start: taken as unset, it served every read without authentication
    with only a warning. Unset, the variable means no token (on loopback, or refused beyond it). The ingest and
    forward tokens, from their flag or variable, are checked as the settings check ``--token``
    (:func:`~netspy_tui.textsafe.token_problem`): one that is not visible ASCII is refused here, not found out as
    a traceback at the first post, or as a token no agent can send."""
    if ns.run != "serve" and not (ns.run == "mcp" and ns.http):
        return
    applies = {"NETSPY_TOKEN": True, "NETSPY_INGEST_TOKEN": getattr(ns, "aggregate", False),
               "NETSPY_FORWARD_TOKEN": bool(getattr(ns, "forward", None))}  # fmt: skip
    for var, dest in _SERVER_TOKENS:
        value = os.environ.get(var)
        flag = f"--{dest.replace('_', '-')}"
        if applies[var] and getattr(ns, dest, None) is None and value is not None and not value.strip():
            raise UsageError(f"{var} is set but empty", f"put the token in it, or unset it to run without one "
                             f"({flag} TOKEN overrides it)")  # fmt: skip
        if var == "NETSPY_TOKEN" or not applies[var]:
            continue  # (the settings check --token and NETSPY_TOKEN, with the same rule)
        given = getattr(ns, dest, None)
        named, token = (flag, given) if given is not None else (var, value)
        problem = token_problem(token) if token is not None else None
        if problem:
            raise UsageError(f"{named} {problem}", "a token is visible ASCII characters on one line")


def _server_token(ns: argparse.Namespace, dest: str, var: str) -> str | None:
    """The ingest or forward token: its flag, else its variable, outer whitespace dropped (checked at start)."""
    given = getattr(ns, dest, None)
    value = given if given is not None else os.environ.get(var)
    return (value.strip() or None) if value is not None else None


def _check_record(path: Path | None, source: str) -> None:
    """A recording is never overwritten: say so naming where its name came from, before anything starts (the
    recorder's exclusive create stays the guard)."""
    if path is None:
        return
    try:
        st = os.lstat(path)
    except OSError:
        return
    import stat

    from netspy_tui.safefs import describe

    kind = "" if stat.S_ISREG(st.st_mode) else f" as {describe(st)}"
    raise UsageError(
        f"refusing to write the recording {clean(str(path), 200)}: it already exists{kind}",
        f"an existing file or link is never overwritten: choose a new file name for {_given('record', source)}",
    )


def _mask_secrets(settings: Settings) -> None:
    """Secrets that came from the command line or the config file are masked in logs too."""
    from netspy_tui.logs import add_secrets
    from netspy_tui.textsafe import url_secrets

    for secret in (settings.token, settings.openai_api_key):
        if secret is not None:
            add_secrets(secret.get_secret_value())
    for url in (settings.server, settings.openai_base_url):
        if url:
            add_secrets(*url_secrets(url))


def _ai(settings: Settings) -> AISettings:
    """The AI layer's part of the settings."""
    from netspy_tui.ai.settings import AISettings

    return AISettings.from_settings(settings)


def _names(settings: Any) -> Any:
    """The destination-name resolver the command's MCP server uses (off with --no-dns / dns = false)."""
    from netspy_tui.names import NameResolver
    from netspy_tui.names.resolver import parse_server

    if settings.dns_server:
        address, port = parse_server(settings.dns_server)
        return NameResolver(enabled=settings.dns, nameservers=[address], port=port)
    return NameResolver(enabled=settings.dns)


def _workloads() -> Any:
    """Processes' workloads from their cgroups (used only with this host's own collector)."""
    from netspy_tui.names import WorkloadResolver

    return WorkloadResolver()


def _lazy_ai_tools(settings: Settings) -> Any:
    """The AI tools' hook, importing the AI layer (and openai) only when an AI tool runs."""

    async def hook(source: Any, name: str, args: dict[str, Any]) -> Any:
        from netspy_tui.mcp_tools.ai_bridge import ai_tools_hook

        return await ai_tools_hook(_ai(settings))(source, name, args)

    return hook


async def _run_tool(ns: argparse.Namespace, settings: Any, arguments: dict[str, Any]) -> int:
    from netspy_tui.mcp_tools.gateway import open_gateway

    if ns.tool == "ai_insights" and not ns.json:
        return await _stream_ai(_ai(settings), None, arguments)
    names = _names(settings)  # one command: wait for names up to the resolver's timeout
    # The server offers the one tool called (building each tool's models is most of a server's start);
    # contextual_analysis lets the model read every data tool.
    only = None if ns.tool == "contextual_analysis" else (ns.tool,)
    async with (
        _tool_source(settings, ns.tool) as source,
        open_gateway(
            source,
            _lazy_ai_tools(settings),
            names=names,
            names_wait=names.timeout,
            workloads=_workloads(),
            only=only,
        ) as gw,
    ):
        if ns.tool == "contextual_analysis" and not ns.json:
            return await _stream_ai(_ai(settings), gw, arguments)
        result = await gw.call(ns.tool, arguments)
    if result.is_error:
        from netspy_tui.ai.types import PARTIAL_MARK

        error, _, partial = result.text.partition(PARTIAL_MARK)
        if partial:  # an AI answer that broke off: what had come is kept (stdout), the error said (stderr)
            sys.stdout.write((result.json() if ns.json else clean(partial, None, keep_newlines=True)) + "\n")
        sys.stderr.write(f"netspy-tui: {clean(error, 1000)}\n")
        return 1
    # The tools already escape untrusted text; cleaning again keeps stdout inert whatever a server sent.
    from netspy_tui.commands import in_flags  # (its paging hint in this command line's flags)

    sys.stdout.write((result.json() if ns.json else in_flags(clean(result.text, None, keep_newlines=True))) + "\n")
    unhealthy = _unhealthy(result.data) if ns.tool == "server_status" else None
    if unhealthy is not None:  # (a script asking whether the source is up gets its answer in the exit status)
        sys.stderr.write(f"netspy-tui: the source is unhealthy: {clean(unhealthy, 300)}\n")
        return 1
    return 0


def _unhealthy(data: dict[str, Any] | None) -> str | None:
    """server_status's structured result -> why its source is unhealthy, or None when it is not."""
    source = (data or {}).get("source")
    if isinstance(source, dict) and source.get("healthy") is False:
        return str(source.get("detail") or "no detail")
    return None


def _tool_source(settings: Any, tool: str) -> AbstractAsyncContextManager[Any]:
    """The telemetry source a one-shot tool reads. ``ai_insights`` reads none (it explains the text it is given):
    it runs over an empty source, so that ``--json`` (the tool's own result) needs no server either."""
    if tool == "ai_insights":
        from netspy_tui.telemetry.memory import MemorySource

        return nullcontext(MemorySource(label="no telemetry (ai_insights explains the text given)"))
    from netspy_tui.runtime import open_source

    return open_source(settings, "oneshot")


async def _stream_ai(settings: AISettings, gateway: Any, arguments: dict[str, Any]) -> int:
    """Stream an AI answer to stdout as it is written; tool calls are noted on stderr."""
    from netspy_tui.ai import TextDelta, ToolCallFinished, ToolCallStarted, format_call, stream_summary_explanation
    from netspy_tui.mcp_tools.ai_bridge import stream_contextual_analysis
    from netspy_tui.textsafe import clean

    settings.require_configured()
    if gateway is None:
        stream = stream_summary_explanation(settings, arguments["summary_text"])
    else:
        # (the tool's defaults, its 300 s window, as when it runs through the gateway: --json, MCP)
        stream = stream_contextual_analysis(gateway, settings, arguments)
    ended_with_newline = True
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                text = clean(event.text, None, keep_newlines=True)
                sys.stdout.write(text)
                sys.stdout.flush()
                ended_with_newline = text.endswith("\n") if text else ended_with_newline
            elif isinstance(event, ToolCallStarted):
                sys.stderr.write(f"[calling {clean(format_call(event.name, event.arguments), 200)}]\n")
            elif isinstance(event, ToolCallFinished) and event.is_error:
                sys.stderr.write(f"[{clean(event.name, 40)} failed: {clean(event.summary, 200)}]\n")
    finally:  # (an answer that broke off or was cut off ends its line before the error's on stderr)
        if not ended_with_newline:
            sys.stdout.write("\n")
            sys.stdout.flush()
    return 0


async def _run_mcp(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import ai_tools_hook
    from netspy_tui.mcp_tools.server import create_server, run_stdio
    from netspy_tui.runtime import open_source

    async with open_source(settings, "live") as source:
        server = create_server(source, ai_tools_hook(_ai(settings)), names=_names(settings), workloads=_workloads())
        if ns.http:
            from netspy_tui.serve.runner import serve_mcp_http

            # Same protection as `serve`: the token (when set) on every request, a body limit.
            token = settings.token.get_secret_value() if settings.token else None
            await serve_mcp_http(
                server,
                host=ns.host or "127.0.0.1",
                port=ns.port or 8000,
                token=token,
                allowed_hosts=ns.allow_host or [],
            )
        else:
            await run_stdio(server)
    return 0


def _mcp_maker(source: Any, ai: AISettings, **kw: Any) -> Callable[[], Any]:
    """What makes ``serve``'s MCP server, at the first request to its /mcp (serve.runner.LazyMcp): the SDK's
    server is imported then, not at every start of an agent or an aggregator."""

    def make() -> Any:
        from netspy_tui.mcp_tools.ai_bridge import ai_tools_hook
        from netspy_tui.mcp_tools.server import create_server

        return create_server(source, ai_tools_hook(ai), **kw)

    return make


async def _run_serve(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.runtime import open_source
    from netspy_tui.serve.runner import serve_source

    if ns.aggregate:
        return await _run_aggregate(ns, settings)
    if ns.forward:
        from netspy_tui.serve.forward import identity_problem, node_identity

        problem = identity_problem(node_identity())
        if problem:
            raise UsageError(f"serve --forward: {problem}: the aggregator would refuse every event",
                             "set NODE_NAME (or K8S_NODE_NAME) to this node's name")  # fmt: skip
    async with open_source(settings, "serve") as source:
        token = settings.token.get_secret_value() if settings.token else None
        workloads = _workloads()
        serving = serve_source(source, host=ns.host or "127.0.0.1", port=ns.port or 8080, token=token,
                               mcp_server=_mcp_maker(source, _ai(settings), workloads=workloads),
                               allowed_hosts=ns.allow_host or [],
                               metrics_top=ns.metrics_top or 20)  # fmt: skip
        if not ns.forward:
            await serving
            return 0
        from netspy_tui.logs import add_secrets
        from netspy_tui.serve.forward import INTERVAL, Forwarder
        from netspy_tui.telemetry.embedded import EmbeddedSource

        assert isinstance(source, EmbeddedSource)  # serve always runs the embedded collector
        forward_token = _server_token(ns, "forward_token", "NETSPY_FORWARD_TOKEN")
        if forward_token:
            add_secrets(forward_token)
        from netspy_tui.textsafe import url_secrets

        add_secrets(*url_secrets(ns.forward))  # (the HTTP client logs its requests' URLs at --verbose)
        if forward_token and "@" in ns.forward.partition("://")[2].partition("/")[0]:
            # (the client sends the URL's credentials as Basic auth in place of the Bearer token: every batch 401)
            serving.close()
            raise UsageError("serve --forward: the URL holds a user:password@ and --forward-token is given: the "
                             "aggregator would get the URL's credentials, not the token",
                             "leave the credentials out of the --forward URL")  # fmt: skip
        # (the events' workloads from this host's cgroups when they are this host's processes, not a recording's)
        live = (await source.info()).collector in ("ebpf", "procfs")
        forwarder = Forwarder(source.store, ns.forward, token=forward_token, interval=ns.forward_interval or INTERVAL,
                              workloads=workloads if live else None)  # fmt: skip
        source.forwarding = forwarder.status.as_dict
        task = asyncio.create_task(forwarder.run(), name="netspy-forward")
        try:
            await serving
        finally:
            forwarder.stop()
            try:
                await asyncio.wait_for(task, timeout=STOP_FORWARDING_WAIT)
            except TimeoutError:  # (the post in flight is cancelled: the store's forward cursor did not pass it)
                log.warning("stopped forwarding to %s with a batch still unanswered after %g s: its events are sent "
                            "again at the next start", forwarder.status.url, STOP_FORWARDING_WAIT)  # fmt: skip
    return 0


#: seconds ``serve --forward`` waits at its stop for the batch in flight to be answered (then cancels it: unanswered,
#: its events stay after the forward cursor and go at the next start)
STOP_FORWARDING_WAIT = 5.0


async def _run_aggregate(ns: argparse.Namespace, settings: Any) -> int:
    """``serve --aggregate``: the aggregator API (and MCP at /mcp) over the nodes' stores."""
    from netspy_tui.fleet.prep import IngestChecker, default_workers
    from netspy_tui.fleet.store import FleetStore
    from netspy_tui.logs import add_secrets
    from netspy_tui.safefs import remove_tree, scratch_dir
    from netspy_tui.serve.aggregate import AGENT_PATHS, AggregatorApi, IngestLimits, tune_collector
    from netspy_tui.serve.hosts import is_loopback
    from netspy_tui.serve.runner import serve_source

    host = ns.host or "127.0.0.1"
    ingest_token = _server_token(ns, "ingest_token", "NETSPY_INGEST_TOKEN")
    if ingest_token:
        add_secrets(ingest_token)
    elif not is_loopback(host):
        raise UsageError(
            f"serve --aggregate on {clean(host, 80)} needs an ingest token, or anyone who reaches it can add events",
            "pass --ingest-token TOKEN (or NETSPY_INGEST_TOKEN) and give agents the same with --forward-token",
        )
    directory = settings.db.expanduser() if settings.db is not None else None
    if directory is not None and directory.exists() and not directory.is_dir():
        raise UsageError(f"--db {clean(str(directory), 200)} is a file: serve --aggregate keeps one store per node "
                         "in a directory", "pass a directory (it is created if missing)")  # fmt: skip
    scratch = None
    if directory is None:
        scratch = directory = await asyncio.to_thread(scratch_dir)
    try:
        tune_collector()
        fleet = await asyncio.to_thread(FleetStore, directory, retention_seconds=settings.retention)
        try:
            from netspy_tui.fleet.source import FleetSource

            source = FleetSource(fleet)
            limits = IngestLimits(token=ingest_token, max_events=ns.ingest_max_events or 5000,
                                  rate=float(ns.ingest_rate or 50_000))  # fmt: skip
            token = settings.token.get_secret_value() if settings.token else None
            processes = default_workers() if ns.ingest_processes is None else ns.ingest_processes
            with contextlib.ExitStack() as stack:
                checker = None
                if processes:
                    try:
                        checker = stack.enter_context(IngestChecker(processes))
                    except (OSError, ImportError, NotImplementedError) as exc:  # (no /dev/shm for its queues, ...)
                        log.warning("serve --aggregate: no process to check ingest bodies (%s); this one checks "
                                    "them", clean(str(exc), 200))  # fmt: skip
                await serve_source(source, host=host, port=ns.port or 8080, token=token,
                                   mcp_server=_mcp_maker(source, _ai(settings)),
                                   allowed_hosts=ns.allow_host or [], metrics_top=ns.metrics_top or 20,
                                   api=AggregatorApi.factory(fleet, limits, checker),
                                   own_auth_paths=list(AGENT_PATHS) if ingest_token else [],
                                   max_body_bytes=MAX_INGEST_BODY_BYTES, what="the aggregator API")  # fmt: skip
        finally:
            await asyncio.to_thread(fleet.close)
    finally:
        if scratch is not None:
            await asyncio.to_thread(remove_tree, scratch)
    return 0


async def _run_repl(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import ai_tools_hook
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.repl import run_repl
    from netspy_tui.runtime import open_source

    if settings.server and sys.stdin.isatty() and sys.stdout.isatty():
        from netspy_tui.textsafe import clean, redact_url

        # (a server that takes the connection and never answers keeps the first prompt ~20 s away: say what it waits
        # for meanwhile, not a blank terminal)
        sys.stdout.write(f"Connecting to {clean(redact_url(settings.server), 200)}…\n")
        sys.stdout.flush()
    async with (
        open_source(settings, "live") as source,
        open_gateway(source, ai_tools_hook(_ai(settings)), names=_names(settings), workloads=_workloads()) as gw,
    ):
        info = await source.info()
        return await run_repl(gw, info)


async def _run_tui(ns: argparse.Namespace, settings: Any) -> int:
    # Paint first: only Textual and the dashboard's own modules load before the frame is drawn; the MCP SDK,
    # the source (an eBPF server, or the embedded collector and its store) and the gateway come up after it.
    from netspy_tui.tui.app import run_dashboard

    def ai_hooks() -> Any:  # (the AI layer and its MCP bridge load when the dashboard first needs them)
        from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks

        return dashboard_hooks(ai)

    ai = _ai(settings)
    what = f"the eBPF server at {settings.server}" if settings.server else "the data source"
    code = await run_dashboard(
        _connect_dashboard(settings, what),
        starting=what,
        interval=settings.interval,
        window=settings.window,
        ai=ai_hooks,
        ai_label=ai.engine_label,
        export_dir=settings.export_dir,
        notice=ns.log_note,  # (the default log not kept, and why)
    )
    # The process ends now: what the dashboard allocated is freed with it. Without this the interpreter's last
    # full collection walks that heap and quitting took 1-3 s (issue 14); frozen objects are skipped.
    gc.freeze()
    return code


def _connect_dashboard(
    settings: Any, what: str
) -> Callable[[Callable[[str], None]], AbstractAsyncContextManager[tuple[Any, str]]]:
    """The dashboard's ``connect``: the source and the in-process MCP pair, opened after the first frame."""

    @asynccontextmanager
    async def connect(progress: Callable[[str], None]) -> AsyncIterator[tuple[Any, str]]:
        progress(f"{what}, the MCP gateway")
        # The source opens while the SDK and the server's modules load (~0.6 s of CPU, in a thread: the UI keeps
        # answering): what the source waits for — an embedded collector's programs loading in the kernel, a
        # server probed — is off the path to the first data. The source's own module (and the HTTP client) first.
        await asyncio.to_thread(_import_source_modules)
        from netspy_tui.runtime import open_source

        imports = asyncio.ensure_future(asyncio.to_thread(_import_gateway_modules))
        imports.add_done_callback(lambda f: f.cancelled() or f.exception())  # (its error is raised below)
        async with open_source(settings, "live") as source:
            progress("the MCP gateway")
            await imports
            # What is imported lives as long as the process: frozen, the collector never walks it again; on from here.
            gc.freeze()
            gc.enable()
            from netspy_tui.mcp_tools.gateway import open_gateway

            # (its one client refreshes at most every interval: told of changes as often, not ten times as often)
            async with open_gateway(
                source,
                _lazy_ai_tools(settings),
                names=_names(settings),
                workloads=_workloads(),
                change_gap=settings.interval,
            ) as gw:
                info = await source.info()
                # (the header's note is fixed for the session: why this collector, not a server's detail of the
                # moment, which the header's live figures say and would contradict as it ages)
                yield gw, info.detail if info.kind != "http" else ""

    return connect


def _import_source_modules() -> None:
    import netspy_tui.runtime  # noqa: F401  (the HTTP client with it)


def _import_gateway_modules() -> None:
    import netspy_tui.mcp_tools.ai_bridge  # noqa: F401  (the AI layer the dashboard's hooks use)
    import netspy_tui.mcp_tools.server  # noqa: F401  (the MCP SDK, client and server, with it)
    from netspy_tui.mcp_tools.schemas import DashboardSnapshot
    from netspy_tui.models import build_models

    # The dashboard uses most models: built here, off the UI thread, not at its first refresh.
    build_models()
    DashboardSnapshot.model_rebuild()


def run() -> NoReturn:
    """The program's entry point (``netspy-tui``, ``python -m netspy_tui``): :func:`main`, then the exit.

    What a command leaves behind (the SDK's and the models' classes, ~100,000 objects) is freed by the
    process ending; the interpreter's own teardown (clearing every module, a last full collection) took
    0.06-0.1 s of every ``--tool`` (issue 17) and adds nothing. So the exit runs the ``atexit`` handlers
    (the log's flush among them), flushes stdout and stderr, and ends the process — unless a thread the
    interpreter would wait for is still running, or stdout cannot be flushed (a closed pipe): then it
    exits the ordinary way, as before."""
    _exit(main())


def _exit(code: int) -> NoReturn:
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    # pydantic looks for plugins (entry points of every installed distribution) when the first model is built:
    # ~30 ms of every start, for plugins netspy-tui does not use. Set to anything else (even empty), it looks.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if "httpx" not in sys.modules:
        # httpx's package imports its command-line client (rich, pygments, click: ~40 ms of every start) when
        # it can; netspy-tui never runs it. Marked absent, httpx keeps a stub `httpx.main` instead.
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    previous = os.umask(0o077)  # whatever this process creates (log, store, exports) is private to root
    try:
        return _main(argv)
    finally:
        os.umask(previous)


def _main(argv: Sequence[str] | None) -> int:
    ns = parse_args(argv)
    if ns.run == "tui":
        # Until the dashboard's modules and the SDK are in (see _run_tui): the cyclic collector, run every
        # few hundred allocations while ~100,000 long-lived objects are created, took 0.15-0.3 s of the first paint.
        gc.disable()
    from netspy_tui.logs import setup_logging

    try:
        log_file = ns.log_file
        if log_file is None and ns.run == "tui":
            from netspy_tui.config import state_dir

            log_file = state_dir() / "netspy-tui.log"  # the dashboard owns the terminal: log to a file
        ns.log_note = setup_logging(
            ns.verbose, log_file=log_file, extra_secrets=[ns.token], make_dirs=ns.log_file is None
        )
        arguments = tool_arguments(ns) if ns.run == "tool" else {}
        _check_server_tokens(ns)
        settings, sources = _settings(ns)
        if ns.show_config:
            from netspy_tui.config import describe_settings

            sys.stdout.write(describe_settings(settings, sources) + "\n")
            return 0
        _check_directory("db", settings.db, sources.get("db", ""))
        _check_directory("record", settings.record, sources.get("record", ""))
        _check_record(settings.record, sources.get("record", ""))
        # (an explicit --server is read instead of any collector, except by serve, which runs one)
        server_read = settings.server is not None and ns.run != "serve"
        if settings.collector == "replay" and settings.replay is None and not getattr(ns, "aggregate", False) \
                and not server_read:  # fmt: skip
            raise UsageError("the replay collector needs a recording", "pass --replay FILE")  # before any UI
        if settings.replay is not None:  # a FIFO, a device or garbage fails here, before the slow imports
            from netspy_tui.collector.replay import check_start

            check_start(settings.replay)
        from netspy_tui.signals import stoppable  # SIGTERM/SIGHUP: clean up (scratch store), exit 128+signal

        if ns.run == "tool":
            return asyncio.run(stoppable(_run_tool(ns, settings, arguments)))
        runner = {"mcp": _run_mcp, "serve": _run_serve, "repl": _run_repl, "tui": _run_tui}
        return asyncio.run(stoppable(runner[ns.run](ns, settings)))
    except NetspyError as exc:
        sys.stderr.write(f"netspy-tui: {clean(str(exc), 1000)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a group from a task group, or a bug: still one line, never a traceback
        error = user_error(exc)
        if error is not None:
            sys.stderr.write(f"netspy-tui: {clean(str(error), 1000)}\n")
            return error.exit_code
        inner = sole_exception(exc)
        log.debug("unexpected error", exc_info=exc)
        sys.stderr.write(
            f"netspy-tui: unexpected error ({type(inner).__name__}: {clean(str(inner), 300)}); "
            "run again with --verbose for the details\n"
        )
        return 1
