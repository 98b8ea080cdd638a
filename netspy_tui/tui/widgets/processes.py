"""Per-process summary table: keyed by process name, diffed with ``update_cell``, sortable by any column."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

from netspy_tui.models import ProcessStat
from netspy_tui.tui.widgets.cells import Cell, Column, cell, fit_widths, set_column_widths, table_width, window_label


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
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
_ATTEMPTS = COLUMN_KEYS.index("attempts")


def _pids_text(pids: Sequence[int], width: int = 13) -> str:
    """As many pids as fit in ``width`` cells, then ``+N`` for the rest."""
    for shown in range(len(pids), 0, -1):
        text = ",".join(str(p) for p in pids[:shown]) + (f"+{len(pids) - shown}" if shown < len(pids) else "")
        if len(text) <= width:
            return text
    return f"+{len(pids)}" if pids else ""


class ProcessTable(DataTable[Cell]):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"processes--focused", "processes--failing"}

    window: reactive[int] = reactive(60, init=False)
    """The time window in seconds (bound to the screen's), shown in the title."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.stats: dict[str, ProcessStat] = {}
        self.sort_index = _ATTEMPTS
        self.sort_reverse = True
        self.focused_process: str | None = None
        self._cells: dict[str, list[Cell]] = {}
        self.pid_width = 13

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(self._label(column.key, column.label), key=column.key, width=column.least)
        self._title()

    def watch_window(self) -> None:
        self._title()

    def _title(self) -> None:
        self.border_title = f"Processes · {window_label(self.window)}"
        self.border_subtitle = f"sort {COLUMNS[self.sort_index].label} {'▼' if self.sort_reverse else '▲'} (s / S)"

    def on_resize(self) -> None:
        widths = dict(zip(COLUMN_KEYS, fit_widths(COLUMNS, table_width(self), self.cell_padding), strict=True))
        set_column_widths(self, widths)
        if widths["pids"] != self.pid_width:
            self.pid_width = widths["pids"]
            self.sync(list(self.stats.values()), self.focused_process)

    def _label(self, key: str, label: str) -> Text:
        if COLUMN_KEYS[self.sort_index] != key:
            return Text(label + "  ")
        return Text(label + (" ▼" if self.sort_reverse else " ▲"), style="bold")

    @property
    def sort_column(self) -> str:
        return COLUMN_KEYS[self.sort_index]

    def cells(self, stat: ProcessStat) -> list[Cell]:
        focused = self.get_component_rich_style("processes--focused", partial=True)
        failing = self.get_component_rich_style("processes--failing", partial=True)
        is_focused = stat.command == self.focused_process
        return [
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
        ]

    def selected_process(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    def sync(self, stats: Sequence[ProcessStat], focused: str | None) -> None:
        """Show exactly ``stats``: remove gone rows, update changed cells, add new rows, re-sort on change."""
        self.focused_process = focused
        wanted = {s.command: s for s in stats}
        selected = self.selected_process()
        changed = False
        with self.app.batch_update():
            for key in [k for k in self.stats if k not in wanted]:
                self.remove_row(key)
                del self.stats[key]
                del self._cells[key]
                changed = True
            for key, stat in wanted.items():
                new_cells = self.cells(stat)
                old_cells = self._cells.get(key)
                if old_cells is None:
                    self.add_row(*new_cells, key=key)
                    changed = True
                else:
                    for column, new, old in zip(COLUMN_KEYS, new_cells, old_cells, strict=True):
                        if new.plain != old.plain or new.style != old.style:
                            self.update_cell(key, column, new)
                            changed = True
                self._cells[key] = new_cells
                self.stats[key] = stat
            if changed:
                self._apply_sort(selected)

    def _apply_sort(self, selected: str | None) -> None:
        def key(value: Any) -> Any:
            return value.sort_key

        self.sort(self.sort_column, key=key, reverse=self.sort_reverse)
        if selected is not None and selected in self.stats:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def cycle_sort(self) -> str:
        """Sort by the next column (numbers largest first, names A-Z); returns the column label."""
        self.sort_index = (self.sort_index + 1) % len(COLUMNS)
        self.sort_reverse = COLUMNS[self.sort_index].numeric
        self._relabel()
        return COLUMNS[self.sort_index].label

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._relabel()

    def _relabel(self) -> None:
        self._title()
        for column in COLUMNS:
            self.columns[ColumnKey(column.key)].label = self._label(column.key, column.label)
        self._apply_sort(self.selected_process())
        self.refresh()
