"""The main screen: status line, live tables, pattern panel, AI pane, command bar.

It renders snapshots the app hands it (never fetching itself), keeps the user's view state
(filter, focus, window, pause, sort) and turns actions from the key registry into changes of
the poller's configuration.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane
from textual.worker import Worker

from netspy_tui import safefs
from netspy_tui.ai import AISettings, AIStreamError, Finished, TextDelta, ToolCallFinished, ToolCallStarted, format_call
from netspy_tui.ai.types import AnswerItem, ProgressNote
from netspy_tui.commands import help_text, parse_command
from netspy_tui.config import state_dir
from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.ai_bridge import AIHooks, dashboard_hooks
from netspy_tui.mcp_tools.gateway import Gateway
from netspy_tui.models import ConnectionEvent, PacketDropEvent, ProcessStat, Scope
from netspy_tui.textsafe import clean, first_line, inert_json
from netspy_tui.tui import keys
from netspy_tui.tui.messages import (
    CommandDone,
    InsightChunk,
    InsightFailed,
    InsightFinished,
    InsightNoteMessage,
    InsightStarted,
    InsightToolCall,
    InsightToolDone,
)
from netspy_tui.tui.snapshot import ALL, Snapshot
from netspy_tui.tui.widgets.cells import window_label
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from netspy_tui.tui.widgets.connections import ConnectionTable, DropTable, EventTable, destination_text
from netspy_tui.tui.widgets.footer import KeyFooter
from netspy_tui.tui.widgets.insights import InsightsPane
from netspy_tui.tui.widgets.patterns import PatternsPanel, drop_mix_text
from netspy_tui.tui.widgets.processes import COLUMNS as PROCESS_COLUMNS
from netspy_tui.tui.widgets.processes import ProcessTable
from netspy_tui.tui.widgets.status import Failure, StatusBar, ViewState

if TYPE_CHECKING:
    from netspy_tui.tui.poller import Poller

log = logging.getLogger(__name__)

WINDOWS = (60, 300, 900, 3600)
WIDE_FROM = 140
"""Columns from which the pattern panel and the AI pane sit beside the tables; below, one of them at a time
takes the tables' place (``p``, ``i``) and esc brings the tables back."""
TALL_FROM = 40
#: Keys that open an input, and the input they open (see DashboardScreen.on_key).
OPENERS = {key: bar for action_id, bar in (("netspy.filter", "#filter-bar"), ("netspy.command", "#command-bar"),
                                           ("netspy.ask", "#question-bar"))
           for key in keys.BY_ID[action_id].keys.split(",")}


class EventFilter:
    """Client-side narrowing by process name, pid or destination (case-insensitive substring; pid prefix)."""

    def __init__(self, text: str, focus: Scope | None) -> None:
        self.text = text.strip()
        self.needle = self.text.casefold()
        self.focus = focus

    @property
    def active(self) -> bool:
        return bool(self.needle) or self.focus is not None

    def _focus_ok(self, pid: int, command: str) -> bool:
        f = self.focus
        if f is None:
            return True
        if f.command is not None:
            return command == f.command
        return pid == f.pid

    def event(self, e: ConnectionEvent | PacketDropEvent) -> bool:
        if not self._focus_ok(e.pid, e.command):
            return False
        n = self.needle
        if not n:
            return True
        if n.isdigit() and str(e.pid).startswith(n):
            return True
        dest = destination_text(e) if isinstance(e, ConnectionEvent) else (e.destination or e.drop_reason)
        return n in e.command.casefold() or n in dest.casefold()

    def process(self, p: ProcessStat) -> bool:
        n = self.needle
        if not n:
            return True
        return n in p.command.casefold() or (n.isdigit() and any(str(pid).startswith(n) for pid in p.pids))


def subject_for_filter(text: str, processes: Iterable[ProcessStat]) -> Scope | None:
    """A filter that is exactly a known pid or process name narrows the tool calls too."""
    text = text.strip()
    if not text:
        return None
    procs = list(processes)
    if text.isdigit() and any(int(text) in p.pids for p in procs):
        return Scope(pid=int(text))
    if any(p.command == text for p in procs):
        return Scope(command=text)
    return None


