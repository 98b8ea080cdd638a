"""What the AI streams yield, and how they call tools without knowing about MCP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from netspy_tui.errors import AIError


@dataclass(frozen=True)
class TextDelta:
    """A fragment of the answer, in order; append it to what is shown."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    """The model called a tool; ``arguments`` is the parsed JSON object ({} when unreadable)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallFinished:
    """The tool call finished; ``summary`` is one line about its result (or why it failed)."""

    name: str
    is_error: bool
    summary: str


@dataclass(frozen=True)
class Finished:
    """The answer is complete. ``text`` is the concatenation of every TextDelta of the stream."""

    model: str
    """The model that answered, as the server named it (falls back to the requested name)."""
    text: str
    tool_calls: list[str] = field(default_factory=list)
    """Each call as ``name({"arg": 1})``, in order, as ``Insight.tool_calls`` expects."""


StreamEvent = TextDelta | ToolCallStarted | ToolCallFinished | Finished


@dataclass(frozen=True)
class ProgressNote:
    """A progress line while an answer is prepared (e.g. "gathering data via MCP…"), not part of it."""

    text: str


#: What an answer stream shown to the user yields: :data:`StreamEvent` items (a plain ``str`` is a
#: :class:`TextDelta`'s text), with :class:`ProgressNote` lines between them.
AnswerItem = str | ProgressNote | StreamEvent


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        parameters = self.parameters or {"type": "object", "properties": {}}
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": parameters},
        }


@dataclass(frozen=True)
class ToolOutput:
    """What a tool call returned: readable text, structured data when the tool has it, error flag."""

    text: str
    data: dict[str, Any] | None = None
    is_error: bool = False


#: Calls a tool by name with JSON arguments. It may raise; the error goes back to the model as the result.
ToolCaller = Callable[[str, dict[str, Any]], Awaitable[ToolOutput]]


#: The most of one answer any path keeps (dashboard, CLI, REPL, MCP tools): at this many characters the stream
#: is hung up and the answer ends with an error saying so, its text kept (a runaway model cannot make a 17 MB
#: MCP result or keep a server generating for nobody).
MAX_ANSWER_CHARS = 100_000

#: Between an AI tool's one-line error and the answer its stream had given when it broke off (the MCP tools'
#: text; the REPL prints the answer on stdout and the error line on stderr)
PARTIAL_MARK = "\n\nThe answer so far:\n"


class AIStreamError(AIError):
    """An AI stream failed after it had started producing text.

    ``partial_text`` holds everything yielded as :class:`TextDelta` before the failure, so callers
    that only catch the error (e.g. :func:`collect`) still keep it.
    """

    def __init__(self, message: str, hint: str = "", *, partial_text: str = "") -> None:
        super().__init__(message, hint)
        self.partial_text = partial_text
