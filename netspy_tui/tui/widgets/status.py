"""The header: data source, health, API generation, rate, window, filter, live/paused, freshness, errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from netspy_tui.models import describe_losses
from netspy_tui.textsafe import clean
from netspy_tui.tui.snapshot import Snapshot
from netspy_tui.tui.widgets.cells import window_label


@dataclass
class ViewState:
    """What the user chose, as the header shows it."""

    window: int
    paused: bool = False
    filter_text: str = ""
    focus_label: str | None = None
    view: str = "connections"


@dataclass
class Failure:
    error: str
    stale_since: datetime
    retry_at: datetime
    attempt: int


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


class StatusBar(Static):
    """Two lines, re-rendered on every snapshot, failure and once a second (ages and countdowns)."""

    SHOW_TIMINGS = True
    """Show poll latency and draw time (snapshot tests turn this off: wall-clock figures vary)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "status--brand", "status--ok", "status--bad", "status--paused", "status--live", "status--warn",
        "status--dim", "status--key",
    }

    def __init__(self, clock: Callable[[], datetime], view: ViewState, source_note: str = "",
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.view = view
        self.source_note = source_note
        self.snapshot: Snapshot | None = None
        self.failure: Failure | None = None
        self.render_ms: float | None = None
        self._shown = ""
        self._shown_spans: list[object] = []

    def on_mount(self) -> None:
        self.set_interval(1.0, self.redraw, name="status-tick")
        self.redraw()

    def show_snapshot(self, snapshot: Snapshot, render_ms: float | None = None) -> None:
        self.snapshot = snapshot
        self.failure = None
        if render_ms is not None:
            self.render_ms = render_ms
        self.redraw()

    def show_failure(self, failure: Failure) -> None:
        self.failure = failure
        self.redraw()

    def _style(self, name: str):  # type: ignore[no-untyped-def]
        return self.get_component_rich_style(f"status--{name}", partial=True)

    def redraw(self) -> None:
        text = self.build()
        if text.plain != self._shown or text.spans != self._shown_spans:
            self._shown, self._shown_spans = text.plain, text.spans
            self.update(text, layout=False)  # fixed size: no layout pass

    def build(self) -> Text:
        snap, fail, view, now = self.snapshot, self.failure, self.view, self._clock()
        sep = (" · ", self._style("dim"))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" netspy ", style=self._style("brand"))
        line.append(" ")
        status = snap.status if snap else None
        if status is None:
            line.append("connecting…", style=self._style("dim"))
        else:
            src = status.source
            healthy = src.healthy and fail is None
            mood = "bad" if not healthy else ("warn" if src.degraded else "ok")
            line.append("● " if healthy else "○ ", style=self._style(mood))
            line.append(clean(src.label, 60))
            line.append(*sep)
            line.append(src.status, style=self._style("ok" if src.status == "healthy" else mood))
            line.append(*sep)
            line.append(f"api {src.generation}")
        if snap is not None and snap.events_per_second is not None:
            line.append(*sep)
            line.append(f"{snap.events_per_second:.1f} ev/s")
        line.append(*sep)
        line.append(f"window {window_label(view.window)}")
        line.append(*sep)
        if view.paused:
            line.append(" PAUSED ", style=self._style("paused"))
        else:
            line.append(" LIVE ", style=self._style("live"))
        if snap is not None and fail is None:
            line.append(*sep)
            line.append(f"updated {_age((now - snap.taken_at).total_seconds())} ago")
            if self.SHOW_TIMINGS:
                line.append(f" · poll {snap.latency_ms:.0f} ms")
            if self.SHOW_TIMINGS and self.render_ms is not None:
                line.append(f" · draw {self.render_ms:.0f} ms")

        second = Text(no_wrap=True, overflow="ellipsis")
        parts: list[Text] = []
        if fail is not None:
            wait = (fail.retry_at - now).total_seconds()
            msg = Text(f"⚠ stale since {fail.stale_since:%H:%M:%S}, ", style=self._style("bad"))
            msg.append("retrying now" if wait <= 0 else f"retry in {max(1, round(wait))}s", style=self._style("bad"))
            msg.append(f" (attempt {fail.attempt}): ", style=self._style("bad"))
            msg.append(clean(fail.error, 160))
            parts.append(msg)
        if view.focus_label:
            parts.append(Text.assemble(("focus ", self._style("key")), view.focus_label))
        if view.filter_text:
            parts.append(Text.assemble(("filter ", self._style("key")), f"“{clean(view.filter_text, 40)}”"))
        if view.view == "drops":
            parts.append(Text("view: packet drops", style=self._style("key")))
        if status is not None:
            src = status.source
            if src.sampled:
                parts.append(Text("sampled: short-lived connections can be missed", style=self._style("warn")))
            if src.recent_losses:
                parts.append(Text(f"last minute: {clean(describe_losses(src.recent_losses), 120)}",
                                  style=self._style("warn")))
            elif src.events_lost:
                parts.append(Text(f"lost {src.events_lost} events", style=self._style("warn")))
        if snap is not None and snap.burst_skipped:
            parts.append(Text(f"burst: {snap.burst_skipped} events not fetched in one poll", style=self._style("warn")))
        if self.source_note:
            parts.append(Text(clean(self.source_note, 80), style=self._style("dim")))
        if not parts:
            parts.append(Text("press ? for keys, : for commands, / to filter", style=self._style("dim")))
        second.append(" ")
        for i, part in enumerate(parts):
            if i:
                second.append(*sep)
            second.append_text(part)
        return Text("\n").join([line, second])
