"""The AI request lifecycle without widgets: what a new request does to the running one, and the messages
one request's stream turns into."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual.message import Message

from netspy_tui.ai import AIStreamError, Finished, TextDelta
from netspy_tui.ai.types import AnswerItem, ProgressNote
from netspy_tui.tui.ai_runner import AIRequest, AIRunner
from netspy_tui.tui.messages import AIChunk, AIFailed, AIFinished, AINote, AIStarted

pytestmark = pytest.mark.quiet


async def _nothing() -> AsyncIterator[AnswerItem]:
    return
    yield  # pragma: no cover


def request(*key: object) -> AIRequest:
    return AIRequest(key, f"doing {key}", "failed", _nothing)


def test_repeat_is_ignored_same_kind_replaces_other_kind_waits_for_a_second_press() -> None:
    runner = AIRunner()
    assert runner.submit(request("explain", "curl"), running=False).action == "start"
    assert runner.submit(request("explain", "curl"), running=True).action == "ignore"
    assert runner.submit(request("explain", "nginx"), running=True).action == "start"  # a on another process
    question = request("ask", "why?")
    assert runner.submit(question, running=True).action == "start"  # a question typed during an explanation
    held = runner.submit(request("explain", "curl"), running=True)  # a during the answer to A: not dropped
    assert held.action == "hold" and "Still doing ('ask', 'why?')" in held.notice and "Press a again" in held.notice
    assert runner.current is question
    again = runner.submit(request("explain", "curl"), running=True)
    assert again.action == "start" and runner.current is not None and runner.current.kind == "explain"
    runner.cancelled()  # esc: the next request starts at once
    assert runner.submit(request("ask", "x"), running=False).action == "start"
    assert runner.submit(request("explain", "y"), running=False).action == "start"  # nothing running: no hold


async def test_a_stream_becomes_messages_and_a_failure_keeps_the_partial_text() -> None:
    async def produce() -> AsyncIterator[AnswerItem]:
        yield ProgressNote("gathering")
        yield TextDelta("Hello ")
        yield "world"
        yield Finished(text="Hello world", model="m1")

    posted: list[Message] = []
    await AIRunner.stream(7, AIRequest(("explain",), "t", "f", produce), posted.append)
    assert [type(m) for m in posted] == [AIStarted, AINote, AIChunk, AIChunk, AIFinished]
    assert all(getattr(m, "request_id", None) == 7 for m in posted)
    last = posted[-1]
    assert isinstance(last, AIFinished) and last.model == "m1"

    async def failing() -> AsyncIterator[AnswerItem]:
        yield "part"
        raise AIStreamError("cut off", partial_text="part")

    posted.clear()
    await AIRunner.stream(8, AIRequest(("ask",), "t", "AI answer failed", failing), posted.append)
    failed = posted[-1]
    assert isinstance(failed, AIFailed) and failed.partial_text == "part" and failed.title == "AI answer failed"
