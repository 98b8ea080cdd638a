"""What the user chose, as reactives bound to the widgets that show it, and the keys that change it: the window
(``w``), pause (space), filter (``/``), focus (enter, the palette), the view (``d``, ``t``; ``v`` and ``o`` pick and
sort the Traffic view's list) and the process sort (``s``).
A change that narrows or widens the data also tells the poller (:meth:`ViewState.reconfigure`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from textual import on
from textual.reactive import reactive
from textual.widgets import DataTable, Input, TabbedContent

from netspy_tui.models import Scope
from netspy_tui.textsafe import clean
from netspy_tui.tui.filtering import subject_for_filter
from netspy_tui.tui.screens.panes import InputKeys
from netspy_tui.tui.snapshot import ALL, Snapshot
from netspy_tui.tui.widgets.cells import WINDOWS
from netspy_tui.tui.widgets.connections import ConnectionTable, EventTable
from netspy_tui.tui.widgets.processes import NO_NODE, NO_WORKLOAD, ProcessTable
from netspy_tui.tui.widgets.traffic import MODES, TrafficTable

if TYPE_CHECKING:
    from collections.abc import Callable

    from netspy_tui.tui.poller import Poller

#: ids of the tables the tabs show (one at a time)
VIEW_TABLES = frozenset({"connections", "drops", "traffic"})
"""(each view's name is its table's id)"""


class ViewState(InputKeys):
    # What the user chose; bound to the status line (and the window to the process table's title). The screen
    # draws none of it (the widgets bound to it redraw themselves): no repaint, which would redraw the whole
    # screen (every widget, every line) on each key that changes one (a filter character, focus, a tab).
    window: reactive[int] = reactive(60, init=False, repaint=False)
    paused: reactive[bool] = reactive(False, init=False, repaint=False)
    paused_at: reactive[datetime | None] = reactive(None, init=False, repaint=False)
    filter_text: reactive[str] = reactive("", init=False, repaint=False)
    focus_subject: reactive[Scope | None] = reactive(None, init=False, repaint=False)
    focus_label: reactive[str | None] = reactive(None, init=False, repaint=False)
    view: reactive[str] = reactive("connections", init=False, repaint=False)

    filter_subject: Scope | None = None
    """A filter that is exactly a known process name or pid: the tools are asked about it too."""

    # provided by DashboardScreen
    poller: Poller
    side_pane: reactive[str | None]
    clock: Callable[[], datetime]
    latest: Snapshot | None

    def render_snapshot(self) -> None:
        raise NotImplementedError

    def selected_process(self) -> tuple[str | None, int | None]:
        raise NotImplementedError

    def kernel_row_selected(self) -> bool:
        raise NotImplementedError

    def focus_active_table(self) -> None:
        raise NotImplementedError

    def redraw_traffic(self) -> None:
        raise NotImplementedError

    def watch_focus_subject(self, subject: Scope | None) -> None:
        self.focus_label = subject.label if subject else None

    @property
    def subject(self) -> Scope:
        """What the tools are asked about: the focus, else a filter naming a process or pid, else all traffic."""
        return self.focus_subject or self.filter_subject or ALL

    def reconfigure(self) -> None:
        """Tell the poller which subject the tools should be asked about, then redraw what we have. The rows on
        screen answer first (filtered here, drawn in the next frame); the poll for the new subject starts after
        that frame, so its work does not delay the answer to the key."""
        before = self.poller.version
        if self.poller.configure(subject=self.subject, window=self.window, wake=False) != before:
            self.call_after_refresh(self.poller.wake.set)
        if not self.paused:
            self.render_snapshot()

    def action_filter(self) -> None:
        self.open_input(self.query_one("#filter-bar", Input))

    @on(Input.Changed, "#filter-bar")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    @on(Input.Submitted, "#filter-bar")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.focus_active_table()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self.filter_subject = self._filter_subject()
        self.reconfigure()

    def _filter_subject(self) -> Scope | None:
        procs = self.latest.processes.processes if self.latest and self.latest.processes else []
        status = self.latest.status if self.latest else None
        nodes = (status.source.nodes or {}) if status is not None else {}
        traffic = self.latest.traffic if self.latest else None
        return subject_for_filter(self.filter_text, procs, nodes, traffic.stats.processes if traffic else ())

    def filter_named_later(self) -> bool:
        """A filter typed before the process it names appeared (``/zzprobe``, then zzprobe runs) narrows the tool
        calls as soon as a snapshot knows it, as if typed then: matched only against the latest rows of all
        traffic, its events would stay out of sight whenever other processes fill those rows. True when the
        poller was told (and the screen redrawn)."""
        if not self.filter_text or self.filter_subject is not None:
            return False
        self.filter_subject = self._filter_subject()
        if self.filter_subject is None:
            return False
        self.reconfigure()
        return True

    def action_focus_selected(self) -> None:
        procs = self.query_one("#processes", ProcessTable)
        group = procs.selected_group() if procs.has_focus else None
        if group is not None:  # a workload's or node's heading (grouped): its rows, through the filter
            if group in (NO_WORKLOAD, NO_NODE):
                self.notify(f"These processes have no known {procs.group_by}.", severity="warning")
                return
            if procs.group_by == "node" and ", " in group:
                self.notify("These processes ran on several nodes: filter by one of them (/).", severity="warning")
                return
            bar = self.query_one("#filter-bar", Input)
            bar.display = True
            # (a server's name, drawn by the Input as it is: made inert; Input.Changed sets the filter)
            bar.value = clean(group, None)
            return
        name, pid = self.selected_process()
        if name is None and pid is None:
            if self.kernel_row_selected():
                self.notify("This drop was in kernel context: no process to focus (filter by its reason or "
                            "destination with / instead).", severity="warning")  # fmt: skip
            else:
                self.notify("Nothing selected: move the cursor onto a process first.", severity="warning")
            return
        self.focus_subject = Scope(command=name) if name else Scope(pid=pid)
        self.reconfigure()

    def row_chosen(self) -> None:
        """enter on a table's row (see :meth:`KeyedTable.action_select_cursor`): focus its process."""
        self.action_focus_selected()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()  # (a click on a row)
        self.row_chosen()

    def action_toggle_pause(self) -> None:
        self.paused_at = None if self.paused else self.clock()
        self.paused = not self.paused
        if not self.paused:
            self.render_snapshot()

    def action_toggle_names(self) -> None:
        table = self.query_one("#connections", ConnectionTable)
        table.show_names = not table.show_names
        table.refresh_destinations()
        if self.view == "traffic":
            self.redraw_traffic()  # its remote addresses follow
        self.notify("Destinations by name" if table.show_names else "Destinations by address", timeout=2)

    def action_cycle_window(self) -> None:
        later = [w for w in WINDOWS if w > self.window]
        self.window = later[0] if later else WINDOWS[0]
        self.reconfigure()

    def action_toggle_group(self) -> None:
        group_by = self.query_one("#processes", ProcessTable).cycle_grouping()
        self.notify(f"Processes grouped by {group_by}" if group_by else "Processes ungrouped", timeout=2)

    def action_cycle_sort(self) -> None:
        self.query_one("#processes", ProcessTable).cycle_sort()

    def action_reverse_sort(self) -> None:
        self.query_one("#processes", ProcessTable).reverse_sort()

    def action_toggle_drops(self) -> None:
        tabs = self.query_one("#views", TabbedContent)
        # (d from any other view goes to the drops, as the help says; from the drops back to the connections)
        self._show_view(tabs, "connections-tab" if tabs.active == "drops-tab" else "drops-tab")

    def action_toggle_traffic(self) -> None:
        tabs = self.query_one("#views", TabbedContent)
        self._show_view(tabs, "connections-tab" if tabs.active == "traffic-tab" else "traffic-tab")

    def _show_view(self, tabs: TabbedContent, pane: str) -> None:
        """Show the tab ``pane``; the status line's view and the table's focus change in the same frame (the tab's
        TabActivated message comes after a frame has drawn the view unfocused, and the status line unchanged: the
        table and the status line drawn twice). Below 140 columns a side pane shown in the tables' place closes:
        the key would have changed the status line's view alone, behind the pane."""
        tabs.active = pane
        self._view_shown(pane)
        self.side_pane = None

    def action_next_traffic_list(self) -> None:
        """The Traffic view's next list (processes, connections, remote addresses, connect latency)."""
        if self.view != "traffic":
            self.action_toggle_traffic()
            return
        table = self.query_one("#traffic", TrafficTable)
        table.set_mode(MODES[(MODES.index(table.mode) + 1) % len(MODES)])
        self.redraw_traffic()

    def action_sort_traffic(self) -> None:
        if self.view != "traffic":
            self.notify("o sorts the Traffic view (t shows it).", timeout=3)
            return
        label = self.query_one("#traffic", TrafficTable).cycle_sort()
        self.notify(f"Traffic sorted by {label}", timeout=2)

    @on(TabbedContent.TabActivated, "#views")
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self._view_shown(event.pane.id or "")  # (a click on a tab; a key has done it already)

    def _view_shown(self, pane: str) -> None:
        self.view = {"drops-tab": "drops", "traffic-tab": "traffic"}.get(pane, "connections")
        table = self.query_one(f"#{self.view}", DataTable)
        if isinstance(table, EventTable):
            table.catch_up()  # (a hidden table is updated when shown)
        self.poller.want_traffic(self.view == "traffic")  # the traffic tools are called only while it is shown
        self._focus_view_table(self.view)

    def _focus_view_table(self, view: str) -> None:
        """The table of the view left is hidden and Textual drops the focus (nothing had it after d): the shown
        view's table takes it, so the arrows, enter and the footer's keys act on what is shown; now, not after the
        next frame (Widget.focus). Another widget that has the focus (an input, the AI pane) keeps it."""
        focused = self.focused
        if focused is None or (isinstance(focused, DataTable) and focused.id in VIEW_TABLES):
            table = self.query_one(f"#{view}", DataTable)
            if focused is not table:
                self.set_focus(table)

    def focus_process(self, name: str) -> None:
        self.focus_subject = Scope(command=name)
        self.reconfigure()
