"""Table mechanics that cost what changed, not the table's size.

Textual 8's ``DataTable`` re-indexes every row on each ``remove_row`` (a new key-to-index map per call) and,
on the next idle, measures every cell of every added row to widen auto-width columns. Our tables give each
column a fixed width (:func:`netspy_tui.tui.widgets.cells.set_column_widths`) and every row one line, so
that measuring is wasted, and a refresh that drops the oldest 100 of 2,000 rows rebuilt the key map 100
times. :class:`KeyedTable` keeps the ``DataTable`` API (cursor, keys, bindings, sort) and adds
:meth:`KeyedTable.place_rows`: show these keys in this order, in one pass, with cells made only for the
rows that are new. The private parts touched are the ones ``remove_row`` and ``add_row`` themselves touch;
tests/tui/test_table_mechanics.py fails if Textual changes them.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text, TextType
from textual import events
from textual._two_way_dict import TwoWayDict
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.geometry import Region, Spacing
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, Row, RowKey

from netspy_tui.tui.widgets.cells import Cell

_JOIN = Text("\n")
T = TypeVar("T")


class KeyedTable(DataTable[Cell]):
    """A ``DataTable`` of fixed-width columns and one-line rows, updated by key.

    Drawing: ``DataTable`` works out the same styles for every line it draws (the widget's style, the header's,
    the row's stripe, each a walk up the DOM), so a table of 30 visible lines walked it ~90 times a frame. Here
    they are worked out once a frame (:meth:`_memo`, emptied when a frame starts and when the styles change),
    with the same result (tests/tui/test_table_mechanics.py compares the lines with ``DataTable``'s)."""

    _frame_memo: dict[Any, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._kept_cells: LRUCache[Any, tuple[Text, list[list[Segment]]]] = LRUCache(10_000)
        """Drawn cells by place, width and style, with the Cell drawn (see :meth:`_render_cell`)."""
        self._kept_rows: LRUCache[Any, tuple[list[Any], list[int], list[list[Segment]]]] = LRUCache(2_000)
        """Drawn data rows by key, place and style, with the cells and widths drawn (see :meth:`_data_row`)."""
        self._cell_style_sums: dict[tuple[Any, ...], tuple[Style, Style, Style]] = {}
        """A data cell's styles by what it is drawn with (see :meth:`_drawing_styles`)."""
        self._row_styles: dict[tuple[Any, ...], list[tuple[Style, Style, Style]]] = {}
        """A data row's cells' styles by its widths and what it is drawn with (see :meth:`_data_row`)."""
        super().__init__(*args, **kwargs)

    def action_select_cursor(self) -> None:
        """enter on a row: the screen's ``row_chosen`` (the dashboard focuses the row's process), called now.
        DataTable's posts RowSelected, which bubbles through the tab containers to the screen, one message loop
        each: ~7 ms of the focus key was that walk. A click on a row still posts RowSelected (the dashboard answers
        it the same way); on a screen without ``row_chosen`` enter posts it as before."""
        chosen = getattr(self.screen, "row_chosen", None)
        if chosen is None or not self.show_cursor or self.cursor_type != "row":
            super().action_select_cursor()
            return
        self._set_hover_cursor(False)
        chosen()

    def _place_at(self, event: events.MouseEvent) -> Style:
        """The meta DataTable gives the segments of the cell under ``event`` (``row``, ``column``, ``out_of_bounds``
        past the last column; none off the rows), which its click and hover handlers read: worked out from where the
        mouse is, since this table's segments carry no place (a row drawn once is shown wherever it moves)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return Style.null()
        x, y = offset
        header = self.header_height if self.show_header else 0
        if y < header:
            row = -1
        else:
            row = y - header
            if row >= self.fixed_rows:
                row += round(self.scroll_y)
            if not 0 <= row < self.row_count:
                return Style.null()
        widths = self._column_widths()
        edge = self._row_label_column_width
        if x < edge:
            return _place_meta(row, -1)
        if x >= edge + sum(widths[: self.fixed_columns]):
            x += round(self.scroll_x)
        for column, width in enumerate(widths):
            edge += width
            if x < edge:  # (DataTable marks the cells of fixed columns "fixed" too)
                return _place_meta(row, column, fixed=row >= 0 and column < self.fixed_columns)
        return _place_meta(row, 0, True)

    # Textual calls the handler of each class an event's widget descends from, this one's first: DataTable's, next,
    # reads the place put in the event here.
    def _on_mouse_move(self, event: events.MouseMove) -> None:
        event.style = self._place_at(event)

    async def _on_click(self, event: events.Click) -> None:
        event.style = self._place_at(event)

    _updates = 0

    @property
    def _update_count(self) -> int:
        """DataTable's count of updates, which its caches of drawn lines, rows, cells and row renderables key their
        entries by: an entry of an older count is never read again. Each new count empties those four caches.
        A live table's count moves at every refresh (new rows), and its dead entries stayed until a cache's LRU
        bound pushed them out (1,000 lines, 1,000 rows, 1,000 row renderables, 10,000 cells: each kept line a
        strip with its seven caches), held for nothing and walked by the cyclic collector: ~19,000 fewer objects in
        its middle generation after 20 s at 100 events/s (121,700 -> 103,000; strips 1,357 -> 797)."""
        return self._updates

    @_update_count.setter
    def _update_count(self, value: int) -> None:
        if value != self._updates:
            self._updates = value
            self._line_cache.clear()
            self._row_render_cache.clear()
            self._row_renderable_cache.clear()
            self._cell_render_cache.clear()

    def _memo(self, key: Any, make: Callable[[], T]) -> T:
        memo = self._frame_memo
        if memo is None:
            memo = self._frame_memo = {}
        state = (key, self._pseudo_class_state)
        if state in memo:
            return memo[state]
        value = memo[state] = make()
        return value

    _frame_width: int | None = None
    """The table's width while it draws a frame (:meth:`render_lines`): Widget.size works it out from the region and
    the gutter at each call, and a frame drew every line with two of them (~15 % of drawing the new lines)."""

    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame_memo = None  # a new frame: the styles worked out again (once)
        self._frame_width = self.size.width
        try:
            return super().render_lines(crop)
        finally:
            self._frame_width = None

    def _width(self) -> int:
        width = self._frame_width
        return self.size.width if width is None else width

    _styles_seen = 0
    """Style updates so far: the kept cells under the cursor or the mouse are drawn with the component styles of
    the update they were drawn after (see :meth:`_render_cell`)."""

    def notify_style_update(self) -> None:
        # The focus comes and goes with every tab switch (d), and each changes the table's styles: every visible
        # cell was drawn again (~15 ms a table). A kept cell is keyed by what it was drawn with (the row's style,
        # which holds the widget's colours and the :focus tint, the pseudo-classes, the cursor and hover flags),
        # so the cells of both states stay and neither is drawn again; only the cursor and hover cells also take
        # component styles (datatable--cursor, a theme's), and they are keyed by the style update they follow.
        self._frame_memo = None
        self._styles_seen += 1
        super().notify_style_update()

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        # Widget's, making a SteadyScrollBar
        bar = self._vertical_scrollbar
        if bar is None:
            bar = self._vertical_scrollbar = SteadyScrollBar(
                vertical=True, name="vertical", thickness=self.scrollbar_size_vertical
            )
            bar.display = False
            self.app._start_widget(self, bar)
        return bar

    _sizing = False
    """True while the rows' height is worked out (see :meth:`refresh`)."""

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Self:
        self._frame_memo = None  # (what the table shows changed: a reactive, a row, the cursor)
        if layout and self._sizing:
            # More or fewer rows (the virtual size): Textual lays the whole screen out for it, though the table's
            # own size is set by the screen's layout, not by its rows. Only its scrollbars depend on them: updated
            # here, and a scrollbar that appears or goes asks for the layout itself (its reactive), as it must.
            self._sizing = False
            self._scroll_update(self.virtual_size)
            layout = False
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def _set_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        self._sizing = True
        try:
            super()._update_dimensions(new_rows)
        finally:
            self._sizing = False

    def _flags(self) -> tuple[int, int, bool, bool, bool, bool, int, Console]:
        """The settings each cell's drawing reads (reactives: a lookup each), once a frame."""
        return self._memo(
            "flags",
            lambda: (
                self.fixed_rows,
                self.fixed_columns,
                self.show_cursor,
                self._show_hover_cursor,
                self.cursor_foreground_priority == "css",
                self.cursor_background_priority == "css",
                self.cell_padding,
                self.app.console,
            ),
        )

    def render_line(self, y: int) -> Strip:
        if self.fixed_rows:
            return super().render_line(y)
        width = self._width()
        scroll_x, scroll_y = self.scroll_offset
        if y >= (self.header_height if self.show_header else 0):
            y += scroll_y
        return self._render_line(y, scroll_x, scroll_x + width, self._memo("base", lambda: self.rich_style))

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        # DataTable's, for a line that starts at the left edge and whose row fits the width (ours unless scrolled
        # sideways): the row's segments are the line, as wide as the table, so they are not cropped, measured and
        # made into a strip twice (every line of every refresh at 100 events/s is a new row).
        width = self._width()
        widths = self._column_widths()
        if x1 or x2 != width or self.fixed_columns or self._row_label_column_width + sum(widths) > width:
            return super()._render_line(y, x1, x2, base_style)
        try:
            row_key, y_offset_in_row = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        cursor, hover = self.cursor_coordinate, self.hover_coordinate
        cache_key = (y, x1, x2, width, cursor, hover, base_style, self.cursor_type, self._show_hover_cursor,
                     self._update_count, self._pseudo_class_state)  # fmt: skip
        cache = self._line_cache
        if cache_key in cache:
            return cache[cache_key]
        fixed, scrollable = self._render_line_in_row(row_key, y_offset_in_row, base_style, cursor, hover)
        segments = [segment for part in (*fixed, *scrollable) for segment in part]
        strip = cache[cache_key] = Strip(Segment.simplify(segments), width)
        return strip

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        kind = -1 if row_index == -1 else -2 if row_index < self.fixed_rows else row_index % 2
        make = super()._get_row_style
        return self._memo(("row", kind, base_style), lambda: make(row_index, base_style))

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[list[list[Segment]], list[list[Segment]]]:
        # DataTable's, for a table without row labels or fixed columns and with a row cursor (ours), with the
        # styles from the frame's memo; anything else goes the usual way.
        cursor_type = self._memo("cursor_type", lambda: self.cursor_type)
        flags = self._flags()
        if cursor_type != "row" or flags[1] or (self._labelled_row_exists and self.show_row_labels):
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        cache_key = (
            row_key,
            line_no,
            base_style,
            cursor_location,
            hover_location,
            cursor_type,
            flags[2],
            flags[3],
            self._update_count,
            self._pseudo_class_state,
        )
        cache = self._row_render_cache
        if cache_key in cache:
            return cache[cache_key]
        locations = self._row_locations
        found = locations.get(row_key) if row_key in locations else None
        row_index = -1 if found is None else found
        row_style = self._get_row_style(row_index, base_style)
        should_highlight = self._should_highlight
        widths = self._column_widths()
        table_width = self._row_label_column_width + sum(widths)
        data_row = None
        if row_index >= 0 and line_no == 0:
            data_row = self._data_row(
                row_key, row_index, row_style, widths, cursor_location.row == row_index, hover_location.row == row_index
            )
        if data_row is not None:
            scrollable_row = data_row.copy()
        else:
            render_cell = self._render_cell
            scrollable_row = []
            for column_index, width in enumerate(widths):
                cell_location = Coordinate(row_index, column_index)
                scrollable_row.append(
                    render_cell(
                        row_index,
                        column_index,
                        row_style,
                        width,
                        cursor=should_highlight(cursor_location, cell_location, cursor_type),
                        hover=should_highlight(hover_location, cell_location, cursor_type),
                    )[line_no]
                )
        remaining_space = max(0, self._width() - table_width)
        hover = should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type)
        cursor = row_index == cursor_location.row
        show_cursor, show_hover = self._flags()[2:4]

        def extend() -> Style:
            style, _ = self._get_styles_to_render_cell(
                row_index == -1, False, False, hover, cursor, show_cursor, show_hover, False, False
            )
            return row_style + style

        extend_style = self._memo(("extend", row_style, row_index == -1, hover, cursor), extend)
        scrollable_row.append([Segment(" " * remaining_space, extend_style)])
        row_pair: tuple[list[list[Segment]], list[list[Segment]]] = ([], scrollable_row)
        cache[cache_key] = row_pair
        return row_pair

    def _data_row(
        self, row_key: RowKey, row_index: int, row_style: Style, widths: list[int], cursor: bool, hover: bool
    ) -> list[list[Segment]] | None:
        """A data row's cells (one line of segments each, as :meth:`_render_cell` draws them), kept by row: the
        row's key, cells (the objects), widths and what it is drawn with (its stripe, the cursor, the hover), not by
        its place: a live table's rows move up at every refresh and a focus or a filter moves them anywhere, and
        each was drawn again at its new place. (A row's segments carry no place: a click or the mouse finds its cell
        from where it is, :meth:`_place_at`.) A new row's cells are drawn with the styles the row's stripe and
        cursor give them (:meth:`_drawing_styles`), without a look-up of each cell's value and kept cell. None when the
        row is not a one-line row of this table's columns (drawn cell by cell)."""
        row = self.rows.get(row_key)
        values = self._data.get(row_key)
        if row is None or values is None or row.height != 1:
            return None
        columns = self._memo("column_keys", lambda: [column.key for column in self.ordered_columns])
        cells = [values.get(key) for key in columns]
        flags = self._flags()
        show_cursor, show_hover = flags[2], flags[3]
        fixed_row = row_index < flags[0]
        key = (row_key, fixed_row, row_style, cursor, hover, self._pseudo_class_state, flags[:7],
               self._styles_seen if show_cursor and (cursor or (hover and show_hover)) else 0)  # fmt: skip
        kept = self._kept_rows.get(key)
        if kept is not None and kept[1] == widths and all(map(operator.is_, kept[0], cells)):
            return kept[2]
        console, padding = flags[7], flags[6]
        # the cells' styles in such a row, looked up once a row (a look-up a cell was ~40 % of drawing a new row)
        drawn_with = (*key[1:], *widths)
        row_styles = self._row_styles.get(drawn_with)
        if row_styles is None:
            if len(self._row_styles) >= _ROW_STYLES_KEPT:
                self._row_styles.clear()
            fixed_columns = flags[1]
            row_styles = self._row_styles[drawn_with] = [
                self._drawing_styles(fixed_row or column_index < fixed_columns, row_style, cursor, hover)
                for column_index in range(len(widths))
            ]
        drawn: list[list[Segment]] = []
        for column_index, (value, width) in enumerate(zip(cells, widths, strict=True)):
            line = None
            if isinstance(value, Text):
                line = cell_line(console, value, width, padding, *row_styles[column_index])
            if line is None:  # (not a one-line Text cell: drawn as DataTable draws it)
                line = self._render_cell(row_index, column_index, row_style, width, cursor=cursor, hover=hover)[0]
            drawn.append(line)
        self._kept_rows.set(key, (cells, widths, drawn))
        return drawn

    def _drawing_styles(self, fixed: bool, base_style: Style, cursor: bool, hover: bool) -> tuple[Style, Style, Style]:
        """The styles a data cell is drawn with, whatever it holds and wherever it is: before, after and around its
        text (see :func:`cell_line`). ``fixed``: in a fixed row or column. Kept by what they are made from: the sums
        cost more than the rest of a cell's drawing."""
        flags = self._flags()
        show_cursor, show_hover, css_fg, css_bg = flags[2:6]
        made_from = (fixed, base_style, cursor, hover, self._pseudo_class_state, flags[:7],
                     self._styles_seen if show_cursor and (cursor or (hover and show_hover)) else 0)  # fmt: skip
        styles = self._cell_style_sums.get(made_from)
        if styles is None:
            component_style, post_style = self._get_styles_to_render_cell(
                False, False, fixed, hover, cursor, show_cursor, show_hover, css_fg, css_bg
            )
            pre = base_style + component_style
            if len(self._cell_style_sums) >= _CELL_STYLES_KEPT:
                self._cell_style_sums.clear()
            styles = self._cell_style_sums[made_from] = (pre, post_style, pre + post_style)
        return styles

    def _column_widths(self) -> list[int]:
        """Every column's rendered width, in order (kept until the next update)."""
        return self._memo("widths", lambda: [column.get_render_width(self) for column in self.ordered_columns])

    # --- one-line rows: a row's place is its index -------------------------------------------------------------
    # DataTable keeps rows of any height, so it finds a line's row in a list of (row key, line) for every line of
    # the table, and a row's place by adding up the heights of the rows above it (a list of every row in order):
    # both built again after each update (~10,000 tuples and a list of 10,000 rows a refresh of a full window: a
    # few ms, and enough new objects to set off a dozen collections of the cyclic collector). Every row here is
    # one line (add_row refuses others), so line y of the rows is row y.

    def add_row(
        self,
        *cells: Cell,
        height: int | None = 1,
        key: str | None = None,
        label: TextType | None = None,
    ) -> RowKey:
        if height != 1:
            raise ValueError("a KeyedTable's rows are one line high")
        return super().add_row(*cells, height=height, key=key, label=label)

    @property
    def _y_offsets(self) -> _RowLines:  # type: ignore[override]
        return _RowLines(self)

    @property
    def _total_row_height(self) -> int:
        return len(self.rows)

    def _get_row_region(self, row_index: int) -> Region:
        if not self.is_valid_row_index(row_index):
            return Region(0, 0, 0, 0)
        row_width = sum(self._column_widths()) + self._row_label_column_width
        y = row_index + (self.header_height if self.show_header else 0)
        return Region(0, y, max(self.size.width, row_width), 1)

    def _get_fixed_offset(self) -> Spacing:
        # DataTable adds up the heights of the fixed rows from its list of every row in order (ordered_rows), built
        # again after each update: ~2,000 rows at every cursor move that follows the newest row (4 a refresh)
        top = (self.header_height if self.show_header else 0) + min(self.fixed_rows, len(self.rows))
        fixed = self.ordered_columns[: self.fixed_columns]
        return Spacing(top, 0, 0, sum(column.get_render_width(self) for column in fixed) + self._row_label_column_width)

    def _get_cell_region(self, coordinate: Coordinate) -> Region:
        if not self.is_valid_coordinate(coordinate):
            return Region(0, 0, 0, 0)
        row_index, column_index = coordinate
        widths = self._column_widths()
        x = sum(widths[:column_index]) + self._row_label_column_width
        y = row_index + (self.header_height if self.show_header else 0)
        return Region(x, y, widths[column_index], 1)

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # New rows only widen auto-width columns or size auto-height rows: with neither, skip the measuring
        # (the virtual size, computed below it, is all that is left to do).
        if not any(column.auto_width for column in self.columns.values()):
            rows = self.rows
            new_rows = [k for k in new_rows if (row := rows.get(k)) is not None and (row.auto_height or row.label)]
        self._set_dimensions(new_rows)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        # A one-line data cell holding Text: the same segments as DataTable's own render (cell_line), about
        # five times cheaper; a header, a label, a taller row or anything else goes the usual way.
        if row_index == -1 and column_index >= 0:
            return self._header_cell(column_index, base_style, width, cursor, hover)
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row = self.rows.get(row_key)
        value = self._data[row_key].get(column_key) if row is not None and row.height == 1 else None
        if not isinstance(value, Text):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        flags = self._flags()
        show_cursor, show_hover, padding, console = flags[2], flags[3], flags[6], flags[7]
        # Kept across table updates (DataTable keys its cache by the update count: every row added, removed or
        # sorted, every cell updated, drew every visible cell again): a cell is drawn again only when its value
        # (the Cell object: update_cell puts in a new one), its width or what it is drawn with changed, not when
        # it moved (its segments carry no place: see :meth:`_place_at`). Emptied with DataTable's caches.
        fixed = row_index < flags[0] or column_index < flags[1]
        seen = self._styles_seen if show_cursor and (cursor or (hover and show_hover)) else 0
        cache_key = (row_key, column_key, fixed, width, base_style, cursor, hover, self._pseudo_class_state,
                     flags[:7], seen)  # fmt: skip
        kept = self._kept_cells.get(cache_key)
        if kept is not None and kept[0] is value:
            return kept[1]
        styles = self._drawing_styles(fixed, base_style, cursor, hover)
        line = cell_line(console, value, width, padding, *styles)
        if line is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        lines = [line]
        self._kept_cells.set(cache_key, (value, lines))
        return lines

    def _header_cell(
        self, column_index: int, base_style: Style, width: int, cursor: bool, hover: bool
    ) -> list[list[Segment]]:
        """A header cell as DataTable draws it, kept across table updates: DataTable keys its cache by the update
        count, so every refresh laid each column's label out again through Rich (Padding, Styled, render_lines).
        Drawn again when the label (the object), the place, the width or what it is drawn with changed; the
        component styles (datatable--header) count as changed at every style update."""
        column_key = self._column_locations.get_key(column_index)
        column = self.columns.get(column_key) if column_key is not None else None
        if column is None:
            return super()._render_cell(-1, column_index, base_style, width, cursor, hover)
        cache_key = ("header", column_key, column_index, width, base_style, cursor, hover, self.header_height,
                     self._pseudo_class_state, self._flags()[:7], self._styles_seen)  # fmt: skip
        kept = self._kept_cells.get(cache_key)
        if kept is not None and kept[0] is column.label:
            return kept[1]
        lines = super()._render_cell(-1, column_index, base_style, width, cursor, hover)
        self._kept_cells.set(cache_key, (column.label, lines))
        return lines

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._kept_cells.clear()
        self._kept_rows.clear()
        self._cell_style_sums.clear()
        self._row_styles.clear()

    def update_cells(self, changes: Iterable[tuple[str, str, Cell]]) -> None:
        """``update_cell(row, column, value)`` for each change, with one refresh of the table (update_cell refreshes
        it for each cell: the ~80 cells of the process table that change at a refresh at 100 events/s)."""
        data, columns = self._data, self.columns
        changed = False
        for row, column, value in changes:
            cells = data.get(row)  # type: ignore[call-overload]  # (StringKey matches its str)
            key = ColumnKey(column)
            if cells is None or key not in columns:
                raise CellDoesNotExist(f"No cell exists for row_key={row!r}, column_key={column!r}.")
            cells[key] = value
            changed = True
        if changed:
            self._update_count += 1
            self.refresh()

    def _slid(self, order: Sequence[str]) -> tuple[_RowPlaces, list[str]] | None:
        """When ``order`` is the rows placed last less some of the first and with new rows after them, the row places
        and the keys of the rows that left; else None (any other change, or rows added, removed or sorted since by
        DataTable's own methods)."""
        placed, places = self._placed, self._row_locations
        if placed is None or not isinstance(places, _RowPlaces) or not (len(placed) == len(places) == len(self.rows)):
            return None
        if not order:
            return places, placed
        first = places.get(order[0])  # type: ignore[arg-type]  # (StringKey matches its str)
        if first is None:
            first = len(placed)  # (every row left, or the first in order is new)
        kept = len(placed) - first
        if list(order[:kept]) != placed[first:]:
            return None
        rows = self.rows
        if any(value in rows for value in order[kept:]):
            return None  # (a row shown already moved to the end)
        return places, placed[:first]

    _placed: list[str] | None = None
    """The keys :meth:`place_rows` placed last, in order, while :attr:`_row_locations` is the :class:`_RowPlaces` it
    made then (see :meth:`_slid`)."""

    def place_rows(self, order: Sequence[str], new: Mapping[str, Sequence[Cell]]) -> None:
        """Show exactly the rows ``order`` (keys, top to bottom): rows shown already keep their cells, ``new``
        gives the cells of the others. One pass over the keys, whatever was removed or where rows were added;
        when the oldest rows left from the top and new ones came at the end (a live table), a pass over those
        rows only."""
        rows, data = self.rows, self._data
        columns = [column.key for column in self.ordered_columns]
        was_empty = not rows
        slid = self._slid(order)
        if slid is not None:
            places, gone = slid
            for value in gone:
                del rows[value]  # type: ignore[arg-type]  # (StringKey matches its str)
                del data[value]  # type: ignore[arg-type]
            places.drop_first(len(gone))
            for value in order[len(places) :]:
                key = RowKey(value)
                data[key] = dict(zip(columns, new[value], strict=True))
                rows[key] = Row(key, 1)
                self._new_rows.add(key)
                places.append(key)
        else:
            keep = set(order)
            gone = [key.value or "" for key in rows if key.value not in keep]
            for value in gone:
                del rows[value]  # type: ignore[arg-type]
                del data[value]  # type: ignore[arg-type]
            located: list[RowKey] = []
            for value in order:
                row = rows.get(value)  # type: ignore[call-overload]  # (StringKey matches its str)
                if row is None:
                    key = RowKey(value)
                    data[key] = dict(zip(columns, new[value], strict=True))
                    row = rows[key] = Row(key, 1)
                    self._new_rows.add(key)
                located.append(row.key)
            self._row_locations = places = _RowPlaces(located)
        self._placed = list(order)
        if gone and self._updated_cells:
            self._updated_cells = {c for c in self._updated_cells if c.row_key in rows}
        self._update_count += 1
        if any(column.auto_width for column in self.columns.values()):
            self._require_update_dimensions = True  # the columns are measured on idle, as add_row leaves them
        else:
            # nothing to measure: the new height now, so a cursor moved next scrolls at once (not after a paint,
            # which would paint the table twice)
            self._new_rows.clear()
            self._require_update_dimensions = False
            self._set_dimensions(())
        self.cursor_coordinate = self.cursor_coordinate  # (clamped to the rows left)
        self.hover_coordinate = self.hover_coordinate
        if was_empty and rows and self.columns and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()  # as add_row does for the first row
        self.check_idle()
        self.refresh()


class SteadyScrollBar(ScrollBar):
    """Textual's scrollbar, not drawn again when it would draw what it shows. A live table's refresh sets its
    scrollbar's sizes and position (more rows, the cursor following the newest), and each frame drew the whole bar
    again (~0.6 ms for 27 lines: a Rich render, then every line through the widget's styles), though the thumb of a
    table that follows its newest row among hundreds is the same cell at every refresh. The lines drawn last are
    given again when the bar's segments (Textual's renderer, ~30 us), its size, the styles it is drawn with and the
    app's line filters are those they were drawn from: a move of the thumb, a hover, a grab, another theme draw it."""

    _kept: tuple[object, Region, list[Strip]] | None = None
    """What the lines were drawn from (see :meth:`_picture`), the region drawn, and the lines."""

    def _picture(self) -> tuple[object, ...]:
        width, height = self.size
        console = self.app.console
        segments = list(console.render(self.render(), console.options.update_dimensions(width, height)))
        return (self.size, segments, self.visual_style, self.background_colors, self.opacity,
                tuple(self.get_line_filters()))  # fmt: skip

    def render_lines(self, crop: Region) -> list[Strip]:
        picture = self._picture()
        kept = self._kept
        if kept is not None and kept[1] == crop and kept[0] == picture:
            return kept[2]
        strips = super().render_lines(crop)
        self._kept = (picture, crop, strips)
        return strips


#: cell styles a table keeps (see :meth:`KeyedTable._drawing_styles`: each stripe, cursor and hover state, and more)
_CELL_STYLES_KEPT = 1024
#: rows' cell styles a table keeps (see :meth:`KeyedTable._data_row`)
_ROW_STYLES_KEPT = 256
_METAS: dict[tuple[int, int, bool, bool], Style] = {}
#: places whose meta style is kept (the places the mouse went over, many times over)
_METAS_KEPT = 8192


def _place_meta(row: int, column: int, out_of_bounds: bool = False, fixed: bool = False) -> Style:
    """``Style.from_meta`` of a cell's place (what a click or the mouse reads), as DataTable puts it in the cell's
    segments, made once per place (each is a new Style, its meta marshalled: ~3.5 us)."""
    key = (row, column, out_of_bounds, fixed)
    style = _METAS.get(key)
    if style is None:
        if len(_METAS) >= _METAS_KEPT:
            _METAS.clear()
        meta: dict[str, object] = {"fixed": True} if fixed else {}
        meta |= {"row": row, "column": column}
        if out_of_bounds:
            meta["out_of_bounds"] = True
        style = _METAS[key] = Style.from_meta(meta)
    return style


_SUMS: dict[tuple[Style, Style, Style], Style] = {}
#: sums kept by :func:`_styled` (a styled column's cells at the visible places, many times over)
_SUMS_KEPT = 4096


def _styled(pre: Style, style: Style, post: Style) -> Style:
    """``pre + style + post``, made once: Rich keeps its sums in one cache of 1,024 for every style added anywhere,
    which a frame's cells overrun, so each was made anew."""
    key = (pre, style, post)
    found = _SUMS.get(key)
    if found is None:
        if len(_SUMS) >= _SUMS_KEPT:
            _SUMS.clear()
        found = pre + style + post
        if not found.link:  # (a link's sum is a new copy each time, as Rich makes it)
            _SUMS[key] = found
    return found


class _RowPlaces(TwoWayDict[RowKey, int]):
    """``DataTable._row_locations`` (row key <-> index) of rows that leave from the top and come at the bottom: each
    row keeps the number it came with, its index is that number less the rows that left, so a live table's update
    touches only the rows that left and came, not the two maps of every row."""

    def __init__(self, keys: Iterable[RowKey]) -> None:
        super().__init__(dict(zip(keys, itertools.count())))
        self._left = 0

    def __setitem__(self, key: RowKey, value: int) -> None:
        super().__setitem__(key, value + self._left)

    def get(self, key: RowKey) -> int | None:
        number = self._forward.get(key)
        return None if number is None else number - self._left

    def get_key(self, value: int) -> RowKey | None:
        return self._reverse.get(value + self._left)

    def contains_value(self, value: int) -> bool:
        return value + self._left in self._reverse

    def drop_first(self, n: int) -> None:
        """The first ``n`` rows left (their keys already gone from the table)."""
        forward, reverse = self._forward, self._reverse
        for number in range(self._left, self._left + n):
            del forward[reverse.pop(number)]
        self._left += n

    def append(self, key: RowKey) -> None:
        number = self._left + len(self._forward)
        self._forward[key] = number
        self._reverse[number] = key


class _RowLines:
    """``DataTable._y_offsets`` of a table of one-line rows, without the list: line ``y`` is (row ``y``'s key, 0)."""

    __slots__ = ("_table",)

    def __init__(self, table: KeyedTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table.rows)

    def __getitem__(self, y: int) -> tuple[RowKey, int]:
        key = self._table._row_locations.get_key(y) if 0 <= y else None
        if key is None:
            raise IndexError(y)
        return key, 0

    def clear(self) -> None:
        """(DataTable.clear empties its list: nothing is kept here)"""


def cell_line(
    console: Console, text: Text, width: int, padding: int, pre: Style, post: Style, around: Style | None = None
) -> list[Segment] | None:
    """One table cell as one line of segments, ``width`` cells wide: what ``DataTable._render_cell`` gets from
    ``console.render_lines(Styled(Padding(text, (0, padding)), pre, post))`` for a one-line, unwrapped cell,
    without Rich's general layout machinery. None where this is not that case (a caller renders it as usual).
    ``around``: ``pre + post``, when the caller has it."""
    plain = text.plain
    if "\n" in plain or "\t" in plain:
        return None
    inner = width - 2 * padding
    if inner <= 0:
        return None
    justify = text.justify or "default"
    if not text._spans and plain.isascii() and len(plain.rstrip() if justify == "right" else plain) <= inner:
        # A plain cell that fits (most of them): the same segments from string operations (a copy of the Text
        # truncated and padded cost more than the rest of the cell's drawing; new rows draw every cell once)
        if justify == "left":
            plain = plain.ljust(inner)
        elif justify == "right":
            plain = plain.rstrip().rjust(inner)
        elif justify != "default":
            return None
        if plain:
            if around is None:
                around = pre + post
            cells = [Segment(plain, _styled(pre, console.get_style(text.style), post) if text.style else around)]
            if len(plain) < inner:
                cells.append(Segment(" " * (inner - len(plain)), around))
            if padding:
                pad = Segment(" " * padding, around)
                cells = [pad, *cells, pad]
            return cells
    overflow = text.overflow or "fold"
    line = text.copy()
    if justify == "left":
        line.truncate(inner, overflow=overflow, pad=True)
    elif justify == "right":
        line.rstrip()
        line.truncate(inner, overflow=overflow)
        line.pad_left(inner - line.cell_len)
    elif justify != "default":
        return None
    line.truncate(inner, overflow=overflow)
    if line._spans or not line.plain:
        body = list(_JOIN.join([line]).render(console, end=""))  # (as Text renders itself: the style as a span)
    else:  # the same segment, without the join and the span machinery
        body = [Segment(line.plain, console.get_style(line.style) if line.style else None)]
    short = inner - line.cell_len
    if short > 0:
        body.append(Segment(" " * short))
    space = Segment(" " * padding) if padding else None
    segments = [space, *body, space] if space else body
    return [Segment(s.text, pre + s.style + post if s.style else pre + post) for s in segments]
