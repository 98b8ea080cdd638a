"""Every key in the README's table works at 80x24 (issue 14): each one pressed, in the smallest terminal people
use, does what the table says and what it opens is on screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from textual.widget import Widget
from textual.widgets import Input
from textual.widgets.data_table import ColumnKey

from netspy_tui.commands import COMMANDS
from netspy_tui.tui import keys
from netspy_tui.tui.screens.help import HelpScreen, help_table
from tests.tui.scenes import SCENES, demo_app, wait_for
from tests.tui.screen_text import screen_lines

pytestmark = pytest.mark.quiet

SIZE = (80, 24)


def shown(widget: Widget) -> bool:
    return widget.is_on_screen and widget.region.area > 0 and widget.screen.region.contains_region(widget.region)


async def test_every_readme_key_works_at_80x24(tmp_path: Path) -> None:
    app = demo_app(export_dir=tmp_path)
    pressed: set[str] = set()

    async def press(*names: str) -> None:
        pressed.update(names)
        await pilot.press(*names)
        await pilot.pause()

    async with app.run_test(size=SIZE) as pilot:
        await SCENES["main"](pilot)
        d = app.dashboard
        assert shown(d.connections) and shown(d.processes)

        await press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await press("escape")
        assert app.screen is d

        await press("slash", "c", "u", "r", "l")
        bar = d.query_one("#filter-bar", Input)
        assert shown(bar) and bar.has_focus and d.filter_text == "curl"
        await press("enter")
        assert d.connections.has_focus
        await press("escape")
        assert d.filter_text == "" and not bar.display

        await press("enter")  # the selected connection's process
        await wait_for(pilot, lambda: d.focus_subject is not None, "focus")
        await press("backspace")
        assert d.focus_subject is None

        await press("space")
        assert d.paused
        await press("space")
        assert not d.paused

        await press("w")
        assert d.window == 300 and "window 5m" in d.status.build().plain

        order = d.processes.sort_index
        await press("s")
        assert d.processes.sort_index != order
        reverse = d.processes.sort_reverse
        await press("S")
        assert d.processes.sort_reverse != reverse

        await press("d")
        assert d.view == "drops"
        await wait_for(pilot, lambda: shown(d.drops), "the drop table")
        await press("d")
        assert d.view == "connections"

        await press("t")
        assert d.view == "traffic"
        await wait_for(pilot, lambda: shown(d.traffic) and d.latest is not None and d.latest.traffic is not None,
                       "the traffic view")  # fmt: skip
        await press("v")
        assert d.traffic.mode == "connections"
        sort = d.traffic.sort_keys["connections"]
        await press("o")
        assert d.traffic.sort_keys["connections"] != sort
        await press("t")
        assert d.view == "connections"

        await press("g")
        assert d.processes.grouped and "by workload" in str(d.processes.border_subtitle)
        await press("g")
        assert not d.processes.grouped

        await press("n")
        assert not d.connections.show_names
        await press("n")
        assert d.connections.show_names

        await press("p")
        assert shown(d.query_one("#patterns")) and not shown(d.connections)
        await press("p")
        await press("i")
        assert shown(d.ai_pane) and not shown(d.connections)
        await press("escape")
        assert shown(d.connections) and not shown(d.ai_pane)

        await press("a")
        await wait_for(pilot, lambda: d.ai_pane.state == "finished", "the rule-based explanation")
        assert shown(d.ai_pane)
        await press("i")
        assert shown(d.connections)

        await press("A")
        question = d.query_one("#question-bar", Input)
        assert shown(question) and question.has_focus
        await press("escape")
        assert not question.display

        await press("colon", "s", "t", "a", "t", "u", "s", "enter")
        result = d.query_one("#result")
        await wait_for(pilot, lambda: "running" not in str(result.border_title), "the command's result")
        assert shown(result) and shown(d.query_one("#command-bar"))
        await press("escape")

        await press("e")
        await wait_for(pilot, lambda: bool(list(tmp_path.glob("*.json"))), "the JSON export")
        await press("E")
        await wait_for(pilot, lambda: bool(list(tmp_path.glob("*.csv"))), "the CSV export")

        await press("q")
        await wait_for(pilot, lambda: not app.is_running, "quit")
    assert app.return_code == 0
    every_key = {key for action in keys.ACTIONS for key in action.keys.split(",")}
    assert every_key <= pressed, every_key - pressed


def test_the_help_reads_at_80_columns() -> None:
    """Every command bar entry's description reads as words at 80 columns (beside the usages, up to ~60
    columns wide, it was squeezed to a character per line)."""
    console = Console(width=76, record=True, color_system=None)  # (the help box's inside at 80 columns)
    console.print(help_table())
    text = " ".join(console.export_text().split())
    for spec in COMMANDS:
        assert " ".join(spec.help.split()[:4]) in text, spec.usage


async def test_d_from_traffic_shows_drops_and_a_cancelled_command_leaves_the_bar_empty() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await SCENES["main"](pilot)
        d = app.dashboard
        await pilot.press("t")
        await pilot.pause()
        assert d.view == "traffic"
        await pilot.press("d")  # (the help: "d switch between connections and packet drops")
        await pilot.pause()
        assert d.view == "drops"
        await wait_for(pilot, lambda: shown(d.drops), "the drop table")
        await pilot.press("d")
        await pilot.pause()
        assert d.view == "connections"

        bar = d.query_one("#command-bar", Input)
        await pilot.press("colon", "a", "b", "c", "escape")
        await pilot.pause()
        assert not bar.display
        await pilot.press("colon")
        await pilot.pause()
        assert bar.display and bar.value == ""  # (not "abc": the next command would be "abcsummary")
        await pilot.press("escape")


def test_a_narrow_pid_column_keeps_the_first_pid_and_a_traffic_pid_has_no_separator() -> None:
    from netspy_tui.tui.widgets.processes import _pids_text
    from netspy_tui.tui.widgets.traffic import _pid

    assert _pids_text(list(range(5504, 5504 + 37)), 6) == "5504+"  # (not "+37": which processes?)
    assert _pids_text([4194304, 5], 6) == "+2"
    assert _pid(29570).plain == "29570"


async def test_d_and_t_over_a_side_pane_show_their_view() -> None:
    """Below 140 columns, d or t with the pattern panel or the AI pane open changed the status line's view while
    the pane stayed in the tables' place: the key seemed to do nothing until esc. The view asked for is shown."""
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await SCENES["main"](pilot)
        d = app.dashboard
        await pilot.press("p")
        await pilot.pause()
        assert shown(d.query_one("#patterns")) and not shown(d.connections)
        await pilot.press("d")
        await pilot.pause()
        assert d.view == "drops" and "view: packet drops" in d.status.build().plain
        await wait_for(pilot, lambda: shown(d.drops), "the drop table")
        assert not shown(d.query_one("#patterns")) and d.drops.has_focus

        await pilot.press("i")
        await pilot.pause()
        assert shown(d.ai_pane) and not shown(d.drops)
        await pilot.press("t")
        await pilot.pause()
        assert d.view == "traffic"
        await wait_for(pilot, lambda: shown(d.traffic), "the traffic table")
        assert not shown(d.ai_pane) and d.traffic.has_focus
        await pilot.press("p")  # the pane still opens from any view, and esc brings that view back
        await pilot.pause()
        assert shown(d.query_one("#patterns")) and not shown(d.traffic)
        await pilot.press("escape")
        await pilot.pause()
        assert shown(d.traffic) and d.view == "traffic"


