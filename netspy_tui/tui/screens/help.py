"""The help modal, generated from the key registry and the command list (never hand-written)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from netspy_tui.commands import COMMANDS
from netspy_tui.tui import keys


def help_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("what")
    for group, actions in keys.groups().items():
        table.add_row(Text(group.upper(), style="bold underline"), "")
        for a in actions:
            table.add_row(Text(a.display_keys), Text(a.help))
        table.add_row("", "")
    table.add_row(Text("PALETTE", style="bold underline"), "")
    table.add_row(Text("ctrl+p"), Text("Command palette: every action above, plus focus: <process>."))
    table.add_row("", "")
    table.add_row(Text("COMMAND BAR ( : )", style="bold underline"), "")
    for spec in COMMANDS:
        table.add_row(Text(spec.usage), Text(spec.help))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", show=True)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "netspy-tui · keys and commands"
            box.border_subtitle = "esc closes"
            yield Static(help_table(), id="help-text")
