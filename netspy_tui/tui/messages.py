"""Messages from workers to the UI. Workers post these; only handlers touch widgets."""

from __future__ import annotations

from datetime import datetime

from textual.message import Message

from netspy_tui.tui.snapshot import Snapshot


class PollResult(Message):
    """Outcome of one poll. Only the newest matters: a queued one is replaced by the next (frames coalesce)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PollResult)


class SnapshotReady(PollResult):
    """A poll finished with a frozen snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class PollFailed(PollResult):
    """A poll failed; the poller retries at ``retry_at`` (exponential backoff)."""

    def __init__(self, error: str, *, stale_since: datetime, retry_at: datetime, attempt: int) -> None:
        super().__init__()
        self.error = error
        self.stale_since = stale_since
        self.retry_at = retry_at
        self.attempt = attempt


class AIMessage(Message):
    """From the AI pane's ``ai`` worker to the AI pane; ``request_id`` tells a superseded request's leftovers apart."""

    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id


class AIStarted(AIMessage):
    def __init__(self, request_id: int, title: str) -> None:
        super().__init__(request_id)
        self.title = title


class AIChunk(AIMessage):
    """A Markdown fragment of the answer (untrusted: the pane sanitises it)."""

    def __init__(self, request_id: int, text: str) -> None:
        super().__init__(request_id)
        self.text = text


class AINote(AIMessage):
    """A progress line (e.g. "gathering data via MCP…"); shown in the pane's state line, not the answer."""

    def __init__(self, request_id: int, text: str) -> None:
        super().__init__(request_id)
        self.text = text


class AIToolCall(AIMessage):
    """The model called a tool: ``call`` is ``name({...})`` as :func:`netspy_tui.ai.format_call` writes it."""

    def __init__(self, request_id: int, call: str) -> None:
        super().__init__(request_id)
        self.call = call


class AIToolDone(AIMessage):
    """The tool call announced last finished; ``summary`` is one line about its result."""

    def __init__(self, request_id: int, is_error: bool, summary: str) -> None:
        super().__init__(request_id)
        self.is_error = is_error
        self.summary = summary


class AIFinished(AIMessage):
    """The answer is complete; ``model`` is who answered (the server's model name, or "rules")."""

    def __init__(self, request_id: int, model: str | None = None) -> None:
        super().__init__(request_id)
        self.model = model


class AIFailed(AIMessage):
    """The request failed: ``error`` is one line; ``partial_text`` what the stream had produced (may be "")."""

    def __init__(
        self, request_id: int, error: str, *, title: str = "AI request failed", partial_text: str = ""
    ) -> None:
        super().__init__(request_id)
        self.error = error
        self.title = title
        self.partial_text = partial_text


class CommandDone(Message):
    """A command-bar command finished: text for the result panel."""

    def __init__(self, command: str, text: str, *, is_error: bool) -> None:
        super().__init__()
        self.command = command
        self.text = text
        self.is_error = is_error
