"""Prompts sized to the model's context window, against a real OpenAI-compatible server on 127.0.0.1
that enforces one the way small local models do (an empty stream, or HTTP 400, past its limit)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr

from netspy_tui.ai import AISettings, collect, stream_explanation
from netspy_tui.ai.prompts import ANSWER_TOKENS, DATA_CLOSE, DATA_OPEN
from netspy_tui.errors import AIError
from tests.ai.conftest import TEST_KEY
from tests.ai.helpers import context_for
from tests.factories import BASE_TIME, connection
from tests.fake_openai import FakeOpenAI, prompt_tokens


def _busy(n: int = 1000) -> dict[str, object]:
    """A process with ``n`` connections in its window, its context built as the MCP tools build it."""
    outcomes = {0: "ok", -111: "refused", -110: "timeout"}
    codes = [0, 0, 0, -111, -110]
    events = [connection(pid=700 + i % 4, command="busy", ip=f"10.1.{i % 9}.{i % 61}", port=(443, 8080)[i % 2],
                         return_code=codes[i % 5], outcome=outcomes[codes[i % 5]],
                         time=BASE_TIME - timedelta(milliseconds=100 * i))
              for i in range(n)]  # fmt: skip
    return context_for(events, None, "busy", 300, BASE_TIME)


def _settings(fake: FakeOpenAI, **kw: object) -> AISettings:
    return AISettings(
        api_key=SecretStr(TEST_KEY), base_url=fake.base_url, model="local-model", timeout=5.0, max_retries=0, **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def small_model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(context_limit=2048) as server:
        yield server


async def test_a_busy_process_is_explained_by_a_2k_context_model(small_model: FakeOpenAI) -> None:
    small_model.text("busy is refused often.")
    finished = await collect(stream_explanation(_settings(small_model), "busy", _busy()))
    assert finished.text == "busy is refused often."
    body = small_model.chat_requests[0].body
    assert body is not None and prompt_tokens(body) <= 2048 - ANSWER_TOKENS
    user = body["messages"][1]["content"]
    assert DATA_OPEN in user and "truncated" not in user.split(DATA_CLOSE)[0]
    assert '"total": 1000' in user  # the counts are all there, whatever was left out


async def test_the_context_the_server_reports_is_used_and_asked_once() -> None:
    with FakeOpenAI(context_limit=8192, model_info={"max_model_len": 8192}) as fake:
        fake.text("one")
        fake.text("two")
        settings = _settings(fake)
        await collect(stream_explanation(settings, "busy", _busy()))
        await collect(stream_explanation(settings, "busy", _busy()))
        sizes = [prompt_tokens(r.body or {}) for r in fake.chat_requests]
        assert all(2048 - ANSWER_TOKENS < s <= 8192 - ANSWER_TOKENS for s in sizes), sizes  # more detail than 2k
        assert len([r for r in fake.requests if r.path.endswith("/models")]) == 1


@pytest.mark.parametrize("overflow", ["empty", "400"])
async def test_a_prompt_the_model_cannot_take_says_why_instead_of_try_again(overflow: str) -> None:
    with FakeOpenAI(context_limit=1500, overflow=overflow) as fake:  # type: ignore[arg-type]
        settings = _settings(fake, context_tokens=32768)  # the user said 32k: the model says otherwise
        with pytest.raises(AIError) as caught:
            await collect(stream_explanation(settings, "busy", _busy()))
    message = str(caught.value)
    assert "tokens" in message and "context" in message, message
    assert "~" in message and "NETSPY_AI_CONTEXT_TOKENS" in (caught.value.hint or ""), caught.value.hint
    assert "try again" not in message + (caught.value.hint or "")
    assert "\n" not in message and TEST_KEY not in message


def _busy_with_traffic() -> dict[str, object]:
    """:func:`_busy` plus what the collector counts: bytes with 10 remotes and 10 processes, latency to 10
    destinations, and the 20 newest of 5,000 accepted connections (as ``a`` gathers them)."""
    from netspy_tui.ai.context import build_context
    from netspy_tui.models import LatencyGroup, LatencyStats, TrafficProcess, TrafficRemote, TrafficStats

    traffic = TrafficStats(
        window_seconds=300, rx_bytes=9_000_000, tx_bytes=60_000_000, rx_rate=30_000.0, tx_rate=200_000.0,
        retransmits=900, inbound_connections=5000, outbound_connections=1000, closed_connections=5900,
        processes=[TrafficProcess(command=f"busy-{i}", pids=[700 + i], rx_bytes=900_000, tx_bytes=6_000_000,
                                  rx_rate=3000.0, tx_rate=20_000.0, flows=10) for i in range(10)],
        remotes=[TrafficRemote(remote=f"10.1.{i}.7", rx_bytes=900_000, tx_bytes=6_000_000, commands=["busy"],
                               retransmits=90) for i in range(10)],
    )  # fmt: skip
    latency = LatencyStats(
        window_seconds=300, attempts=1000, p50_us=900, p95_us=1_020_000, max_us=3_000_000,
        destinations=[LatencyGroup(command=f"busy-{i}", pids=[700 + i], destination=f"10.1.{i}.7:443", attempts=100,
                                   p50_us=900, p95_us=1_020_000, max_us=3_000_000) for i in range(10)],
    )  # fmt: skip
    inbound = [connection(pid=700, command="busy", ip="10.9.0.1", port=443, direction="inbound",
                          peer_ip=f"192.0.2.{i}", peer_port=40000 + i, time=BASE_TIME - timedelta(seconds=i))
               for i in range(20)]  # fmt: skip
    context = _busy()
    extra = build_context(traffic=traffic, latency=latency, inbound=inbound)
    return {**context, **{k: v for k, v in extra.items() if k != "process"}, "inbound_total": 5000}


@pytest.mark.parametrize("window", [1536, 2048])
async def test_a_busy_process_with_traffic_still_fits_a_small_model_whole(window: int) -> None:
    """The traffic parts keep only their totals at the least detail: the data block is never cut, the counts
    are all there."""
    with FakeOpenAI(context_limit=window) as fake:
        fake.text("busy retransmits.")
        finished = await collect(stream_explanation(_settings(fake, context_tokens=window), "busy",
                                                    _busy_with_traffic()))  # fmt: skip
        assert finished.text == "busy retransmits."
        body = fake.chat_requests[0].body
        assert body is not None and prompt_tokens(body) <= window - ANSWER_TOKENS
        user = body["messages"][1]["content"]
        assert "truncated" not in user.split(DATA_CLOSE)[0]
        for figure in ('"total": 1000', '"tx_bytes": 60000000', '"retransmits": 900', '"p95_us": 1020000',
                       '"accepted": 5000'):  # fmt: skip
            assert figure in user, figure
