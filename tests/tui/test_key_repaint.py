"""Keys that change what the user chose (a filter character, focus, the drops tab) redraw what changed, not the
whole screen: the screen's own reactives (view_state.py) do not repaint it (issue 17: key to screen <= 50 ms)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from textual._compositor import Compositor
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, TabbedContent

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.screens.dashboard import LABEL_SLACK
from tests.tui.conftest import Clock, wait_for
from tests.tui.screen_text import screen_lines

pytestmark = pytest.mark.quiet

SIZE = (160, 45)


@asynccontextmanager
async def dashboard(source: MemorySource, clock: Clock) -> AsyncIterator[tuple[NetspyApp, Pilot[Any]]]:
    """The dashboard on ``source`` (no timer polls), once its first rows are drawn and it has finished starting:
    the AI pane mounts its answer view after the first frame, and on a busy machine that mount (three layout
    passes) came in the middle of a test that counts them."""
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=3600, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.dashboard
            await wait_for(pilot, lambda: screen.renders >= 1 and screen.connections.row_count > 3, "the first rows")
            pane = screen.ai_pane
            await wait_for(
                pilot, lambda: pane._answer_mounted is not None and pane._answer_mounted.done(), "the AI answer view"
            )
            await pilot.pause()
            yield app, pilot


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """From now on, one entry per call of ``cls.name`` (still called)."""
    calls: list[int] = []
    real = getattr(cls, name)

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def underline_under(tabs: Widget, tab: Widget) -> bool:
    """The tab bar's underline spans ``tab`` (its label, the gutter left out)."""
    from textual.widgets._tabs import Underline

    underline = tabs.query_one(Underline)
    start, end = tab.region.shrink(tab.styles.gutter).column_span
    return (underline.highlight_start, underline.highlight_end) == (start - tabs.region.x, end - tabs.region.x)


def layout_requests(widget: Widget) -> list[bool]:
    """From now on, one entry per ``widget.refresh()`` call: whether it asked for a layout."""
    layouts: list[bool] = []
    refresh = widget.refresh

    def spy(*regions: Any, **kwargs: Any) -> Any:
        layouts.append(bool(kwargs.get("layout")))
        return refresh(*regions, **kwargs)

    widget.refresh = spy  # type: ignore[method-assign]
    return layouts


async def test_filter_focus_and_tab_keys_draw_what_changed_not_the_whole_screen(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = count_calls(monkeypatch, Compositor, "render_full_update")
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tabs = screen.query_one("#views", TabbedContent)
        bar = screen.query_one("#filter-bar", Input)
        await pilot.press("slash")
        await pilot.pause()
        full.clear()
        await pilot.press("c")
        await wait_for(pilot, lambda: screen.filter_text == "c" and bar.value == "c", "the filter")
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: not screen.filter_text and screen.connections.has_focus, "the filter cleared")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.focus_subject is not None, "the focus")
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.focus_subject is None, "the focus cleared")
        await pilot.press("d")
        await wait_for(pilot, lambda: tabs.active == "drops-tab", "the drops tab")
        await pilot.pause()
        assert full == []  # every frame was a partial update


async def test_a_count_of_the_same_width_relabels_its_tab_without_a_layout_pass(
    source: MemorySource, clock: Clock
) -> None:
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tab = screen.query_one("#views", TabbedContent).get_tab("connections-tab")
        screen._tab_label("connections-tab", "Connections (12)", None)
        await pilot.pause()
        layouts = layout_requests(tab)
        screen._tab_label("connections-tab", "Connections (47)", None)  # as wide: redrawn, no layout
        assert layouts and not any(layouts)
        await pilot.pause()
        assert str(tab.label) == "Connections (47)"
        assert "Connections (47)" in "".join(strip.text for strip in tab.render_lines(tab.region.reset_offset))
        layouts.clear()
        screen._tab_label("connections-tab", "Connections (1,047)", None)  # wider: laid out again
        assert any(layouts)


