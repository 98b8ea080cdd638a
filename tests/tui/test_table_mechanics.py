"""KeyedTable (widgets/table.py) draws exactly what Textual's DataTable draws, and place_rows leaves the same
table as building it row by row: checked side by side in a running app, through random updates (its drawn cells
are kept across updates: a replaced cell, a row moved or the cursor moved must still be drawn as DataTable does).
The live tables built on it re-use what they made at the last poll (row keys, a quiet process's cells): they must
show what they would show had they made everything again."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from netspy_tui.models import ConnectionEvent, ProcessStat, TrafficProcess
from netspy_tui.tui.poller import event_key
from netspy_tui.tui.widgets import cells as cells_module
from netspy_tui.tui.widgets.cells import Cell, SharedCells, cell
from netspy_tui.tui.widgets.connections import ConnectionTable
from netspy_tui.tui.widgets.processes import ProcessTable
from netspy_tui.tui.widgets.table import KeyedTable, SteadyScrollBar
from tests.factories import connection

pytestmark = pytest.mark.quiet

WIDTHS = (12, 3, 20, 7, 1)


def row_cells(n: int) -> list[Cell]:
    """Cells like the dashboard's: plain, styled, right-justified, too long, wide characters, empty."""
    return [
        cell(f"12:00:{n % 60:02d}.{n:03d}", 12),
        cell("x" * (n % 7), 24, style="bold" if n % 2 else ""),
        cell(["nginx", "中文进程名字很长的", "a b c", "", "curl\u200b"][n % 5] * (1 + n % 3), 64),
        cell(n * 37, 7, justify="right", style=Style(color="red") if n % 3 else ""),
        cell("refused" if n % 4 else "ok", 12, justify="left"),
    ]


