"""The command bar (completion + history) and its result panel."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.suggester import Suggester
from textual.widgets import Input, Static

from netspy_tui.commands import CommandRunner, ParsedCommand, complete_word
from netspy_tui.textsafe import clean
from netspy_tui.tui.messages import CommandDone

HISTORY_LIMIT = 100
LONG_RESULT_LINES = 8


class CommandSuggester(Suggester):
    """Completes from history first, then command names, then the current command's flags
    (:func:`netspy_tui.commands.complete_word`, which the REPL's readline completion uses too)."""

    def __init__(self, history: list[str]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self._history = history

    async def get_suggestion(self, value: str) -> str | None:
        if not value.strip():
            return None
        for past in reversed(self._history):
            if past.startswith(value) and past != value:
                return past
        words = value.split(" ")
        for candidate in complete_word(value):
            if candidate != words[-1]:
                return " ".join([*words[:-1], candidate]) + (" " if len(words) > 1 else "")
        return None


class CommandInput(Input):
    """An Input with shell-like history on up/down."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        self.history: list[str] = []
        super().__init__(
            placeholder="command — summary, list, analyze, drops, top, status, insights, tools, help "
            "(tab/→ completes, ↑/↓ history, esc closes)",
            suggester=CommandSuggester(self.history),
            select_on_focus=False,  # letters typed right after ':' may be in it before it has the focus
            id=id,
        )
        self._index: int | None = None

    def remember(self, line: str) -> None:
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_LIMIT]
        self._index = None

    def action_complete(self) -> None:
        """Accept the suggestion shown after the cursor (as → at the end of the line does)."""
        self.cursor_position = len(self.value)
        self.action_cursor_right()

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        index = len(self.history) if self._index is None else self._index
        index = max(0, min(len(self.history), index + step))
        self._index = index
        self.value = self.history[index] if index < len(self.history) else ""
        self.cursor_position = len(self.value)


class ResultPanel(VerticalScroll):
    """Runs a command through the shared :class:`~netspy_tui.commands.CommandRunner` (in its ``command``
    worker) and shows its result text; errors get the ``-error`` class."""

    def run(self, runner: CommandRunner, parsed: ParsedCommand, line: str) -> None:
        self.show(line, "running…", is_error=False)
        self._run(runner, parsed, line)

    @work(group="command", exclusive=True, exit_on_error=False)
    async def _run(self, runner: CommandRunner, parsed: ParsedCommand, line: str) -> None:
        result = await runner.run(parsed, line)
        self.post_message(CommandDone(line, result.text, is_error=result.is_error))

    @on(CommandDone)
    def _done(self, message: CommandDone) -> None:
        message.stop()
        self.show(message.command, message.text, is_error=message.is_error)

    def hide(self) -> None:
        """Close the box; a command still running is cancelled (its result would show an old answer)."""
        self.workers.cancel_group(self, "command")
        self.display = False

    def compose(self) -> ComposeResult:
        yield Static(id="result-text")

    def show(self, command: str, text: str, *, is_error: bool) -> None:
        self.border_title = Text(("error · " if is_error else "") + clean(command, 60))  # data, never markup
        self.set_class(is_error, "-error")
        self.set_class(text.count("\n") >= LONG_RESULT_LINES, "-long")  # app.tcss gives it more room
        self.query_one("#result-text", Static).update(Text(clean(text, 100_000, keep_newlines=True)))
        self.display = True
        self.scroll_home(animate=False)
