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

#: Each name's module: the package imports it on first use (a dashboard paints before the AI layer loads).
_WHERE = {
    "available_models": "netspy_tui.ai.chat",
    "collect": "netspy_tui.ai.chat",
    "format_call": "netspy_tui.ai.chat",
    "map_error": "netspy_tui.ai.chat",
    "stream_answer": "netspy_tui.ai.chat",
    "stream_explanation": "netspy_tui.ai.chat",
    "stream_summary_explanation": "netspy_tui.ai.chat",
    "ExplanationContext": "netspy_tui.ai.context",
    "build_context": "netspy_tui.ai.context",
    "parse_context": "netspy_tui.ai.context",
    "rule_based_explanation": "netspy_tui.ai.rules",
    "DEFAULT_MODEL": "netspy_tui.ai.settings",
    "AISettings": "netspy_tui.ai.settings",
    "AIStreamError": "netspy_tui.ai.types",
    "AnswerItem": "netspy_tui.ai.types",
    "Finished": "netspy_tui.ai.types",
    "ProgressNote": "netspy_tui.ai.types",
    "StreamEvent": "netspy_tui.ai.types",
    "TextDelta": "netspy_tui.ai.types",
    "ToolCaller": "netspy_tui.ai.types",
    "ToolCallFinished": "netspy_tui.ai.types",
    "ToolCallStarted": "netspy_tui.ai.types",
    "ToolOutput": "netspy_tui.ai.types",
    "ToolSpec": "netspy_tui.ai.types",
}


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
