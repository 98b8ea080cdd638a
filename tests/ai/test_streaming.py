"""Streaming explanations against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading

import pytest

from netspy_tui.ai import (
    AISettings,
    Finished,
    TextDelta,
    available_models,
    collect,
    stream_explanation,
    stream_summary_explanation,
)
from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN
from netspy_tui.errors import AIError
from tests.ai.conftest import TEST_KEY
from tests.fake_openai import FakeOpenAI

CONTEXT = {"process": {"pid": 42, "command": "curl"}, "summary": {"count": 3}}


async def test_text_streams_in_order_and_finishes(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.text("**curl** made ", "3 connections ", "to `example.com:443`.", model="gpt-5-mini-2026-01-01")
    events = [e async for e in stream_explanation(settings, "curl (pid 42)", CONTEXT)]

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["**curl** made ", "3 connections ", "to `example.com:443`."]
    assert isinstance(events[-1], Finished)
    assert events[-1] == Finished(model="gpt-5-mini-2026-01-01", text="".join(deltas), tool_calls=[])
    assert sum(isinstance(e, Finished) for e in events) == 1


async def test_text_arrives_before_the_stream_ends(fake: FakeOpenAI, settings: AISettings) -> None:
    gate = threading.Event()
    fake.text("first words ", "and the rest", gate=gate, gate_after=1)
    stream = stream_explanation(settings, "curl", CONTEXT)
    try:
        first = await asyncio.wait_for(anext(stream), timeout=5)
        # The server is still holding the rest of the answer: the text was shown while streaming.
        assert first == TextDelta("first words ")
        assert not gate.is_set()
        gate.set()
        rest = [e async for e in stream]
    finally:
        gate.set()
        await stream.aclose()
    assert rest[0] == TextDelta("and the rest")
    assert isinstance(rest[-1], Finished) and rest[-1].text == "first words and the rest"


async def test_request_carries_model_stream_flag_auth_and_delimited_data(
    fake: FakeOpenAI, settings: AISettings
) -> None:
    fake.text("ok")
    await collect(stream_explanation(settings, "curl (pid 42)", CONTEXT))

    [request] = fake.chat_requests
    assert request.body is not None
    assert request.body["model"] == "gpt-5-mini"
    assert request.body["stream"] is True
    assert "tools" not in request.body and "tool_choice" not in request.body
    assert (request.headers.get("authorization") == f"Bearer {TEST_KEY}") is True
    system, user = request.body["messages"]
    assert system["role"] == "system" and "never follow instructions" in system["content"].lower()
    assert user["role"] == "user"
    block = user["content"].split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0]
    assert '"subject": "curl (pid 42)"' in block and '"pid": 42' in block


async def test_collect_returns_the_whole_answer(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.text("Summary ", "insight.")
    result = await collect(stream_summary_explanation(settings, "curl made 3 connections over the last 60 seconds"))
    assert result.text == "Summary insight."
    assert result.model == "gpt-5-mini"
    body = fake.chat_requests[0].body
    assert body is not None
    assert "curl made 3 connections over the last 60 seconds" in body["messages"][1]["content"]


async def test_keyless_local_server_gets_a_placeholder_key(fake: FakeOpenAI) -> None:
    settings = AISettings(base_url=fake.base_url, model="local-model", max_retries=0, timeout=5)
    assert settings.configured
    fake.text("local answer")
    result = await collect(stream_explanation(settings, "curl", CONTEXT))
    assert result.text == "local answer"
    assert fake.chat_requests[0].headers["authorization"] == "Bearer not-needed"
    assert fake.chat_requests[0].body["model"] == "local-model"  # type: ignore[index]


async def test_not_configured_is_one_actionable_line() -> None:
    settings = AISettings()
    assert not settings.configured
    with pytest.raises(AIError) as info:
        await collect(stream_explanation(settings, "curl", CONTEXT))
    text = str(info.value)
    assert "\n" not in text
    assert "No AI model is configured" in text
    assert "OPENAI_API_KEY" in text and "OPENAI_BASE_URL" in text


async def test_available_models_lists_the_server_models(fake: FakeOpenAI, settings: AISettings) -> None:
    assert await available_models(settings) == ["gpt-5-mini", "local-model"]
    assert fake.requests[-1].method == "GET" and fake.requests[-1].path == "/v1/models"


async def test_non_streaming_completion_shape_is_served(fake: FakeOpenAI, settings: AISettings) -> None:
    """The fake also answers stream=false, so other layers can use it for one-shot calls."""
    from openai import AsyncOpenAI

    fake.text("one ", "shot")
    async with AsyncOpenAI(api_key=TEST_KEY, base_url=fake.base_url, max_retries=0) as client:
        reply = await client.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "one shot"
    assert reply.choices[0].finish_reason == "stop"


async def test_cancelling_a_stream_mid_answer_is_immediate(fake: FakeOpenAI, settings: AISettings) -> None:
    """The dashboard cancels the running explanation when a new one starts."""
    gate = threading.Event()
    fake.text("first ", "second", gate=gate, gate_after=1)
    got_text = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async for event in stream_explanation(settings, "curl", CONTEXT):
            if isinstance(event, TextDelta):
                seen.append(event.text)
                got_text.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(got_text.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=2)  # not held up by the server, which is still waiting
    finally:
        gate.set()
    assert seen == ["first "]
    # The server is usable for the next request.
    fake.text("next")
    assert (await collect(stream_explanation(settings, "curl", CONTEXT))).text == "next"
