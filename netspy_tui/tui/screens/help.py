"""The help modal, generated from the key registry and the command list (never hand-written)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from netspy_tui.commands import COMMANDS
from netspy_tui.tui import keys


def _table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("what")
    return table


def help_table() -> Group:
    """Keys by group, the palette, then the command bar's commands."""
    keys_table = _table()
    for group, actions in keys.groups().items():
        keys_table.add_row(Text(group.upper(), style="bold underline"), "")
        for a in actions:
            keys_table.add_row(Text(a.display_keys), Text(a.help))
        keys_table.add_row("", "")
    keys_table.add_row(Text("PALETTE", style="bold underline"), "")
    keys_table.add_row(Text("ctrl+p"), Text("Command palette: every action above, plus focus: <process>."))
    # each command's usage on its line(s), what it does indented below: side by side, the usages (up to ~60
    # columns, never wrapped) left the descriptions a column or two at 80 columns
    commands: list[RenderableType] = []
    for spec in COMMANDS:
        commands += [Text(spec.usage, style="bold"), Padding(Text(spec.help), (0, 0, 0, 4))]
    return Group(keys_table, Text(""), Text("COMMAND BAR ( : )", style="bold underline"), *commands)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", show=True)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "netspy-tui · keys and commands"
            box.border_subtitle = "esc closes"
            yield Static(help_table(), id="help-text")
