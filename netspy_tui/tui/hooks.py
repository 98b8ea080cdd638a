"""What the dashboard needs from the AI layer, as a small protocol the lead fills in.

``AIHooks.explain(subject)`` returns an async iterator of :data:`InsightItem`: ``str`` items are
Markdown fragments of the answer, appended in order; :class:`InsightNote` items are progress lines
(e.g. "called list_connections") shown in the pane's state line. The iterator ending means the
answer is complete; raising (ideally a ``NetspyError``) means it failed — the pane shows the
message and keeps the text received so far.

Adapting ``netspy_tui.ai``'s stream events is a few lines::

    async def explain(subject):
        async for ev in ai_stream(subject):
            if isinstance(ev, TextDelta): yield ev.text
            elif isinstance(ev, ToolCallStarted): yield InsightNote(f"calling {ev.name}…")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class InsightNote:
    """A progress line, not part of the answer."""

    text: str


InsightItem = str | InsightNote

#: ``subject`` holds ``pid``, ``process_name`` (either may be None: all traffic) and ``duration`` (seconds).
ExplainFn = Callable[[dict[str, Any]], AsyncIterator[InsightItem]]


@dataclass(frozen=True, slots=True)
class AIHooks:
    explain: ExplainFn
    label: str = "AI"
    """Shown in the pane title, e.g. the model name."""


NOT_WIRED = (
    "AI explanations are not connected to the dashboard yet: they are wired in a later step. "
    "Nothing was sent anywhere. Meanwhile, the pattern panel and the command bar "
    "(`:analyze --process NAME`) give the same figures without AI."
)