class Pair(App[None]):
    AUTO_FOCUS = None  # (a focused table is drawn differently)

    def compose(self) -> ComposeResult:
        yield KeyedTable(id="fast", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="plain", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            table.styles.height = 12
            for i, width in enumerate(WIDTHS):
                table.add_column(f"c{i}", key=f"c{i}", width=width)


@asynccontextmanager
async def running_pair() -> AsyncIterator[tuple[Pair, Pilot[None], KeyedTable, DataTable[Cell]]]:
    app = Pair()
    async with app.run_test(size=(80, 30)) as pilot:
        yield app, pilot, app.query_one("#fast", KeyedTable), app.query_one("#plain", DataTable)


def lines(table: DataTable[Cell]) -> list[list[tuple[str, Style | None]]]:
    """Each line as (character, style) pairs, the styles without their meta: DataTable's segments carry each cell's
    place (row, column) as meta, KeyedTable's none (a click finds its place from where it is: see
    :func:`test_a_click_or_the_mouse_finds_the_place_datatable_s_segments_give`)."""
    table._pseudo_class_state = table.get_pseudo_class_state()
    out = []
    for y in range(table.size.height):
        drawn = table.render_line(y)
        # (a line is as wide as it says: the compositor places and crops it by that length)
        assert drawn.cell_length == sum(seg.cell_length for seg in drawn) == table.size.width, f"line {y}"
        out.append(
            [(char, seg.style.clear_meta_and_links() if seg.style else seg.style) for seg in drawn for char in seg.text]
        )
    return out


def meta_at(table: DataTable[Cell], x: int, y: int) -> dict[str, Any]:
    """What a click or the mouse at (x, y) of ``table``'s region tells its handlers: the meta of the screen's style
    there (what Textual puts in the event), or for a KeyedTable the place it works out (what it puts there)."""
    sx, sy = table.region.x + x, table.region.y + y
    if isinstance(table, KeyedTable):
        event = events.MouseMove(table, x, y, 0, 0, 0, False, False, False, screen_x=sx, screen_y=sy)
        return dict(table._place_at(event).meta)
    return dict(table.screen.get_style_at(sx, sy).meta)


async def _show_in_plain(pilot: Pilot[None], plain: DataTable[Cell], shown: list[str], cells: dict[str, list[Cell]],
                         fast: KeyedTable) -> None:  # fmt: skip
    """``plain`` (DataTable's own) filled again with the ``shown`` rows, the cursor on the last row of both tables."""
    plain.clear()
    for key in shown:
        plain.add_row(*cells[key], key=key)
    for table in (fast, plain):
        table.move_cursor(row=len(shown) - 1)
    await pilot.pause()


async def test_keyed_table_draws_and_orders_rows_as_datatable_does() -> None:
    app = Pair()
    rng = random.Random(7)
    async with app.run_test(size=(80, 30)) as pilot:
        fast = app.query_one("#fast", KeyedTable)
        plain = app.query_one("#plain", DataTable)
        shown: list[int] = []
        cells: dict[str, list[Cell]] = {}
        for step in range(12):
            # drop some of the oldest and some at random, add new rows at the end and a few in between
            keep = [n for i, n in enumerate(shown) if i >= rng.randint(0, 6) and rng.random() > 0.1]
            new = [100 * step + i for i in range(rng.randint(0, 30))]
            order = keep + new
            for n in rng.sample(new, min(3, len(new))):
                order.remove(n)
                order.insert(rng.randint(0, len(order)), n)
            shown = order
            for n in new:
                cells[str(n)] = row_cells(n)
            fast.place_rows([str(n) for n in order], cells)
            plain.clear()
            for n in order:
                plain.add_row(*cells[str(n)], key=str(n))
            if keep:  # kept rows' cells replaced (a name learnt): drawn anew, their other cells as they were
                changed = [(rng.choice(keep), rng.randrange(len(WIDTHS))) for _ in range(3)]
                for n, column in changed:
                    cells[str(n)][column] = value = row_cells(n + 1 + step)[column]
                    plain.update_cell(str(n), f"c{column}", value)
                fast.update_cells([(str(n), f"c{column}", cells[str(n)][column]) for n, column in changed])
            row = rng.randint(0, max(0, len(order) - 1))
            fast.move_cursor(row=row)
            plain.move_cursor(row=row)
            await pilot.pause()
            assert fast.row_count == plain.row_count == len(order)
            assert [r.key.value for r in fast.ordered_rows] == [str(n) for n in order]
            assert all(fast.get_row_index(str(n)) == i for i, n in enumerate(order))
            assert fast.virtual_size == plain.virtual_size
            # a row's place and a line's row worked out from the index (one-line rows), as DataTable adds them up
            header = fast.header_height
            assert [(k.value, y) for k, y in map(fast._get_offsets, range(header + len(order)))] == [
                (k.value, y) for k, y in map(plain._get_offsets, range(header + len(order)))
            ]
            with pytest.raises(LookupError):
                fast._get_offsets(header + len(order))
            for r in [*range(-1, len(order) + 1)]:
                assert fast._get_row_region(r) == plain._get_row_region(r)
                for c in range(-1, len(WIDTHS) + 1):
                    assert fast._get_cell_region(Coordinate(r, c)) == plain._get_cell_region(Coordinate(r, c))
            for fixed in (0, 2, len(order) + 1):  # (the offset the cursor scrolls by, without DataTable's row list)
                fast.fixed_rows = plain.fixed_rows = fixed
                assert fast._get_fixed_offset() == plain._get_fixed_offset()
            fast.fixed_rows = plain.fixed_rows = 0
            assert fast.scroll_offset.y <= row < fast.scroll_offset.y + fast.scrollable_content_region.height - 1
            plain.scroll_to(y=fast.scroll_offset.y, animate=False, immediate=True)
            await pilot.pause()
            assert lines(fast) == lines(plain), f"step {step}"
            if order:  # a cell on screen replaced, nothing else changed: that cell drawn anew
                top = fast.scroll_offset.y
                n = order[rng.randint(top, min(len(order), top + fast.scrollable_content_region.height - 1) - 1)]
                column = rng.randrange(len(WIDTHS))
                cells[str(n)][column] = value = row_cells(n + 2 + step)[column]
                fast.update_cell(str(n), f"c{column}", value)
                plain.update_cell(str(n), f"c{column}", value)
                await pilot.pause()
                assert lines(fast) == lines(plain), f"step {step}, a cell replaced"
        fast.place_rows([], cells)
        plain.clear()
        await pilot.pause()
        assert fast.row_count == 0 and fast.virtual_size == plain.virtual_size
        with pytest.raises(CellDoesNotExist):
            fast.update_cells([("no such row", "c0", row_cells(1)[0])])
        with pytest.raises(ValueError, match="one line"):  # (the index is the place only while every row is one line)
            fast.add_row(*row_cells(1), height=2)


async def test_a_live_table_sliding_down_matches_datatable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest rows leave from the top and new ones come at the bottom (a live table: place_rows then touches only
    those rows): the table is the one DataTable builds row by row, also when DataTable's own methods (add_row,
    sort, remove_row) changed the rows since the last update."""
    slid: list[bool] = []
    worked_out = KeyedTable._slid

    def spied(self: KeyedTable, order: Any) -> Any:
        found = worked_out(self, order)
        slid.append(found is not None)
        return found

    monkeypatch.setattr(KeyedTable, "_slid", spied)
    async with running_pair() as (app, pilot, fast, plain):
        rng = random.Random(3)
        cells = {str(n): row_cells(n) for n in range(400)}
        shown: list[str] = []
        made = 0
        for step in range(14):
            gone = rng.choice([0, 1, 5, len(shown)])
            new = rng.randint(0 if step % 4 else 1, 25)
            shown = shown[gone:] + [str(n) for n in range(made, made + new)]
            made += new
            fast.place_rows(shown, cells)
            if step == 9:  # DataTable's own add_row in between: the next update is worked out in full
                fast.add_row(*cells["399"], key="399")
                shown = [*shown, "399"]
                fast.place_rows(shown, cells)
            await _show_in_plain(pilot, plain, shown, cells, fast)
            assert [r.key.value for r in fast.ordered_rows] == shown, f"step {step}"
            assert all(fast.get_row_index(key) == i for i, key in enumerate(shown))
            assert [fast.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value for i in range(len(shown))] == shown
            assert fast.virtual_size == plain.virtual_size
            plain.scroll_to(y=fast.scroll_offset.y, animate=False, immediate=True)
            await pilot.pause()
            assert lines(fast) == lines(plain), f"step {step}"
        assert slid.count(True) >= 10 and slid[10] is False  # (the update after add_row: in full)
        for table in (fast, plain):
            table.sort("c3", key=lambda c: c.plain)
        order = [r.key.value or "" for r in plain.ordered_rows]
        fast.place_rows([*order[3:], "398"], cells)
        for key in order[:3]:
            plain.remove_row(key)
        plain.add_row(*cells["398"], key="398")
        for table in (fast, plain):
            table.move_cursor(row=0)
        await pilot.pause()
        plain.scroll_to(y=fast.scroll_offset.y, animate=False, immediate=True)
        await pilot.pause()
        assert slid[-1] is False  # (sorted since: in full)
        assert [r.key.value for r in fast.ordered_rows] == [r.key.value for r in plain.ordered_rows]
        assert all(fast.get_row_index(r.key) == i for i, r in enumerate(plain.ordered_rows))
        assert lines(fast) == lines(plain)


async def test_a_click_or_the_mouse_finds_the_place_datatable_s_segments_give() -> None:
    """DataTable's click and hover handlers read the cell's place (row, column, past the last column) from the
    meta of the segments under the mouse; KeyedTable's segments carry none (a row is drawn once wherever it moves)
    and works it out from where the mouse is. Over every cell of both tables, scrolled, with the header, fixed
    rows and columns or none: the same place."""
    async with running_pair() as (app, pilot, fast, plain):
        cells = {str(n): row_cells(n) for n in range(40)}
        fast.place_rows(list(cells), cells)
        for key, row in cells.items():
            plain.add_row(*row, key=key)
        for fixed_rows, fixed_columns, header in ((0, 0, True), (2, 1, True), (0, 0, False)):
            for table in (fast, plain):
                table.fixed_rows, table.fixed_columns, table.show_header = fixed_rows, fixed_columns, header
                table.move_cursor(row=20)
            await pilot.pause()
            plain.scroll_to(y=fast.scroll_offset.y, animate=False, immediate=True)
            await pilot.pause()
            assert fast.scroll_offset.y > 0
            width, height = fast.scrollable_content_region.size  # (the scrollbar is a widget of its own)
            assert plain.scrollable_content_region.size == (width, height) and fast.region.size == plain.region.size
            places = [[meta_at(plain, x, y) for x in range(width)] for y in range(height)]
            assert [[meta_at(fast, x, y) for x in range(width)] for y in range(height)] == places
            assert any(p.get("out_of_bounds") for line in places for p in line)  # (past the last column)
            assert any(p.get("row") == -1 for line in places for p in line) is header

        # through Textual: a click on a row moves the cursor there, a second selects it; the mouse over one hovers
        # it (as DataTable's own segments make them do)
        seen = []
        for table in (fast, plain):
            table.fixed_rows = table.fixed_columns = 0
            table.show_header = True
            await pilot.pause()
            posted: list[Any] = []
            post = table.post_message
            table.post_message = lambda message, p=post, to=posted: to.append(message) or p(message)  # type: ignore[method-assign]
            top = table.scroll_offset.y
            await pilot.click(table, offset=(30, 4))  # (the header, then the fourth row shown)
            first = [m.row_key.value for m in posted if isinstance(m, DataTable.RowSelected)]
            after_first = (table.cursor_row - top, first)
            await pilot.hover(table, offset=(30, 6))
            hovered = table.hover_row - top
            await pilot.click(table, offset=(30, 4))
            await pilot.pause()
            chosen = [m.row_key.value for m in posted if isinstance(m, DataTable.RowSelected)]
            seen.append((after_first, hovered, [int(k or 0) - top for k in chosen]))
        assert seen[0] == seen[1]
        assert seen[0][0][0] == 3 and seen[0][1] == 5 and 3 in seen[0][2], seen


def count_drawn_cells(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets an item for each table cell drawn (:func:`table.cell_line`) from now on."""
    from netspy_tui.tui.widgets import table as table_module

    drawn: list[int] = []
    cell_line = table_module.cell_line

    def counted(*args: Any, **kwargs: Any) -> Any:
        drawn.append(1)
        return cell_line(*args, **kwargs)

    monkeypatch.setattr(table_module, "cell_line", counted)
    return drawn