def default_export_dir() -> Path:
    """Where exports go without ``export_dir`` / ``NETSPY_EXPORT_DIR``: the per-user state directory
    (``~/.local/state/netspy-tui/exports``, created 0700), never the working directory."""
    return state_dir() / "exports"


def tab_label(name: str, rows: int, total: int | None) -> str:
    """``Connections (1,003)``, or ``Connections (latest 2,000 of 14,946)`` when the window holds more events
    than the table keeps (``total``: the window's count from the pattern analysis, None when not known)."""
    if total is not None and total > rows:
        return f"{name} (latest {rows:,} of {total:,})"
    return f"{name} ({rows:,})"


def _csv_safe(value: object) -> str:
    """Cleaned text that a spreadsheet will not run as a formula."""
    text = clean(value, None)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


class DashboardScreen(Screen[None]):
    BINDINGS = keys.bindings()
    AUTO_FOCUS = "#connections"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_FROM, "-tall")]

    def __init__(self, gateway: Gateway, poller: Poller, *, clock: Callable[[], datetime], window: int,
                 source_note: str, ai: AIHooks | None, export_dir: Path | None) -> None:
        super().__init__()
        self.gateway = gateway
        self.poller = poller
        self.clock = clock
        self.ai = ai if ai is not None else dashboard_hooks(AISettings())  # no model: the local rules
        self.export_dir = export_dir
        self.view_state = ViewState(window=window)
        self.source_note = source_note
        self.focus_subject: Scope | None = None
        self.filter_subject: Scope | None = None
        self.latest: Snapshot | None = None
        self.rendered: Snapshot | None = None
        self.renders = 0
        self.last_render_ms: float | None = None
        self._insight_requests = 0
        self._insight_key: tuple[object, ...] | None = None
        self._insight_worker: Worker[None] | None = None
        self._applied: dict[str, str] = {}
        self._last_table: DataTable[Any] | None = None
        self._typeahead: Input | None = None
        """The input an opening key (``/``, ``:``, ``A``) is opening: printable keys that reach the screen go there."""
        """The table that had the focus last (``a`` and enter act on its cursor while another widget has it)."""
        self.side_pane: str | None = None
        """Below WIDE_FROM columns: the pane shown instead of the tables ("patterns", "ai") or None."""
        self.hidden_panes: set[str] = set()
        """From WIDE_FROM columns on: the panes the user hid ("patterns", "ai")."""

    # --- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(self.clock, self.view_state, self.source_note, id="status")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with TabbedContent(id="views", initial="connections-tab"):
                    with TabPane("Connections", id="connections-tab"):
                        yield ConnectionTable(id="connections")
                    with TabPane("Packet drops", id="drops-tab"):
                        yield Static(id="drop-mix")
                        yield DropTable(id="drops")
                yield ProcessTable(id="processes")
            with Vertical(id="right"):
                yield PatternsPanel(id="patterns")
                yield InsightsPane(label=self.ai.label, id="insights")
        yield ResultPanel(id="result")
        yield Input(placeholder="filter: process name, pid or destination (enter keeps it, esc clears)",
                    id="filter-bar")
        yield Input(placeholder="ask the AI about this host's traffic, e.g. why does nginx see refused connections? "
                                "(enter asks, esc closes)", id="question-bar")
        yield CommandInput(id="command-bar")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#result", ResultPanel).display = False
        self.query_one("#filter-bar", Input).display = False
        self.query_one("#question-bar", Input).display = False
        self.query_one("#command-bar", CommandInput).display = False
        self._title_processes()

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def connections(self) -> ConnectionTable:
        return self.query_one("#connections", ConnectionTable)

    @property
    def drops(self) -> DropTable:
        return self.query_one("#drops", DropTable)

    @property
    def processes(self) -> ProcessTable:
        return self.query_one("#processes", ProcessTable)

    @property
    def insights(self) -> InsightsPane:
        return self.query_one("#insights", InsightsPane)

    # --- snapshots -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the app is tearing the screen down (a poll can still finish then)."""
        return self.is_attached and bool(self.query("#status"))

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.version < self.poller.version or not self.alive:
            return  # answers a window/subject the user has already left, or the app is closing
        try:
            self._apply(snapshot)
        except NoMatches:  # the screen lost its widgets mid-way: the app is shutting down
            log.debug("snapshot arrived during shutdown; ignored")

    def _apply(self, snapshot: Snapshot) -> None:
        self.latest = snapshot
        if self.view_state.paused or not self.is_current:
            self.status.show_snapshot(snapshot)
            return
        self.render_snapshot()

    def show_failure(self, failure: Failure) -> None:
        if not self.alive:
            return
        try:
            self.status.show_failure(failure)
        except NoMatches:
            log.debug("poll failure arrived during shutdown; ignored")

    def on_screen_resume(self) -> None:
        if self.latest is not None and self.latest is not self.rendered and not self.view_state.paused:
            self.render_snapshot()

    def _filter(self) -> EventFilter:
        return EventFilter(self.view_state.filter_text, self.focus_subject)

    def render_snapshot(self) -> None:
        snap = self.latest
        if snap is None:
            return
        started = time.perf_counter()
        flt = self._filter()
        subject = self.focus_subject or self.filter_subject or ALL
        with self.app.batch_update():
            self.connections.sync([e for e in snap.connections if flt.event(e)] if flt.active else snap.connections)
            self.drops.sync([e for e in snap.drops if flt.event(e)] if flt.active else snap.drops)
            procs = snap.processes.processes if snap.processes else []
            self.processes.sync([p for p in procs if flt.process(p)],
                                self.focus_subject.command if self.focus_subject else None)
            self._title_processes()
            patterns = snap.patterns if snap.config.subject == subject else None
            self.query_one(PatternsPanel).show(patterns, subject.label)
            mix = drop_mix_text(snap.drop_patterns if snap.config.subject == subject else None, snap.config.window)
            self._set_once("drop-mix", mix.plain, lambda: self.query_one("#drop-mix", Static).update(mix, layout=False))
            tabs = self.query_one("#views", TabbedContent)
            # the window's totals count what the tools were asked about: known unless a text filter narrows further
            narrowed = bool(self.view_state.filter_text) and (self.filter_subject is None
                                                              or self.focus_subject is not None)
            same = snap.config.subject == subject and not narrowed
            conns = tab_label("Connections", self.connections.row_count,
                              snap.patterns.stats.total if same and snap.patterns else None)
            drops = tab_label("Packet drops", self.drops.row_count,
                              snap.drop_patterns.stats.total if same and snap.drop_patterns else None)
            for pane, label in (("connections-tab", conns), ("drops-tab", drops)):
                tab = tabs.get_tab(pane)  # compared with the tab itself: a render before the tabs mount is not lost
                if str(tab.label) != label:
                    tab.label = Text(label)
        self.rendered = snap
        self.renders += 1
        self.last_render_ms = (time.perf_counter() - started) * 1000
        self.status.show_snapshot(snap, self.last_render_ms)

    def _set_once(self, what: str, value: str, apply: Callable[[], object]) -> None:
        """Run ``apply`` only when ``value`` differs from what was last applied for ``what`` (saves layouts)."""
        if self._applied.get(what) != value:
            self._applied[what] = value
            apply()

    def _title_processes(self) -> None:
        table = self.processes
        label = PROCESS_COLUMNS[table.sort_index].label
        table.border_title = f"Processes · {window_label(self.view_state.window)}"
        table.border_subtitle = f"sort {label} {'▼' if table.sort_reverse else '▲'} (s / S)"

    def _reconfigure(self) -> None:
        """Tell the poller which subject the tools should be asked about, then redraw what we have."""
        self.view_state.focus_label = self.focus_subject.label if self.focus_subject else None
        self.poller.configure(subject=self.focus_subject or self.filter_subject or ALL,
                              window=self.view_state.window)
        self.status.redraw()
        if not self.view_state.paused:
            self.render_snapshot()

    # --- actions -------------------------------------------------------------------------

    def action_help(self) -> None:
        from netspy_tui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self.app.exit(0)

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
        """
        if not isinstance(self.focused, Input) and event.key in OPENERS:
            self._typeahead = self.query_one(OPENERS[event.key], Input)
            return
        bar = self._typeahead
        if bar is not None and event.is_printable and event.character:
            event.stop()
            event.prevent_default()
            bar.insert_text_at_cursor(event.character)

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        if event.widget is self._typeahead:
            self._typeahead = None

    def action_filter(self) -> None:
        self.open_input(self.query_one("#filter-bar", Input))

    @on(Input.Changed, "#filter-bar")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    @on(Input.Submitted, "#filter-bar")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self._focus_active_table()

    def set_filter(self, text: str) -> None:
        self.view_state.filter_text = text.strip()
        procs = self.latest.processes.processes if self.latest and self.latest.processes else []
        self.filter_subject = subject_for_filter(text, procs)
        self._reconfigure()

    async def action_back(self) -> None:
        bar = self.query_one("#filter-bar", Input)
        command = self.query_one("#command-bar", CommandInput)
        question = self.query_one("#question-bar", Input)
        if command.has_focus:
            command.display = False
            self._focus_active_table()
        elif question.has_focus or question.display:
            question.value = ""
            question.display = False
            self._focus_active_table()
        elif self.insights.pending and not bar.has_focus:
            await self.cancel_insight()
        elif self.narrow and self.side_pane is not None:
            self.toggle_pane(self.side_pane)
        elif self.view_state.filter_text or bar.display:
            bar.value = ""
            bar.display = False
            self.set_filter("")
            self._focus_active_table()
        elif self.focus_subject is not None:
            self.focus_subject = None
            self._reconfigure()
        elif self.query_one("#result", ResultPanel).display:
            self.query_one("#result", ResultPanel).display = False

    def _focus_active_table(self) -> None:
        if self.view_state.view == "drops":
            self.drops.focus()
        else:
            self.connections.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, DataTable):
            self._last_table = event.widget

    def _selected_process(self) -> tuple[str | None, int | None]:
        """(process name, pid) under the cursor of the focused table, or of the table focused last (the
        AI pane or an input can have the focus, or hide the tables, when ``a`` is pressed)."""
        table = self.focused if isinstance(self.focused, DataTable) else self._last_table
        if isinstance(table, ProcessTable):
            name = table.selected_process()
            return (name, None) if name is not None else (None, None)
        if not isinstance(table, EventTable):
            table = self.connections
        event = table.selected_event()
        if event is None:
            return None, None
        return (event.command or None), event.pid or None

    def action_focus_selected(self) -> None:
        name, pid = self._selected_process()
        if name is None and pid is None:
            self.notify("Nothing selected: move the cursor onto a process first.", severity="warning")
            return
        self.focus_subject = Scope(command=name) if name else Scope(pid=pid)
        self._reconfigure()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_focus_selected()

    def action_toggle_pause(self) -> None:
        self.view_state.paused = not self.view_state.paused
        self.view_state.paused_at = self.clock() if self.view_state.paused else None
        if not self.view_state.paused:
            self.render_snapshot()
        self.status.redraw()

    def action_cycle_window(self) -> None:
        current = self.view_state.window
        later = [w for w in WINDOWS if w > current]
        self.view_state.window = later[0] if later else WINDOWS[0]
        self._title_processes()
        self._reconfigure()

    def action_cycle_sort(self) -> None:
        self.processes.cycle_sort()
        self._title_processes()

    def action_reverse_sort(self) -> None:
        self.processes.reverse_sort()
        self._title_processes()

    def action_toggle_drops(self) -> None:
        tabs = self.query_one("#views", TabbedContent)
        tabs.active = "drops-tab" if tabs.active == "connections-tab" else "connections-tab"

    @on(TabbedContent.TabActivated, "#views")
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self.view_state.view = "drops" if event.pane.id == "drops-tab" else "connections"
        self.status.redraw()

    # --- panes beside (or instead of) the tables ----------------------------------------

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def pane_shown(self, pane: str) -> bool:
        """Whether the ``patterns`` or ``ai`` pane is on screen at the current width."""
        return self.side_pane == pane if self.narrow else pane not in self.hidden_panes

    def toggle_pane(self, pane: str) -> None:
        if self.narrow:
            self.side_pane = None if self.side_pane == pane else pane
        else:
            self.hidden_panes ^= {pane}
        self._apply_panes()

    def reveal_pane(self, pane: str) -> None:
        """Put ``pane`` on screen (an answer starts streaming into it)."""
        if self.narrow:
            self.side_pane = pane
        else:
            self.hidden_panes.discard(pane)
        self._apply_panes()

    def _apply_panes(self) -> None:
        """Classes that app.tcss turns into the layout (with the breakpoint classes -narrow / -wide)."""
        for pane in ("patterns", "ai"):
            self.set_class(self.side_pane == pane, f"-side-{pane}")
            self.set_class(pane in self.hidden_panes, f"-no-{pane}")
        if self.narrow and self.side_pane is None and not self.focused_table():
            self._focus_active_table()

    def focused_table(self) -> bool:
        return isinstance(self.focused, DataTable)

    def action_toggle_insights(self) -> None:
        self.toggle_pane("ai")

    def action_toggle_patterns(self) -> None:
        self.toggle_pane("patterns")

    # --- AI ------------------------------------------------------------------------------

    def _explain_subject(self) -> tuple[str | None, int | None]:
        name, pid = self._selected_process()
        if name is None and pid is None and self.focus_subject is not None:
            name, pid = self.focus_subject.command, self.focus_subject.pid
        return name, pid

    async def action_explain(self) -> None:
        name, pid = self._explain_subject()
        window = self.view_state.window
        scope = Scope(pid=None if name else pid, command=name, window=window)
        gateway, explain = self.gateway, self.ai.explain
        self.start_insight(("explain", name, scope.pid, window),
                           f"explaining {scope.label} over {window_label(window)}",
                           "AI explanation failed", lambda: explain(gateway, scope))

    def action_ask(self) -> None:
        self.open_input(self.query_one("#question-bar", Input))

    @on(Input.Submitted, "#question-bar")
    async def _question_submitted(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        event.input.value = ""
        event.input.display = False
        self._focus_active_table()
        await self.ask(question, self._question_context())

    def _question_context(self) -> dict[str, Any]:
        """What the user is looking at, sent with a free-form question as data."""
        context: dict[str, Any] = {"duration": self.view_state.window, "view": self.view_state.view}
        scope = self.focus_subject or self.filter_subject
        if scope is not None:
            context["focus"] = scope.as_arguments()
        name, pid = self._selected_process()
        if name is not None or pid is not None:
            context["selected_process"] = {k: v for k, v in (("process_name", name), ("pid", pid)) if v is not None}
        return context

    async def ask(self, question: str, context: dict[str, Any] | None) -> None:
        """Stream the answer to a free-form question into the AI pane (the model may call the data tools)."""
        if self.ai.ask is None:
            await self._unavailable()
            return
        gateway, ask = self.gateway, self.ai.ask
        self.start_insight(("ask", question, json.dumps(context, sort_keys=True, default=str)),
                           f"asking: {clean(question, 80)}", "AI answer failed",
                           lambda: ask(gateway, question, context))

    async def summarize(self, summary_text: str) -> None:
        """Stream insights into a summary text (the command bar's ``insights "..."``) into the AI pane."""
        if self.ai.summarize is None:
            await self._unavailable()
            return
        summarize = self.ai.summarize
        self.start_insight(("insights", summary_text), f"insights into: {clean(summary_text, 80)}",
                           "AI insights failed", lambda: summarize(summary_text))

    async def _unavailable(self) -> None:
        pane = self.insights
        self.reveal_pane("ai")
        self._cancel_insight_worker()
        await pane.show_notice(self.ai.unavailable)

    def start_insight(self, key: tuple[object, ...], title: str, failure_title: str,
                      produce: Callable[[], AsyncIterator[AnswerItem]]) -> None:
        """Run ``produce`` in the insights worker, streaming into the pane; replaces a running request.

        The same request again while it is still streaming is ignored (esc cancels it).
        """
        pane = self.insights
        self.reveal_pane("ai")
        worker = self._insight_worker
        if worker is not None and not worker.is_finished and key == self._insight_key and pane.pending:
            self.notify(f"Still {title}: esc cancels it.", markup=False)
            return
        self._insight_requests += 1
        request_id = self._insight_requests
        self._insight_key = key
        pane.expect(request_id, title)
        self._insight_worker = self._stream_insight(request_id, title, failure_title, produce)

    def _cancel_insight_worker(self) -> None:
        self.workers.cancel_group(self, "insights")
        self._insight_worker = None
        self._insight_key = None

    async def cancel_insight(self) -> None:
        """Stop the streaming answer: cancel the worker (which hangs up on the server); the text so far stays."""
        self._cancel_insight_worker()
        await self.insights.cancel()

    @work(group="insights", exclusive=True, exit_on_error=False)
    async def _stream_insight(self, request_id: int, title: str, failure_title: str,
                              produce: Callable[[], AsyncIterator[AnswerItem]]) -> None:
        pane = self.insights
        pane.post_message(InsightStarted(request_id, title))
        model: str | None = None
        items = produce()
        try:
            async for item in items:
                if isinstance(item, str | TextDelta):
                    pane.post_message(InsightChunk(request_id, item if isinstance(item, str) else item.text))
                elif isinstance(item, ProgressNote):
                    pane.post_message(InsightNoteMessage(request_id, item.text))
                elif isinstance(item, ToolCallStarted):
                    pane.post_message(InsightToolCall(request_id, format_call(item.name, item.arguments)))
                elif isinstance(item, ToolCallFinished):
                    pane.post_message(InsightToolDone(request_id, item.is_error, item.summary))
                elif isinstance(item, Finished):
                    model = item.model
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pane shows it; the dashboard keeps running
            log.warning("%s: %s", failure_title, exc, exc_info=not isinstance(exc, NetspyError))
            error = str(exc) if isinstance(exc, NetspyError) else f"{type(exc).__name__}: {first_line(exc)}"
            partial = exc.partial_text if isinstance(exc, AIStreamError) else ""
            pane.post_message(InsightFailed(request_id, error, title=failure_title, partial_text=partial))
            return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        pane.post_message(InsightFinished(request_id, model))

    # --- command bar ---------------------------------------------------------------------

    def action_command_bar(self) -> None:
        self.open_input(self.query_one("#command-bar", CommandInput))

    @on(Input.Submitted, "#command-bar")
    async def _command_submitted(self, event: Input.Submitted) -> None:
        bar = self.query_one("#command-bar", CommandInput)
        line = event.value.strip()
        if not line:
            return
        bar.remember(line)
        bar.value = ""
        await self.run_command(line)

    async def run_command(self, line: str) -> None:
        result = self.query_one("#result", ResultPanel)
        try:
            parsed = parse_command(line)
        except NetspyError as exc:
            result.show(line, str(exc), is_error=True)
            return
        if parsed.action == "quit":
            self.app.exit(0)
        elif parsed.action == "help":
            result.show(line, help_text(), is_error=False)
        elif parsed.tool == "ai_insights":  # AI answers stream into the AI pane
            self._clear_result()
            await self.summarize(str(parsed.arguments["summary_text"]))
        elif parsed.tool == "contextual_analysis":
            self._clear_result()
            args = parsed.arguments
            context = {k: v for k, v in (("pid", args.get("pid")), ("process_name", args.get("process_name")),
                                         ("duration", self.view_state.window)) if v is not None}
            await self.ask(str(args["query"]), context)
        else:
            result.show(line, "running…", is_error=False)
            self._run_tool(line, parsed.tool, parsed.arguments)

    def _clear_result(self) -> None:
        """The answer goes to the AI pane: the result box must not keep showing an earlier command's result."""
        self.workers.cancel_group(self, "command")
        self.query_one("#result", ResultPanel).display = False

    @work(group="command", exclusive=True, exit_on_error=False)
    async def _run_tool(self, line: str, tool: str | None, arguments: dict[str, Any]) -> None:
        try:
            if tool is None:
                tools = await self.gateway.list_tools()
                text = "\n".join(f"{t.name:<24} {first_line(t.description or '', 90)}" for t in tools)
                self.post_message(CommandDone(line, text, is_error=False))
                return
            res = await self.gateway.call(tool, arguments)
            self.post_message(CommandDone(line, res.text, is_error=res.is_error))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("command %r failed: %s", line, exc)
            text = str(exc) if isinstance(exc, NetspyError) else f"{type(exc).__name__}: {first_line(exc)}"
            self.post_message(CommandDone(line, text, is_error=True))

    @on(CommandDone)
    def _command_done(self, message: CommandDone) -> None:
        self.query_one("#result", ResultPanel).show(message.command, message.text, is_error=message.is_error)

    # --- export --------------------------------------------------------------------------

    def action_export(self, fmt: str) -> None:
        snap = self.rendered
        if snap is None:
            self.notify("Nothing to export yet: no poll has finished.", severity="warning")
            return
        view = self.view_state.view
        directory = Path(os.path.abspath(self.export_dir or default_export_dir()))
        stamp = self.clock().strftime("%Y%m%dT%H%M%SZ")
        try:
            # a fresh file (0600) created exclusively: a name someone planted (a link) is skipped, never followed
            safefs.make_private_dirs(directory)
            path, fd = safefs.create_unique(directory, f"netspy-{view}-{stamp}", f".{fmt}")
            with safefs.open_text(fd) as fh:
                count = self._write_export(fh, fmt, snap)
        except OSError as exc:
            self.notify(f"Export failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"Exported {count} {view} rows to {path}", title="Export", markup=False)

    def _write_export(self, fh: IO[str], fmt: str, snap: Snapshot) -> int:
        conns = list(self.connections.events.values())
        drops = list(self.drops.events.values())
        rows: list[ConnectionEvent] | list[PacketDropEvent] = drops if self.view_state.view == "drops" else conns
        if fmt == "json":
            data = {
                "exported_at": self.clock().isoformat(),
                "source": snap.status.source.label if snap.status else None,
                "view": self.view_state.view,
                "window_seconds": self.view_state.window,
                "filter": self.view_state.filter_text or None,
                "focus": self.focus_subject.as_arguments() if self.focus_subject else None,
                "connections": [e.model_dump(mode="json") for e in conns],
                "packet_drops": [e.model_dump(mode="json") for e in drops],
                "processes": [p.model_dump(mode="json") for p in self.processes.stats.values()],
                "patterns": snap.patterns.model_dump(mode="json") if snap.patterns else None,
                "drop_patterns": snap.drop_patterns.model_dump(mode="json") if snap.drop_patterns else None,
            }
            # the same inert writer as every other output: no raw bidi or C1 controls in the file
            fh.write(inert_json(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
            return len(rows)
        writer = csv.writer(fh)
        if self.view_state.view == "drops":
            writer.writerow(["time", "pid", "process", "reason", "reason_code", "bytes", "destination", "id"])
            for d in drops:
                writer.writerow([d.time.isoformat(), d.pid, _csv_safe(d.command), _csv_safe(d.drop_reason),
                                 d.drop_reason_code, d.packet_size_bytes, _csv_safe(d.destination or ""), d.id])
        else:
            writer.writerow(["time", "pid", "process", "destination", "protocol", "protocol_inferred",
                             "outcome", "return_code", "id"])
            for c in conns:
                writer.writerow([c.time.isoformat(), c.pid, _csv_safe(c.command), _csv_safe(destination_text(c)),
                                 _csv_safe(c.protocol), bool(c.protocol_inferred), c.effective_outcome,
                                 c.return_code, c.id])
        return len(rows)

    # --- palette -------------------------------------------------------------------------

    def palette_processes(self) -> list[str]:
        snap = self.latest
        return [p.command for p in snap.processes.processes[:30]] if snap and snap.processes else []

    def focus_process(self, name: str) -> None:
        self.focus_subject = Scope(command=name)
        self._reconfigure()
