"""`a` on a busy process, answered by a small local model: the dashboard (pilot) -> ai_bridge -> the
openai SDK -> a real OpenAI-compatible server on 127.0.0.1 that, like llama.cpp or Ollama with a
2k context, streams nothing for a request longer than its context."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from netspy_tui.ai import AISettings
from netspy_tui.ai.prompts import ANSWER_TOKENS
from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.fake_openai import FakeOpenAI, prompt_tokens
from tests.tui.scenes import Clock, wait_for
from tests.tui.test_ai_pane import select, shown

SIZE = (160, 45)


async def test_a_on_a_process_with_1000_events_gets_an_answer_from_a_2k_context_model() -> None:
    clock = Clock()
    outcomes = {0: "ok", -111: "refused", -110: "timeout"}
    codes = [0, 0, 0, -111, -110]
    events = [connection(pid=900 + i % 3, command="busy", ip=f"10.2.{i % 5}.{i % 97}", port=(443, 9000)[i % 2],
                         return_code=codes[i % 5], outcome=outcomes[codes[i % 5]],
                         time=clock.now - timedelta(milliseconds=50 * i))
              for i in range(1000)]  # fmt: skip
    events.append(connection(pid=5, command="quiet", time=clock.now - timedelta(seconds=1), outcome="ok"))
    source = MemorySource(events, label="busy host", clock=clock)
    with FakeOpenAI(context_limit=2048) as fake:
        fake.text("**busy** fails 40% of the time: refused and timeouts to 10.2.x.")
        settings = AISettings(api_key=SecretStr("sk-test-small-model"), base_url=fake.base_url, model="local-model",
                              timeout=5.0, max_retries=0)  # fmt: skip
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.25, clock=clock, source_note="busy", ai=dashboard_hooks(settings))
            async with app.run_test(size=SIZE) as pilot:
                pane = app.dashboard.ai_pane
                await wait_for(pilot, lambda: app.dashboard.processes.row_count == 2, "two processes")
                await select(app, pilot, "busy")
                await pilot.press("a")
                await wait_for(pilot, lambda: pane.state == "finished", "the answer")
                assert pane.answer.startswith("**busy** fails 40%")
                await wait_for(pilot, lambda: "fails 40% of the time" in shown(pane), "the answer on screen")
        body = fake.chat_requests[0].body
        assert body is not None and prompt_tokens(body) <= 2048 - ANSWER_TOKENS
