"""Function calling: fragments joined per index, results fed back, bounded rounds, bad calls survive."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netspy_tui.ai import (
    AISettings,
    Finished,
    StreamEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    ToolSpec,
    stream_answer,
)
from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN
from tests.fake_openai import FakeOpenAI, FakeToolCall

TOOLS = [
    ToolSpec(
        "list_connections",
        "List recent connection attempts.",
        {"type": "object", "properties": {"pid": {"type": "integer", "minimum": 1}}},
    ),
    ToolSpec(
        "analyze_patterns",
        "Analyse connection patterns.",
        {"type": "object", "properties": {"pid": {"type": "integer"}, "duration": {"type": "integer"}}},
    ),
]


class Recorder:
    """A ToolCaller that records its calls and answers with structured data."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_with = fail_with

    async def __call__(self, name: str, arguments: dict[str, Any]) -> ToolOutput:
        self.calls.append((name, arguments))
        if self.fail_with is not None:
            raise self.fail_with
        return ToolOutput(text=f"{name}: 2 events\nsecond line", data={"tool": name, "args": arguments, "count": 2})


async def run(
    settings: AISettings, caller: Recorder, question: str = "What is pid 42 doing?", **kw: Any
) -> list[StreamEvent]:
    return [e async for e in stream_answer(settings, question, TOOLS, caller, **kw)]


async def test_split_tool_call_reaches_the_caller_and_its_result_goes_back(
    fake: FakeOpenAI, settings: AISettings
) -> None:
    fake.tool_calls(
        FakeToolCall("list_connections", '{"pid": 42, "note": "split across chunks"}', id="call_A", split=5)
    )
    fake.text("pid 42 made ", "2 connections.")
    caller = Recorder()

    events = await run(settings, caller)

    assert caller.calls == [("list_connections", {"pid": 42, "note": "split across chunks"})]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ToolCallStarted", "ToolCallFinished", "TextDelta", "TextDelta", "Finished"]
    assert events[0] == ToolCallStarted("list_connections", {"pid": 42, "note": "split across chunks"})
    assert events[1] == ToolCallFinished("list_connections", False, "list_connections: 2 events")
    final = events[-1]
    assert isinstance(final, Finished)
    assert final.text == "pid 42 made 2 connections."
    assert final.tool_calls == ['list_connections({"note": "split across chunks", "pid": 42})']

    first, second = fake.chat_requests
    assert first.body is not None and second.body is not None
    assert [t["function"]["name"] for t in first.body["tools"]] == ["list_connections", "analyze_patterns"]
    assert "tool_choice" not in first.body
    assistant, tool = second.body["messages"][-2:]
    # llama.cpp answers 500 to a replayed tool-call message whose content is null: it must be "".
    assert assistant["role"] == "assistant" and assistant["content"] == ""
    assert assistant["tool_calls"][0]["id"] == "call_A"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"pid": 42, "note": "split across chunks"}
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_A"
    assert tool["content"].startswith(DATA_OPEN) and tool["content"].endswith(DATA_CLOSE)
    assert json.loads(tool["content"][len(DATA_OPEN) : -len(DATA_CLOSE)]) == {
        "tool": "list_connections",
        "args": {"pid": 42, "note": "split across chunks"},
        "count": 2,
    }


