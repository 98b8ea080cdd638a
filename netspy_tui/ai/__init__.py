"""The AI layer: streamed explanations from any OpenAI-compatible server, and a local fallback.

No Textual, no MCP: tools arrive as :class:`ToolSpec` plus a :data:`ToolCaller` callback. Importing
this package does not import ``openai`` (that happens on the first request).

Typical use::

    settings = AISettings.from_settings(load_settings({"model": args.model})[0])
    if settings.configured:
        async for event in stream_explanation(settings, "curl (pid 42)", context):
            ...  # TextDelta / ToolCallStarted / ToolCallFinished / Finished
    else:
        markdown = rule_based_explanation("curl (pid 42)", context)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netspy_tui.ai.chat import (
        available_models,
        collect,
        format_call,
        map_error,
        stream_answer,
        stream_explanation,
        stream_summary_explanation,
    )
    from netspy_tui.ai.context import ExplanationContext, build_context, parse_context
    from netspy_tui.ai.rules import rule_based_explanation
    from netspy_tui.ai.settings import DEFAULT_MODEL, AISettings
    from netspy_tui.ai.types import (
        AIStreamError,
        AnswerItem,
        Finished,
        ProgressNote,
        StreamEvent,
        TextDelta,
        ToolCaller,
        ToolCallFinished,
        ToolCallStarted,
        ToolOutput,
        ToolSpec,
    )

#: Each module's names: the package imports one on first use (a dashboard paints before the AI layer loads).
_NAMES = {
    "netspy_tui.ai.chat": ("available_models", "collect", "format_call", "map_error", "stream_answer",
                           "stream_explanation", "stream_summary_explanation"),
    "netspy_tui.ai.context": ("ExplanationContext", "build_context", "parse_context"),
    "netspy_tui.ai.rules": ("rule_based_explanation",),
    "netspy_tui.ai.settings": ("DEFAULT_MODEL", "AISettings"),
    "netspy_tui.ai.types": ("AIStreamError", "AnswerItem", "Finished", "ProgressNote", "StreamEvent", "TextDelta",
                            "ToolCaller", "ToolCallFinished", "ToolCallStarted", "ToolOutput", "ToolSpec"),
}  # fmt: skip
_WHERE = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MODEL",
    "AISettings",
    "AIStreamError",
    "AnswerItem",
    "ExplanationContext",
    "Finished",
    "ProgressNote",
    "StreamEvent",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolCaller",
    "ToolOutput",
    "ToolSpec",
    "available_models",
    "build_context",
    "collect",
    "format_call",
    "map_error",
    "parse_context",
    "rule_based_explanation",
    "stream_answer",
    "stream_explanation",
    "stream_summary_explanation",
]
