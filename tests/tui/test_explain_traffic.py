"""`a` explains a process with its traffic: the bytes it moves and with whom, its retransmits, how long its
connects take and who connected to it — from the kernel's counters in the store, read through the MCP tools
(get_traffic, get_connect_latency, list_connections direction=inbound), in the local rules' text and in the
telemetry block a model is sent (a real OpenAI-compatible HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from textual.pilot import Pilot

from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN
from netspy_tui.ai.settings import AISettings
from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.ai_pane import AIPane
from tests.fake_openai import FakeOpenAI
from tests.tui.conftest import wait_for
from tests.tui.test_observed_rates import explain
from tests.tui.test_traffic_view import seed

SIZE = (160, 45)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@asynccontextmanager
async def explained(settings: AISettings, name: str = "nginx") -> AsyncIterator[tuple[NetspyApp, Pilot[Any], AIPane]]:
    """The dashboard on a store with traffic (see ``seed``), ``a`` pressed on ``name`` in the process table."""
    store = EventStore(None)
    source = EmbeddedSource(None, store)
    seed(store, datetime.now(UTC))
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, source_note="test", ai=dashboard_hooks(settings))
            async with app.run_test(size=SIZE) as pilot:
                procs = app.dashboard.processes
                await wait_for(pilot, lambda: name in procs.stats, f"{name} in the process table")
                await explain(app, pilot, name)
                yield app, pilot, app.dashboard.ai_pane
    finally:
        await source.aclose()


async def test_without_a_model_the_rules_say_what_nginx_sends_to_whom_its_retransmits_latency_and_accepts() -> None:
    async with explained(AISettings()) as (_, _, pane):
        text = pane.answer
        assert "**Traffic:** sent 60.0 MB (1.0 MB/s), read 720.0 kB (12.0 kB/s); most with `10.0.0.7` " in text, text
        assert "**TCP connections:** 1 established, 1 accepted." in text
        # 7 of about 41,436 segments: told, not flagged
        assert "**Retransmits:** 7 TCP segments sent again (about 0.02% of the segments sent), 7 of them to " in text
        assert "**Connect latency:** 20 TCP connects, p50 10.0 ms, p95 19.0 ms, max 20.0 ms." in text
        assert "**Inbound:** 1 connection accepted in the window, from `10.0.0.9` ×1 on local port 443 ×1." in text
        assert "Worth a look" not in text and "**Assessment:** nothing in these figures stands out." in text


async def test_the_model_is_sent_the_traffic_latency_and_accepted_connections(fake: FakeOpenAI) -> None:
    fake.text("nginx sends 1 MB/s to 10.0.0.7.")
    settings = AISettings(api_key=SecretStr("sk-test"), base_url=fake.base_url, model="m", timeout=5.0, max_retries=0)
    async with explained(settings) as (_, _, pane):
        assert pane.answer == "nginx sends 1 MB/s to 10.0.0.7."
        body = fake.chat_requests[0].body
        assert body is not None
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        data = json.loads(user.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0])
        assert data["traffic"]["tx_bytes"] == 60_000_000 and data["traffic"]["rx_bytes"] == 720_000
        assert data["traffic"]["tx_bytes_per_s"] == 1_000_000.0 and data["traffic"]["retransmits"] == 7
        assert data["traffic"]["remotes"]["10.0.0.7"] == {"tx_bytes": 60_000_000, "rx_bytes": 600_000,
                                                          "retransmits": 7}  # fmt: skip
        assert data["connect_latency"]["attempts"] == 20 and data["connect_latency"]["p95_us"] == 19_000
        assert data["inbound"] == {"accepted": 1, "peers": {"10.0.0.9": 1}, "local_ports": {"443": 1}}


async def test_a_process_without_traffic_is_explained_without_those_lines() -> None:
    async with explained(AISettings(), name="curl") as (_, _, pane):
        text = pane.answer
        assert "**Traffic:** sent 60.0 kB (1.0 kB/s), read 6.0 MB (100.0 kB/s)" in text, text
        assert "Retransmits" not in text and "Inbound" not in text and "Worth a look" not in text
