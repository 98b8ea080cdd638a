"""The AI request lifecycle, beside the poller: no widgets.

:class:`AIRunner` decides what a new request does to the one running (start it, ignore a repeat,
or hold it until the user presses again) and turns one request's stream of
:data:`~netspy_tui.ai.types.AnswerItem` into the ``AI*`` messages the AI pane reacts to.
The AI pane runs :meth:`AIRunner.stream` in its ``ai`` worker (exclusive: a new request cancels
the old one), which posts the messages to the pane; nothing here touches a widget.

The rule for a request arriving while another streams:

* the same request again: ignored, and the user is told it is still running (esc cancels it);
* another request of the same kind (``a`` on another process): replaces it at once;
* a request of another kind (``a`` while the answer to a typed question streams): held, and the user
  is told what is running; the same kind pressed again replaces it, esc cancels the running one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from netspy_tui.errors import NetspyError
from netspy_tui.textsafe import first_line
from netspy_tui.tui.messages import (
    AIChunk,
    AIFailed,
    AIFinished,
    AINote,
    AIStarted,
    AIToolCall,
    AIToolDone,
)

if TYPE_CHECKING:
    from netspy_tui.ai.types import AnswerItem

log = logging.getLogger(__name__)

#: What the user pressed or typed for each kind of request (for "press … again").
KIND_KEYS = {"explain": "a", "ask": "A", "insights": ":insights"}


@dataclass(frozen=True)
class AIRequest:
    """One request: ``key`` tells repeats apart (kind first), ``produce`` opens its stream."""

    key: tuple[object, ...]
    title: str
    """What is asked, e.g. ``explaining process 'curl' over 1m`` (shown before the request goes out)."""
    failure_title: str
    produce: Callable[[], AsyncIterator[AnswerItem]]

    @property
    def kind(self) -> str:
        return str(self.key[0])


@dataclass(frozen=True)
class Decision:
    action: Literal["start", "ignore", "hold"]
    notice: str = ""
    """What to tell the user when the request does not start."""
    request_id: int = 0
    """The new request's id (``start`` only)."""


class AIRunner:
    """Which request runs, and what a new one does to it. The caller says whether the running one is
    still pending (its worker has not finished, failed or been cancelled)."""

    def __init__(self) -> None:
        self.requests = 0
        self.current: AIRequest | None = None
        self.held: AIRequest | None = None
        """A request of another kind that waits for a second press."""

    def submit(self, request: AIRequest, *, running: bool) -> Decision:
        current = self.current if running else None
        if current is not None and request.key == current.key:
            return Decision("ignore", f"Still {current.title}: esc cancels it.")
        if current is not None and request.kind != current.kind and current.kind == "ask":
            if self.held is None or self.held.kind != request.kind:
                self.held = request
                again = KIND_KEYS.get(request.kind, "it")
                return Decision("hold", f"Still {current.title}. Press {again} again to replace it, esc cancels it.")
        self.requests += 1
        self.current, self.held = request, None
        return Decision("start", request_id=self.requests)

    def cancelled(self) -> None:
        """The running request was cancelled (esc, or a notice took its place)."""
        self.current = self.held = None

    @staticmethod
    async def stream(request_id: int, request: AIRequest, post: Callable[[Message], object]) -> None:
        """Run ``request`` to its end, posting ``AI*`` messages; a failure is one message, never raised
        (cancellation is: the stream is closed on the way out, which hangs up on the server)."""
        # the AI layer loads with the first request, not before the dashboard's first frame
        from netspy_tui.ai.chat import format_call
        from netspy_tui.ai.types import (
            AIStreamError,
            Finished,
            ProgressNote,
            TextDelta,
            ToolCallFinished,
            ToolCallStarted,
        )

        post(AIStarted(request_id, request.title))
        model: str | None = None
        items = request.produce()
        try:
            async for item in items:
                if isinstance(item, str | TextDelta):
                    post(AIChunk(request_id, item if isinstance(item, str) else item.text))
                elif isinstance(item, ProgressNote):
                    post(AINote(request_id, item.text))
                elif isinstance(item, ToolCallStarted):
                    post(AIToolCall(request_id, format_call(item.name, item.arguments)))
                elif isinstance(item, ToolCallFinished):
                    post(AIToolDone(request_id, item.is_error, item.summary))
                elif isinstance(item, Finished):
                    model = item.model
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pane shows it; the dashboard keeps running
            log.warning("%s: %s", request.failure_title, exc, exc_info=not isinstance(exc, NetspyError))
            error = str(exc) if isinstance(exc, NetspyError) else f"{type(exc).__name__}: {first_line(exc)}"
            partial = exc.partial_text if isinstance(exc, AIStreamError) else ""
            post(AIFailed(request_id, error, title=request.failure_title, partial_text=partial))
            return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        post(AIFinished(request_id, model))
