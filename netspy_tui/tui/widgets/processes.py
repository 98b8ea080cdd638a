"""Per-process summary table: keyed by process name, diffed with ``update_cells``, sortable by any column.

Grouped by workload or, against an aggregator, by node (``g`` cycles), each group gets a heading row (its
processes' totals) above its processes, which keep the chosen sort inside the group; the table is then rebuilt
on change (at most 200 processes). A process seen on several nodes is one row (its figures summed over them);
grouped by node it is a row under each of its nodes, with that node's own figures (as ``list_processes
--group-by node`` counts them), so each node's heading is that node's totals.
Rates (Rx/s, Tx/s: averages over the window) come from the Traffic view's poll and read ``–`` while it is not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets.data_table import ColumnKey

from netspy_tui.analysis.describe import human_bytes
from netspy_tui.models import ProcessStat, TrafficProcess
from netspy_tui.tui.widgets.cells import (
    Cell,
    Column,
    cell,
    cursor_key,
    fit_widths,
    next_shown_column,
    set_column_widths,
    table_width,
    window_label,
)
from netspy_tui.tui.widgets.table import KeyedTable


@dataclass(frozen=True, slots=True)
class ProcessColumn(Column):
    numeric: bool = False
    """Numeric columns sort largest first by default."""


#: How narrow and how wide each column may get (labels keep room for the sort arrow).
COLUMNS: tuple[ProcessColumn, ...] = (
    ProcessColumn("process", "Process", 12, 32),
    ProcessColumn("pids", "PIDs", 6, 60, numeric=True),
    ProcessColumn("attempts", "Attempts", 10, 10, numeric=True),
    ProcessColumn("dests", "Dests", 7, 7, numeric=True),
    ProcessColumn("failures", "Failed", 8, 8, numeric=True),
    ProcessColumn("last", "Last seen", 11, 11, numeric=True),
    ProcessColumn("workload", "Workload", 10, 32),
    ProcessColumn("nodes", "Node", 10, 32),
    ProcessColumn("rx_rate", "Rx/s avg", 10, 10, numeric=True),
    ProcessColumn("tx_rate", "Tx/s avg", 10, 10, numeric=True),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
#: Shown only once a process carries a workload (this host's own collector); other sources have none.
WORKLOAD = "workload"
#: Shown only once a process carries a node (an aggregator's processes).
NODES = "nodes"
#: Row keys of group headings start with NUL, which no process name (a kernel comm) contains.
GROUP_PREFIX = "\0group:"
#: Grouped by node, a process's row under one node is keyed by its name, this and the node.
NODE_ROW = "\0node:"
NO_WORKLOAD = "(no workload known)"
NO_NODE = "(no node known)"
#: What the process table can be grouped by (``g`` cycles through those the data has, then ungrouped).
GROUPINGS = ("workload", "node")


def workload_label(stat: ProcessStat) -> str:
    return ", ".join(stat.workloads) if stat.workloads else NO_WORKLOAD


def node_label(stat: ProcessStat) -> str:
    return ", ".join(stat.nodes) if stat.nodes else NO_NODE


GROUP_LABEL = {"workload": workload_label, "node": node_label}


def _rate(rates: dict[str, TrafficProcess] | None, command: str, attr: str) -> tuple[str, float]:
    """A rate cell's text and sort value: ``–`` (sorted last) when traffic was not read this poll."""
    if rates is None:
        return "–", -1.0
    p = rates.get(command)
    value = getattr(p, attr) if p is not None else 0.0
    return f"{human_bytes(value)}/s", value  # (as the Traffic view writes a rate)


def _pids_text(pids: Sequence[int], width: int = 13) -> str:
    """As many pids as fit in ``width`` cells, then ``+N`` for the rest; in a narrow column the first pid and a
    ``+`` (more), the count alone only when not even that fits."""
    for shown in range(len(pids), 0, -1):
        text = ",".join(str(p) for p in pids[:shown]) + (f"+{len(pids) - shown}" if shown < len(pids) else "")
        if len(text) <= width:
            return text
    if pids and len(str(pids[0])) + 1 <= width:
        return f"{pids[0]}+"
    return f"+{len(pids)}" if pids else ""


