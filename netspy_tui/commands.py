"""The interactive commands of the Go netspy (REPL and the dashboard's command bar).

``summary --pid 1234 --duration 120``, ``list --process curl --max-events 20`` (``--direction inbound``:
the connections local processes accepted),
``analyze --process nginx``, ``insights "..."``, ``tools``, ``help``, ``quit`` — plus ``drops``,
``dropsummary``, ``top``, ``traffic``, ``latency``, ``status`` and ``ask "..."``. :func:`parse_command`
turns one line into a tool call; mistakes raise :class:`~netspy_tui.errors.UsageError` with one line of help.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from netspy_tui.errors import NetspyError, UsageError
from netspy_tui.textsafe import clean, first_line

if TYPE_CHECKING:
    from mcp.types import Tool

    from netspy_tui.mcp_tools.gateway import Gateway

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    tool: str | None
    usage: str
    """The command and its flags; a long one goes on over indented lines (help lists stay narrow)."""
    help: str
    flags: tuple[str, ...] = ()
    text_arg: str | None = None
    """Name of the tool argument that takes the free text after the command (insights, ask)."""
    aliases: tuple[str, ...] = ()

    @property
    def usage_line(self) -> str:
        """``usage`` on one line, as errors say it."""
        return " ".join(self.usage.split())


#: (``--node`` and ``--workload`` narrow every data command too: said once at the end of the help, not in each usage)
_SCOPE = ("--node", "--workload")
_FILTERS = ("--pid", "--process", *_SCOPE)
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "summary",
        "get_network_summary",
        "summary [--pid N] [--process NAME] [--duration S]",
        "count outbound connection attempts",
        (*_FILTERS, "--duration"),
    ),
    CommandSpec(
        "list",
        "list_connections",
        "list [--pid N] [--process NAME] [--max-events N] [--since TIME]\n"
        "     [--until TIME] [--before TOKEN]\n"
        "     [--direction outbound|inbound|all]",
        "list recent connections, newest first (inbound: those accepted here)",
        (*_FILTERS, "--max-events", "--since", "--until", "--before", "--direction"),
    ),
    CommandSpec(
        "analyze",
        "analyze_patterns",
        "analyze [--pid N] [--process NAME] [--duration S]",
        "destinations, protocol/port/outcome mix, rate",
        (*_FILTERS, "--duration"),
    ),
    CommandSpec(
        "drops",
        "list_packet_drops",
        "drops [--pid N] [--process NAME] [--max-events N] [--since TIME]\n      [--until TIME] [--before TOKEN]",
        "list recent packet drops with kernel reasons",
        (*_FILTERS, "--max-events", "--since", "--until", "--before"),
    ),
    CommandSpec(
        "dropsummary",
        "get_packet_drop_summary",
        "dropsummary [--pid N] [--process NAME] [--duration S]",
        "count packet drops",
        (*_FILTERS, "--duration"),
    ),
    CommandSpec(
        "top",
        "list_processes",
        "top [--duration S] [--limit N]\n    [--group-by process|workload|node]",
        "processes ranked by connection attempts",
        ("--duration", "--limit", "--group-by", *_SCOPE),
        aliases=("processes",),
    ),
    CommandSpec(
        "traffic",
        "get_traffic",
        "traffic [--pid N] [--process NAME] [--duration S] [--limit N]",
        "bytes sent and read per process, remote address and connection",
        ("--pid", "--process", "--node", "--duration", "--limit"),  # (kept per process: no --workload)
    ),
    CommandSpec(
        "latency",
        "get_connect_latency",
        "latency [--pid N] [--process NAME] [--duration S] [--limit N]",
        "how long TCP connects take, per process and destination",
        ("--pid", "--process", "--node", "--duration", "--limit"),  # (kept per process: no --workload)
    ),
    CommandSpec("status", "server_status", "status", "data source, health and eBPF programs"),
    CommandSpec(
        "insights",
        "ai_insights",
        'insights "summary text"',
        "AI explanation of a summary text",
        text_arg="summary_text",
    ),
    CommandSpec(
        "ask",
        "contextual_analysis",
        'ask [--pid N] [--process NAME] "question"',
        "ask the AI a question; it reads live data through the tools",
        _FILTERS,
        text_arg="query",
    ),
    CommandSpec("tools", None, "tools", "list the MCP tools"),
    CommandSpec("help", None, "help", "show this help", aliases=("?",)),
    CommandSpec("quit", None, "quit", "leave", aliases=("exit", "q")),
)
_BY_NAME = {alias: spec for spec in COMMANDS for alias in (spec.name, *spec.aliases)}
COMMAND_NAMES: list[str] = [spec.name for spec in COMMANDS]

_FLAG_ARG = {
    "--pid": ("pid", int),
    "--process": ("process_name", str),
    "--process-name": ("process_name", str),
    "--duration": ("duration", int),
    "--max-events": ("max_events", int),
    "--limit": ("limit", int),
    "--since": ("since", str),
    "--until": ("until", str),
    "--before": ("before", str),
    "--direction": ("direction", str),
    "--node": ("node", str),
    "--workload": ("workload", str),
    "--group-by": ("group_by", str),
}
#: each tool argument as the flag that sets it
_ARG_FLAG = {key: flag for flag, (key, _) in reversed(_FLAG_ARG.items())}
_WHOLE = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)
_CHOICES = {"--direction": ("outbound", "inbound", "all"), "--group-by": ("process", "workload", "node")}
"""Flags whose value is one of a few words: checked as the line is parsed, and completed."""


@dataclass(frozen=True)
class ParsedCommand:
    action: Literal["tool", "help", "tools", "quit"]
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    spec: CommandSpec | None = None


def complete_word(line: str) -> list[str]:
    """What the last word of ``line`` (the text before the cursor) can become: a command name when it is
    the first word, else a flag of that command not given yet. The dashboard's command bar and the
    REPL's readline both complete with this."""
    words = line.split(" ")
    last = words[-1]
    if len(words) == 1:
        return [spec.name for spec in COMMANDS if spec.name.startswith(last.lower())]
    spec = _BY_NAME.get(words[0].lower())
    if spec is not None and len(words) > 2 and words[-2] in _CHOICES and words[-2] in spec.flags:
        return [choice for choice in _CHOICES[words[-2]] if choice.startswith(last)]
    if spec is None or not last.startswith("-"):
        return []
    used = set(words[1:-1])
    return [flag for flag in spec.flags if flag.startswith(last) and flag not in used]


