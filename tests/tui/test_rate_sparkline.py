"""The pattern panel's sparklines (RateSparkline, widgets/patterns.py) draw what Textual's Sparkline draws: the same
lines, cell for cell and style for style, for data of every shape, and a new line each time the data changes."""

from __future__ import annotations

import random

import pytest
from rich.style import Style
from textual.app import App, ComposeResult
from textual.strip import Strip
from textual.visual import RichVisual
from textual.widgets import Sparkline

from netspy_tui.tui.widgets.patterns import RateSparkline

pytestmark = pytest.mark.quiet


class Pair(App[None]):
    CSS = """
    Sparkline { width: 37; height: 3; }
    #fast > .sparkline--max-color, #plain > .sparkline--max-color { color: red; }
    #fast > .sparkline--min-color, #plain > .sparkline--min-color { color: green; }
    """

    def compose(self) -> ComposeResult:
        yield RateSparkline([], id="fast")
        yield Sparkline([], id="plain")


def drawn(spark: Sparkline) -> list[list[tuple[str, Style | None]]]:
    """What the widget draws, as Textual's compositor asks for it (its lines, each one strip of the widget's width)."""
    lines = spark.render_lines(spark.size.region)
    assert all(line.cell_length == spark.size.width for line in lines)
    return [[(s.text, s.style) for s in Strip(list(line)).simplify()] for line in lines]


def both_ways(spark: RateSparkline) -> tuple[list[Strip], list[Strip]]:
    """The widget's bars made into lines by its visual, and the way Textual makes a Rich renderable into lines
    (RichVisual: Rich renders the bars in the widget's style, then the segments are cut into lines)."""
    visual = spark.render()
    assert isinstance(visual, RichVisual)
    width, height = spark.size
    args = (width, height, spark.visual_style, None)
    return visual.render_strips(*args), RichVisual.render_strips(visual, *args)  # type: ignore[arg-type]


async def test_the_rate_sparkline_draws_textual_sparkline_lines_and_follows_its_data() -> None:
    rng = random.Random(3)
    app = Pair()
    async with app.run_test(size=(60, 10)) as pilot:
        fast, plain = app.query_one("#fast", RateSparkline), app.query_one("#plain", Sparkline)
        shapes: list[list[float]] = [
            [],
            [5.0],
            [1.0, 1.0],
            [0.0, 9.0],
            [float(v) for v in range(60)],  # more values than cells
            [float(rng.randint(0, 200)) for _ in range(20)],  # fewer
            [float(rng.randint(90, 110)) for _ in range(37)],  # one a cell, a steady rate
            [0.0] * 30 + [500.0] + [0.0] * 29,
        ]
        before = None
        for data in shapes:
            for height in (1, 3):
                fast.styles.height = plain.styles.height = height
                fast.data = plain.data = data
                await pilot.pause()
                lines = drawn(fast)
                assert lines == drawn(plain), (data, height)
                ours, textuals = both_ways(fast)
                assert ours == textuals, (data, height)  # (segment for segment)
                if height == 3 and before is not None and len(data) >= 2:
                    assert lines != before  # (the bars moved with their data)
                before = lines if height == 3 else before
        # a sparkline as the panel shows it: a minute of rates, drawn again at each new second
        rates = [float(rng.randint(80, 120)) for _ in range(60)]
        for _ in range(3):
            rates = rates[1:] + [float(rng.randint(80, 120))]
            fast.data = plain.data = rates
            await pilot.pause()
            assert drawn(fast) == drawn(plain)
            ours, textuals = both_ways(fast)
            assert ours == textuals and any(text.strip() for line in ours for text, _, _ in line)
