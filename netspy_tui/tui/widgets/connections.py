"""Live event tables: keyed by event id, updated by diff inside ``batch_update`` (one pass, see table.py).

Rows are oldest first, newest at the bottom. The table follows the newest row while the cursor
sits on the last row; move the cursor up and it stays on the row it is on (by key) until you go
back to the end (``end``).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Collection, Sequence
from typing import ClassVar, Generic, TypeVar

from rich.style import Style
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from netspy_tui.analysis.describe import destination_text, inbound_cell
from netspy_tui.models import KERNEL_CONTEXT, OUTCOMES, ConnectionEvent, PacketDropEvent
from netspy_tui.tui.poller import event_key
from netspy_tui.tui.widgets.cells import Cell, Column, SharedCells, cell, fit_widths, set_column_widths, table_width
from netspy_tui.tui.widgets.table import KeyedTable

E = TypeVar("E", ConnectionEvent, PacketDropEvent)

TIME_COLUMN = Column("time", "Time (UTC)", 12, 12)
PROCESS_COLUMN = Column("process", "Process", 10, 24)
PID_COLUMN = Column("pid", "PID", 7, 7)
#: the longest IPv4 destination, ``255.255.255.255:65535``: whole before a process name is
IPV4_DESTINATION = 21


def time_cell(event: ConnectionEvent | PacketDropEvent) -> Cell:
    return cell(event.time.strftime("%H:%M:%S.%f")[:-3], 12, sort_key=event.time)


class EventTable(KeyedTable, Generic[E]):
    """Base of the connection and drop tables."""

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    """By importance: the first ones stay in view at 80 columns, the growing ones take a wide screen."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.events: dict[str, E] = {}
        """Events shown, by row key, in table order."""
        self._cells: dict[str, list[Cell]] = {}
        """Rendered cells of the events shown (a rebuild reuses them)."""
        self._spare: dict[str, tuple[E, list[Cell]]] = {}
        """Cells of held events a filter or focus hides, with the event they show: the rows come back without
        being made again when the filter widens or the focus ends (esc gave 1,300 rows new cells: ~40 ms)."""
        self.spec: tuple[Column, ...] = self.COLUMNS
        """The columns shown now (a table may add one when the data has it)."""
        self.shared = SharedCells()
        """The cells of repeated values (all but the time), made once for the rows that show them."""

    def on_mount(self) -> None:
        if not self.columns:  # (sync may have added them first: a snapshot can arrive before the mount)
            for column in self.spec:
                self.add_column(column.label, key=column.key, width=column.least)

    def cells(self, event: E) -> list[Cell]:
        raise NotImplementedError

    def on_resize(self) -> None:
        widths = fit_widths(self.spec, table_width(self), self.cell_padding)
        set_column_widths(self, {c.key: w for c, w in zip(self.spec, widths, strict=True)})
        if self.following and self.row_count:
            self.call_after_refresh(self._follow, self.row_count)

    def _follow(self, rows: int) -> None:
        """Back to the newest row, unless the user moved the cursor off the row that was last (``rows`` rows)
        in the meantime: a resize queued before the user's move must not undo it."""
        if self.row_count and self.cursor_row >= rows - 1:
            self.move_cursor(row=self.row_count - 1, animate=False)

    @property
    def following(self) -> bool:
        return self.row_count == 0 or self.cursor_row >= self.row_count - 1

    def selected_event(self) -> E | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None
        return self.events.get(key or "")

    _due: tuple[Sequence[E], Collection[E] | None] | None = None
    """What :meth:`sync_later` was given: shown by :meth:`catch_up`."""

    def sync_later(self, events: Sequence[E], held: Collection[E] | None = None) -> int:
        """:meth:`sync` when the table is next shown (:meth:`catch_up`): a hidden tab's table is not updated at every
        poll or key (a focus key spent ~4 ms on the hidden drops). Returns the rows it will have."""
        self._due = (events, held)
        return len({event_key(e) for e in events})

    def catch_up(self) -> None:
        """Show what :meth:`sync_later` was given, if anything (before the table is shown or read)."""
        if self._due is not None:
            self.sync(*self._due)

    def sync(self, events: Sequence[E], held: Collection[E] | None = None) -> tuple[int, int]:
        """Show exactly ``events`` (oldest first); ``held``: every event the screen holds, of which ``events`` are
        those the filter lets through (the cells of the others are kept for when it widens). Returns (rows added,
        rows removed)."""
        self._due = None
        if len(self.columns) != len(self.spec):  # not mounted yet: the columns first
            self.clear(columns=True)
            self.events, self._cells, self._spare = {}, {}, {}
            self.on_mount()
        wanted = self._keyed(events)
        if self._columns_for([e for k, e in wanted.items() if k not in self.events]):
            self.clear(columns=True)  # (another set of columns: every row made again)
            self.events, self._cells, self._spare = {}, {}, {}
            self.on_mount()
            self.on_resize()
        current = self.events
        removed = [k for k in current if k not in wanted]
        added = [k for k in wanted if k not in current]
        self._changed(wanted)
        if not removed and not added:
            return 0, 0
        following = self.following
        anchor = None if following else self._cursor_key()
        cells, spare = self._cells, self._spare
        for key in removed:
            spare[key] = (current[key], cells.pop(key))
        for key in added:
            event = wanted[key]
            kept = spare.pop(key, None)
            cells[key] = kept[1] if kept is not None and (kept[0] is event or kept[0] == event) else self.cells(event)
        if held is None or len(held) == len(wanted):  # (nothing held is hidden: nothing to keep)
            spare.clear()
        elif len(spare) > len(held) - len(wanted):  # (some left the window: only the held ones kept)
            keys = {event_key(e) for e in held}
            self._spare = {k: v for k, v in spare.items() if k in keys}
        with self.app.batch_update():
            self.place_rows(list(wanted), cells)
            self.events = wanted
            if following:
                self.move_cursor(row=self.row_count - 1, animate=False)
            elif anchor is not None and anchor in wanted:
                self.move_cursor(row=self.get_row_index(anchor), animate=False)
        return len(added), len(removed)

    def _keyed(self, events: Sequence[E]) -> dict[str, E]:
        """``events`` by row key, in order. The events that begin as the table's rows did after some of its oldest (a
        live table at each poll: the same objects, in the same order, up to the first new or late one) keep the keys
        they have; only the others are keyed (a key made for each of the ~2,000 rows of a full window was a third
        of the connection table's update at each refresh at 100 events/s)."""
        current = self.events
        if not (current and events and (first := event_key(events[0])) in current):
            return {event_key(e): e for e in events}
        shown = dict(itertools.islice(current.items(), list(current).index(first), None))
        same = list(map(operator.is_, shown.values(), events))
        kept = same.index(False) if False in same else len(same)
        keyed = shown if kept == len(shown) else dict(itertools.islice(shown.items(), kept))
        for event in events[kept:]:
            keyed[event_key(event)] = event
        return keyed

    def _columns_for(self, new: list[E]) -> bool:
        """Whether the columns change for the events ``new`` to the table (the table is then made again)."""
        return False

    def _changed(self, wanted: dict[str, E]) -> None:
        """Rows whose event the poller replaced (a name learnt after the row arrived): new cells. An equal event (the
        same row fetched again: a poll for a new subject or window reads the window afresh) keeps its cells."""
        current = self.events
        updated: list[tuple[str, str, Cell]] = []
        for key, event in wanted.items():
            old = current.get(key)
            if old is not None and old is not event:
                current[key] = event
                if old == event:
                    continue
                cells = self.cells(event)
                for column, (before, after) in zip(self.spec, zip(self._cells[key], cells, strict=True), strict=True):
                    if str(before) != str(after):
                        updated.append((key, column.key, after))
                self._cells[key] = cells
        self.update_cells(updated)

    def _cursor_key(self) -> str | None:
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None