#: a list's paging hint as the tools word it (their argument names), and in the flags of the command line, the
#: REPL and the command bar
_HINT_IN_FLAGS = (
    ("raise max_events (at most 1,000), narrow with pid/process_name, or pass until=<",
     "raise --max-events (at most 1,000), narrow with --pid/--process, or pass --until <"),
    ("raise max_events (at most 1,000), narrow with pid/process_name, or pass before=",
     "raise --max-events (at most 1,000), narrow with --pid/--process, or pass --before "),
    ("raise max_events (at most 1,000) or narrow with pid/process_name; every event shown has the same time, so "
     "until=<",
     "raise --max-events (at most 1,000) or narrow with --pid/--process; every event shown has the same time, so "
     "--until <"),
)  # fmt: skip


def in_flags(text: str) -> str:
    """A tool's text for someone who types flags, not tool arguments: its paging hint in their words."""
    for tool_words, flag_words in _HINT_IN_FLAGS:
        text = text.replace(tool_words, flag_words)
    return text


def help_text(width: int | None = None) -> str:
    """The commands with their usage and what they do: in two columns, or, when ``width`` (the cells the text is
    shown in) is narrower than that, each command's description under its usage, wrapped to ``width``."""
    usage_width = max(len(line) for spec in COMMANDS for line in spec.usage.splitlines())
    footer = [
        "Data commands (and top) also take --node NAME (an aggregator's node) and --workload NAME",
        "(a unit, container or pod: as top --group-by workload names them).",
    ]
    two_columns = max(2 + usage_width + 2 + len(spec.help) for spec in COMMANDS)
    lines = ["Commands:"]
    if width is None or two_columns <= width:
        for spec in COMMANDS:
            first, *more = spec.usage.splitlines()
            lines.append(f"  {first:<{usage_width}}  {spec.help}")
            lines += [f"  {line}" for line in more]
        lines += footer
        return "\n".join(lines)
    for spec in COMMANDS:
        lines += [f"  {line}" for line in spec.usage.splitlines()]
        lines += textwrap.wrap(spec.help, width=max(width, 30), initial_indent="      ", subsequent_indent="      ")
    lines += textwrap.wrap(" ".join(footer), width=max(width, 30))
    return "\n".join(lines)


