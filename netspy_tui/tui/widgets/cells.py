"""Table cells from untrusted values: always plain ``Text`` (never markup), cleaned and truncated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

from netspy_tui.textsafe import clean


class Cell(Text):
    """A plain-text cell that also carries the value it sorts by (made by :func:`cell`).

    A slot, as Rich's Text has only slots: an attribute of its own gave every cell a dict, 7 more objects a new row
    of the connection table for the cyclic collector to walk (700 a second at 100 events/s), and ~1.5 MB a full
    window."""

    __slots__ = ("sort_key",)

    sort_key: Any


def cell(
    value: object, max_len: int = 40, *, style: Style | str = "", justify: str | None = None, sort_key: Any = None
) -> Cell:
    text = Cell(clean(value, max_len), style=style, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    text.sort_key = sort_key
    return text


#: The most cells a :class:`SharedCells` keeps (then it starts again): a window's commands, destinations, pids and
#: outcomes are far fewer than its rows.
SHARED_CELLS = 4096


class SharedCells:
    """:func:`cell`, but a cell of the same value, width, style, justification and sort key is made once and shared
    by every row that shows it (rows never change a cell: one is replaced by another). Every new row of the connection
    table made 7 cells that its process, destination, outcome and pid had made before, each a Text and two lists: at
    100 events/s ~2,000 objects a second that stayed with the window, for the cyclic collector's young passes to walk
    (~11 ms each on a 2 vCPU EPYC) and RSS to hold. Bounded: emptied when :data:`SHARED_CELLS` are kept."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: dict[tuple[Any, ...], Cell] = {}

    def __call__(
        self, value: object, max_len: int = 40, *, style: Style | str = "", justify: str | None = None,
        sort_key: Any = None,
    ) -> Cell:  # fmt: skip
        key = (type(value), value, max_len, style, justify, sort_key)  # (the type: 1, True and 1.0 are equal keys)
        cells = self._cells
        made = cells.get(key)
        if made is None:
            if len(cells) >= SHARED_CELLS:
                cells.clear()
            made = cells[key] = cell(value, max_len, style=style, justify=justify, sort_key=sort_key)
        return made

    def clear(self) -> None:
        self._cells.clear()


def outcome_classes() -> set[str]:
    """Component classes ``outcome--<name>`` that app.tcss colours, one per outcome."""
    from netspy_tui.models import OUTCOMES

    return {f"outcome--{o}" for o in OUTCOMES}


def window_label(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


#: the windows ``w`` steps through (seconds); past the last it starts again at the first
WINDOWS = (60, 300, 900, 3600)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column that fits the terminal: ``least`` to ``most`` cells wide (content, without padding).

    Columns are listed by priority: the first ones get their ``least`` while they fit whole, spare width goes to
    the growing ones (``most > least``), and a column that does not fit whole is not shown (nor any after it).
    """

    key: str
    label: str
    least: int
    most: int
    want: int = 0
    """Cells it gets before spare width is shared (its usual content whole: an IPv4 address and port), when there
    are that many to spare; 0: none before the others."""


def fit_widths(columns: Sequence[Column], available: int, padding: int = 1) -> list[int]:
    """Content widths for ``columns`` in ``available`` cells, shown whole or not at all.

    In their order (their priority) each column gets its least while it fits in what is left; the first one
    that does not, and every one after it, gets 0 (drawn as blank padding past the columns shown, never as
    the first digits of a right-aligned number or a stub of a label). The first column is always shown. The
    spare width goes first to the columns that ``want`` more (in their order), then is shared out one cell at a
    time among the shown columns that can grow.
    """
    widths: list[int] = []
    room = available
    for c in columns:
        if widths and (widths[-1] == 0 or c.least + 2 * padding > room):
            widths.append(0)
            continue
        widths.append(c.least)
        room -= c.least + 2 * padding
    spare = room
    for i, c in enumerate(columns):  # (what each wants first, in their order: a destination whole before a longer
        if widths[i] and c.want > widths[i] and spare > 0:  # process name; at 80 columns "10.0.2.15:80…" was cut)
            grant = min(spare, min(c.want, c.most) - widths[i])
            widths[i] += grant
            spare -= grant
    growing = [i for i, c in enumerate(columns) if widths[i] and c.most > widths[i]]
    while spare > 0 and growing:
        for i in list(growing):
            if spare <= 0:
                break
            widths[i] += 1
            spare -= 1
            if widths[i] >= columns[i].most:
                growing.remove(i)
    return widths


def table_width(table: DataTable[Any]) -> int:
    """Cells a table's columns can use without scrolling sideways (room for a vertical scrollbar kept:
    ``size`` includes the scrollbar's gutter whether it is shown or not)."""
    return max(0, table.size.width - table.styles.scrollbar_size_vertical)


def set_column_widths(table: DataTable[Any], widths: dict[str, int]) -> bool:
    """Resize the columns of ``table`` to ``widths`` (by column key); True when anything changed.

    Textual 8 has no public call for this: the column's ``width`` is public, but the table only re-measures
    itself when told through ``_require_update_dimensions`` and ``_clear_caches``. This is the one place that
    does so (tests/tui/test_layout.py fails if it stops working).
    """
    changed = False
    for key, width in widths.items():
        column = table.columns[ColumnKey(key)]
        if column.width != width or column.auto_width:
            column.width, column.auto_width = width, False
            changed = True
    if changed:
        table._require_update_dimensions = True
        table._clear_caches()
        table.refresh()
    return changed


def next_shown_column(table: DataTable[Any], keys: Sequence[str], current: str) -> int:
    """The index in ``keys`` of the first column after ``current`` (wrapping) that ``table`` shows: a column
    :func:`fit_widths` gave no room (width 0) is passed over, so ``s`` never sorts by a column off screen. The
    current column's own index when no other is shown."""
    at = keys.index(current)
    for step in range(1, len(keys) + 1):
        i = (at + step) % len(keys)
        column = table.columns.get(ColumnKey(keys[i]))
        if column is None or column.width > 0:
            return i
    return at


def cursor_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor; None for an empty table (or a cursor past the rows)."""
    if table.row_count == 0:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except RowDoesNotExist:
        return None
