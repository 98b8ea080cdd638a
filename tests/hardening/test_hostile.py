"""Hostile text from the network or the kernel is rendered inert: on the dashboard and in CLI output.

Covered elsewhere: ``[bold red]x\\x1b[2J`` in the connection/process tables, the screenshot, the
command-bar result and the CSV export (tests/tui/test_dashboard.py::test_hostile_process_names_render_inert,
test_export_writes_the_current_view); AI output with markup and escapes (tests/tui/test_resilience.py);
MCP text (tests/mcp/test_tools_in_memory.py::test_hostile_process_names_are_inert_in_text); served JSON
(tests/serve/test_api.py); the model sees hostile names only inside one delimited data block
(tests/ai/test_prompts.py::test_hostile_process_name_stays_inside_one_data_block, tests/ai/test_rules.py).
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

from rich.text import Text

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from tests.factories import connection, connection_json, drop, drop_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import REPO, product_env
from tests.tui.scenes import wait_for

SIZE = (160, 45)
HOSTILE = {
    "ansi": "\x1b[31mred\x1b[0m\x1b]8;;http://evil.example\x07link\x1b]8;;\x07\x1b]0;title\x07",
    "markup": "[bold red]loud[/bold red][link=https://evil.example]click[/link][@click=app.quit]q[/]",
    "control": "a\x07b\x08c\rd\x00e\x9bf\x7fg\u0085h",
    "bidi": "safe\u202eexe.txt\u2066x\u2069\u200b\ufeff",
    "utf8": b"bad\xff\xfe\xc3(".decode("utf-8", "surrogateescape"),
    "long": "A" * 10_240 + "\x1b[2J",
}
_BAD = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def inert(text: str, *, newlines: bool = False) -> bool:
    """Nothing a terminal would act on: no control, format, bidi or unpaired surrogate characters."""
    return not any(unicodedata.category(ch) in _BAD and not (newlines and ch == "\n") for ch in text)


def hostile_events(**kw: Any) -> list[Any]:
    events: list[Any] = []
    for i, value in enumerate(HOSTILE.values()):
        events.append(connection(pid=700 + i, command=value, ago=5 + i, **kw))
        events.append(
            connection(
                pid=710 + i,
                command="victim",
                ago=5 + i,
                destination=value,
                protocol=value[:20],
                outcome=value[:30],
                **kw,
            )
        )
        events.append(drop(pid=720 + i, command=value, reason=value, destination=value, ago=5 + i, **kw))
    return events


def assert_cells_inert(table: Any) -> None:
    for row in range(table.row_count):
        for value in table.get_row_at(row):
            assert isinstance(value, Text), value  # never a str: DataTable would parse it as markup
            assert inert(value.plain), value.plain
            assert len(value.plain) <= 64  # cut to the widest a column grows (the destination on a wide screen)
            assert not any(span.style and "link" in str(span.style) for span in value.spans), value.spans


def assert_screen_inert(svg: str) -> None:
    screen = html.unescape(svg).replace("\u00a0", " ")
    assert inert(screen, newlines=True)
    assert "<a " not in svg and 'evil.example"' not in svg  # no link was made


async def test_dashboard_renders_hostile_text_inert() -> None:
    source = MemorySource(hostile_events())
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            dash = app.dashboard
            await wait_for(pilot, lambda: dash.connections.row_count == 12 and dash.processes.row_count == 7, "rows")
            assert_cells_inert(dash.connections)
            assert_cells_inert(dash.processes)
            process = dash.connections.get_column_index("process")
            commands = {str(row[process].plain) for row in (dash.connections.get_row_at(i) for i in range(12))}
            assert "[bold red]loud[/bold re…" in commands  # the markup shows as the literal text it is
            assert any(c.startswith("\\x1b[31mred") for c in commands)
            assert "bad\\udcff\\udcfe\\udcc3(" in commands
            assert_screen_inert(app.export_screenshot())
            await pilot.press("d")  # the packet-drop view: reason and destination are server text too
            await wait_for(pilot, lambda: dash.view == "drops", "drops view")
            await wait_for(pilot, lambda: dash.drops.row_count == 6, "drop rows")
            assert_cells_inert(dash.drops)
            assert_screen_inert(app.export_screenshot())
            await pilot.press("d")
            await pilot.press("colon")
            bar = dash.query_one("#command-bar", CommandInput)
            bar.value = "list --max-events 50"
            await pilot.press("enter")
            result = dash.query_one("#result", ResultPanel)
            await wait_for(pilot, lambda: "victim" in str(result.query_one("#result-text").content), "list result")
            shown = result.query_one("#result-text").content
            assert isinstance(shown, Text) and not shown.spans and inert(shown.plain, newlines=True)
            assert "[bold red]loud[/bold red][link=https://evil.example]" in shown.plain
            assert_screen_inert(app.export_screenshot())
            assert app.is_running
        # what outside agents read: every tool's text (the structured content keeps the exact values)
        for tool in (
            "list_connections",
            "analyze_patterns",
            "list_processes",
            "list_packet_drops",
            "analyze_packet_drops",
        ):
            result = await gateway.call(tool, {"duration": 600} if "list_" not in tool else {})
            assert not result.is_error and inert(result.text, newlines=True), (tool, result.text[:300])
        data = (await gateway.connections(max_events=100)).events
        assert {e.command for e in data} >= set(HOSTILE.values()) - {HOSTILE["utf8"]}


def test_cli_output_is_inert_and_json_keeps_the_real_values(tmp_path: Path) -> None:
    wire = []
    for i, value in enumerate(HOSTILE.values()):
        wire.append(connection_json(pid=700 + i, command=value, ago=5 + i))
        wire.append(connection_json(pid=710 + i, command="victim", ago=5 + i, destination=value, outcome=value[:30]))
        wire.append(drop_json(pid=720 + i, command=value, reason=value, destination=value, ago=5 + i))
    env = product_env(tmp_path)
    with FakeEbpfServer("current", events=wire) as srv:

        def run(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [sys.executable, "-m", "netspy_tui", "--server", srv.url, *args],
                capture_output=True,
                env=env,
                cwd=REPO,
                timeout=60,
            )

        texts = [run("--tool", tool) for tool in ("list_connections", "analyze_patterns", "list_packet_drops")]
        as_json = run("--tool", "list_packet_drops", "--json")
    for done in (*texts, as_json):
        assert done.returncode == 0, done.stderr
        out = done.stdout.decode("utf-8")  # strict: never invalid UTF-8 on stdout
        assert inert(out, newlines=True), out[:400]
        assert "Traceback" not in done.stderr.decode()
    listed = texts[0].stdout.decode()
    assert "[bold red]loud[/bold red][link=https://evil.example]" in listed and "\\x1b[31mred" in listed
    assert "A" * 31 + "…" in listed and len(max(listed.splitlines(), key=len)) < 400  # 10 KB names are cut
    data = json.loads(as_json.stdout)["data"]
    reasons = {e["drop_reason"] for e in data["events"]}
    assert reasons == set(HOSTILE.values())  # exact values survive in --json (as \\u escapes, never raw)