async def test_a_polls_count_that_loses_a_digit_keeps_its_tab_width_without_a_layout_pass(
    source: MemorySource, clock: Clock
) -> None:
    """A poll's count that loses a digit (and its comma) keeps the tab as wide, blank at its end: a count hovering at
    999/1,000 laid the whole screen out again at every poll, and slid the tab's underline. A count of another view
    (the user's filter, focus or window) is shown as wide as it is."""
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tabs = screen.query_one("#views", TabbedContent)
        tab, drops = tabs.get_tab("connections-tab"), tabs.get_tab("drops-tab")
        assert str(tab.label) == "Connections (150)"
        width, drops_at = tab.region.width, drops.region.x
        layouts = layout_requests(tab)
        clock.now += timedelta(seconds=30)  # 70 of the 150 leave the window
        screen.apply_snapshot(await app.poller.poll())
        await pilot.pause()
        assert str(tab.label) == "Connections (80)"
        assert layouts and not any(layouts)
        assert (tab.region.width, drops.region.x) == (width, drops_at)
        assert screen_lines(app)[tab.region.y][tab.region.x : tab.region.right] == " Connections (80)  "
        await pilot.press("slash", *"curl")  # the user's filter: the tab as wide as its count
        await wait_for(pilot, lambda: str(tab.label) == "Connections (13)", "the filtered count")
        await pilot.pause()
        assert any(layouts)
        assert (tab.region.width, drops.region.x) == (width - 1, drops_at - 1)
        assert screen_lines(app)[tab.region.y][tab.region.x : tab.region.right] == " Connections (13) "


async def test_a_polls_count_that_widens_its_tab_leaves_room_for_the_next_digits(
    source: MemorySource, clock: Clock
) -> None:
    """A window filling up: drops arrive and their count gains digits (10, 100, 1,000). The tab is laid out again
    when it first widens, with a digit and its comma to spare (blank at its end), so the next digits are drawn in
    place: the layout of the whole screen came at 99 -> 100 and again at 999 -> 1,000 (two passes, ~35 ms, within
    ten seconds of a dashboard's first data at 100 events/s)."""
    from netspy_tui.models import PacketDropEvent

    drop = next(e for e in source._snapshot() if isinstance(e, PacketDropEvent))

    def drops(n: int, start: int) -> list[PacketDropEvent]:
        return [
            drop.model_copy(update={"id": f"more-{start + i}", "time": clock.now - timedelta(milliseconds=i % 1000)})
            for i in range(n)
        ]

    async with dashboard(source, clock) as (app, pilot):
        tab = app.dashboard.query_one("#views", TabbedContent).get_tab("drops-tab")
        assert str(tab.label) == "Packet drops (10)"
        width = tab.region.width
        layouts = layout_requests(tab)
        source.add_events(drops(90, 0))
        app.dashboard.apply_snapshot(await app.poller.poll())  # (the dashboard's refresh, without its timer)
        await pilot.pause()
        assert str(tab.label) == "Packet drops (100)"
        assert sum(layouts) == 1
        assert tab.region.width == width + 1 + LABEL_SLACK
        assert screen_lines(app)[tab.region.y][tab.region.x : tab.region.right] == " Packet drops (100)   "
        layouts.clear()
        source.add_events(drops(900, 90))
        app.dashboard.apply_snapshot(await app.poller.poll())
        await pilot.pause()
        assert str(tab.label) == "Packet drops (1,000)"
        assert layouts and not any(layouts)  # drawn in place
        assert tab.region.width == width + 1 + LABEL_SLACK
        assert screen_lines(app)[tab.region.y][tab.region.x : tab.region.right] == " Packet drops (1,000) "


