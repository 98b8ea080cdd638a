"""The AI pane: a Markdown answer streamed through ``MarkdownStream`` in an anchored scroll.

The pane shows its own state (Started / Streaming / Finished / Failed) and never raises: a
failure keeps the text received so far and names the error. It only reacts to messages
(posted by the screen's ``insights`` worker); a message from a superseded request is ignored.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown
from textual.widgets.markdown import MarkdownStream

from netspy_tui.textsafe import clean
from netspy_tui.tui.messages import (
    InsightChunk,
    InsightFailed,
    InsightFinished,
    InsightNoteMessage,
    InsightStarted,
)


class InsightsPane(Vertical):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"insights--busy", "insights--done", "insights--failed",
                                              "insights--dim"}

    def __init__(self, *, label: str = "AI", id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.request_id = 0
        self.state = "idle"
        """idle, started, streaming, finished, failed or notice."""
        self.answer = ""
        """The answer text received so far (cleaned)."""
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Label(id="insight-state")
        with VerticalScroll(id="insight-scroll"):
            yield Markdown(id="insight-md")

    def on_mount(self) -> None:
        self.border_title = self.label
        self._set_state("idle", "Select a process and press a to explain it.")

    @property
    def streaming(self) -> bool:
        return self.state in ("started", "streaming")

    def _set_state(self, state: str, text: str) -> None:
        self.state = state
        style = {"started": "busy", "streaming": "busy", "finished": "done", "failed": "failed"}.get(state, "dim")
        self.query_one("#insight-state", Label).update(
            Text(clean(text, 300), style=self.get_component_rich_style(f"insights--{style}", partial=True)))

    async def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.stop()

    async def show_notice(self, text: str) -> None:
        """A plain message from the dashboard itself (not model output)."""
        await self._stop_stream()
        self.request_id += 1
        self.answer = ""
        await self.query_one("#insight-md", Markdown).update("")
        self._set_state("notice", text)

    @on(InsightStarted)
    async def _started(self, message: InsightStarted) -> None:
        await self._stop_stream()
        self.request_id = message.request_id
        self.answer = ""
        markdown = self.query_one("#insight-md", Markdown)
        await markdown.update("")
        self._stream = Markdown.get_stream(markdown)
        self.query_one("#insight-scroll", VerticalScroll).anchor()
        self._set_state("started", f"Started: {message.title}")

    @on(InsightChunk)
    async def _chunk(self, message: InsightChunk) -> None:
        if message.request_id != self.request_id or self._stream is None:
            return
        fragment = clean(message.text, None, keep_newlines=True)
        self.answer += fragment
        if self.state == "started":
            self._set_state("streaming", "Streaming…")
        await self._stream.write(fragment)

    @on(InsightNoteMessage)
    def _note(self, message: InsightNoteMessage) -> None:
        if message.request_id == self.request_id and self.streaming:
            self._set_state("streaming", message.text)

    @on(InsightFinished)
    async def _finished(self, message: InsightFinished) -> None:
        if message.request_id != self.request_id:
            return
        await self._stop_stream()
        self._set_state("finished", "Finished." if self.answer else "Finished (the answer was empty).")

    @on(InsightFailed)
    async def _failed(self, message: InsightFailed) -> None:
        if message.request_id != self.request_id:
            return
        await self._stop_stream()
        self._set_state("failed", f"Failed: {message.error}")
