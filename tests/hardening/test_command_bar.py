"""Garbage in the dashboard's command bar: one line of error, nothing interpreted, the dashboard goes on.

Covered elsewhere: an unknown command, a non-numeric pid, a pid beyond the tool's range, history and
completion (tests/tui/test_dashboard.py::test_command_bar_runs_tools_and_reports_bad_input_in_one_line);
the parser on any text (tests/unit/test_commands.py, tests/hardening/test_properties.py).
"""

from __future__ import annotations

import unicodedata

import pytest
from rich.text import Text

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from tests.tui.scenes import Clock, demo_source, wait_for

pytestmark = pytest.mark.quiet

#: (line typed, a fragment of the one-line error)
GARBAGE = [
    ('list --process "curl', "Cannot parse the command (No closing quotation)"),
    ("\x1b[2J\x1b]0;pwned\x07", "Unknown command '\\x1b[2J\\x1b]0;pwned\\x07'"),
    ("list --pid=", "--pid expects a whole number, not ''"),
    ("list --pid 99999999999999999999999999", "pid must be <= 4194304"),
    ("list --pid -5", "--pid must be a positive number"),
    ("summary --since 2026-01-01", "'summary' has no option --since"),
    ("traffic --workload host", "'traffic' has no option --workload"),
    ("latency --workload host", "'latency' has no option --workload"),
    (
        "list --since 2026-12-05T13:00:00Z --until 2026-12-05T12:00:00Z",
        "Invalid arguments for list_connections: --since must be earlier than --until.",
    ),
    (
        "list --since 9999-99-99T99:99:99Z",
        "Invalid arguments for list_connections: --since must be an RFC3339 time (e.g. "
        "2026-11-24T12:00:00Z), not '9999-99-99T99:99:99Z'.",
    ),
    ("list --process", "--process needs a value"),
    ("list --process " + "x" * 10_000, "--process must be at most 64 characters"),
    ("ask", "'ask' needs text"),
    ("status now", "Unexpected argument 'now'. Usage: status."),
    ("; rm -rf / $(reboot) `id`", "Unknown command ';'"),
    ("list \u202e--pid 1", "Unexpected argument '\\u202e--pid'"),
    ("top --limit 0", "--limit must be a positive number"),
    # the tools' bounds in the flags typed (was "max_events must be <= 1000": an audit's)
    ("drops --max-events 5000", "Invalid arguments for list_packet_drops: --max-events must be <= 1000."),
    ("list --pid \u0662\u0660\u0664\u0668", "--pid expects a whole number, not '\u0662\u0660\u0664\u0668'"),
    ("list --max-events 1_0", "--max-events expects a whole number, not '1_0'"),
]


def _inert(text: str) -> bool:
    return not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in text)


async def test_command_bar_garbage_is_one_line_and_harmless() -> None:
    clock = Clock()
    async with open_gateway(demo_source(clock)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock)
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "rows")
            await pilot.press("colon")
            bar = app.dashboard.query_one("#command-bar", CommandInput)
            result = app.dashboard.query_one("#result", ResultPanel)

            def shown() -> Text:
                content = result.query_one("#result-text").content
                return content if isinstance(content, Text) else Text(str(content), style="not-a-result")

            for line, fragment in GARBAGE:
                before = shown().plain
                bar.value = line
                await pilot.press("enter")
                await wait_for(pilot, lambda b=before: shown().plain != b and result.has_class("-error"), line[:40])
                text = result.query_one("#result-text").content
                assert isinstance(text, Text)
                assert fragment in text.plain, (line[:40], text.plain)
                assert "\n" not in text.plain and len(text.plain) < 500 and _inert(text.plain), text.plain
                assert not text.spans  # never parsed as markup
            bar.value = "summary --duration 600"
            await pilot.press("enter")
            await wait_for(pilot, lambda: "outbound connection attempts" in shown().plain, "a good command still runs")
            assert not result.has_class("-error")
            await pilot.press("escape", "question_mark")
            await wait_for(pilot, lambda: app.screen is not app.dashboard, "help still opens")
            assert app.is_running
