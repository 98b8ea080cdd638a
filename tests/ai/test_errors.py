"""Every failure of the model server becomes one readable line, without the key and without losing text."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import httpx2
import openai
import pytest
from pydantic import SecretStr

from netspy_tui.ai import (
    AISettings,
    AIStreamError,
    TextDelta,
    ToolOutput,
    ToolSpec,
    collect,
    map_error,
    stream_answer,
    stream_explanation,
)
from netspy_tui.errors import AIError, NetspyError
from tests.ai.conftest import TEST_KEY
from tests.fake_openai import FakeOpenAI, FakeToolCall, free_port

CONTEXT = {"process": {"pid": 42, "command": "curl"}}


def assert_one_clean_line(err: BaseException) -> str:
    assert isinstance(err, AIError) and isinstance(err, NetspyError)
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    assert TEST_KEY not in text and TEST_KEY[:12] not in text
    assert err.__suppress_context__ or err.__cause__ is None  # no chained SDK traceback to print
    return text


async def failure(settings: AISettings) -> AIError:
    with pytest.raises(AIError) as info:
        await collect(stream_explanation(settings, "curl", CONTEXT))
    return info.value


async def test_401_bad_key_never_echoes_the_key(fake: FakeOpenAI, settings: AISettings) -> None:
    # OpenAI's real 401 body quotes part of the key; the error must not.
    fake.error(401, f"Incorrect API key provided: {TEST_KEY[:10]}***{TEST_KEY[-4:]}.", code="invalid_api_key")
    text = assert_one_clean_line(await failure(settings))
    assert "rejected the API key (HTTP 401)" in text
    assert "OPENAI_API_KEY" in text
    assert TEST_KEY[-4:] not in text


async def test_401_without_a_key_asks_for_one(fake: FakeOpenAI) -> None:
    keyless = AISettings(base_url=fake.base_url, max_retries=0, timeout=5)
    fake.error(401, "missing bearer token")
    text = assert_one_clean_line(await failure(keyless))
    assert "requires an API key (HTTP 401). Set OPENAI_API_KEY." in text


async def test_404_names_the_model_and_how_to_choose_another(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(404, "The model `gpt-5-mini` does not exist or you do not have access to it.", code="model_not_found")
    text = assert_one_clean_line(await failure(settings))
    assert "Model 'gpt-5-mini' was not found" in text
    assert "--model" in text and "NETSPY_MODEL" in text


async def test_404_without_model_points_at_the_base_url(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(404, "Not Found")
    text = assert_one_clean_line(await failure(settings))
    assert "has no chat completions endpoint" in text and fake.base_url in text and "/v1" in text


async def test_501_says_the_server_is_not_an_openai_compatible_endpoint(fake: FakeOpenAI, settings: AISettings) -> None:
    """A web server that does not serve the chat API (a file server answers a POST 501) was "failed (HTTP 501) …
    Try again later" (an audit's): retrying never helps, the base URL is wrong."""
    fake.error(501, "Unsupported method ('POST')")
    text = assert_one_clean_line(await failure(settings))
    assert "does not serve chat completions (HTTP 501): it is not an OpenAI-compatible endpoint" in text
    assert "OPENAI_BASE_URL" in text and "/v1" in text and "Try again later" not in text