_OUTCOME_LABEL = {"in_progress": "in progress"}


class ConnectionTable(EventTable[ConnectionEvent]):
    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {f"outcome--{o}" for o in OUTCOMES}
    COLUMNS = (
        TIME_COLUMN,
        PROCESS_COLUMN,
        Column("destination", "Destination", 16, 64, want=IPV4_DESTINATION),
        Column("outcome", "Outcome", 11, 11),
        Column("protocol", "Proto", 5, 5),
        PID_COLUMN,
    )
    DIRECTION_COLUMN = Column("direction", "Dir", 3, 3)
    """Shown (right after the outcome, which stays in view at 80 columns) once a row is a connection a local
    process accepted: ``in`` for those (their Destination cell reads ``:local port ← peer``), ``out`` for a
    connect() made here. A source that sees no accepts (a remote server, a recording) shows connects only: the
    column would say ``out`` on every row and cost the destinations 5 cells at 80 columns."""
    NODE_COLUMN = Column("node", "Node", 10, 32)
    """Shown (after the outcome) once an event carries a node: an aggregator's events from several hosts."""
    WORKLOAD_COLUMN = Column("workload", "Workload", 10, 40)
    """Shown (last: past the right edge at 80 columns) once an event carries a workload: this host's own
    collector names every process's container, pod, unit or ``host``; other sources have none."""

    show_names = True
    """Destinations by name when one is known (``n`` shows addresses)."""

    def __init__(self, *, id: str | None = None) -> None:
        self._outcome_styles: dict[str, Style] = {}
        self._extra = (False, False, False)
        """Whether the Node, Workload and Dir columns are shown (read for every new row's cells: a lookup in
        :attr:`spec` compares the columns field by field)."""
        super().__init__(id=id)

    def destination(self, event: ConnectionEvent) -> str:
        if event.direction == "inbound":
            return inbound_cell(event)
        where = f"{event.hostname}:{event.destination_port}" if self.show_names and event.hostname else \
            destination_text(event)  # fmt: skip
        # (netspy-tui's own reverse-DNS questions are the host's traffic too, but not the user's: said so, first, to
        # be seen in the narrow column of an 80-column terminal)
        return f"[own DNS] {where}" if event.own_dns_query else where

    def refresh_destinations(self) -> None:
        """Re-draw the Destination cells after ``show_names`` changed."""
        self._spare = {}  # (made with the other setting)
        updated = []
        for key, event in self.events.items():
            text = cell(self.destination(event), 64)
            updated.append((key, "destination", text))
            self._cells[key][2] = text  # (column 2 whether or not a Node column is shown)
        self.update_cells(updated)

    @property
    def shows_node(self) -> bool:
        return self._extra[0]

    @property
    def shows_workload(self) -> bool:
        return self._extra[1]

    @property
    def shows_direction(self) -> bool:
        return self._extra[2]

    def _columns_for(self, new: list[ConnectionEvent]) -> bool:
        """The Dir and Node columns (after the outcome) and the Workload column (last) once an event has them (the
        rows shown were looked at when they came). Once shown, a column stays."""
        node = self.shows_node or any(e.k8s_node_name for e in new)
        workload = self.shows_workload or any(e.workload for e in new)
        direction = self.shows_direction or any(e.direction == "inbound" for e in new)
        if (node, workload, direction) == (self.shows_node, self.shows_workload, self.shows_direction):
            return False
        at = [c.key for c in self.COLUMNS].index("outcome") + 1
        self.spec = (
            *self.COLUMNS[:at],
            *((self.DIRECTION_COLUMN,) if direction else ()),
            *((self.NODE_COLUMN,) if node else ()),
            *self.COLUMNS[at:],
            *((self.WORKLOAD_COLUMN,) if workload else ()),
        )
        self._extra = (node, workload, direction)
        return True

    def _outcome_style(self, outcome: str) -> Style:
        # Remembered per outcome until the styles change: Textual's own cache of component styles is emptied by
        # every refresh(), so each row added or renamed (a name learnt) computed it again (0.1-0.3 ms a row).
        style = self._outcome_styles.get(outcome)
        if style is None:
            name = f"outcome--{outcome}" if outcome in OUTCOMES else "outcome--unknown"
            style = self._outcome_styles[outcome] = self.get_component_rich_style(name, partial=True)
        return style

    def notify_style_update(self) -> None:
        self._outcome_styles = {}  # a theme or CSS change: the outcome colours again
        self._spare = {}
        self.shared.clear()
        super().notify_style_update()

    def cells(self, event: ConnectionEvent) -> list[Cell]:
        proto = (event.protocol or "?") + ("?" if event.protocol_inferred else "")
        outcome = event.effective_outcome
        shared = self.shared
        cells = [
            time_cell(event),
            shared(event.command, 24),
            shared(self.destination(event), 64),
            shared(_OUTCOME_LABEL.get(outcome, outcome), 12, style=self._outcome_style(outcome)),
        ]
        if self.shows_direction:
            cells.append(shared("in", 3, style="bold") if event.direction == "inbound" else shared("out", 3))
        if self.shows_node:
            cells.append(shared(event.k8s_node_name or "", 32))
        cells += [shared(proto, 12), shared(event.pid, 7, justify="right", sort_key=event.pid)]
        if self.shows_workload:
            cells.append(shared(event.workload or "", 40))
        return cells


class DropTable(EventTable[PacketDropEvent]):
    # At 80 columns the reason and an IPv4 destination whole before the packet's size, which goes first: there the
    # reason read "TCP_INVALID_S…" and the destination "198.51.100.66:44…" beside a size column (an audit's)
    COLUMNS = (
        TIME_COLUMN,
        Column("process", "Process", 8, 24),  # ("(kernel)", "postgres")
        Column("reason", "Reason", 14, 28, want=20),  # (TCP_INVALID_SEQUENCE, among the longest, is 20)
        Column("destination", "Destination", IPV4_DESTINATION, 46),
        PID_COLUMN,
        Column("size", "Bytes", 6, 6),
    )

    def cells(self, event: PacketDropEvent) -> list[Cell]:
        return [
            time_cell(event),
            self.shared(event.command if event.pid else KERNEL_CONTEXT, 24),
            self.shared(event.drop_reason or "UNKNOWN", 28, style="bold"),
            self.shared(event.destination or "", 46),
            self.shared(event.pid if event.pid else "-", 7, justify="right", sort_key=event.pid),
            self.shared(event.packet_size_bytes, 8, justify="right", sort_key=event.packet_size_bytes),
        ]