async def test_parallel_tool_calls_are_joined_by_index(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.tool_calls(
        FakeToolCall("list_connections", '{"pid": 42}', id="call_1", split=4),
        FakeToolCall("analyze_patterns", '{"pid": 42, "duration": 300}', id="call_2", split=4),
        text="Let me look. ",
    )
    fake.text("Both done.")
    caller = Recorder()

    events = await run(settings, caller)

    assert caller.calls == [("list_connections", {"pid": 42}), ("analyze_patterns", {"pid": 42, "duration": 300})]
    started = [e.name for e in events if isinstance(e, ToolCallStarted)]
    assert started == ["list_connections", "analyze_patterns"]
    final = events[-1]
    assert isinstance(final, Finished) and final.text == "Let me look. Both done."
    body = fake.chat_requests[1].body
    assert body is not None
    assistant = body["messages"][-3]
    assert assistant["content"] == "Let me look. "
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_1", "call_2"]
    assert [m["tool_call_id"] for m in body["messages"][-2:]] == ["call_1", "call_2"]


async def test_unknown_tool_and_bad_json_go_back_to_the_model_as_errors(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.tool_calls(
        FakeToolCall("delete_everything", '{"really": true}', id="c1"),
        FakeToolCall("list_connections", '{"pid": 42', id="c2"),
        FakeToolCall("list_connections", "[1, 2]", id="c3"),
    )
    fake.text("Sorry, I could not read the data.")
    caller = Recorder()

    events = await run(settings, caller)

    assert caller.calls == []  # nothing unknown or unreadable ran
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.name, e.is_error) for e in finished] == [
        ("delete_everything", True),
        ("list_connections", True),
        ("list_connections", True),
    ]
    assert "no tool named 'delete_everything'" in finished[0].summary
    assert "not valid JSON" in finished[1].summary
    assert "must be a JSON object" in finished[2].summary
    assert isinstance(events[-1], Finished)
    body = fake.chat_requests[1].body
    assert body is not None
    results = [m for m in body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["c1", "c2", "c3"]
    assert "Available tools: analyze_patterns, list_connections" in results[0]["content"]
    assert "not valid JSON" in results[1]["content"]
    # The replayed call carries valid JSON even when the model's was not (servers re-parse it).
    replayed = body["messages"][-4]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in replayed] == [{"really": True}, {}, {}]


async def test_a_failing_tool_is_reported_to_the_model_not_raised(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.tool_calls(FakeToolCall("list_connections", '{"pid": 42}', id="c1"))
    fake.text("The telemetry server is down.")
    caller = Recorder(fail_with=RuntimeError("ebpf-server at http://127.0.0.1:1 refused the connection"))

    events = await run(settings, caller)

    done = next(e for e in events if isinstance(e, ToolCallFinished))
    assert done.is_error and "refused the connection" in done.summary
    body = fake.chat_requests[1].body
    assert body is not None
    assert "The tool list_connections failed" in body["messages"][-1]["content"]
    assert isinstance(events[-1], Finished) and events[-1].text == "The telemetry server is down."


async def test_a_model_that_calls_tools_forever_is_stopped(fake: FakeOpenAI, settings: AISettings) -> None:
    rounds = 3
    limited = settings.model_copy(update={"max_tool_rounds": rounds})
    for i in range(rounds + 1):  # one more than allowed: the model ignores the "answer now" request
        fake.tool_calls(FakeToolCall("list_connections", f'{{"pid": {i + 1}}}', id=f"c{i}"))
    caller = Recorder()

    events = await run(limited, caller)

    assert len(caller.calls) == rounds
    assert len(fake.chat_requests) == rounds + 1
    last = fake.chat_requests[-1].body
    assert last is not None
    assert "tools" not in last  # the final request offers no tools ...
    assert last["messages"][-1]["role"] == "user"  # ... and says the budget is spent
    assert "budget" in last["messages"][-1]["content"]
    final = events[-1]
    assert isinstance(final, Finished)
    assert f"Stopped after {rounds} rounds of tool calls" in final.text
    assert final.tool_calls == [f'list_connections({{"pid": {i + 1}}})' for i in range(rounds)]
    assert isinstance(events[-2], TextDelta) and events[-2].text in final.text
    assert fake.pending == 0


async def test_after_the_budget_the_model_answers_from_what_it_has(fake: FakeOpenAI, settings: AISettings) -> None:
    limited = settings.model_copy(update={"max_tool_rounds": 1})
    fake.tool_calls(FakeToolCall("list_connections", '{"pid": 42}'))
    fake.text("Answer from one call.")
    events = await run(limited, Recorder())
    final = events[-1]
    assert isinstance(final, Finished) and final.text == "Answer from one call."
    assert "Stopped" not in final.text


@pytest.mark.parametrize("context", [None, {"pid": 42, "window_seconds": 300}])
async def test_question_is_outside_the_data_block_and_context_inside(
    fake: FakeOpenAI, settings: AISettings, context: dict[str, Any] | None
) -> None:
    fake.text("fine")
    await run(settings, Recorder(), question="Why does pid 42 fail?", context=context)
    body = fake.chat_requests[0].body
    assert body is not None
    user = body["messages"][1]["content"]
    assert user.rstrip().endswith("Why does pid 42 fail?")
    if context is None:
        assert DATA_OPEN not in user
    else:
        block = user.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0]
        assert json.loads(block) == context
        assert "Why does pid 42 fail?" not in block
