"""The header: data source, health, API generation, rate, window, filter, live/paused, freshness, errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.style import Style
from rich.text import Span, Text
from textual.reactive import reactive
from textual.widgets import Static

from netspy_tui.models import counts_exact, describe_losses
from netspy_tui.textsafe import clean
from netspy_tui.tui.snapshot import Snapshot
from netspy_tui.tui.widgets.cells import WINDOWS, window_label

#: nodes named on the header's per-node line (an aggregator's); the rest are counted
MAX_NODES_SHOWN = 8


def _nothing_in(snap: Snapshot) -> bool:
    """No event of either kind in the snapshot's window."""
    counted = snap.processes.total_events if snap.processes is not None else 0
    return not snap.connections and not snap.drops and not counted


def _first_sentence(text: str) -> str:
    """Up to the first ". " that ends a sentence (an error's message before its hint: "Cannot reach … (connection
    refused). Start …"; not the one of "e.g. " or "i.e. ")."""
    end = _SENTENCE_END.search(text)
    return (text if end is None else text[: end.start()]).rstrip(".")


_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\. ")


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


def _joined_length(parts: list[tuple[int, Text]]) -> int:
    return sum(len(p.plain) for _, p in parts) + 1 + 3 * max(0, len(parts) - 2)


class StatusBar(Static):
    """Two lines, re-rendered on every snapshot, failure, change of what the user chose (the reactives below,
    bound to the screen's) and once a second (ages and countdowns)."""

    window: reactive[int] = reactive(60, init=False)
    paused: reactive[bool] = reactive(False, init=False)
    paused_at: reactive[datetime | None] = reactive(None, init=False)
    """When the user paused (the header says "paused since" it instead of a freshness age)."""
    filter_text: reactive[str] = reactive("", init=False)
    focus_label: reactive[str | None] = reactive(None, init=False)
    view: reactive[str] = reactive("connections", init=False)

    SHOW_TIMINGS = True
    """Show poll latency and draw time (snapshot tests turn this off: wall-clock figures vary)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "status--brand",
        "status--ok",
        "status--bad",
        "status--paused",
        "status--live",
        "status--warn",
        "status--dim",
        "status--key",
    }

    def __init__(self, clock: Callable[[], datetime], source_note: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.source_note = source_note
        self.snapshot: Snapshot | None = None
        self.figures: Snapshot | None = None
        """The snapshot the screen shows the data of, whose figures (events per second) the header shows with it:
        :attr:`snapshot` but while paused, when the screen keeps the data it showed and the header its figures."""
        self.failure: Failure | None = None
        self.starting = ""
        """What is still starting before the first data (the MCP gateway, the collector); "" once up."""
        self.render_ms: float | None = None
        self.pushed = False
        """The server notifies new telemetry and the dashboard follows: the data is as fresh as the last change,
        so the header says so instead of an age that would tick (and repaint) every second while nothing happens."""
        self._shown = ""
        self._shown_spans: list[Span] = []
        self._clocked = True
        """The last line built shows something that moves with the clock (set by :meth:`build`)."""
        self._styles: dict[str, Style] = {}

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick, name="status-tick")
        self.redraw()

    def _tick(self) -> None:
        """Once a second: what moves with the clock (a freshness age, a retry countdown) is drawn again; a header
        that shows neither (updates pushed, paused, still starting) is not built again to find it unchanged."""
        if self._clocked:
            self.redraw()

    def on_resize(self) -> None:
        self.redraw()  # what fits the line depends on the width (a build before layout kept every part)

    def _watch_any(self) -> None:
        if self.is_mounted:
            self.redraw()

    watch_window = watch_paused = watch_paused_at = watch_filter_text = watch_focus_label = watch_view = _watch_any

    def show_snapshot(self, snapshot: Snapshot, render_ms: float | None = None, *, drawn: bool = True) -> None:
        """The latest ``snapshot`` (the source's health, losses, freshness); ``drawn``: also the one whose data the
        screen shows (False while paused: the figures stay those of the data on screen)."""
        self.snapshot = snapshot
        if drawn:
            self.figures = snapshot
        self.failure = None
        if render_ms is not None:
            self.render_ms = render_ms
        self.redraw()

    def show_starting(self, what: str) -> None:
        self.starting = what
        self.redraw()

    def show_failure(self, failure: Failure) -> None:
        self.failure = failure
        self.redraw()

    def _style(self, name: str) -> Style:
        # Remembered until the styles change: Textual empties its own cache of component styles at every refresh(),
        # so each line built (every poll) worked its ~20 styles out again.
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"status--{name}", partial=True)
        return style

    def notify_style_update(self) -> None:
        self._styles = {}  # a theme or CSS change: the styles again
        super().notify_style_update()

    def redraw(self) -> None:
        text = self.build()
        if text.plain != self._shown or text.spans != self._shown_spans:
            self._shown, self._shown_spans = text.plain, text.spans
            self.update(text, layout=False)  # fixed size: no layout pass

    def build(self) -> Text:
        snap, fail, view, now = self.snapshot, self.failure, self, self._clock()
        self._clocked = fail is not None  # (a retry countdown)
        sep = (" · ", self._style("dim"))
        # (rank, part) in display order; when the line is too long for the terminal the highest ranks go first.
        parts: list[tuple[int, Text]] = [(0, Text(" netspy ", style=self._style("brand")))]
        status = snap.status if snap else None
        if status is None:
            waiting = f"starting: {self.starting}…" if self.starting else "connecting…"
            parts.append((1, Text(clean(waiting, 100), style=self._style("dim"))))
        else:
            src = status.source
            lost = sum(src.recent_losses.values())
            healthy = src.healthy and fail is None
            word = "stale" if fail is not None else src.status if not lost or src.status == "unhealthy" else "degraded"
            mood = "bad" if not healthy else ("warn" if word == "degraded" else "ok")
            health = Text("● " if healthy else "○ ", style=self._style(mood))
            health.append(word, style=self._style(mood))
            parts.append((1, health))
            if lost and healthy:  # (the second line says what, by cause; a narrow terminal keeps LIVE/PAUSED first)
                what = "not kept, counts exact" if counts_exact(src.recent_losses) else "lost, counts incomplete"
                parts.append((3, Text(f"{lost:,} {what}", style=self._style(mood))))
            parts.append((8, Text(clean(src.label, 60))))
            parts.append((9, Text(f"api {src.generation}")))
        rate = self.figures.events_per_second if self.figures is not None else None
        if rate is not None:
            parts.append((5, Text(f"{rate:.1f} ev/s")))
        parts.append((4, Text(f"window {window_label(view.window)}")))
        if view.paused:
            paused = Text(" PAUSED ", style=self._style("paused"))
            if view.paused_at is not None:
                paused.append(f" since {view.paused_at:%H:%M:%S}")
            parts.append((2, paused))
        elif snap is not None and fail is None:  # (not while the source does not answer: nothing is live then)
            parts.append((2, Text(" LIVE ", style=self._style("live"))))
        if snap is not None and fail is None and not view.paused:
            fresh = "updates pushed" if self.pushed else f"updated {_age((now - snap.taken_at).total_seconds())} ago"
            self._clocked = not self.pushed
            parts.append((3, Text(fresh)))
        if snap is not None and fail is None and self.SHOW_TIMINGS:
            parts.append((10, Text(f"poll {snap.latency_ms:.0f} ms")))
            if self.render_ms is not None:
                parts.append((11, Text(f"draw {self.render_ms:.0f} ms")))
        width = self.size.width or 10_000
        while len(parts) > 1 and _joined_length(parts) > width:
            parts.remove(max(parts, key=lambda p: p[0]))
        line = Text(no_wrap=True, overflow="ellipsis")
        for i, (_, part) in enumerate(parts):
            if i:
                line.append(*(sep if i > 1 else (" ", "")))
            line.append_text(part)

        second = Text(no_wrap=True, overflow="ellipsis")
        notes: list[Text] = []
        if fail is not None:
            # what failed first (its first sentence names the server and why), then when it is tried again: at 80
            # columns "⚠ stale since 18:05:38, retry in 1s (attempt 1): " first left "Cannot reach the eBPF server"
            # of the error, without its address or reason ("stale" and since when: the first line and :status)
            wait = (fail.retry_at - now).total_seconds()
            msg = Text("⚠ ", style=self._style("bad"))
            msg.append(clean(_first_sentence(fail.error), 160))
            retry = "retrying now" if wait <= 0 else f"retry in {max(1, round(wait))}s"
            msg.append(f" · {retry} (attempt {fail.attempt}, stale since {fail.stale_since:%H:%M:%S})",
                       style=self._style("bad"))  # fmt: skip
            notes.append(msg)
        if view.focus_label:
            notes.append(Text.assemble(("focus ", self._style("key")), view.focus_label))
        if view.filter_text:
            notes.append(Text.assemble(("filter ", self._style("key")), f"“{clean(view.filter_text, 40)}”"))
        if view.view in ("drops", "traffic"):
            notes.append(
                Text(f"view: {'packet drops' if view.view == 'drops' else 'traffic'}", style=self._style("key"))
            )
        note_shown = False
        if status is not None:
            src = status.source
            if not src.healthy and src.detail:  # why (a full disk, a server that says why it is unhealthy)
                notes.append(Text(clean(src.detail, 160), style=self._style("bad")))
            if src.sampled and self.source_note:
                # why this collector first ("procfs sampling: eBPF needs root"), then what sampling costs: at 80
                # columns both fit, where "sampled: …" first left "procfs sampling: eBPF" of the reason
                notes.append(Text(clean(self.source_note, 80), style=self._style("dim")))
                notes.append(Text("short-lived connections can be missed", style=self._style("warn")))
                note_shown = True
            elif src.sampled:
                notes.append(Text("sampled: short-lived connections can be missed", style=self._style("warn")))
            if src.sampled:  # (what the sampler cannot show: other users' connections without root)
                notes.extend(Text(clean(n, 100), style=self._style("warn")) for n in src.notes)
            if src.recent_losses:
                notes.append(
                    Text(f"last minute: {clean(describe_losses(src.recent_losses), 120)}", style=self._style("warn"))
                )
            elif src.events_lost:
                since = describe_losses(src.losses) if src.losses else f"{src.events_lost:,} events not kept"
                notes.append(Text(f"since start: {clean(since, 120)}", style=self._style("warn")))
            if src.recording and src.recording.get("error"):  # (it goes on without: the events are still stored)
                written = src.recording.get("events")
                notes.append(Text(f"recording stopped after {written:,} events (:status says why)"
                                  if isinstance(written, int) else "recording stopped (:status says why)",
                                  style=self._style("bad")))  # fmt: skip
            stored = src.stored_events or 0
            if stored and snap is not None and not view.focus_label and not view.filter_text and _nothing_in(snap):
                # (a --db or a replay at its recorded times whose events are older than the window: an empty screen
                # said nothing, the replay's note cut at 80 columns before "at its recorded times")
                what = "w widens the window" if view.window < WINDOWS[-1] else "--window S shows a longer one"
                noun = "event" if stored == 1 else "events"
                notes.append(Text(f"{stored:,} {noun} stored, none in the last {window_label(view.window)}: {what}",
                                  style=self._style("warn")))  # fmt: skip
            if src.nodes:  # an aggregator: each node's events, exact (its own store's count)
                nodes = sorted(src.nodes.items())
                shown = " · ".join(f"{clean(n, 24)} {c:,}" for n, c in nodes[:MAX_NODES_SHOWN])
                more = f" · +{len(nodes) - MAX_NODES_SHOWN} more" if len(nodes) > MAX_NODES_SHOWN else ""
                notes.append(Text.assemble(("nodes ", self._style("key")), shown + more))
        if snap is not None and (snap.burst_skipped or snap.drops_skipped):
            counts = ((snap.burst_skipped, "events"), (snap.drops_skipped, "drops"))
            skipped = [f"{n:,} {what}" for n, what in counts if n]
            notes.append(Text(f"burst: {' and '.join(skipped)} not fetched in one poll", style=self._style("warn")))
        if self.source_note and not note_shown:
            # (last, and only whole: after a long note at 80 columns "· replay of" was all that was left of it; the
            # source is on the first line where there is room, and in :status)
            note = Text(clean(self.source_note, 80), style=self._style("dim"))
            used = 1 + sum(len(n) for n in notes) + len(sep[0]) * len(notes)
            if not notes or used + len(note) <= (self.size.width or 10_000):
                notes.append(note)
        if not notes:
            notes.append(Text("press ? for keys, : for commands, / to filter", style=self._style("dim")))
        second.append(" ")
        for i, note in enumerate(notes):
            if i:
                second.append(*sep)
            second.append_text(note)
        return Text("\n", no_wrap=True, overflow="ellipsis").join([line, second])