def parse_command(line: str) -> ParsedCommand:
    """Parse one command line; raise UsageError (one line) on any mistake."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"Cannot parse the command ({exc})", "close the quotes") from None
    if not words:
        raise UsageError("Empty command", "type help for the list of commands")
    name, rest = words[0].lower(), words[1:]
    spec = _BY_NAME.get(name)
    if spec is None:
        raise UsageError(f"Unknown command '{clean(words[0], 40)}'", "commands: " + ", ".join(COMMAND_NAMES))
    if spec.tool is None:
        if rest:
            raise UsageError(f"'{spec.name}' takes no arguments", f"usage: {spec.usage_line}")
        return ParsedCommand(action=spec.name, spec=spec)  # type: ignore[arg-type]
    args: dict[str, Any] = {}
    text: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        flag, _, inline = word.partition("=")
        if flag.startswith("--"):
            allowed = {f for f in spec.flags} | ({"--process-name"} if "--process" in spec.flags else set())
            if flag not in allowed:
                raise UsageError(f"'{spec.name}' has no option {clean(flag, 30)}", f"usage: {spec.usage_line}")
            if inline == "" and "=" not in word:
                if i + 1 >= len(rest):
                    raise UsageError(f"{flag} needs a value", f"usage: {spec.usage_line}")
                value, i = rest[i + 1], i + 2
            else:
                value, i = inline, i + 1
            key, kind = _FLAG_ARG[flag]
            if kind is int:
                if not _WHOLE.fullmatch(value):  # (ASCII digits: int() also takes "1_000" and "٢٠٤٨")
                    raise UsageError(
                        f"{flag} expects a whole number, not '{clean(value, 30)}'", f"usage: {spec.usage_line}"
                    )
                args[key] = int(value)
                if args[key] <= 0:
                    raise UsageError(f"{flag} must be a positive number", f"usage: {spec.usage_line}")
            elif flag in _CHOICES and value not in _CHOICES[flag]:
                choices = ", ".join(_CHOICES[flag])
                raise UsageError(
                    f"{flag} must be one of {choices}, not '{clean(value, 30)}'", f"usage: {spec.usage_line}"
                )
            else:
                args[key] = value
            continue
        if spec.text_arg is None:
            raise UsageError(f"Unexpected argument '{clean(word, 40)}'", f"usage: {spec.usage_line}")
        text.append(word)
        i += 1
    if spec.text_arg is not None:
        if not text:
            raise UsageError(f"'{spec.name}' needs text", f"usage: {spec.usage_line}")
        args[spec.text_arg] = " ".join(text)
    from netspy_tui.mcp_tools.schemas import argument_problem

    # the tools' own bounds, said in the flags typed ("--max-events must be <= 1000", not "max_events …")
    problem = argument_problem(spec.tool, args, _ARG_FLAG)
    if problem:  # (its own sentence: the usage line would say nothing of the value's bounds)
        raise UsageError(problem.rstrip("."))
    return ParsedCommand(action="tool", tool=spec.tool, arguments=args, spec=spec)


@dataclass(frozen=True)
class CommandResult:
    """What a command printed: one text, an error or not."""

    text: str
    is_error: bool = False


def tools_text(tools: Iterable[Tool]) -> str:
    return "\n".join(f"{t.name:<24} {first_line(t.description or '', 90)}" for t in tools)


def describe_error(exc: BaseException) -> str:
    """One line for a failed command: a NetspyError's own wording, else the exception's type and first line."""
    return str(exc) if isinstance(exc, NetspyError) else f"{type(exc).__name__}: {first_line(exc)}"


class CommandRunner:
    """Runs command lines against a gateway: the dashboard's command bar and the REPL both use it, so a
    command prints the same text in both. ``gateway`` is asked for on every run (the dashboard can
    switch gateways while it runs). ``quit`` is left to the caller.

    ``window``: the seconds a command that takes ``--duration`` covers when none is typed (the dashboard's
    window, so that ``summary`` counts what the screen shows); None: the tool's own default (60 s, the REPL)."""

    def __init__(
        self,
        gateway: Callable[[], Gateway],
        window: Callable[[], int] | None = None,
        width: Callable[[], int | None] | None = None,
    ) -> None:
        self._gateway = gateway
        self._window = window
        self._width = width

    def arguments(self, parsed: ParsedCommand) -> dict[str, Any]:
        """The tool arguments of ``parsed``: as typed, with the window as its duration when it takes one."""
        takes_duration = parsed.spec is not None and "--duration" in parsed.spec.flags
        if self._window is None or not takes_duration or "duration" in parsed.arguments:
            return parsed.arguments
        return {**parsed.arguments, "duration": self._window()}

    @staticmethod
    def parse(line: str) -> ParsedCommand | CommandResult:
        """The parsed command, or a one-line error as a result."""
        try:
            return parse_command(line)
        except NetspyError as exc:
            return CommandResult(str(exc), is_error=True)

    async def run(self, parsed: ParsedCommand, line: str = "") -> CommandResult:
        """``help``, ``tools`` or a tool call; every failure is one line, never raised (but cancellation)."""
        if parsed.action == "help":
            return CommandResult(help_text(self._width() if self._width else None))
        try:
            if parsed.action == "tools":
                return CommandResult(tools_text(await self._gateway().list_tools()))
            if parsed.tool is None:
                return CommandResult(f"'{parsed.action}' is not run here", is_error=True)
            res = await self._gateway().call(parsed.tool, self.arguments(parsed))
            return CommandResult(res.text if res.is_error else in_flags(res.text), is_error=res.is_error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("command %r failed: %s", line or parsed.action, exc)
            return CommandResult(describe_error(exc), is_error=True)