async def test_rows_that_move_are_not_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A live table's rows move up at every refresh (the oldest leave from the top) and a focus or a filter moves
    them anywhere: each visible row was drawn again at its new place (its segments carried the place). Rows drawn
    once are shown as drawn, wherever they go: a slide of two rows draws the two rows it brings on screen and the
    row the cursor came to."""
    drawn = count_drawn_cells(monkeypatch)
    async with running_pair() as (app, pilot, fast, plain):
        cells = {str(n): row_cells(n) for n in range(60)}
        order = [str(n) for n in range(40)]
        fast.place_rows(order, cells)
        await pilot.pause()
        visible = fast.scrollable_content_region.height - fast.header_height
        drawn.clear()
        for step in range(1, 6):
            order = order[2:] + [str(40 + 2 * step), str(41 + 2 * step)]
            fast.place_rows(order, cells)
            await pilot.pause()
            assert 0 < len(drawn) <= 3 * len(WIDTHS) < visible * len(WIDTHS), (step, len(drawn))
            drawn.clear()
            await _show_in_plain(pilot, plain, order, cells, fast)
            fast.move_cursor(row=0)
            plain.move_cursor(row=0)
            await pilot.pause()
            assert lines(fast) == lines(plain), f"step {step}"
            drawn.clear()
        fast.place_rows(order[::-1], cells)  # (other rows on screen: drawn)
        await pilot.pause()
        drawn.clear()
        fast.place_rows(order, cells)  # every row back where it was, as a cleared filter brings them back
        await pilot.pause()
        assert len(drawn) <= 2 * len(WIDTHS), len(drawn)  # (at most the rows the cursor and the hover left and found)
        assert lines(fast) == lines(plain)


async def test_more_rows_redraw_the_table_and_its_scrollbar_without_laying_the_screen_out() -> None:
    """Rows change the table's virtual size: Textual lays the whole screen out for it, though only the
    scrollbars depend on it. KeyedTable lays out only when a scrollbar appears or goes."""
    app = Pair()
    async with app.run_test(size=(80, 30)) as pilot:
        fast = app.query_one("#fast", KeyedTable)
        cells = {str(n): row_cells(n) for n in range(200)}
        fast.place_rows([str(n) for n in range(5)], cells)
        await pilot.pause()
        assert not fast.show_vertical_scrollbar
        fast.place_rows([str(n) for n in range(50)], cells)  # the scrollbar appears: a layout pass
        assert fast._layout_required
        await pilot.pause()
        assert fast.show_vertical_scrollbar
        thumb = fast.vertical_scrollbar.window_virtual_size
        fast.place_rows([str(n) for n in range(150)], cells)  # more rows, the scrollbar stays: no layout
        assert not fast._layout_required
        assert fast.vertical_scrollbar.window_virtual_size > thumb  # (its thumb follows at once)
        fast.move_cursor(row=149)
        await pilot.pause()
        assert fast.scroll_offset.y == fast.max_scroll_y > 0 and fast.virtual_size.height == 151


async def test_a_live_tables_scrollbar_is_drawn_again_only_when_its_thumb_moves() -> None:
    """A table that follows its newest row gets more rows at each refresh: its scrollbar's sizes and position change,
    its thumb (the last cell, once the rows are many) does not. The bar's lines drawn last are given again then, and
    are what Textual's ScrollBar draws; a thumb that moves (the cursor back to the top, fewer rows) is drawn anew."""
    app = Pair()
    async with app.run_test(size=(80, 30)) as pilot:
        fast = app.query_one("#fast", KeyedTable)
        cells = {str(n): row_cells(n) for n in range(400)}
        bar = fast.vertical_scrollbar
        assert isinstance(bar, SteadyScrollBar)

        def bar_lines() -> tuple[list[Strip], list[Strip]]:
            """The bar's lines, and Textual's ScrollBar's for the bar as it is now (drawn afresh)."""
            crop = bar.size.region
            shown = bar.render_lines(crop)
            bar._set_dirty()  # (Widget's drawing from scratch)
            return shown, ScrollBar.render_lines(bar, crop)

        async def show(rows: int, cursor: int) -> None:
            fast.place_rows([str(n) for n in range(rows)], cells)
            fast.move_cursor(row=cursor, animate=False)
            await pilot.pause()

        await show(150, 149)
        first, textuals = bar_lines()
        assert first == textuals and len(first) == bar.size.height > 0
        for rows in (200, 300, 400):  # followed to the end: the same thumb, the lines drawn last
            await show(rows, rows - 1)
            again, textuals = bar_lines()
            assert again is first and again == textuals
        await show(400, 0)  # the thumb at the top: drawn again
        top, textuals = bar_lines()
        assert top == textuals and top != first
        await show(60, 0)  # fewer rows: a bigger thumb
        bigger, textuals = bar_lines()
        assert bigger == textuals and bigger != top


