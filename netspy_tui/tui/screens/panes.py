"""The dashboard's side panes (pattern panel, AI pane) and its inputs: which are shown, and where keys go.

State is reactive; app.tcss turns the classes the watchers set into the layout (with the breakpoint
classes ``-narrow`` / ``-wide`` of :class:`~netspy_tui.tui.screens.dashboard.DashboardScreen`), and
initial visibility (inputs and the result box hidden) lives there too.
"""

from __future__ import annotations

from textual import events
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Input

from netspy_tui.tui import keys

#: Keys that open an input, and the input they open (see InputKeys.on_key).
OPENERS = {
    key: bar
    for action_id, bar in (
        ("netspy.filter", "#filter-bar"),
        ("netspy.command", "#command-bar"),
        ("netspy.ask", "#question-bar"),
    )
    for key in keys.BY_ID[action_id].keys.split(",")
}
PANES = ("patterns", "ai")


class PaneLayout(Screen[None]):
    """From 140 columns the panes sit beside the tables, each hideable (``p``, ``i``); below, one of them at a
    time takes the tables' place and esc (or the same key) brings the tables back."""

    side_pane: reactive[str | None] = reactive(None, init=False)
    """Below 140 columns: the pane shown instead of the tables ("patterns", "ai") or None."""
    hidden_panes: reactive[frozenset[str]] = reactive(frozenset(), init=False)
    """From 140 columns on: the panes the user hid."""

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def toggle_pane(self, pane: str) -> None:
        if self.narrow:
            self.side_pane = None if self.side_pane == pane else pane
        else:
            self.hidden_panes = self.hidden_panes ^ {pane}

    def reveal_pane(self, pane: str) -> None:
        """Put ``pane`` on screen (an answer starts streaming into it)."""
        if self.narrow:
            self.side_pane = pane
        else:
            self.hidden_panes = self.hidden_panes - {pane}

    def watch_side_pane(self, side_pane: str | None) -> None:
        for pane in PANES:
            self.set_class(side_pane == pane, f"-side-{pane}")
        if self.narrow and side_pane is None and not isinstance(self.focused, DataTable):
            self.focus_active_table()

    def watch_hidden_panes(self, hidden: frozenset[str]) -> None:
        for pane in PANES:
            self.set_class(pane in hidden, f"-no-{pane}")

    def focus_active_table(self) -> None:
        raise NotImplementedError

    def action_toggle_ai(self) -> None:
        self.toggle_pane("ai")

    def action_toggle_patterns(self) -> None:
        self.toggle_pane("patterns")


class InputKeys(Screen[None]):
    """Inputs open with the focus at once, and keys typed right after the opening key go into them."""

    _typeahead: Input | None = None
    """The input an opening key (``/``, ``:``, ``A``) is opening: printable keys that reach the screen go there."""

    def open_input(self, bar: Input) -> None:
        """Show ``bar`` and give it the focus now, not after a refresh (``Widget.focus`` defers it): keys typed
        right after the key that opened it, already queued (a fast typist, a paste), go into it rather than to
        the single-letter bindings (``e`` would export)."""
        bar.display = True
        self.set_focus(bar)

    def on_key(self, event: events.Key) -> None:
        """Keys typed right after a key that opens an input (``/uxgen`` in one go, a paste) belong to that input.

        The app hands every queued key to the widget that has the focus when it arrives, so letters typed
        before the input has the focus reach the screen, and then the single-letter bindings (``e`` would
        export). From the opening key until the input loses the focus, such letters go into the input.

        The opening key opens its input here, as it reaches the screen, not when the app gets to its binding:
        the app's queue can hold other work (a snapshot to draw) before it, and the input would be filled
        while the focus was still on the table.
        """
        if not isinstance(self.focused, Input) and event.key in OPENERS:
            event.stop()
            event.prevent_default()
            self._typeahead = self.query_one(OPENERS[event.key], Input)
            self.open_input(self._typeahead)
            return
        bar = self._typeahead
        if bar is not None and event.is_printable and event.character:
            event.stop()
            event.prevent_default()
            bar.insert_text_at_cursor(event.character)

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        if event.widget is self._typeahead:
            self._typeahead = None
