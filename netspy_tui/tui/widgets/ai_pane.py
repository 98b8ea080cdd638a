"""The AI pane: a Markdown answer streamed through ``MarkdownStream`` in an anchored scroll.

The pane shows its own state (Started / Streaming / Finished / Failed / Cancelled) in one line
above the answer, and which engine answers in its title. It never raises: a failure keeps the text
received so far and names the error in that line. Requests come in through :meth:`AIPane.submit`:
the :class:`~netspy_tui.tui.ai_runner.AIRunner` decides whether one starts, and its stream runs in
this pane's ``ai`` worker (exclusive: a new request cancels the old one), which only posts
messages. The pane shows messages for the request it announced last; anything else is a superseded
or cancelled request's leftover and is ignored.

Model output is untrusted. It is rendered as Markdown (no Textual markup is ever parsed from it),
with control characters made visible (:func:`safe_fragment`), raw HTML shown as text, and links
never opened: clicking one only copies it and says so.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label

from netspy_tui.textsafe import clean
from netspy_tui.tui.ai_runner import AIRequest, AIRunner
from netspy_tui.tui.messages import (
    AIChunk,
    AIFailed,
    AIFinished,
    AIMessage,
    AINote,
    AIStarted,
    AIToolCall,
    AIToolDone,
)

if TYPE_CHECKING:  # the Markdown view (and markdown_it) loads after the dashboard's first frame
    from markdown_it import MarkdownIt
    from textual.widgets import Markdown
    from textual.widgets.markdown import MarkdownStream

IDLE_TEXT = "a explains the selected process · A asks a question"

#: The most of one answer the pane keeps: the AI layer's cap (``netspy_tui.ai.types.MAX_ANSWER_CHARS``: it hangs
#: up on the model there and says so; not imported, the AI layer loads after the first frame), kept here too for
#: any other stream handed to the pane.
MAX_ANSWER_CHARS = 100_000

#: ``Finished.model`` of the local rule-based explainer (see ``ai_bridge.stream_process_explanation``).
RULES_MODEL = "rules"

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~&])")


def safe_fragment(text: str) -> str:
    """A fragment of model output, inert: carriage returns dropped, every other control character
    (C0, C1, escape sequences, bidi overrides) turned into a visible ``\\xNN`` escape; newlines and
    tabs kept so the Markdown structure survives."""
    return clean(text.replace("\r", ""), None, keep_newlines=True)


def md_escape(text: str) -> str:
    """Untrusted one-line text as literal Markdown (every Markdown punctuation backslash-escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", clean(text, 300))


def _parser() -> MarkdownIt:
    """Textual's default "gfm-like" Markdown, but raw HTML is shown as text rather than dropped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("gfm-like", {"html": False})


class AIPane(Vertical):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"ai-pane--busy", "ai-pane--done", "ai-pane--failed", "ai-pane--dim"}

    def __init__(self, *, label: str = "AI", id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.request_id: int | None = None
        """The request whose messages are shown; None: none (idle, cancelled or a notice)."""
        self.state = "idle"
        """idle, started, streaming, finished, failed, cancelled or notice."""
        self.state_text = ""
        """The state line as shown (cleaned)."""
        self.answer = ""
        """The model's answer received so far (sanitised), without the tool-call lines."""
        self.document = ""
        """Everything written to the Markdown view: the answer with the tool-call lines between."""
        self.tool_lines: list[str] = []
        """Each tool call as shown, e.g. ``→ list_connections({"pid": 42}) ✓ 3 events``."""
        self.model: str | None = None
        """Who answered the last finished request (the server's model name, or "rules")."""
        self.title = ""
        """What the shown request asks (e.g. ``explaining process 'curl' over 1m``): kept in the state line."""
        self._stream: MarkdownStream | None = None
        self._answer: Markdown | None = None
        self._answer_mounted: asyncio.Future[None] | None = None
        self._chunks = 0
        self._cut = False
        self.runner = AIRunner()

    def compose(self) -> ComposeResult:
        yield Label(id="ai-state")
        yield VerticalScroll(id="ai-scroll")

    def on_mount(self) -> None:
        self.set_label(self.label)
        self._set_state("idle", IDLE_TEXT)
        # Empty until an answer comes: the Markdown view (markdown_it, ~40 ms to import) is mounted after the
        # dashboard's first frame is drawn, or by the first request if it comes sooner (markdown()).
        self.call_after_refresh(self._mount_answer)

    def _mount_answer(self) -> bool:
        """Mount the Markdown view once; False when the pane's scroll is not attached: not yet (tried again after
        the next frame) or no longer (the app is quitting: a ``q`` right after start-up came first)."""
        if self._answer is not None:
            return True
        scroll = self.query_one("#ai-scroll", VerticalScroll)
        if not scroll.is_attached or scroll._closing or scroll._pruning:
            if self.is_attached and not (self._closing or self._pruning or self.app._closing):
                self.call_after_refresh(self._mount_answer)
            return False
        from textual.widgets import Markdown

        self._answer = Markdown(id="ai-answer", open_links=False, parser_factory=_parser)
        self._answer_mounted = asyncio.ensure_future(scroll.mount(self._answer))
        return True

    async def answer_view(self) -> Markdown:
        """The Markdown view of the answer, mounted (at once if the first frame has not done it yet)."""
        if not self._mount_answer():
            raise asyncio.CancelledError  # the pane is going away with the app: no answer to show
        assert self._answer is not None and self._answer_mounted is not None
        await self._answer_mounted
        return self._answer

    @property
    def markdown(self) -> Markdown:
        """The Markdown view of the answer once mounted (see :meth:`answer_view`)."""
        from textual.widgets import Markdown

        return self.query_one("#ai-answer", Markdown)

    @property
    def streaming(self) -> bool:
        return self.state in ("started", "streaming")

    def set_label(self, label: str) -> None:
        """Which engine answers (e.g. ``gpt-5-mini at http://127.0.0.1:8000/v1 (key set)``)."""
        self.label = label
        self.border_title = Text(f"AI · {clean(label, 100)}")

    def _set_state(self, state: str, text: str, subtitle: str = "") -> None:
        self.state = state
        self.state_text = clean(text, 400)
        style = {"started": "busy", "streaming": "busy", "finished": "done", "failed": "failed"}.get(state, "dim")
        self.query_one("#ai-state", Label).update(
            Text(self.state_text, style=self.get_component_rich_style(f"ai-pane--{style}", partial=True))
        )
        self.border_subtitle = Text(clean(subtitle, 80)) if subtitle else ""

    async def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Let the stream's task take its first step before it is cancelled: a task cancelled before it ever
            # ran makes ``stop()`` raise CancelledError, which ends this pane's message loop (an AIFailed posted
            # right behind AIStarted, e.g. a refused connection, was then never shown) and drops pending text.
            await asyncio.sleep(0)
            await stream.stop()

    async def _write(self, fragment: str) -> None:
        if self._stream is None or not fragment:
            return
        self.document += fragment
        await self._stream.write(fragment)

    def _current(self, message: AIMessage) -> bool:
        return message.request_id == self.request_id

    # --- driven by the screen -----------------------------------------------------------

    def submit(self, request: AIRequest) -> bool:
        """Start ``request`` unless the runner's rule holds or ignores it (then say what is running)."""
        decision = self.runner.submit(request, running=self.pending)
        if decision.action != "start":
            self.notify(decision.notice, markup=False)
            return False
        self.expect(decision.request_id, request.title)
        self._run(decision.request_id, request)
        return True

    @work(group="ai", exclusive=True, exit_on_error=False)
    async def _run(self, request_id: int, request: AIRequest) -> None:
        await AIRunner.stream(request_id, request, self.post_message)

    def _stop_worker(self) -> None:
        self.workers.cancel_group(self, "ai")
        self.runner.cancelled()

    def expect(self, request_id: int, title: str = "") -> None:
        """The screen started request ``request_id``: from now on only its messages are shown. ``title`` (what
        is asked, e.g. ``explaining process 'curl' over 1m``) shows at once, before the request goes out."""
        self.request_id = request_id
        if title:
            self.title = title
            self._set_state("started", f"Starting: {title}", "esc cancels")

    @property
    def pending(self) -> bool:
        """A request was announced and has not finished, failed or been cancelled yet."""
        return self.request_id is not None

    async def cancel(self) -> None:
        """Stop the streaming answer: cancel the worker (which hangs up on the server); the text so far stays."""
        self._stop_worker()
        if self.request_id is None:
            return
        self.request_id = None
        await self._stop_stream()
        kept = "; the text so far is kept" if self.answer else ""
        self._set_state("cancelled", f"Cancelled{kept}.")

    async def show_notice(self, text: str) -> None:
        """A plain message from the dashboard itself (not model output); clears the answer."""
        self._stop_worker()
        self.request_id = None
        await self._stop_stream()
        self.answer = self.document = ""
        self.tool_lines = []
        await (await self.answer_view()).update("")
        self._set_state("notice", text)

    # --- messages from the ai worker ----------------------------------------------------

    @on(AIStarted)
    async def _started(self, message: AIStarted) -> None:
        if not self._current(message):
            return
        await self._stop_stream()
        self.answer = self.document = ""
        self.tool_lines = []
        self.model = None
        self._chunks = 0
        self._cut = False
        from textual.widgets import Markdown

        markdown = await self.answer_view()
        await markdown.update("")
        self._stream = Markdown.get_stream(markdown)
        self.query_one("#ai-scroll", VerticalScroll).anchor()
        self.title = message.title
        self._set_state("started", f"Started: {message.title}", "streaming · esc cancels")

    @on(AIChunk)
    async def _chunk(self, message: AIChunk) -> None:
        if not self._current(message) or self._stream is None:
            return
        fragment = safe_fragment(message.text)
        room = MAX_ANSWER_CHARS - len(self.answer)
        if self._cut or not fragment:
            return
        if len(fragment) > room:  # (the first fragment past the cap says so, once)
            self._cut = True
            cut = f"\n\n*(the answer passed {MAX_ANSWER_CHARS:,} characters; the rest is not shown)*"
            fragment = fragment[:room] + cut
        self.answer += fragment
        self._chunks += 1
        if self.state == "started" or self.state_text.startswith("calling "):
            self._set_state("streaming", f"Streaming: {self.title}… (esc cancels)", "streaming · esc cancels")
        await self._write(fragment)

    @on(AINote)
    def _note(self, message: AINote) -> None:
        if self._current(message) and self.streaming:
            self._set_state(self.state, message.text, "streaming · esc cancels")

    @on(AIToolCall)
    async def _tool_call(self, message: AIToolCall) -> None:
        if not self._current(message) or self._stream is None:
            return
        doc = self.document
        gap = "" if not doc or doc.endswith("\n\n") else ("\n" if doc.endswith("\n") else "\n\n")
        from netspy_tui.ai.rules import code

        self.tool_lines.append(f"→ {clean(message.call, 200)}")
        await self._write(f"{gap}→ {code(message.call, 200)}")
        self._set_state("streaming", f"calling {message.call.split('(', 1)[0]}…", "streaming · esc cancels")

    @on(AIToolDone)
    async def _tool_done(self, message: AIToolDone) -> None:
        if not self._current(message) or self._stream is None or not self.tool_lines:
            return
        mark = "✗" if message.is_error else "✓"
        self.tool_lines[-1] += f" {mark} {clean(message.summary, 160)}"
        await self._write(f" {mark} {md_escape(clean(message.summary, 160))}\n\n")

    @on(AIFinished)
    async def _finished(self, message: AIFinished) -> None:
        if not self._current(message):
            return
        await self._stop_stream()
        self.request_id = None
        self.model = message.model
        if message.model == RULES_MODEL:
            who = "local rules (no AI model configured)"
        else:
            who = f"answered by {clean(message.model or self.label, 80)}"
        empty = "" if self.answer else " (the answer was empty)"
        text = f"Finished{empty}: {self.title} · {who}." if self.title else f"Finished{empty} · {who}."
        self._set_state("finished", text)
        if self._chunks == 1:  # arrived whole (the local rules): a document to read from the top
            scroll = self.query_one("#ai-scroll", VerticalScroll)
            scroll.anchor(False)
            scroll.call_after_refresh(scroll.scroll_home, animate=False)

    @on(AIFailed)
    async def _failed(self, message: AIFailed) -> None:
        message.stop()
        if not self._current(message):
            return
        if message.partial_text and not self.answer:  # text the pane never got: keep it all the same
            fragment = safe_fragment(message.partial_text)
            self.answer += fragment
            await self._write(fragment)
        await self._stop_stream()
        self.request_id = None
        self._set_state("failed", f"Failed: {message.error}")
        self.notify(clean(message.error, 400), title=message.title, severity="error", markup=False)

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        """Links in model output are never opened: copy the address and say so."""
        event.stop()
        href = clean(event.href, 300)
        self.app.copy_to_clipboard(event.href)
        self.notify(
            f"Not opened (links in AI answers are untrusted); copied to the clipboard: {href}",
            title="Link",
            markup=False,
        )