class ProcessTable(KeyedTable):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"processes--focused", "processes--failing", "processes--group"}

    window: reactive[int] = reactive(60, init=False)
    """The time window in seconds (bound to the screen's), shown in the title."""

    def __init__(self, *, id: str | None = None) -> None:
        self._cell_styles: dict[str, Style] = {}
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.stats: dict[str, ProcessStat] = {}
        self.spec: tuple[ProcessColumn, ...] = tuple(c for c in COLUMNS if c.key not in (WORKLOAD, NODES))
        """The columns shown now (the Workload and Node columns join when the data has workloads, nodes)."""
        self.sort_column = "attempts"
        self.sort_reverse = True
        self.focused_process: str | None = None
        self._cells: dict[str, list[Cell]] = {}
        self._made: dict[str, tuple[object, ...]] = {}
        """What each row's cells were made from (see :meth:`sync`), until the styles change."""
        self.pid_width = 13
        self.rates: dict[str, TrafficProcess] | None = None
        self.group_by: str | None = None
        """Rows grouped by workload or node under a heading row each (``g``); None: not grouped."""
        self._order: list[str] = []
        """Row keys in table order, when grouped."""
        self._grouped: dict[str, ProcessStat] = {}
        """Grouped: each process row's figures by its key (grouped by node, that node's)."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.spec)

    @property
    def sort_index(self) -> int:
        return self.keys.index(self.sort_column)

    @property
    def grouped(self) -> bool:
        return self.group_by is not None

    @property
    def shows_workload(self) -> bool:
        return WORKLOAD in self.keys

    @property
    def shows_nodes(self) -> bool:
        return NODES in self.keys

    def on_mount(self) -> None:
        for column in self.spec:
            self.add_column(self._label(column.key, column.label), key=column.key, width=column.least)
        self._title()

    def watch_window(self) -> None:
        self._title()

    def _title(self) -> None:
        self.border_title = f"Processes · {window_label(self.window)}"
        group = f" · by {self.group_by} (g)" if self.group_by else ""
        self.border_subtitle = (
            f"sort {self.spec[self.sort_index].label} {'▼' if self.sort_reverse else '▲'} (s / S){group}"
        )

    def on_resize(self) -> None:
        widths = dict(zip(self.keys, fit_widths(self.spec, table_width(self), self.cell_padding), strict=True))
        set_column_widths(self, widths)
        if widths["pids"] != self.pid_width:
            self.pid_width = widths["pids"]
            self.sync(list(self.stats.values()), self.focused_process, self.rates)

    def _label(self, key: str, label: str) -> Text:
        if self.sort_column != key:
            return Text(label + "  ")
        return Text(label + (" ▼" if self.sort_reverse else " ▲"), style="bold")

    def _shown(self, cells: list[Cell]) -> list[Cell]:
        """The cells of the columns shown, from one of every column."""
        shown = self.keys
        return (
            cells if len(shown) == len(COLUMNS) else [c for k, c in zip(COLUMN_KEYS, cells, strict=True) if k in shown]
        )

    def cells(self, stat: ProcessStat) -> list[Cell]:
        focused = self._component_style("processes--focused")
        failing = self._component_style("processes--failing")
        is_focused = stat.command == self.focused_process
        rx, rx_value = _rate(self.rates, stat.command, "rx_rate")
        tx, tx_value = _rate(self.rates, stat.command, "tx_rate")
        workload = ", ".join(stat.workloads)
        nodes = ", ".join(stat.nodes)
        return self._shown(
            [
                cell(
                    ("▶ " if is_focused else "") + stat.command,
                    32,
                    style=focused if is_focused else "",
                    sort_key=stat.command.casefold(),
                ),
                cell(_pids_text(stat.pids, self.pid_width), 60, sort_key=(len(stat.pids), stat.pids[:1])),
                cell(stat.attempts, 8, justify="right", sort_key=stat.attempts),
                cell(stat.distinct_destinations, 5, justify="right", sort_key=stat.distinct_destinations),
                cell(stat.failures, 6, justify="right", style=failing if stat.failures else "", sort_key=stat.failures),
                cell(stat.last_seen.strftime("%H:%M:%S"), 9, sort_key=stat.last_seen),
                cell(workload, 40, sort_key=workload.casefold()),
                cell(nodes, 40, sort_key=nodes.casefold()),
                cell(rx, 10, justify="right", sort_key=rx_value),
                cell(tx, 10, justify="right", sort_key=tx_value),
            ]
        )

    def _component_style(self, name: str) -> Style:
        # Remembered until the styles change: Textual's own cache of component styles is emptied by every refresh(),
        # so each row's cells (every process, every poll) worked the two styles out again (~2 ms a refresh).
        style = self._cell_styles.get(name)
        if style is None:
            style = self._cell_styles[name] = self.get_component_rich_style(name, partial=True)
        return style

    def notify_style_update(self) -> None:
        self._cell_styles = {}  # a theme or CSS change: the styles again
        self._made = {}  # (and the cells made with them)
        super().notify_style_update()

    def group_cells(self, label: str, members: Sequence[ProcessStat]) -> list[Cell]:
        """A group's heading row: its processes' totals (destinations are not additive: at least the largest,
        ``≥N``)."""
        heading = self._component_style("processes--group")
        attempts = sum(s.attempts for s in members)
        failures = sum(s.failures for s in members)
        last = max(s.last_seen for s in members)
        rates = [_rate(self.rates, s.command, a) for a in ("rx_rate", "tx_rate") for s in members]
        half = len(members)
        rx = sum(max(0.0, v) for _, v in rates[:half])
        tx = sum(max(0.0, v) for _, v in rates[half:])
        known = self.rates is not None
        n = len(members)
        return self._shown(
            [
                cell(f"▾ {label}", 32, style=heading, sort_key=label.casefold()),
                cell(f"{n} proc" + ("s" if n != 1 else ""), 60, style=heading, sort_key=n),
                cell(attempts, 8, justify="right", style=heading, sort_key=attempts),
                cell(
                    # (at least its largest member's: the members' sets are not here to join; a bare 4 read as the
                    # group's own count where its processes reached 15 destinations between them)
                    f"≥{dests}" if (dests := max(s.distinct_destinations for s in members)) and n > 1 else dests,
                    5,
                    justify="right",
                    style=heading,
                    sort_key=dests,
                ),
                cell(failures, 6, justify="right", style=heading, sort_key=failures),
                cell(last.strftime("%H:%M:%S"), 9, style=heading, sort_key=last),
                cell(label if self.group_by == "workload" else "", 40, style=heading, sort_key=label.casefold()),
                cell(label if self.group_by == "node" else "", 40, style=heading, sort_key=label.casefold()),
                cell(f"{human_bytes(rx)}/s" if known else "–", 10, justify="right", style=heading, sort_key=rx),
                cell(f"{human_bytes(tx)}/s" if known else "–", 10, justify="right", style=heading, sort_key=tx),
            ]
        )

    def selected_process(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self._cursor_key()
        return None if key is None or key.startswith(GROUP_PREFIX) else key.partition(NODE_ROW)[0]

    def selected_node(self) -> str | None:
        """Grouped by node: the node of the process row under the cursor (its figures are that node's)."""
        key = self._cursor_key() if self.row_count else None
        return key.partition(NODE_ROW)[2] or None if key is not None and not key.startswith(GROUP_PREFIX) else None

    def selected_group(self) -> str | None:
        """The workload or node(s) of the heading row under the cursor (grouped), else None."""
        key = self._cursor_key()
        return key.removeprefix(GROUP_PREFIX) if key is not None and key.startswith(GROUP_PREFIX) else None

    def _cursor_key(self) -> str | None:
        return cursor_key(self)

    def sync(
        self, stats: Sequence[ProcessStat], focused: str | None, rates: dict[str, TrafficProcess] | None = None
    ) -> None:
        """Show exactly ``stats``: remove gone rows, update changed cells, add new rows, re-sort on change.
        ``rates``: the Traffic view's processes by name (None: not read this poll)."""
        self.focused_process = focused
        self.rates = rates
        workload = self.shows_workload or any(stat.workloads for stat in stats)
        nodes = self.shows_nodes or any(stat.nodes for stat in stats)
        if (workload, nodes) != (self.shows_workload, self.shows_nodes):
            self._set_columns(workload=workload, nodes=nodes)
        if self.grouped:
            self._sync_grouped(stats)
            return
        wanted = {s.command: s for s in stats}
        selected = self.selected_process()
        changed = False
        with self.app.batch_update():
            # Rows gone and rows new are placed in one pass each (place_rows), not a remove_row/add_row per row:
            # each remove_row re-indexes every row and asks for a layout of the whole screen (a filter character
            # that hides 30 processes asked for 30). The rows keep the order add_row would give them (kept rows
            # as they were, new ones after them in ``wanted`` order), which the stable sort below starts from, and
            # the cursor is clamped to the rows left before any is added, as remove_row then add_row leave it.
            gone = [k for k in self.stats if k not in wanted]
            if gone:
                for key in gone:
                    del self.stats[key]
                    del self._cells[key]
                    self._made.pop(key, None)
                self.place_rows(self._row_order(), {})
                changed = True
            added: dict[str, list[Cell]] = {}
            updated: list[tuple[str, str, Cell]] = []
            made, rate_of = self._made, (rates or {}).get
            for key, stat in wanted.items():
                old_cells = self._cells.get(key)
                # what the row's cells are made from: a row that would show what it shows (its process quiet since
                # the last poll) is not made again to be compared cell by cell
                source = (stat, key == focused, rates is None, rate_of(key), self.pid_width)
                if old_cells is not None and made.get(key) == source:
                    self.stats[key] = stat
                    continue
                made[key] = source
                new_cells = self.cells(stat)
                if old_cells is None:
                    added[key] = new_cells
                else:
                    updated += (
                        (key, column, new)
                        for column, new, old in zip(self.keys, new_cells, old_cells, strict=True)
                        if new.plain != old.plain or new.style != old.style
                    )
                self._cells[key] = new_cells
                self.stats[key] = stat
            if updated:
                self.update_cells(updated)
                changed = True
            if added:
                self.place_rows([*self._row_order(), *added], added)
                changed = True
            if changed:
                self._apply_sort(selected)

    def rows_shown(self) -> list[ProcessStat]:
        """The processes as the rows show them, top to bottom, headings left out (grouped by node: a row under each
        node a process ran on, with that node's figures)."""
        if self.grouped:
            return [self._grouped[key] for key in self._order if key in self._grouped]
        return [self.stats[key] for key in self._row_order()]

    def _row_order(self) -> list[str]:
        """Keys of the rows shown that are still in :attr:`stats`, top to bottom."""
        located, stats = self._row_locations, self.stats
        shown = [(located.get(key) or 0, key.value or "") for key in self.rows if key.value in stats]
        return [value for _, value in sorted(shown)]

    def _apply_sort(self, selected: str | None) -> None:
        if self.grouped:
            self._sync_grouped(list(self.stats.values()), force=True)
            return

        def key(value: Any) -> Any:
            return value.sort_key

        self.sort(self.sort_column, key=key, reverse=self.sort_reverse)
        if selected is not None and selected in self.stats:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def _sync_grouped(self, stats: Sequence[ProcessStat], *, force: bool = False) -> None:
        """Rebuild as heading + processes per group when anything shown changed (or ``force``)."""
        index = self.sort_index
        label_of = GROUP_LABEL[self.group_by or GROUPINGS[0]]
        if self.group_by == "node":  # a row under each node it ran on, with that node's figures
            entries = [(f"{s.command}{NODE_ROW}{s.nodes[0]}" if s.nodes else s.command, s)
                       for stat in stats for s in stat.per_node()]  # fmt: skip
        else:
            entries = [(stat.command, stat) for stat in stats]
        groups: dict[str, list[tuple[str, ProcessStat]]] = {}
        for key, stat in entries:
            groups.setdefault(label_of(stat), []).append((key, stat))
        cells = {key: self.cells(stat) for key, stat in entries}
        rows: list[tuple[str, list[Cell]]] = []
        headed = []
        for label, members in groups.items():
            members.sort(key=lambda m: cells[m[0]][index].sort_key, reverse=self.sort_reverse)
            headed.append((label, self.group_cells(label, [s for _, s in members]), members))
        headed.sort(key=lambda g: g[1][index].sort_key, reverse=self.sort_reverse)
        for label, heading, members in headed:
            rows.append((GROUP_PREFIX + label, heading))
            rows.extend((key, cells[key]) for key, _ in members)
        order = [k for k, _ in rows]
        same = order == self._order and all(
            [c.plain for c in row] == [c.plain for c in self._cells.get(k, [])] for k, row in rows
        )
        self.stats = {s.command: s for s in stats}
        self._grouped = dict(entries)
        if same and not force:
            return
        selected = self._cursor_key()
        with self.app.batch_update():
            self.clear()
            for key, row in rows:
                self.add_row(*row, key=key)
            self._cells = dict(rows)
            self._order = order
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False)

    def _set_columns(self, *, workload: bool, nodes: bool) -> None:
        """Rebuild with the Workload and Node columns the data has (the rows come back with the sync that
        follows). Once shown, a column stays."""
        self.spec = tuple(c for c in COLUMNS if (c.key != WORKLOAD or workload) and (c.key != NODES or nodes))
        self.clear(columns=True)
        self.stats, self._cells, self._order = {}, {}, []
        self.on_mount()
        self.on_resize()

    def cycle_grouping(self) -> str | None:
        """Group by workload, then by node (when the processes carry nodes), then stop; returns the grouping."""
        offered = [g for g in GROUPINGS if g == "workload" or self.shows_nodes]
        at = offered.index(self.group_by) + 1 if self.group_by in offered else 0
        self.group_by = offered[at] if at < len(offered) else None
        stats = list(self.stats.values())
        self.clear()
        self.stats, self._cells, self._order = {}, {}, []
        self._title()
        self.sync(stats, self.focused_process, self.rates)
        return self.group_by

    def cycle_sort(self) -> str:
        """Sort by the next column shown (numbers largest first, names A-Z); returns the column label."""
        column = self.spec[next_shown_column(self, self.keys, self.sort_column)]
        self.sort_column, self.sort_reverse = column.key, column.numeric
        self._relabel()
        return column.label

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._relabel()

    def _relabel(self) -> None:
        self._title()
        for column in self.spec:
            self.columns[ColumnKey(column.key)].label = self._label(column.key, column.label)
        self._apply_sort(self.selected_process())
        self.refresh()
