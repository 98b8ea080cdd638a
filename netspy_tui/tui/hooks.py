"""What the dashboard needs from the AI layer: three streaming callables and two labels.

No Textual here (``netspy_tui.mcp_tools.ai_bridge.dashboard_hooks`` imports this module to build the
hooks, and the core must not pull Textual in). Each callable returns an async iterator of
:data:`InsightItem`:

* :class:`~netspy_tui.ai.types.TextDelta` (or a plain ``str``): a Markdown fragment of the answer,
  appended in order;
* :class:`~netspy_tui.ai.types.ToolCallStarted` / :class:`~netspy_tui.ai.types.ToolCallFinished`:
  a tool the model called, shown in the pane as ``→ name({...}) ✓ summary``;
* :class:`InsightNote`: a progress line for the pane's state line (e.g. "gathering data via MCP…");
* :class:`~netspy_tui.ai.types.Finished`: the answer is complete; ``model`` names who answered.

The iterator ending means the answer is complete; raising (ideally a ``NetspyError``, an
``AIStreamError`` once text has streamed) means it failed: the pane shows one line and keeps the
text received so far. The gateway is passed on every call, so hooks never hold a stale one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netspy_tui.ai.types import StreamEvent

if TYPE_CHECKING:
    from netspy_tui.mcp_tools.gateway import Gateway


@dataclass(frozen=True, slots=True)
class InsightNote:
    """A progress line, not part of the answer."""

    text: str


InsightItem = str | InsightNote | StreamEvent

#: ``explain(gateway, subject)``: ``subject`` holds ``pid``, ``process_name`` (either may be None: all
#: traffic) and ``duration`` (seconds).
ExplainFn = Callable[["Gateway", dict[str, Any]], AsyncIterator[InsightItem]]
#: ``ask(gateway, question, context)``: a free-form question; ``context`` is what the user is looking at.
AskFn = Callable[["Gateway", str, dict[str, Any] | None], AsyncIterator[InsightItem]]
#: ``summarize(summary_text)``: insights into a summary text (the command bar's ``insights "..."``).
SummarizeFn = Callable[[str], AsyncIterator[InsightItem]]


@dataclass(frozen=True, slots=True)
class AIHooks:
    explain: ExplainFn
    ask: AskFn | None = None
    """None: free-form questions are unavailable; the pane shows :attr:`unavailable` instead."""
    summarize: SummarizeFn | None = None
    """None: like :attr:`ask`."""
    label: str = "AI"
    """Which engine answers, for the pane title: e.g. ``gpt-5-mini at http://127.0.0.1:8000/v1 (key set)``."""
    unavailable: str = "No AI model is configured."
    """One line shown when a question cannot be asked (says how to enable AI)."""