async def test_s_and_o_at_80x24_sort_only_by_columns_on_screen() -> None:
    """At 80 columns the process table has no room for its Rx/s and Tx/s columns: two presses of ``s`` sorted by
    them, the subtitle naming a column no one could see while the rows moved for no reason shown. ``s`` (and
    ``o`` in the Traffic view) pass over the columns the width leaves out; at 120 columns they come back."""
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await SCENES["main"](pilot)
        d = app.dashboard
        table = d.processes
        hidden = [c.key for c in table.spec if table.columns[ColumnKey(c.key)].width == 0]
        assert hidden, "80 columns should leave some process column out"
        header = table.region.y + 1  # (the border, then the column labels)
        seen = []
        for _ in range(len(table.spec) + 1):
            await pilot.press("s")
            await pilot.pause()
            seen.append(table.sort_column)
            label = table.spec[table.sort_index].label
            assert f"sort {label}" in str(table.border_subtitle)
            assert label in screen_lines(app)[header], (label, screen_lines(app)[header])
        assert not set(seen) & set(hidden)
        assert table.sort_column == "process" or "process" in seen  # (it came round again)

        await pilot.resize_terminal(160, 40)
        await pilot.pause()
        seen = []
        for _ in range(len(table.spec)):
            await pilot.press("s")
            await pilot.pause()
            seen.append(table.sort_column)
        assert set(hidden) <= set(seen)

        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        await pilot.press("t", "v")
        await wait_for(pilot, lambda: d.traffic.mode == "connections" and shown(d.traffic), "traffic by connection")
        traffic = d.traffic
        hidden = [c.key for c in traffic.columns_spec if traffic.columns[ColumnKey(c.key)].width == 0]
        assert hidden, "80 columns should leave some traffic column out"
        for _ in range(len(traffic.columns_spec) + 1):
            await pilot.press("o")
            await pilot.pause()
            assert traffic.sort_keys["connections"] not in hidden


async def test_help_in_the_command_bar_fits_80_columns() -> None:
    """``:help`` at 80 columns printed the REPL's two-column layout (136 columns): every description wrapped to
    the box's left edge under the next usage. Each description now goes under its usage, inside the box."""
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await SCENES["main"](pilot)
        d = app.dashboard
        await pilot.press("colon", *"help", "enter")
        result = d.query_one("#result")
        await wait_for(pilot, lambda: "Commands:" in str(result.query_one("#result-text").content), "the help")
        await pilot.pause()
        text = str(result.query_one("#result-text").content)
        inside = result.query_one("#result-text").content_region.width
        assert max(len(line) for line in text.splitlines()) <= inside, inside
        lines = screen_lines(app)
        usage = next(i for i, line in enumerate(lines) if "summary [--pid N]" in line)
        assert "count outbound connection attempts" in lines[usage + 1]
