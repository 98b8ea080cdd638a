"""The main screen: a composition of the status line, live tables, pattern panel, AI pane and command bar.

It renders snapshots the app hands it (never fetching itself) and puts its parts together, one concern a file:
what the user chose, as reactives bound to the widgets that show it, in ``view_state.py``; side panes and input
keys in ``panes.py``; AI actions in ``ai_actions.py``; the command bar and export in ``commands_export.py``.
The work lives outside the screen, without widgets: AI requests in :mod:`netspy_tui.tui.ai_runner` (run by
the AI pane), commands in :class:`netspy_tui.commands.CommandRunner` (run by the result panel, shared with the
REPL), files in :mod:`netspy_tui.export`, filtering in :mod:`netspy_tui.tui.filtering`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, Tab, TabbedContent, TabPane, Tabs
from textual.widgets._tabs import Underline

from netspy_tui.commands import CommandRunner
from netspy_tui.mcp_tools.gateway import Gateway
from netspy_tui.models import PacketDropEvent, PatternAnalysis, Scope, TrafficStats
from netspy_tui.tui import keys
from netspy_tui.tui.compositor import compositor
from netspy_tui.tui.filtering import EventFilter, tab_label, with_workloads
from netspy_tui.tui.screens.ai_actions import AIActions
from netspy_tui.tui.screens.commands_export import CommandBarActions, ExportActions
from netspy_tui.tui.screens.panes import InputKeys, PaneLayout
from netspy_tui.tui.screens.view_state import ViewState
from netspy_tui.tui.snapshot import Snapshot
from netspy_tui.tui.widgets.ai_pane import AIPane
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from netspy_tui.tui.widgets.connections import ConnectionTable, DropTable, EventTable
from netspy_tui.tui.widgets.footer import KeyFooter
from netspy_tui.tui.widgets.patterns import PatternsPanel, drop_mix_text, drops_unseen
from netspy_tui.tui.widgets.processes import ProcessTable
from netspy_tui.tui.widgets.status import Failure, StatusBar
from netspy_tui.tui.widgets.traffic import NOTHING_KNOWN, Known, TrafficTable, rows_of, summary_text, total_of

if TYPE_CHECKING:
    from netspy_tui.mcp_tools.ai_bridge import AIHooks
    from netspy_tui.tui.poller import Poller

    #: The dashboard's AI hooks, or what builds them on first use (the AI layer loads after the first frame).
    AISource = AIHooks | Callable[[], AIHooks]

log = logging.getLogger(__name__)

WIDE_FROM = 140
#: polls of bytes the pattern panel's rx/tx sparklines show
BYTES_SAMPLES = 60
"""Columns from which the pattern panel and the AI pane sit beside the tables (see panes.py)."""
TALL_FROM = 40
#: cells a poll's count in a tab may narrow by while the tab keeps its width, and the room left after it when it widens
#: the tab: a digit and its comma (a count hovering at 999/1,000, or growing, would lay the whole screen out again)
LABEL_SLACK = 2


class DashboardScreen(CommandBarActions, ExportActions, AIActions, ViewState, PaneLayout, InputKeys, Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [*keys.bindings()]
    AUTO_FOCUS = "#connections"
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    """Textual's, without its repaint of the whole screen (every widget, every line) on each change of focus: the
    widgets that gain and lose the focus redraw themselves (their ``:focus`` styles), as the rest need not."""
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_FROM, "-tall")]

    def __init__(
        self,
        gateway: Gateway,
        poller: Poller,
        *,
        clock: Callable[[], datetime],
        window: int,
        source_note: str,
        ai: AISource | None,
        export_dir: Path | None,
        ai_label: str | None = None,
    ) -> None:
        """``ai``: the AI hooks, or a function that builds them when first needed (then ``ai_label`` names who
        answers, for the AI pane's title); None: the local rules."""
        super().__init__()
        self._compositor = compositor()  # (the same frames, without drawing the pieces hidden behind)
        self.gateway = gateway
        self.poller = poller
        self.clock = clock
        self._ai = ai
        if ai_label is None:
            if ai is None:
                from netspy_tui.ai.settings import AISettings

                ai_label = AISettings().engine_label  # no model: the local rules
            else:
                ai_label = "AI" if callable(ai) else ai.label
        self.ai_label = ai_label
        self.export_dir = export_dir
        self.set_reactive(ViewState.window, window)
        self.source_note = source_note
        self.starting = ""
        """What is still starting (the app's :meth:`~netspy_tui.tui.app.NetspyApp.show_starting`): the first frame
        says so."""
        # commands cover the window shown; help fits the result box (the screen less its border, padding, scrollbar)
        self.commands = CommandRunner(lambda: self.gateway, lambda: self.window, lambda: self.size.width - 6)
        self.latest: Snapshot | None = None
        self.rendered: Snapshot | None = None
        self.recent_bytes: deque[TrafficStats] = deque(maxlen=BYTES_SAMPLES)
        """The subject's bytes at each of the last polls (the pattern panel's rx/tx sparklines)."""
        self._bytes_subject: Scope | None = None
        self.renders = 0
        self.last_render_ms: float | None = None
        self._applied: dict[str, str] = {}
        self._drop_mix: tuple[PatternAnalysis | None, int, str | None] = (None, window, None)
        """What the drops tab's line says for the last snapshot (see :meth:`_show_drop_mix`): made into the line only
        while the tab is shown."""
        self._tab_set: dict[str, tuple[Content, str]] = {}
        """Each tab's label as :meth:`_tab_label` set it last (the Content given to the tab, and its text)."""
        self._tab_widths: dict[str, tuple[int, object]] = {}
        """Each tab label's width on screen and the view its count counted then (see :meth:`_tab_label`)."""
        self._last_table: DataTable[Any] | None = None
        """The table that had the focus last (``a`` and enter act on its cursor while another widget has it)."""

    def compose(self) -> ComposeResult:
        status = StatusBar(self.clock, self.source_note, id="status")
        status.starting = self.starting
        status.pushed = self.poller.following  # (the app may follow the server's changes before this frame)
        yield status.data_bind(
            ViewState.window,
            ViewState.paused,
            ViewState.paused_at,
            ViewState.filter_text,
            ViewState.focus_label,
            ViewState.view,
        )
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with TabbedContent(id="views", initial="connections-tab"):
                    with TabPane("Connections", id="connections-tab"):
                        yield ConnectionTable(id="connections")
                    with TabPane("Packet drops", id="drops-tab"):
                        yield Static(id="drop-mix")
                        yield DropTable(id="drops")
                    with TabPane("Traffic", id="traffic-tab"):
                        yield Static(id="traffic-summary")
                        yield TrafficTable(id="traffic")
                yield ProcessTable(id="processes").data_bind(ViewState.window)
            with Vertical(id="right"):
                yield PatternsPanel(id="patterns")
                yield AIPane(label=self.ai_label, id="ai-pane")
        yield ResultPanel(id="result")
        yield Input(
            placeholder="filter: process name, pid, destination, workload or node (enter keeps it, esc clears)",
            id="filter-bar",
            select_on_focus=False,  # letters typed right after '/' may be in it before it has the focus
        )
        yield Input(
            placeholder="ask the AI about this host's traffic, e.g. why does nginx see refused connections? "
            "(enter asks, esc closes)",
            id="question-bar",
            select_on_focus=False,
        )
        yield CommandInput(id="command-bar")
        yield KeyFooter()

    @property
    def ai(self) -> AIHooks:
        """The AI hooks, built on first use when the screen was given a function (or nothing: the local rules)."""
        hooks = self._ai
        if hooks is None or callable(hooks):
            if hooks is None:
                from netspy_tui.ai.settings import AISettings
                from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks

                hooks = dashboard_hooks(AISettings())
            else:
                hooks = hooks()
            self._ai = hooks
        return hooks

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def connections(self) -> ConnectionTable:
        return self.query_one("#connections", ConnectionTable)

    @property
    def drops(self) -> DropTable:
        """The drops table, up to date (while its tab is hidden it is updated when read or shown)."""
        table = self.query_one("#drops", DropTable)
        table.catch_up()
        return table

    @property
    def processes(self) -> ProcessTable:
        return self.query_one("#processes", ProcessTable)

    @property
    def traffic(self) -> TrafficTable:
        return self.query_one("#traffic", TrafficTable)

    # --- snapshots -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the app is tearing the screen down (a poll can still finish then). (query_one by id is kept
        until the screen's children change; query() matched every widget on the screen at each refresh.)"""
        if not self.is_attached:
            return False
        try:
            self.query_one("#status")
        except NoMatches:
            return False
        return True

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.version < self.poller.version or not self.alive:
            return  # answers a window/subject the user has already left, or the app is closing
        try:
            self.latest = snapshot
            self._keep_bytes(snapshot)
            if self.paused or not self.is_current:
                self.status.show_snapshot(snapshot, drawn=not self.paused)
            elif not self.filter_named_later():  # (which redrew it)
                self.render_snapshot()
        except NoMatches:  # the screen lost its widgets mid-way: the app is shutting down
            log.debug("snapshot arrived during shutdown; ignored")

    def _keep_bytes(self, snapshot: Snapshot) -> None:
        """One more rx/tx sample for the sparklines: another subject starts them afresh."""
        if snapshot.config.subject != self._bytes_subject:
            self._bytes_subject = snapshot.config.subject
            self.recent_bytes.clear()
        if snapshot.recent_bytes is not None:
            self.recent_bytes.append(snapshot.recent_bytes)

    def show_failure(self, failure: Failure) -> None:
        if not self.alive:
            return
        try:
            self.status.show_failure(failure)
        except NoMatches:
            log.debug("poll failure arrived during shutdown; ignored")

    def on_screen_resume(self) -> None:
        if self.latest is not None and self.latest is not self.rendered and not self.paused:
            self.render_snapshot()

    def render_snapshot(self) -> None:
        snap = self.latest
        if snap is None:
            return
        started = time.perf_counter()
        flt = EventFilter(self.filter_text, self.focus_subject)
        subject = self.subject
        with self.app.batch_update():
            held, dropped = snap.connections, snap.drops
            self.connections.sync(flt.events(held), held)
            shown = flt.events(dropped)
            if self.view == "drops":
                self.drops.sync(shown, dropped)
                drop_rows = self.drops.row_count
            else:
                drop_rows = self.query_one("#drops", DropTable).sync_later(shown, dropped)
            procs = snap.processes.processes if snap.processes else []
            if snap.workloads_held:  # (else no event has one to give: the rows stay as listed)
                procs = with_workloads(procs, snap.connections)
            counted = snap.traffic is not None and snap.traffic.stats.available
            rates = {p.command: p for p in snap.traffic.stats.processes} if snap.traffic and counted else None
            self.processes.sync(
                [p for p in procs if flt.process(p)], self.focus_subject.command if self.focus_subject else None, rates
            )
            self.render_traffic(snap, flt)
            same_subject = snap.config.subject == subject
            panel = self.query_one(PatternsPanel)
            panel.show(snap.patterns if same_subject else None, subject.label)
            panel.show_bytes(list(self.recent_bytes) if same_subject else [])
            unseen = drops_unseen(snap.status) if snap.status is not None else self._drop_mix[2]
            self._drop_mix = (snap.drop_patterns if same_subject else None, snap.config.window, unseen)
            if self.view == "drops":
                self._show_drop_mix()
            # the window's totals count what the tools were asked about: known unless a text filter narrows further,
            # and not said of a list that holds the whole window (the summaries are read apart from the rows, and
            # not at every poll: their total can be a moment newer, "latest 910 of 917" for one poll)
            narrowed = bool(self.filter_text) and (self.filter_subject is None or self.focus_subject is not None)
            same = same_subject and not narrowed
            conns = tab_label(
                "Connections",
                self.connections.row_count,
                # (the attempts' count is the pattern analysis's; the accepted connections held are added to it)
                snap.patterns.stats.total + snap.inbound_held
                if same and snap.patterns and not snap.connections_whole
                else None,
                len(held) if narrowed and not snap.connections_whole else None,
                snap.connections_gapped,
            )
            drops = tab_label(
                "Packet drops",
                drop_rows,
                snap.drop_patterns.stats.total if same and snap.drop_patterns and not snap.drops_whole else None,
                len(dropped) if narrowed and not snap.drops_whole else None,
                snap.drops_gapped,
            )
            for pane, label in (("connections-tab", conns), ("drops-tab", drops)):
                self._tab_label(pane, label, (snap.config, self.filter_text, self.focus_subject))
        self.rendered = snap
        self.renders += 1
        self.last_render_ms = (time.perf_counter() - started) * 1000
        self.status.show_snapshot(snap, self.last_render_ms)

    def _show_drop_mix(self) -> None:
        """The drops tab's line, as the last snapshot has it. Drawn only while the tab is shown (and when it is shown):
        a hidden widget's update made Textual work out where every widget on the screen is again (~2 ms a frame)."""
        mix = drop_mix_text(*self._drop_mix)
        if self._applied.get("drop-mix") != mix.plain:  # saves a layout per tick
            self._applied["drop-mix"] = mix.plain
            self.query_one("#drop-mix", Static).update(mix, layout=False)

    def _view_shown(self, pane: str) -> None:
        super()._view_shown(pane)
        if self.view == "drops":
            self._show_drop_mix()

    def render_traffic(self, snap: Snapshot, flt: EventFilter) -> None:
        """The Traffic view's summary line and its current list (empty until the poller has fetched traffic)."""
        table = self.traffic
        known = NOTHING_KNOWN
        if snap.traffic is not None or snap.latency is not None:  # (not polled while the view is hidden)
            known = Known(
                {e.destination_ip: e.hostname for e in snap.connections if e.hostname}
                if self.connections.show_names
                else {},
                {e.pid: e.workload for e in snap.connections if e.workload},
            )
        rows = rows_of(table.mode, snap.traffic, snap.latency, known)
        shown = [r for r in rows if flt.row(r.command, r.pids, r.texts)] if flt.active else rows
        table.show(shown)
        # a text filter the tools were not narrowed by picks rows out of the top TRAFFIC_LIMIT of the host's: the
        # totals are the rows shown, and the count says out of what
        on_screen = bool(self.filter_text) and self.filter_subject is None
        summary = summary_text(snap.traffic, snap.latency, snap.traffic_error, table.mode, shown if on_screen else None)
        if self._applied.get("traffic-summary") != summary.plain:
            self._applied["traffic-summary"] = summary.plain
            line = self.query_one("#traffic-summary", Static)
            line.update(summary, layout=False)
            line.set_class(snap.traffic_error is not None, "-error")
        total = total_of(table.mode, snap.traffic, snap.latency)
        if not snap.traffic:
            label = "Traffic"
        elif on_screen:
            cut = f" of the top {len(rows):,}" if total is not None and total > len(rows) else ""
            label = f"Traffic ({table.row_count:,}{cut})"
        else:
            label = tab_label("Traffic", table.row_count, total)
        self._tab_label("traffic-tab", label, (snap.config, self.filter_text, self.focus_subject, table.mode))

    def redraw_traffic(self) -> None:
        """The Traffic view again from the snapshot on screen (another list, names or addresses; paused too)."""
        if self.rendered is not None:
            with self.app.batch_update():
                self.render_traffic(self.rendered, EventFilter(self.filter_text, self.focus_subject))

    def _tab_label(self, pane: str, label: str, view: object) -> None:
        """Relabel a tab as Tab.label's setter does (it sets _label and updates the same way), without its
        Relabelled message: on that, Tabs slides the underline to the tab's new width over 0.3 s, ~18 frames at
        each count that gains a digit (most of the frames a refresh drew while the window filled). ``view``: what
        the count counts (the poll's configuration, the filter, the focus): a poll's count of the same view keeps
        the tab's width when it narrows by up to :data:`LABEL_SLACK`, and widens it with that much to spare; another
        view's (the user's filter, focus, window) is shown as wide as it is."""
        views = self.query_one("#views", TabbedContent)
        tab = views.get_tab(pane)
        set_last = self._tab_set.get(pane)
        if set_last is not None and set_last[0] is tab._label and set_last[1] == label:
            return  # (the tab still holds the label set last, and it is this one)
        shown = str(tab.label)
        if shown == label:  # compared with the tab itself: a render before the tabs mount is not lost
            return
        tab._label = Content(label)
        self._tab_set[pane] = (tab._label, label)
        width = cell_len(label)
        drawn, drawn_view = self._tab_widths.get(pane, (cell_len(shown), None))
        if width == drawn or (view == drawn_view and drawn - LABEL_SLACK <= width < drawn):
            # as wide as the tab, or a poll's count a digit and its comma narrower: the tab's line redrawn at its
            # width (blank at the end), without the layout pass of the whole screen (~30 ms at 160x45)
            Static.update(tab, Content(label + " " * (drawn - width)), layout=False)
            if width == drawn:
                self._tab_widths[pane] = (drawn, view)
        else:
            # a poll's count that widens the tab (a window filling: 99 -> 100, 999 -> 1,000) is laid out with
            # LABEL_SLACK cells to spare, blank at the end: the next digit and its comma are redrawn in place, not laid
            # out again (at 100 events/s two of these passes, ~35 ms, came within ten seconds of the first data)
            spare = LABEL_SLACK if view == drawn_view else 0
            Static.update(tab, Content(label + " " * spare) if spare else tab._label)
            self._tab_widths[pane] = (width + spare, view)
            self._resize_tab(views.query_one(Tabs), tab, width + spare)

    @staticmethod
    def _resize_tab(tabs: Tabs, tab: Tab, width: int) -> None:
        """What the layout pass that follows a tab's new width (``width`` cells of label) will do, done now, so that
        one frame shows it all: the underline spans the active tab in that frame (Tabs moves it after the frame, so
        the next frame did), and the tab's virtual size is the one the layout gives it (it set it, and the change
        of that reactive laid the whole screen out a second time: ~7 ms of a focus key). Tabs confirms the
        underline after the layout, as before; a guess that missed costs that frame, not a wrong picture."""
        if not tab.size:  # not laid out yet: the first layout sizes it
            return
        tab.set_reactive(Widget.virtual_size, Size(width + tab.styles.gutter.width, tab.size.height))
        underline = tabs.query_one(Underline)
        shown = [t for t in tabs.query("#tabs-list > Tab").results(Tab) if t.display]
        x = shown[0].virtual_region.x if shown else 0
        for each in shown:
            if each.has_class("-active"):
                gutter = each.styles.gutter
                underline.highlight_start, underline.highlight_end = (
                    x + gutter.left,
                    x + each.virtual_size.width - gutter.right,
                )
            x += each.virtual_size.width
        tabs._highlight_active(animate=False)  # (after the layout, from the tabs' regions)

    # --- actions -------------------------------------------------------------------------

    def action_help(self) -> None:
        from netspy_tui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        log.info("quit requested")  # the quit test measures from this line to the end of the process
        self.app.exit(0)

    async def action_back(self) -> None:
        bar = self.query_one("#filter-bar", Input)
        command = self.query_one("#command-bar", CommandInput)
        question = self.query_one("#question-bar", Input)
        if command.has_focus:
            command.value = ""  # (cancelled: the next ':' starts empty, as the question bar does)
            command.display = False
            self.focus_active_table()
        elif question.has_focus or question.display:
            question.value = ""
            question.display = False
            self.focus_active_table()
        elif self.ai_pane.pending and not bar.has_focus:
            await self.ai_pane.cancel()
        elif self.narrow and self.side_pane is not None:
            self.toggle_pane(self.side_pane)
        elif self.filter_text or bar.display:
            bar.value = ""
            bar.display = False
            self.set_filter("")
            self.focus_active_table()
        elif self.focus_subject is not None:
            self.focus_subject = None
            self.reconfigure()
        elif self.result.display:
            self.result.display = False

    def focus_active_table(self) -> None:
        {"drops": self.drops, "traffic": self.traffic}.get(self.view, self.connections).focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, DataTable):
            self._last_table = event.widget

    def selected_process(self) -> tuple[str | None, int | None]:
        """(process name, pid) under the cursor of the focused table, or of the table focused last (the
        AI pane or an input can have the focus, or hide the tables, when ``a`` is pressed)."""
        table = self.focused if isinstance(self.focused, DataTable) else self._last_table
        if isinstance(table, ProcessTable):
            return table.selected_process(), None
        if isinstance(table, TrafficTable):
            row = table.selected_row()
            if row is None or not row.command:  # a remote address's row: several processes share it
                return None, None
            return row.command, row.pids[0] if len(row.pids) == 1 else None
        event = (table if isinstance(table, EventTable) else self.connections).selected_event()
        if event is None or _in_kernel(event):
            # (a drop in kernel context, "(kernel)": its comm is whatever task the CPU ran then, swapper/1 and the
            # like; focusing it showed that task's drops, not the kernel's)
            return None, None
        return (event.command or None), event.pid or None

    def kernel_row_selected(self) -> bool:
        """Whether the row under the cursor is a drop in kernel context (no process to focus or explain)."""
        table = self.focused if isinstance(self.focused, DataTable) else self._last_table
        return isinstance(table, EventTable) and _in_kernel(table.selected_event())

    def selected_nodes(self) -> list[str]:
        """The node(s) of the row :meth:`selected_process` reads (an aggregator's; empty for one host)."""
        table = self.focused if isinstance(self.focused, DataTable) else self._last_table
        if isinstance(table, ProcessTable):
            if (node := table.selected_node()) is not None:  # (grouped by node: that node's row)
                return [node]
            name = table.selected_process()
            stat = table.stats.get(name) if name is not None else None
            return list(stat.nodes) if stat is not None else []
        if isinstance(table, TrafficTable):
            return []
        event = (table if isinstance(table, EventTable) else self.connections).selected_event()
        return [event.k8s_node_name] if event is not None and event.k8s_node_name else []

    # --- palette -------------------------------------------------------------------------

    def palette_processes(self) -> list[str]:
        snap = self.latest
        return [p.command for p in snap.processes.processes[:30]] if snap and snap.processes else []


def _in_kernel(event: object) -> bool:
    """A packet dropped in kernel context (no process: its comm is whatever task the CPU ran then)."""
    return isinstance(event, PacketDropEvent) and not event.pid
