"""Command line: the dashboard (default), single-command ``--tool`` mode, ``repl``, ``mcp``, ``serve``.

Errors are one line on stderr: exit 2 for bad flags or values, 1 when the server or collector
fails. Textual is imported only on the dashboard path, so ``--tool`` and ``mcp`` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from netspy_tui import __version__
from netspy_tui.errors import NetspyError, UsageError
from netspy_tui.httplimits import LIMITS_HELP
from netspy_tui.mcp_tools import ALL_TOOLS
from netspy_tui.textsafe import clean

log = logging.getLogger("netspy_tui")

TOOLS = ALL_TOOLS
COMMANDS = ("tui", "repl", "mcp", "serve")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # argparse echoes the offending argument: never let it write escapes to the terminal
        sys.stderr.write(f"netspy-tui: error: {clean(message, 600)} (see netspy-tui --help)\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text[:30]}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text[:30]}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text[:30]}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="netspy-tui",
        description="Live network-connection telemetry (eBPF) in a terminal dashboard, with MCP tools and AI.",
        epilog="Commands: tui (default) dashboard; repl line-mode shell; mcp serve the tools to MCP clients; "
        "serve the eBPF server API from the embedded collector.",
    )
    p.add_argument("command", nargs="?", choices=COMMANDS, default=None, help="what to run (default: tui)")
    p.add_argument("--version", action="version", version=f"netspy-tui {__version__}")
    src = p.add_argument_group("data source")
    src.add_argument("--server", metavar="URL", help="eBPF server URL (env NETSPY_SERVER; default: "
                     "http://localhost:8080 if it answers, else the embedded collector)")
    src.add_argument("--token", metavar="TOKEN", help="bearer token (env NETSPY_TOKEN)")
    src.add_argument("--timeout", type=_positive_float, metavar="S", help="HTTP read timeout in seconds (10)")
    src.add_argument("--collector", choices=("auto", "ebpf", "procfs", "replay"),
                     help="embedded collector (auto: eBPF if it loads, else procfs sampling)")
    src.add_argument("--replay", type=Path, metavar="FILE", help="replay a JSON-lines recording")
    src.add_argument("--replay-speed", type=float, metavar="X", help="replay speed (1 = real time, 0 = instant)")
    src.add_argument("--record", type=Path, metavar="FILE", help="also write collected events to FILE (JSON lines)")
    src.add_argument("--db", type=Path, metavar="FILE", help="SQLite file keeping history across restarts")
    tool = p.add_argument_group("single command (the Go netspy's flags)")
    tool.add_argument("--tool", choices=TOOLS, metavar="TOOL", help="run one MCP tool and exit: " + ", ".join(TOOLS))
    tool.add_argument("--pid", type=_positive_int, help="filter on a process id")
    tool.add_argument("--process", metavar="NAME", help="filter on a process name (kernel comm)")
    tool.add_argument("--duration", type=_positive_int, metavar="S", help="time window in seconds (60)")
    tool.add_argument("--max-events", type=_positive_int, metavar="N", help="most events to list (100)")
    tool.add_argument("--since", metavar="TIME", help="only events newer than this RFC3339 time")
    tool.add_argument("--summary-text", metavar="TEXT", help="text for ai_insights")
    tool.add_argument("--query", metavar="TEXT", help="question for contextual_analysis")
    tool.add_argument("--json", action="store_true", help="print the structured result as JSON")
    ui = p.add_argument_group("dashboard")
    ui.add_argument("--interval", type=_positive_float, metavar="S", help="refresh interval (1 s)")
    ui.add_argument("--window", type=_positive_int, metavar="S", help="time window in seconds (60)")
    ai = p.add_argument_group("AI")
    ai.add_argument("--model", metavar="NAME", help="model name (env NETSPY_MODEL)")
    net = p.add_argument_group("mcp / serve", LIMITS_HELP)
    net.add_argument("--http", action="store_true", help="mcp: serve streamable HTTP instead of stdio")
    net.add_argument("--host", metavar="ADDR", default="127.0.0.1", help="bind address (127.0.0.1)")
    net.add_argument("--port", type=_port, metavar="N", help="port (mcp --http: 8000, serve: 8080)")
    net.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="also answer requests whose Host/Origin is NAME (repeatable; '*' turns the check off)")
    p.add_argument("--show-config", action="store_true", help="print every setting with its source and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr (secrets masked)")
    return p


def tool_arguments(ns: argparse.Namespace) -> dict[str, Any]:
    """The --tool flags as MCP tool arguments (only those the tool takes)."""
    name = ns.tool
    args: dict[str, Any] = {}
    filters = {"pid": ns.pid, "process_name": ns.process}
    if name in ("get_network_summary", "analyze_patterns", "get_packet_drop_summary", "analyze_packet_drops"):
        args = {**filters, "duration": ns.duration}
    elif name in ("list_connections", "list_packet_drops"):
        args = {**filters, "max_events": ns.max_events, "since": ns.since}
    elif name == "list_processes":
        args = {"duration": ns.duration}
    elif name == "ai_insights":
        if not ns.summary_text:
            raise UsageError("--tool ai_insights needs --summary-text TEXT")
        args = {"summary_text": ns.summary_text}
    elif name == "contextual_analysis":
        if not ns.query:
            raise UsageError("--tool contextual_analysis needs --query TEXT")
        args = {"query": ns.query, **filters, "duration": ns.duration}
    return {k: v for k, v in args.items() if v is not None}


def _settings(ns: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    from netspy_tui.config import load_settings

    cli = {
        "server": ns.server,
        "token": ns.token,
        "timeout": ns.timeout,
        "collector": "replay" if ns.replay and not ns.collector else ns.collector,
        "replay": ns.replay,
        "replay_speed": ns.replay_speed,
        "record": ns.record,
        "db": ns.db,
        "interval": ns.interval,
        "window": ns.window,
    }
    try:
        settings, sources = load_settings(cli)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"invalid setting {loc}: {msg}",
                         "check the flag, NETSPY_* variables and the config file") from None
    _mask_secrets(settings)
    return settings, sources


def _mask_secrets(settings: Any) -> None:
    """Secrets that came from the command line or the config file are masked in logs too."""
    from urllib.parse import urlsplit

    from netspy_tui.logs import add_secrets

    if settings.token is not None:
        add_secrets(settings.token.get_secret_value())
    if settings.server:
        try:
            add_secrets(urlsplit(settings.server).password)
        except ValueError:
            pass


async def _run_tool(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import insight_hook
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.runtime import open_source

    arguments = tool_arguments(ns)
    if ns.tool == "ai_insights" and not ns.json:
        return await _stream_ai(ns, None, arguments)
    async with open_source(settings, "oneshot") as source, open_gateway(source, insight_hook(ns.model)) as gw:
        if ns.tool == "contextual_analysis" and not ns.json:
            return await _stream_ai(ns, gw, arguments)
        result = await gw.call(ns.tool, arguments)
    if result.is_error:
        sys.stderr.write(f"netspy-tui: {clean(result.text, 1000)}\n")
        return 1
    # The tools already escape untrusted text; cleaning again keeps stdout inert whatever a server sent.
    sys.stdout.write((result.json() if ns.json else clean(result.text, None, keep_newlines=True)) + "\n")
    return 0


async def _stream_ai(ns: argparse.Namespace, gateway: Any, arguments: dict[str, Any]) -> int:
    """Stream an AI answer to stdout as it is written; tool calls are noted on stderr."""
    from netspy_tui.ai import TextDelta, ToolCallFinished, ToolCallStarted, format_call, stream_summary_insight
    from netspy_tui.mcp_tools.ai_bridge import ai_settings, require_configured, stream_question
    from netspy_tui.textsafe import clean

    settings = ai_settings(ns.model)
    require_configured(settings)
    if gateway is None:
        stream = stream_summary_insight(settings, arguments["summary_text"])
    else:
        context = {k: v for k, v in arguments.items() if k != "query"}
        stream = stream_question(gateway, settings, arguments["query"], context or None)
    ended_with_newline = True
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
    if not ended_with_newline:
        sys.stdout.write("\n")
    return 0


async def _run_mcp(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import insight_hook
    from netspy_tui.mcp_tools.server import create_server
    from netspy_tui.runtime import open_source

    async with open_source(settings, "live") as source:
        server = create_server(source, insight_hook(ns.model))
        if ns.http:
            from netspy_tui.serve.runner import serve_mcp_http

            # Same protection as `serve`: the token (when set) on every request, a body limit.
            token = settings.token.get_secret_value() if settings.token else None
            await serve_mcp_http(server, host=ns.host, port=ns.port or 8000, token=token, allowed_hosts=ns.allow_host)
        else:
            await server.run_stdio_async()
    return 0


async def _run_serve(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import insight_hook
    from netspy_tui.mcp_tools.server import create_server
    from netspy_tui.runtime import open_source
    from netspy_tui.serve.runner import serve_source

    async with open_source(settings, "serve") as source:
        token = settings.token.get_secret_value() if settings.token else None
        mcp_server = create_server(source, insight_hook(ns.model))
        await serve_source(source, host=ns.host, port=ns.port or 8080, token=token, mcp_server=mcp_server,
                           allowed_hosts=ns.allow_host)
    return 0


async def _run_repl(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import insight_hook
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.repl import run_repl
    from netspy_tui.runtime import open_source

    async with open_source(settings, "live") as source, open_gateway(source, insight_hook(ns.model)) as gw:
        info = await source.info()
        return await run_repl(gw, info)


async def _run_tui(ns: argparse.Namespace, settings: Any) -> int:
    from netspy_tui.mcp_tools.ai_bridge import ai_settings, dashboard_hooks, insight_hook
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.runtime import open_source
    from netspy_tui.tui.app import run_dashboard

    ai = dashboard_hooks(ai_settings(ns.model))  # read once; a bad AI variable fails here, in one line
    async with open_source(settings, "live") as source, open_gateway(source, insight_hook(ns.model)) as gw:
        info = await source.info()
        return await run_dashboard(gw, interval=settings.interval, window=settings.window, source_note=info.detail,
                                   ai=ai, export_dir=settings.export_dir)


def main(argv: Sequence[str] | None = None) -> int:
    previous = os.umask(0o077)  # whatever this process creates (log, store, exports) is private to root
    try:
        return _main(argv)
    finally:
        os.umask(previous)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    from netspy_tui.logs import setup_logging

    command = ns.command or ("tool" if ns.tool else "tui")
    if command == "tui":
        from netspy_tui.config import state_dir

        setup_logging(ns.verbose, log_file=state_dir() / "netspy-tui.log", extra_secrets=[ns.token])
    else:
        setup_logging(ns.verbose, extra_secrets=[ns.token])
    try:
        settings, sources = _settings(ns)
        if ns.show_config:
            from netspy_tui.config import describe_settings

            sys.stdout.write(describe_settings(settings, sources) + "\n")
            return 0
        if settings.replay is not None:  # a FIFO, a device or garbage fails here, before the slow imports
            from netspy_tui.collector.replay import check_start

            check_start(settings.replay)
        runner = {"tool": _run_tool, "mcp": _run_mcp, "serve": _run_serve, "repl": _run_repl, "tui": _run_tui}
        from netspy_tui.signals import stoppable  # SIGTERM/SIGHUP: clean up (scratch store), exit 128+signal

        return asyncio.run(stoppable(runner[command](ns, settings)))
    except NetspyError as exc:
        sys.stderr.write(f"netspy-tui: {clean(str(exc), 1000)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
