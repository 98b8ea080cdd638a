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


class InsightStarted(Message):
    def __init__(self, request_id: int, title: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.title = title


class InsightChunk(Message):
    """A Markdown fragment of the answer."""

    def __init__(self, request_id: int, text: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.text = text


class InsightNoteMessage(Message):
    """A progress line (e.g. a tool the model called); shown in the pane's state line, not the answer."""

    def __init__(self, request_id: int, text: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.text = text


class InsightFinished(Message):
    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id


class InsightFailed(Message):
    def __init__(self, request_id: int, error: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.error = error


class CommandDone(Message):
    """A command-bar command finished: text for the result panel."""

    def __init__(self, command: str, text: str, *, is_error: bool) -> None:
        super().__init__()
        self.command = command
        self.text = text
        self.is_error = is_error