async def test_a_count_that_widens_its_tab_moves_the_underline_at_once(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count that widens its tab lays the screen out again and the underline spans the tab after that frame, not
    slid there over 0.3 s (Tab.label's Relabelled did that: ~18 frames at each count that gained a digit)."""
    from textual.widgets._tabs import Underline

    slides = count_calls(monkeypatch, Underline, "animate")
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tabs = screen.query_one("#views", TabbedContent)
        tab = tabs.get_tab("connections-tab")
        width = tab.region.width
        slides.clear()
        screen._tab_label("connections-tab", "Connections (latest 50 of 150)", None)
        await wait_for(pilot, lambda: tab.region.width == width + 13, "the wider tab")

        def spans_tab() -> bool:
            return underline_under(tabs, tab)

        await wait_for(pilot, spans_tab, "the underline under the tab")
        await pilot.pause(0.4)  # (what a slide would have taken)
        assert spans_tab() and slides == []
        assert "Connections (latest 50 of 150)" in screen_lines(app)[tab.region.y]


@pytest.mark.parametrize("env", [None, "full"])
async def test_a_tab_switch_moves_the_underline_in_the_next_frames_unless_animations_are_asked_for(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    """d moves the underline under the drops tab at once: no 0.3 s slide (~20 frames drawn after each switch, half
    the CPU it cost). TEXTUAL_ANIMATIONS=full, as Textual reads it, brings the slide back."""
    from textual.widgets._tabs import Underline

    if env is None:
        monkeypatch.delenv("TEXTUAL_ANIMATIONS", raising=False)
    else:
        monkeypatch.setenv("TEXTUAL_ANIMATIONS", env)
    slides = count_calls(monkeypatch, Underline, "animate")
    async with dashboard(source, clock) as (app, pilot):
        tabs = app.dashboard.query_one("#views", TabbedContent)
        drops = tabs.get_tab("drops-tab")
        slides.clear()
        await pilot.press("d")

        def under_drops() -> bool:
            return underline_under(tabs, drops)

        if env is None:
            assert app.animation_level == "none"
            await pilot.pause()
            await pilot.pause()
            assert tabs.active == "drops-tab" and under_drops() and slides == []
        else:
            assert app.animation_level == "full"
            await wait_for(pilot, lambda: bool(slides), "the underline's slide")
            await wait_for(pilot, under_drops, "the underline under the drops tab")


async def test_a_tab_that_changes_width_is_drawn_in_one_layout_pass_with_its_underline(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count that widens or narrows its tab (focus, a filter character) costs one layout pass, and the frame it
    draws has the underline under the tab: the tab's new virtual size laid the screen out a second time, and Tabs
    moved the underline after the first frame (a focus key drew three frames, not two)."""
    from textual._compositor import Compositor
    from textual.screen import Screen

    reflows = count_calls(monkeypatch, Compositor, "reflow")
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tabs = screen.query_one("#views", TabbedContent)
        tab = tabs.get_tab("connections-tab")
        frames: list[tuple[int, bool]] = []
        paint = Screen._compositor_refresh

        def drawn(self: Screen[Any]) -> None:
            frames.append((tab.region.width, underline_under(tabs, tab)))
            paint(self)

        monkeypatch.setattr(Screen, "_compositor_refresh", drawn)
        width = tab.region.width
        for label, wider in (("Connections (latest 50 of 150)", 13), ("Connections (7)", -2)):
            reflows.clear()
            frames.clear()
            screen._tab_label("connections-tab", label, label)
            await pilot.pause()
            await pilot.pause()
            assert tab.region.width == width + wider
            assert len(reflows) == 1
            assert frames and all(under for tab_width, under in frames if tab_width == width + wider)
        app.poller.wake = asyncio.Event()  # (the key's poll waits: what the key itself draws is counted)
        reflows.clear()
        await pilot.press("enter")  # focus: both counts change
        await wait_for(pilot, lambda: screen.focus_subject is not None, "the focus")
        await pilot.pause()
        assert len(reflows) == 1


async def test_focus_shows_the_processes_rows_at_once_then_its_poll_keeps_them(
    source: MemorySource, clock: Clock
) -> None:
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        table = screen.connections
        commands = {e.command for e in table.events.values()}
        assert len(commands) > 1
        event = table.selected_event()
        assert event is not None
        polls, version = app.polls, app.poller.version
        await pilot.press("enter")
        # answered at once from the rows already held: only the focused process's rows
        assert screen.focus_subject is not None and screen.focus_subject.command == event.command
        assert table.row_count > 0 and {e.command for e in table.events.values()} == {event.command}
        assert app.poller.version == version + 1
        await wait_for(pilot, lambda: app.polls > polls, "the poll for the focused process")
        assert {e.command for e in table.events.values()} == {event.command}


async def test_a_filter_that_hides_processes_drops_their_rows_without_a_layout_pass(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process table drops the rows a filter character hides in one pass (DataTable.remove_row asked for a
    layout of the whole screen per row); the rows left keep the table's sort."""
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        table = screen.processes
        await wait_for(pilot, lambda: table.row_count > 3, "the processes")
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        kept = [n for n in names if "c" in n]
        assert 0 < len(kept) < len(names)
        layouts: list[bool] = []
        refresh = Widget.refresh

        def spy(self: Widget, *regions: Any, **kwargs: Any) -> Any:
            # what reaches Textual (KeyedTable turns its own row-count layouts into scrollbar updates)
            if self is table:
                layouts.append(bool(kwargs.get("layout")))
            return refresh(self, *regions, **kwargs)

        monkeypatch.setattr(Widget, "refresh", spy)
        await pilot.press("slash", "c")
        await wait_for(pilot, lambda: table.row_count == len(kept), "the processes narrowed")
        await pilot.pause()
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == kept  # (attempts, largest first)
        assert not any(layouts)


async def test_a_new_rate_peak_redraws_its_line_without_a_layout_pass(source: MemorySource, clock: Clock) -> None:
    """The pattern panel's rate line ("Rate per 1s over 1m (peak 12)") changes with nearly every refresh: it is
    redrawn in place, also when the peak gains a digit (the line is as wide as the panel: each wider peak laid the
    whole screen out twice, ~10 ms a time at 100 events/s while the window filled)."""
    from textual.widgets import Label

    from netspy_tui.tui.widgets.patterns import PatternsPanel

    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        panel = screen.query_one(PatternsPanel)
        label = panel.query_one("#rate-label", Label)
        analysis = screen.latest.patterns if screen.latest else None
        assert analysis is not None and analysis.stats.total > 0

        def with_peak(peak: int) -> Any:
            stats = analysis.stats.model_copy(update={"rate_buckets": [1, peak, 2]})
            return analysis.model_copy(update={"stats": stats})

        panel.show(with_peak(12), "all")
        await pilot.pause()
        layouts = layout_requests(label)
        panel.show(with_peak(47), "all")  # as wide: redrawn, no layout
        assert layouts and not any(layouts)
        await pilot.pause()
        assert "(peak 47)" in "".join(strip.text for strip in label.render_lines(label.region.reset_offset))
        layouts.clear()
        panel.show(with_peak(1047), "all")  # a digit more: redrawn, no layout either
        assert layouts and not any(layouts)
        await pilot.pause()
        assert "(peak 1047)" in "".join(strip.text for strip in label.render_lines(label.region.reset_offset))


async def test_a_new_analysis_redraws_the_pattern_panels_lines_not_its_border(
    source: MemorySource, clock: Clock
) -> None:
    """Every refresh at 100 events/s brings a new analysis: its lines are redrawn, not the panel around them
    (setting the border title, even to the same text, redrew the whole panel: its border and every line)."""
    from textual.widgets import Static

    from netspy_tui.tui.widgets.patterns import PatternsPanel

    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        panel = screen.query_one(PatternsPanel)
        analysis = screen.latest.patterns if screen.latest else None
        assert analysis is not None and analysis.stats.total > 0
        stats = analysis.stats.model_copy(update={"total": analysis.stats.total + 1})
        body = panel.query_one("#patterns-body", Static)
        redraws, body_redraws = layout_requests(panel), layout_requests(body)
        panel.show(analysis.model_copy(update={"stats": stats}), screen.subject.label)
        assert body_redraws and not redraws
        await pilot.pause()
        assert f"{stats.total} attempts" in str(body.content)
        panel.show(analysis, "nginx")  # another subject: the title changes
        assert redraws and panel.border_title == "Patterns · nginx"


async def test_d_gives_the_shown_table_the_focus_and_leaves_the_footer_as_it_is(
    source: MemorySource, clock: Clock
) -> None:
    """Switching tabs hid the focused table and nothing had the focus (the arrows and enter did nothing); the
    footer, rebuilt by Textual on every change of focus (~30 ms and a layout each), is rebuilt only when its keys
    change."""
    from textual.widgets._footer import FooterKey

    from netspy_tui.tui.widgets.footer import KeyFooter
    from tests.tui.screen_text import screen_lines

    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        footer = screen.query_one(KeyFooter)
        keys = list(footer.query_children(FooterKey))
        line = screen_lines(app)[-1]
        assert "d Drops" in line and "q Quit" in line
        await pilot.press("d")
        await wait_for(pilot, lambda: screen.drops.has_focus, "the drops table focused")
        assert screen.drops.row_count > 1
        row = screen.drops.cursor_row
        await pilot.press("up")
        await wait_for(pilot, lambda: screen.drops.cursor_row == row - 1, "the drops cursor moved")
        await pilot.press("d")
        await wait_for(pilot, lambda: screen.connections.has_focus, "the connections table focused")
        await pilot.pause()
        assert list(footer.query_children(FooterKey)) == keys  # the same keys: not rebuilt
        assert screen_lines(app)[-1] == line
        await pilot.press("slash")  # the filter input's keys: rebuilt
        await wait_for(pilot, lambda: "q Quit" not in screen_lines(app)[-1], "the input's footer")
        assert "esc Back" in screen_lines(app)[-1]
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen_lines(app)[-1] == line, "the tables' footer again")
        assert screen.connections.has_focus
        # the focus and the status line's view change with the key, not after a frame that drew the view with its
        # table unfocused and the status line as it was (then each drawn again)
        screen.action_toggle_drops()
        assert screen.focused is screen.drops
        assert screen.view == screen.status.view == "drops"
        screen.action_toggle_traffic()
        assert screen.focused is screen.traffic
        assert screen.view == screen.status.view == "traffic"
        screen.action_toggle_traffic()
        assert screen.focused is screen.connections
        assert screen.view == screen.status.view == "connections"


async def test_esc_after_focus_brings_the_rows_back_with_the_cells_they_had(source: MemorySource, clock: Clock) -> None:
    """Focus hides the other processes' rows; esc shows them again with the cells they were drawn with, not new
    ones (every row's cells were made again: ~40 ms for 1,300 rows), and a row whose event changed meanwhile (a
    name learnt) gets new cells."""
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        table = screen.connections
        before = {key: list(cells) for key, cells in table._cells.items()}
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        event = table.selected_event()
        assert event is not None
        other = next(e for e in table.events.values() if e.command != event.command and not e.hostname)
        key = next(k for k, e in table.events.items() if e is other)
        wake, app.poller.wake = app.poller.wake, asyncio.Event()  # (the keys' polls wait: the rows drawn are held)
        await pilot.press("enter")
        await wait_for(pilot, lambda: set(table.events) < set(before), "the focused process's rows")
        # a name learnt for a hidden row while focused: its row comes back with it
        latest = screen.latest
        assert latest is not None
        renamed = other.model_copy(update={"hostname": "renamed.example"})
        conns = tuple(renamed if e is other else e for e in latest.connections)
        screen.latest = replace(latest, connections=conns)
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.focus_subject is None and len(table.events) == len(before), "all rows")
        assert all(table._cells[k] == before[k] and all(a is b for a, b in zip(table._cells[k], before[k], strict=True))
                   for k in before if k != key)  # fmt: skip
        assert "renamed.example" in str(table._cells[key][2])
        index = list(table.events).index(key)
        assert [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count) if i != index] == [
            r for i, r in enumerate(rows) if i != index
        ]
        assert "renamed.example" in str(table.get_row_at(index)[2])
        # the poll for all traffic reads the window afresh: equal events keep their cells too
        polls = app.polls
        app.poller.wake = wake
        wake.set()
        await wait_for(pilot, lambda: app.polls > polls, "the poll")
        assert all(a is b for k in before if k != key for a, b in zip(table._cells[k], before[k], strict=True))
        assert "renamed.example" not in str(table.get_row_at(index)[2])  # (the source has no such name)


async def test_the_hidden_drops_table_is_updated_when_shown_or_read_not_at_every_key_or_poll(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the Connections tab is shown, a focus key and a poll leave the hidden drops table as it is (a focus
    key spent ~4 ms on it); its tab's count is exact all the same, and the table is up to date once shown (d) or
    read (the export, the tests)."""
    from netspy_tui.tui.widgets.connections import DropTable

    syncs = count_calls(monkeypatch, DropTable, "sync")
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        tabs = screen.query_one("#views", TabbedContent)
        table = screen.query_one("#drops", DropTable)
        held = screen.latest.drops if screen.latest else ()
        assert len(held) > 1
        assert str(tabs.get_tab("drops-tab").label) == f"Packet drops ({len(held)})"
        event = screen.connections.selected_event()
        assert event is not None
        mine = [e for e in held if e.command == event.command]
        syncs.clear()
        await pilot.press("enter")  # focus: the drops narrow to the process's
        await wait_for(pilot, lambda: screen.focus_subject is not None, "the focus")
        clock.now += timedelta(seconds=1)
        screen.apply_snapshot(await app.poller.poll())
        await pilot.pause()
        assert syncs == []
        assert str(tabs.get_tab("drops-tab").label) == f"Packet drops ({len(mine)})"
        await pilot.press("d")
        await wait_for(pilot, lambda: tabs.active == "drops-tab", "the drops tab")
        assert syncs and table.row_count == len(mine)
        assert {e.command for e in table.events.values()} <= {event.command}
        await pilot.press("d", "escape")  # back, the focus ended: the read catches up
        await wait_for(pilot, lambda: screen.focus_subject is None, "the focus cleared")
        assert table.row_count == len(mine)
        assert screen.drops.row_count == len(held)
