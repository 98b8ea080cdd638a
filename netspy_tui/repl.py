"""Line-mode interactive shell with the Go netspy's commands (``netspy-tui repl``)."""

from __future__ import annotations

import asyncio
import sys

from netspy_tui.commands import help_text, parse_command
from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.gateway import Gateway
from netspy_tui.models import SourceInfo
from netspy_tui.textsafe import clean

PROMPT = "netspy> "


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _read_line() -> str | None:
    sys.stdout.write(PROMPT)
    sys.stdout.flush()
    line = await asyncio.to_thread(sys.stdin.readline)
    return line if line else None


async def run_repl(gateway: Gateway, info: SourceInfo) -> int:
    """Read commands until ``quit`` or end of input; every error is one line and the loop goes on."""
    _out(f"netspy-tui interactive mode. Source: {clean(info.label, 120)}"
         + (f" ({clean(info.detail, 160)})" if info.detail else ""))
    if info.sampled:
        _out("Note: procfs sampling; short-lived connections can be missed.")
    _out("Type 'help' for commands, 'quit' to leave.")
    while True:
        line = await _read_line()
        if line is None:
            _out("")
            return 0
        if not line.strip():
            continue
        try:
            cmd = parse_command(line)
        except NetspyError as exc:
            _out(f"error: {exc}")
            continue
        if cmd.action == "quit":
            return 0
        if cmd.action == "help":
            _out(help_text())
            continue
        if cmd.action == "tools":
            for tool in await gateway.list_tools():
                _out(f"  {tool.name:<26} {(tool.description or '').splitlines()[0] if tool.description else ''}")
            continue
        assert cmd.tool is not None
        try:
            result = await gateway.call(cmd.tool, cmd.arguments)
        except NetspyError as exc:
            _out(f"error: {exc}")
            continue
        _out(f"error: {result.text}" if result.is_error else result.text)
