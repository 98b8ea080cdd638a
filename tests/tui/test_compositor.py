"""A refresh's frame draws what changed and asks the widgets hidden behind others for nothing (issue 17: the dashboard
at 100 events/s), and it is the frame Textual's own compositor draws."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from textual._compositor import Compositor
from textual._context import active_app
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from netspy_tui.models import ConnectionEvent
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.compositor import FrontFirstCompositor
from netspy_tui.tui.poller import Poller
from tests.tui.conftest import Clock
from tests.tui.test_key_repaint import dashboard
from tests.tui.test_poller import pinned_gap

pytestmark = pytest.mark.quiet


def more_connections(source: MemorySource, clock: Clock, n: int, start: int) -> list[ConnectionEvent]:
    """``n`` new connect() attempts, as a live host's next second brings them."""
    first = next(e for e in source._snapshot() if isinstance(e, ConnectionEvent))
    return [
        first.model_copy(update={"id": f"next-{start + i}", "time": clock.now - timedelta(milliseconds=10 * i)})
        for i in range(n)
    ]


async def test_a_refresh_asks_no_hidden_widget_for_its_lines(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen and the containers that hold the tables and panels are covered by them: every piece of their lines
    lost to the widgets in front, yet every frame drew and cut them on every changed line."""
    asked: list[Widget] = []
    render_lines = Widget.render_lines

    def spy(self: Widget, crop: Region) -> list[Strip]:
        asked.append(self)
        return render_lines(self, crop)

    # every poll reads the panels' summaries (while events arrive the poller reads them at most every twice their cost,
    # in real time: three quick polls could all skip them, and the patterns panel not be drawn)
    monkeypatch.setattr(Poller, "_keep_summaries", pinned_gap(0.0))
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        covered = [screen, screen.query_one("#body"), screen.query_one("#left"), screen.query_one("#views")]
        monkeypatch.setattr(Widget, "render_lines", spy)
        for second in range(3):
            clock.now += timedelta(seconds=1)
            source.add_events(more_connections(source, clock, 40, 40 * second))
            screen.apply_snapshot(await app.poller.poll())
            await pilot.pause()
        assert screen.connections in asked  # (the frames were drawn: the new rows)
        assert screen.query_one("#patterns-body") in asked
        assert [w for w in asked if w in covered] == []
        # beside the tables, whose every line changed: the AI pane's lines did not change and are not written (Textual
        # drew and cut them at every frame)
        unchanged = [screen.query_one("#ai-pane"), *screen.query_one("#ai-pane").query("*")]
        assert [w for w in asked if w in unchanged] == []


async def test_a_refresh_draws_the_frame_textuals_compositor_draws(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a frame writes to the terminal (a partial update: the spans of the regions refreshed) is what Textual's
    compositor writes for it, and a full frame's lines are Textual's."""
    frames: list[bool] = []
    ours = FrontFirstCompositor._render_chops
    ours_partial = FrontFirstCompositor.render_partial_update

    def both(self: FrontFirstCompositor, crop: Region, is_rendered_line: Any) -> Any:
        drawn = ours(self, crop, is_rendered_line)
        if self._spans is None:  # (a full frame: every piece)
            frames.append(drawn == Compositor._render_chops(self, crop, is_rendered_line))
        return drawn

    def both_partial(self: FrontFirstCompositor) -> Any:
        dirty = set(self._dirty_regions)
        update = ours_partial(self)
        self._dirty_regions.update(dirty)
        theirs = Compositor.render_partial_update(self)
        if update is None or theirs is None:
            frames.append(update is None and theirs is None)
        else:
            console = active_app.get().console
            frames.append(update.render_segments(console) == theirs.render_segments(console))
        return update

    monkeypatch.setattr(FrontFirstCompositor, "_render_chops", both)
    monkeypatch.setattr(FrontFirstCompositor, "render_partial_update", both_partial)
    async with dashboard(source, clock) as (app, pilot):
        screen = app.dashboard
        assert isinstance(screen._compositor, FrontFirstCompositor)
        for second in range(3):
            clock.now += timedelta(seconds=1)
            source.add_events(more_connections(source, clock, 40, 40 * second))
            screen.apply_snapshot(await app.poller.poll())
            await pilot.pause()
        await pilot.press("p")  # (a side pane toggled, the focus moved: other widgets in front)
        await pilot.press("d")
        await pilot.pause()
        assert len(frames) >= 5
        assert all(frames)


def test_the_front_first_compositor_is_used_only_with_the_textual_it_was_written_for() -> None:
    from netspy_tui.tui.compositor import compositor

    assert type(compositor("8.2.8")) is FrontFirstCompositor
    assert type(compositor("8.3.0")) is Compositor
    assert type(compositor("9.0.0rc1")) is Compositor
    assert type(compositor("weird")) is Compositor
    # the Textual installed with the project is one it was written for: a bump that leaves it must say so here
    assert type(compositor()) is FrontFirstCompositor


def test_strips_make_their_caches_when_used_and_answer_as_textuals() -> None:
    from rich.console import Console
    from rich.segment import Segment
    from rich.style import Style

    from netspy_tui.tui.compositor import TEXTUAL_STRIP_INIT, compositor

    assert isinstance(compositor("8.2.8"), FrontFirstCompositor)  # (makes strips' caches lazy)
    segments = [Segment("hello ", Style(bold=True)), Segment("world", Style(color="red")), Segment("!")]
    lazy = Strip(segments, 12)
    textuals = Strip.__new__(Strip)
    TEXTUAL_STRIP_INIT(textuals, segments, 12)
    with pytest.raises(AttributeError):
        object.__getattribute__(lazy, "_crop_cache")  # (not made until used)
    console = Console()
    italic = Style(italic=True)

    def answers(strip: Strip) -> tuple[Any, ...]:
        return (
            list(strip.crop(1, 8)),
            [list(s) for s in strip.divide([3, 7, 12])],
            list(strip.apply_style(italic)),
            list(strip.adjust_cell_length(15, italic)),
            list(strip.crop_extend(2, 14, italic)),
            list(strip.apply_offsets(1, 2)),
            strip.render(console),
            strip.text,
            strip.cell_length,
        )

    first = answers(lazy)
    assert first == answers(textuals)
    assert answers(lazy) == first  # (the second time from the caches)
    assert lazy.crop(1, 8) is lazy.crop(1, 8)  # (cached, as Textual's)
    with pytest.raises(AttributeError):
        lazy.no_such_attribute  # noqa: B018