async def test_a_live_table_keeps_no_drawing_of_an_older_update() -> None:
    """DataTable's caches of drawn lines, rows, cells and row renderables key each entry by the table's update count:
    an entry of an older count is never read again. A live table (an update at every poll) keeps none of them,
    where DataTable kept them until its LRU bounds pushed them out; and it still draws what DataTable draws."""
    async with running_pair() as (app, pilot, fast, plain):
        cells = {str(n): row_cells(n) for n in range(300)}
        shown: list[str] = []
        for step in range(12):
            shown = shown[3:] + [str(n) for n in range(step * 20, step * 20 + 20)]
            fast.place_rows(shown, cells)
            await _show_in_plain(pilot, plain, shown, cells, fast)
            assert lines(fast) == lines(plain), f"step {step}"
        count = fast._update_count
        assert len(fast._line_cache) and len(fast._row_render_cache)  # (the frame just drawn)
        for cache, at in ((fast._line_cache, 9), (fast._row_render_cache, 8), (fast._row_renderable_cache, 0),
                          (fast._cell_render_cache, 6)):  # fmt: skip
            assert all(key[at] == count for key in cache.keys()), (at, list(cache.keys())[:3])
        fast.update_cells([(shown[-1], "c0", cell("changed", 12))])  # (a new count: the old entries go at once)
        assert fast._update_count == count + 1 and not len(fast._line_cache) and not len(fast._row_render_cache)
        await pilot.pause()
        plain.update_cell(shown[-1], "c0", cell("changed", 12))
        await pilot.pause()
        assert lines(fast) == lines(plain)