async def test_429_rate_limit(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(
        429, "Rate limit reached for gpt-5-mini on requests per min.", type="requests", code="rate_limit_exceeded"
    )
    text = assert_one_clean_line(await failure(settings))
    assert "rate limiting requests (HTTP 429)" in text and "wait a minute" in text.lower()


async def test_429_says_how_long_the_server_asked_to_wait(fake: FakeOpenAI, settings: AISettings) -> None:
    """The hint says the wait the server gave (``Retry-After``, OpenAI's ``retry-after-ms``), not a fixed minute."""
    quick = settings.model_copy(update={"max_retries": 0})
    for headers, wait in (({"Retry-After": "20"}, "wait 20 s"), ({"retry-after-ms": "1500"}, "wait 2 s")):
        fake.error(429, "Rate limit reached for requests", code="rate_limit_exceeded", headers=headers)
        text = assert_one_clean_line(await failure(quick))
        assert wait in text.lower() and "minute" not in text.lower(), text


async def test_429_quota(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )
    text = assert_one_clean_line(await failure(settings))
    assert "no quota left" in text and "billing" in text


async def test_5xx_names_the_status_and_the_server_message(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(503, "The engine is currently overloaded,\nplease try again later", type="server_error")
    text = assert_one_clean_line(await failure(settings))
    assert "failed (HTTP 503): The engine is currently overloaded. Try again later." in text


async def test_5xx_is_retried_by_the_sdk_when_retries_are_enabled(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.error(500, "transient", type="server_error", headers={"x-should-retry": "true", "retry-after-ms": "10"})
    fake.text("recovered")
    result = await collect(stream_explanation(settings.model_copy(update={"max_retries": 1}), "curl", CONTEXT))
    assert result.text == "recovered"
    assert len(fake.chat_requests) == 2


async def test_connection_refused_names_the_base_url(settings: AISettings) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    text = assert_one_clean_line(await failure(settings.model_copy(update={"base_url": url})))
    assert f"Could not connect to the AI server at {url}: connection refused" in text
    assert "OPENAI_BASE_URL" in text


def test_dns_failure_is_named() -> None:
    """The SDK chain for an unresolvable host (APIConnectionError from httpx2.ConnectError from gaierror),
    built by hand: resolving a name for real could leave this machine."""
    settings = AISettings(base_url="http://no-such-host.invalid/v1", api_key=SecretStr(TEST_KEY))
    request = httpx2.Request("POST", "http://no-such-host.invalid/v1/chat/completions")
    try:
        try:
            try:
                raise socket.gaierror(-2, "Name or service not known")
            except socket.gaierror as gai:
                raise httpx2.ConnectError("[Errno -2] Name or service not known") from gai
        except httpx2.ConnectError as connect:
            raise openai.APIConnectionError(request=request) from connect
    except openai.APIConnectionError as exc:
        err = map_error(exc, settings)
    text = assert_one_clean_line(err)
    assert "http://no-such-host.invalid/v1" in text and "could not be resolved" in text


async def test_timeout_before_any_answer_names_the_timeout(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.stall()
    text = assert_one_clean_line(await failure(settings.model_copy(update={"timeout": 0.3})))
    assert "did not answer within 0.3 s" in text and "NETSPY_AI_TIMEOUT" in text


async def test_stall_mid_stream_keeps_the_text(fake: FakeOpenAI, settings: AISettings) -> None:
    gate = threading.Event()  # never released: the server goes quiet after the first chunk
    fake.text("partial ", "never sent", gate=gate, gate_after=1)
    seen: list[str] = []
    try:
        with pytest.raises(AIStreamError) as info:
            async for event in stream_explanation(settings.model_copy(update={"timeout": 1.0}), "curl", CONTEXT):
                if isinstance(event, TextDelta):
                    seen.append(event.text)
    finally:
        gate.set()
    text = assert_one_clean_line(info.value)
    assert "stalled for more than 1 s; the text so far is kept" in text
    assert seen == ["partial "] and info.value.partial_text == "partial "


@pytest.mark.parametrize("mode", ["chunked", "eof"])
async def test_stream_cut_keeps_text_and_raises_the_cut_error(
    fake: FakeOpenAI, settings: AISettings, mode: Any
) -> None:
    fake.cut("The process ", "connects to ", mode=mode)
    seen: list[str] = []
    with pytest.raises(AIStreamError) as info:
        async for event in stream_explanation(settings, "curl", CONTEXT):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    text = assert_one_clean_line(info.value)
    assert "ended early; the text so far is kept" in text
    assert "".join(seen) == "The process connects to "
    assert info.value.partial_text == "The process connects to "


async def test_stream_cut_before_text(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.cut()
    text = assert_one_clean_line(await failure(settings))
    assert "ended early before any text arrived" in text


async def test_error_event_inside_the_stream(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.stream_error("Half an ", message="backend crashed while generating")
    err = await failure(settings)
    text = assert_one_clean_line(err)
    assert "error mid-stream: backend crashed while generating; the text so far is kept" in text
    assert isinstance(err, AIStreamError) and err.partial_text == "Half an "


async def test_collect_raises_with_partial_text(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.cut("kept ", "words")
    with pytest.raises(AIStreamError) as info:
        await collect(stream_explanation(settings, "curl", CONTEXT))
    assert info.value.partial_text == "kept words"


async def test_error_during_a_later_tool_round_keeps_earlier_text(fake: FakeOpenAI, settings: AISettings) -> None:
    fake.tool_calls(FakeToolCall("list_connections", '{"pid": 42}'), text="Checking. ")
    fake.error(500, "model crashed", type="server_error")

    async def caller(name: str, args: dict[str, Any]) -> ToolOutput:
        return ToolOutput(text="ok")

    tools = [ToolSpec("list_connections", "List.", {"type": "object", "properties": {}})]
    with pytest.raises(AIStreamError) as info:
        await collect(stream_answer(settings, "what?", tools, caller))
    assert "HTTP 500" in assert_one_clean_line(info.value)
    assert info.value.partial_text == "Checking. "


async def test_verbose_logs_never_contain_the_key(
    fake: FakeOpenAI, settings: AISettings, caplog: pytest.LogCaptureFixture
) -> None:
    """--verbose turns on DEBUG everywhere, including the SDK's and the HTTP client's loggers."""
    loggers = ["", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "netspy_tui"]
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            fake.tool_calls(FakeToolCall("list_connections", '{"pid": 42}'))
            fake.text("answer")
            fake.error(401, f"Incorrect API key provided: {TEST_KEY}", code="invalid_api_key")

            async def caller(name: str, args: dict[str, Any]) -> ToolOutput:
                return ToolOutput(text="ok", data={"n": 1})

            tools = [ToolSpec("list_connections", "List.", {"type": "object", "properties": {}})]
            await collect(stream_answer(settings, "what?", tools, caller))
            with pytest.raises(AIError):
                await collect(stream_explanation(settings, "curl", CONTEXT))
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert any(r.name.startswith("openai") for r in caplog.records)  # the SDK did log at DEBUG
    assert any(r.name.startswith("netspy_tui.ai") for r in caplog.records)
    assert (TEST_KEY in logged) is False
    assert (TEST_KEY[:12] in logged) is False
