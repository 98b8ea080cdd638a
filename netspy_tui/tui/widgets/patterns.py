"""Pattern panel (top destinations, protocol/port/outcome mix, rate sparkline) and the drop-reason line."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.app import RenderResult as WidgetRender
from textual.containers import Vertical
from textual.renderables._blend_colors import blend_colors
from textual.renderables.sparkline import Sparkline as SparklineRenderable
from textual.strip import Strip
from textual.style import Style as VisualStyle
from textual.visual import RenderOptions, RichVisual
from textual.widgets import Label, Sparkline, Static

from netspy_tui.mcp_tools.schemas import PatternAnalysis
from netspy_tui.models import OUTCOMES, Counted, ServerStatus, TrafficStats
from netspy_tui.textsafe import clean
from netspy_tui.tui.widgets.cells import outcome_classes, window_label
from netspy_tui.tui.widgets.traffic import rate_text

TOP_DESTINATIONS = 6
BAR_WIDTH = 10


@lru_cache(maxsize=4096)
def _bar_style(low: Color, high: Color, ratio: float) -> Style:
    return Style.from_color(blend_colors(low, high, ratio))


class _Bars(SparklineRenderable[float]):
    """Textual's sparkline, drawn the same (same characters, same colours) at a fraction of the cost: a bar's colour
    is blended once per height, not for every cell of every frame (~60 x 3 cells, redrawn each second as the rate's
    buckets move), a run of cells of one colour is one segment (the styles are added to each segment after), and the
    buckets are cut with integer arithmetic (Textual's with Fractions: the same cuts, a fifth of the bars' drawing)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if len(self.data) < 2:  # (empty or one value: a flat line, drawn as Textual draws it)
            yield from super().__rich_console__(console, options)
            return
        for i, line in enumerate(self.lines(self.width or options.max_width)):
            if i:
                yield Segment.line()
            for text, style in line:
                yield Segment(text, style)

    def lines(self, width: int) -> list[list[tuple[str, Style | None]]]:
        """The bars of two values or more, top line first, each a list of runs (text, style) ``width`` cells wide."""
        data = list(self.data)
        height = self.height or 1
        per_line = len(self.BARS)
        bar_segments = per_line * height - 1
        minimum, maximum = min(data), max(data)
        extent = maximum - minimum or 1
        low, high = self.min_color.color, self.max_color.color
        assert low is not None and high is not None
        count = len(data)  # (Textual's bucket i: data[int(Fraction(count, width) * i) : int(Fraction(...) * (i + 1))])
        buckets = [part for i in range(width) if (part := data[count * i // width : count * (i + 1) // width])]
        step = len(buckets) / width
        ratios: list[float] = []
        bucket_index = 0.0
        for _ in range(width):
            ratios.append((self.summary_function(buckets[int(bucket_index)]) - minimum) / extent)
            bucket_index += step
        lines = []
        for i in reversed(range(height)):
            part_low, part_high = i * per_line, (i + 1) * per_line
            line: list[tuple[str, Style | None]] = []
            run: list[str] = []
            run_style: Style | None = None
            for ratio in ratios:
                bar_index = int(ratio * bar_segments)
                if bar_index < part_low:
                    bar, style = " ", None
                else:
                    bar = "█" if bar_index >= part_high else self.BARS[bar_index % per_line]
                    style = _bar_style(low, high, ratio)
                if run and style != run_style:
                    line.append(("".join(run), run_style))
                    run = []
                run.append(bar)
                run_style = style
            if run:
                line.append(("".join(run), run_style))
            lines.append(line)
        return lines


class _BarsVisual(RichVisual):
    """:class:`_Bars` as the widget draws it, made into lines without Rich's rendering: Textual wraps the bars in the
    widget's style (each segment's style added to it) and cuts the segments into lines; here each line's runs are
    the segments, with the sums made once per colour (~0.75 ms -> ~0.1 ms a 60 x 3 sparkline, redrawn each second).
    The lines are the same (tests/tui/test_rate_sparkline.py compares them with Textual's)."""

    def render_strips(self, width: int, height: int | None, style: VisualStyle, options: RenderOptions) -> list[Strip]:
        bars = self._renderable
        assert isinstance(bars, _Bars)
        if len(bars.data) < 2 or (bars.width or width) != width:
            return super().render_strips(width, height, style, options)
        base = style.rich_style
        styled: dict[Style | None, Style | None] = {}
        strips = []
        for line in bars.lines(width)[:height]:
            segments = []
            for text, run_style in line:
                if run_style not in styled:
                    styled[run_style] = base + run_style if base else run_style
                segments.append(Segment(text, styled[run_style]))
            strips.append(Strip(segments, width))
        return strips


class RateSparkline(Sparkline):
    """A :class:`~textual.widgets.Sparkline` drawn by :class:`_Bars` (made into lines by :class:`_BarsVisual`)."""

    def render(self) -> WidgetRender:
        bars = super().render()
        assert isinstance(bars, SparklineRenderable)
        return _BarsVisual(
            self,
            _Bars(
                bars.data,
                width=bars.width,
                height=bars.height,
                min_color=bars.min_color.color or Color.default(),
                max_color=bars.max_color.color or Color.default(),
                summary_function=bars.summary_function,
            ),
        )


def _mix(items: list[Counted], limit: int = 5) -> str:
    shown = " · ".join(f"{clean(c.key, 24)} {c.count}" for c in items[:limit])
    more = len(items) - limit
    return (shown + (f" · +{more} more" if more > 0 else "")) or "none"


class PatternsPanel(Vertical):
    """Renders one :class:`PatternAnalysis` (connections) for the focused process or all traffic."""

    COMPONENT_CLASSES: ClassVar[set[str]] = outcome_classes() | {"patterns--heading", "patterns--bar", "patterns--dim"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[PatternAnalysis | None, str] | None = None
        self._lines = -1
        self._bytes_seen = False
        """The source has counted bytes: the rx/tx lines are on show from then on."""

    def compose(self) -> ComposeResult:
        yield Static(Text("Waiting for the first poll…"), id="patterns-body")  # not on mount: a poll can come first
        yield Label("", id="rate-label")
        yield RateSparkline([], id="rate")
        for way in ("rx", "tx"):  # bytes: shown once the source has counted some (see show_bytes)
            yield Label("", id=f"{way}-label", classes="bytes")
            yield RateSparkline([], id=f"{way}-rate", classes="bytes")

    def show_bytes(self, samples: Sequence[TrafficStats]) -> None:
        """The subject's rx and tx rates at each of the last polls (oldest first), as two sparklines with the
        latest rate, the peak and the retransmits; hidden until the source has counted some."""
        if not samples and self._bytes_seen:
            # another subject (focus, a filter naming a process): its first sample comes with its first poll. The
            # lines stay, emptied, rather than going and coming back (two layout passes of the whole screen, one
            # of them on the key that changed the subject)
            for way in ("rx", "tx"):
                waiting = f"{way.capitalize()} … (next poll)"
                shown_label = self.query_one(f"#{way}-label", Label)
                if str(shown_label.content) != waiting:
                    shown_label.update(Text(waiting), layout=False)
                self.query_one(f"#{way}-rate", Sparkline).data = []
            return
        shown = bool(samples)
        for widget in self.query(".bytes"):
            widget.display = shown
        if not shown:
            return
        self._bytes_seen = True
        retrans = sum(s.retransmits for s in samples)
        for way in ("rx", "tx"):
            rates = [s.rx_rate if way == "rx" else s.tx_rate for s in samples]
            label = f"{way.capitalize()} {rate_text(rates[-1])} (peak {rate_text(max(rates))}, {len(rates)} polls)"
            if way == "tx":
                label += f" · {retrans:,} retransmit{'s' if retrans != 1 else ''}"
            shown_label = self.query_one(f"#{way}-label", Label)
            if str(shown_label.content) != label:
                # one line as wide as the panel (app.tcss): a new figure needs no layout pass, only this line
                shown_label.update(Text(label, no_wrap=True, overflow="ellipsis"), layout=False)
            spark = self.query_one(f"#{way}-rate", Sparkline)
            if spark.data != rates:
                spark.data = rates

    def on_mount(self) -> None:
        if self._shown is None:
            self.border_title = "Patterns"

    def show(self, analysis: PatternAnalysis | None, subject_label: str) -> None:
        if (analysis, subject_label) == self._shown:
            return
        if self._shown is None or self._shown[1] != subject_label:
            # (set only when it changes: setting it redraws the whole panel, its border and every line)
            self.border_title = Text(f"Patterns · {subject_label}")  # a process name is data, never markup
        self._shown = (analysis, subject_label)
        body = self.query_one("#patterns-body", Static)
        spark = self.query_one("#rate", Sparkline)
        rate_label = self.query_one("#rate-label", Label)
        if analysis is None:
            return
        stats = analysis.stats
        heading = self.get_component_rich_style("patterns--heading", partial=True)
        bar_style = self.get_component_rich_style("patterns--bar", partial=True)
        dim = self.get_component_rich_style("patterns--dim", partial=True)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{stats.total:,} attempt{'' if stats.total == 1 else 's'}", style=heading)
        observed = analysis.observed_seconds
        # (the rate is over the seconds observed when fewer than the window's: "240 in 1h · 11.6/min" read wrong)
        over = f" over {_span(observed)}" if observed is not None and observed < stats.window_seconds else ""
        text.append(
            f" in {window_label(stats.window_seconds)} · {analysis.rate_per_minute:,.1f}/min{over} · "
            f"{analysis.failure_ratio:.0%} failed\n"
        )
        if stats.total == 0:
            text.append("No connection attempts in this window.", style=dim)
        else:
            text.append("Top destinations\n", style=heading)
            top = stats.top_destinations[:TOP_DESTINATIONS]
            biggest = max((c.count for c in top), default=1)
            width = max((len(clean(c.key, 30)) for c in top), default=10)
            for c in top:
                filled = max(1, round(BAR_WIDTH * c.count / biggest))
                text.append(f" {clean(c.key, 30):<{width}} {c.count:>5} ")
                text.append("█" * filled, style=bar_style)
                text.append("\n")
            text.append("Protocols ", style=heading)
            text.append(_mix(list(stats.protocols), 4) + "\n")
            text.append("Ports     ", style=heading)
            text.append(_mix(list(stats.ports), 4) + "\n")
            text.append("Outcomes  ", style=heading)
            for i, c in enumerate(stats.outcomes[:6]):
                name = c.key if c.key in OUTCOMES else "unknown"
                if i:
                    text.append(" · ")
                text.append(
                    f"{clean(c.key, 16).replace('_', ' ')} {c.count}",
                    style=self.get_component_rich_style(f"outcome--{name}", partial=True),
                )
        lines = text.plain.count("\n")
        body.update(text, layout=lines != self._lines)
        self._lines = lines
        rate = (
            f"Rate per {stats.bucket_seconds}s over {window_label(stats.window_seconds)} "
            f"(peak {max(stats.rate_buckets, default=0)})"
        )
        if str(rate_label.content) != rate:
            # one line as wide as the panel (app.tcss): a peak that gains a digit needs no layout pass of the screen
            rate_label.update(Text(rate, no_wrap=True, overflow="ellipsis"), layout=False)
        spark.data = [float(v) for v in stats.rate_buckets]


def _span(seconds: float) -> str:
    """A span of seconds in its largest units, short: ``45s``, ``21m``, ``1h 5m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def drops_unseen(status: ServerStatus | None) -> str | None:
    """Why the source cannot see packet drops (procfs sampling; an eBPF collector whose drop program the kernel
    refused), or None."""
    if status is None:
        return None
    source = status.source
    if source.collector == "procfs":
        return ("Packet drops are not collected by procfs sampling: run netspy-tui as root for eBPF, which reports "
                "each with the kernel's reason.")  # fmt: skip
    program = next((p for p in status.programs if p.name == "skb_drop"), None)
    if source.collector == "ebpf" and program is not None and program.status != "active":
        return "Packet drops are not reported here: the kernel did not take the program that reads them (:status)."
    return None


def drop_mix_text(analysis: PatternAnalysis | None, window: int, unseen: str | None = None) -> Text:
    """One line: total drops in the window and the drop-reason mix; ``unseen``: why this source cannot see drops
    (said instead of "no packet drops", which would read as none having happened)."""
    if analysis is None:
        return Text(unseen or "Packet drops: waiting for the first poll…")
    stats = analysis.stats
    if stats.total == 0:
        return Text(unseen or f"No packet drops in the last {window_label(window)}.")
    return Text(
        f"{stats.total} packet drops in {window_label(window)} · reasons: {_mix(list(stats.outcomes), 6)}",
        no_wrap=True,
        overflow="ellipsis",
    )