async def test_focus_coming_and_going_draws_only_the_cursor_row_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tab switch (d) moves the focus between the tables, and each change of focus is a style update of the
    table: its cells are kept for both states (only the cursor's row, drawn with the focused or unfocused cursor
    style, is drawn again), still exactly as DataTable draws them, and a new theme still draws everything anew."""
    drawn = count_drawn_cells(monkeypatch)
    app = Pair()
    async with app.run_test(size=(80, 30)) as pilot:
        fast = app.query_one("#fast", KeyedTable)
        plain = app.query_one("#plain", DataTable)
        cells = {str(n): row_cells(n) for n in range(40)}
        fast.place_rows(list(cells), cells)
        for key, row in cells.items():
            plain.add_row(*row, key=key)
        for table in (fast, plain):
            table.move_cursor(row=3)

        async def focus(table: DataTable[Cell] | None) -> list[list[tuple[str, Style | None]]]:
            """``table`` focused (None: neither), then how fast draws as ``table`` or plain does the same."""
            app.set_focus(table)
            await pilot.pause()
            if table is plain:
                return lines(plain)
            return lines(fast)

        focused, unfocused = await focus(fast), await focus(None)
        assert focused != unfocused  # (the cursor's colours)
        assert await focus(plain) == focused and lines(plain) != lines(fast)
        assert lines(fast) == unfocused == (await focus(None)) == lines(plain)
        await focus(fast)
        await focus(None)  # both states drawn: from here the cells are kept
        drawn.clear()
        assert await focus(fast) == focused
        assert await focus(None) == unfocused
        assert 0 < len(drawn) <= 2 * len(WIDTHS), drawn  # the cursor row's cells, focused then unfocused
        drawn.clear()
        app.theme = "textual-light" if app.theme != "textual-light" else "nord"
        await pilot.pause()
        assert lines(fast) == lines(plain) != unfocused
        assert len(drawn) > 2 * len(WIDTHS)
        assert await focus(fast) == await focus(plain) != focused


async def test_the_header_is_drawn_again_only_when_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows added (a refresh) leave the header's cells as they were drawn: DataTable laid each label out again
    through Rich after every update. A new label, width or theme draws them anew, as DataTable does."""
    headers: list[int] = []
    render_cell = DataTable._render_cell

    def counted(self: DataTable[Cell], row_index: int, *args: Any, **kwargs: Any) -> Any:
        if row_index == -1 and isinstance(self, KeyedTable):
            headers.append(1)
        return render_cell(self, row_index, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_cell", counted)
    async with running_pair() as (app, pilot, fast, plain):
        cells = {str(n): row_cells(n) for n in range(60)}
        for step in range(3):
            order = [str(n) for n in range(step * 20, step * 20 + 20)]
            fast.place_rows(order, cells)
            plain.clear()
            for key in order:
                plain.add_row(*cells[key], key=key)
            await pilot.pause()
            assert lines(fast) == lines(plain)
            if step == 0:
                assert len(headers) == len(WIDTHS)
                headers.clear()
        assert not headers  # (two updates drawn: the header kept)
        for table in (fast, plain):
            table.columns[table.ordered_columns[1].key].label = Text("renamed")
            table._clear_caches()  # (as DataTable's own label changes do, by a new column or a refresh)
            table.refresh()
        fast.place_rows(order[:-1], cells)  # (and a row fewer)
        plain.remove_row(order[-1])
        await pilot.pause()
        assert lines(fast) == lines(plain) and " ren " in "".join(t for t, _ in lines(fast)[0])
        assert len(headers) >= len(WIDTHS)
        headers.clear()
        app.theme = "textual-light" if app.theme != "textual-light" else "nord"
        await pilot.pause()
        assert lines(fast) == lines(plain) and len(headers) == len(WIDTHS)


class Live(App[None]):
    def compose(self) -> ComposeResult:
        yield ConnectionTable(id="conns")


async def test_a_live_connection_table_keys_its_rows_as_the_events_it_is_given() -> None:
    """sync keeps the keys of the rows that stay (the same event objects, in order) and keys only the others: the
    rows shown, their order and their events are those of keying every event given, through polls that slide the
    window, bring late events between held ones, replace events (a name learnt), narrow and widen a filter and
    bring events without an id (keyed by their fields)."""
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    serial = itertools.count()

    def new(n: int) -> list[ConnectionEvent]:
        made = []
        for _ in range(n):
            i = next(serial)
            event = connection(pid=100 + i % 7, time=start + timedelta(milliseconds=10 * i), ip=f"10.0.0.{i % 250}")
            made.append(event if i % 9 else event.model_copy(update={"id": ""}))
        return made

    async with Live().run_test(size=(100, 30)) as pilot:
        table = pilot.app.query_one(ConnectionTable)
        held: list[ConnectionEvent] = []
        for step in range(40):
            held = held[rng.randint(0, 15) :] + new(rng.randint(0, 25))  # the oldest leave, new ones come
            if step % 5 == 2 and len(held) > 10:  # late events between held ones
                at = rng.randint(1, len(held) - 1)
                held[at:at] = new(3)
            if step % 7 == 3 and held:  # a name learnt: the poller's window holds a copy of the event
                at = rng.randrange(len(held))
                held[at] = held[at].model_copy(update={"hostname": f"host{step}.example"})
            shown = [e for e in held if e.pid % 3] if step % 6 == 4 else held  # a filter, then none again
            table.sync(shown, held)
            await pilot.pause()
            wanted = {event_key(e): e for e in shown}
            assert list(table.events) == list(wanted), f"step {step}"
            assert all(table.events[k] is e for k, e in wanted.items()), f"step {step}"
            assert [row.key.value for row in table.ordered_rows] == list(wanted), f"step {step}"


def test_shared_cells_are_made_once_per_value_and_are_what_cell_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value drawn the same way is one cell (the same object) for every row; values that are equal but of another
    type, width, style, justification or sort key are cells of their own; the cells are cell()'s; a full memo starts
    again."""
    shared = SharedCells()
    assert shared("curl", 24) is shared("curl", 24)
    assert shared(7, 7, justify="right", sort_key=7) is shared(7, 7, justify="right", sort_key=7)
    variants = [
        shared(1, 7), shared("1", 7), shared(True, 7), shared(1.0, 7), shared(1, 8), shared(1, 7, style="bold"),
        shared(1, 7, justify="right"), shared(1, 7, sort_key=1),
    ]  # fmt: skip
    assert len({id(c) for c in variants}) == len(variants)
    for made, args, kw in [
        (shared("curl", 24), ("curl", 24), {}),
        (shared("a\x1b[31mb" * 20, 12), ("a\x1b[31mb" * 20, 12), {}),  # (untrusted text cleaned and cut as cell() does)
        (shared(7, 7, justify="right", sort_key=7), (7, 7), {"justify": "right", "sort_key": 7}),
    ]:
        fresh = cell(*args, **kw)
        assert (made.plain, made.style, made.justify, made.sort_key) == (
            fresh.plain,
            fresh.style,
            fresh.justify,
            fresh.sort_key,
        )
    monkeypatch.setattr(cells_module, "SHARED_CELLS", 3)
    bounded = SharedCells()
    first = bounded("a", 5)
    for value in "bcd":
        bounded(value, 5)
    assert bounded("a", 5) is not first and len(bounded._cells) <= 3


async def test_a_connection_tables_rows_share_the_cells_of_repeated_values() -> None:
    """Rows of the same process, destination, outcome, protocol and pid show the same cell objects (each row's own
    time); the table shows what cell() would; a theme change makes the outcome cells again in its colours."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [connection(pid=100 + i % 2, time=start + timedelta(milliseconds=i), ip="10.0.0.1") for i in range(6)]
    async with Live().run_test(size=(100, 30)) as pilot:
        table = pilot.app.query_one(ConnectionTable)
        table.sync(events)
        await pilot.pause()
        rows = [table.get_row(row.key) for row in table.ordered_rows]
        first, third = rows[0], rows[2]  # (the same pid)
        assert first[0] is not third[0] and first[0].plain != third[0].plain  # the times
        assert all(a is b for a, b in zip(first[1:], third[1:], strict=True))
        assert first[-1] is not rows[1][-1]  # another pid
        for row, event in zip(rows, events, strict=True):
            assert [c.plain for c in row] == [c.plain for c in table.cells(event)]
        outcome = first[3]
        pilot.app.theme = "textual-light" if pilot.app.theme != "textual-light" else "nord"
        await pilot.pause()
        assert table.cells(events[0])[3] is not outcome


class Processes(App[None]):
    def compose(self) -> ComposeResult:
        yield ProcessTable(id="procs")


def shown_cells(table: ProcessTable) -> list[list[tuple[str, Style | str]]]:
    return [
        [(c.plain, c.style) for c in table.get_row(row.key)]  # type: ignore[union-attr]
        for row in table.ordered_rows
    ]


async def test_a_process_table_shows_what_a_fresh_one_shows_after_each_poll() -> None:
    """Rows whose process is unchanged since the last poll are not made again: after polls that change some
    figures, the focus, the rates (read, then not) and the width of the PIDs column, the table shows the cells a
    table given only the last poll shows."""
    rng = random.Random(5)
    when = datetime(2026, 1, 1, tzinfo=UTC)

    def stat(name: str, attempts: int) -> ProcessStat:
        return ProcessStat(command=name, pids=[10, 11, 12, 13][: 1 + attempts % 4], attempts=attempts,
                           distinct_destinations=attempts % 5, failures=attempts % 3, first_seen=when,
                           last_seen=when + timedelta(seconds=attempts))  # fmt: skip

    def rate(name: str, n: int) -> TrafficProcess:
        return TrafficProcess(command=name, pids=[10], rx_bytes=n, tx_bytes=n, rx_rate=n / 60, tx_rate=n, flows=1)

    names = [f"proc{i}" for i in range(12)]
    figures = {name: rng.randint(1, 50) for name in names}
    async with Processes().run_test(size=(120, 30)) as pilot:
        table = pilot.app.query_one(ProcessTable)
        for step in range(12):
            for name in rng.sample(names, 3):  # a few processes busy since the last poll, the rest quiet
                figures[name] += rng.randint(1, 9)
            stats = [stat(name, n) for name, n in figures.items()]
            focused = names[step % 5] if step % 3 else None
            rates = {n: rate(n, figures[n]) for n in names} if step % 4 == 1 else None
            if step == 7:
                table.styles.width = 90  # (the PIDs column narrower: its cells made again)
            table.sync(stats, focused, rates)
            await pilot.pause()
            async with Processes().run_test(size=(120, 30)) as fresh_pilot:
                fresh = fresh_pilot.app.query_one(ProcessTable)
                fresh.styles.width = table.styles.width
                await fresh_pilot.pause()
                fresh.sync(stats, focused, rates)
                await fresh_pilot.pause()
                assert fresh.pid_width == table.pid_width
                assert shown_cells(table) == shown_cells(fresh), f"step {step}"
