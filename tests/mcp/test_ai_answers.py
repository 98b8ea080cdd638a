"""The AI tools' answers over a real MCP session (stdio, as an outside agent runs ``netspy-tui mcp``), with a local
OpenAI-compatible server: an answer the model did not finish is an error that keeps its text, a runaway answer is
stopped at the cap (and the client hangs up), and a summary text cut to fit the model's context says so."""

from __future__ import annotations

import sys

from mcp import StdioServerParameters
from mcp.client import Client
from mcp.types import TextContent

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.fake_openai import FakeOpenAI
from tests.mcp.test_outside_agents import _env

KEY = "sk-mcp-ai-0123456789"


def _text(result: object) -> str:
    return "\n".join(c.text for c in getattr(result, "content", []) if isinstance(c, TextContent))


async def test_cut_off_runaway_and_cut_summary_answers_over_stdio() -> None:
    with FakeEbpfServer("current", events=[connection_json(pid=4242, command="curl", ago=3)]) as srv, \
            FakeOpenAI() as ai:  # fmt: skip
        env = {**_env(), "OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}
        params = StdioServerParameters(command=sys.executable, args=["-m", "netspy_tui", "mcp", "--server", srv.url],
                                       env=env)  # fmt: skip
        async with Client(params, read_timeout_seconds=60) as client:
            ai.text("## Findings\n\n- the most likely cause is", finish_reason="length")
            cut = await client.call_tool("ai_insights", {"summary_text": "curl made 5"})
            assert cut.is_error, _text(cut)
            error, _, kept = _text(cut).partition("\n\nThe answer so far:\n")
            assert "cut off by the model's length limit" in error
            assert kept == "## Findings\n\n- the most likely cause is"

            ai.text("The process appears to", finish_reason="content_filter")
            filtered = await client.call_tool("ai_insights", {"summary_text": "curl made 5"})
            assert filtered.is_error and "filtered by the provider" in _text(filtered)

            reply = ai.runaway()
            runaway = await client.call_tool("ai_insights", {"summary_text": "x"})
            assert reply.ended.wait(10) and reply.outcome == "hung up"
            assert runaway.is_error
            error, _, kept = _text(runaway).partition("\n\nThe answer so far:\n")
            assert "passed 100,000 characters" in error and len(kept) == 100_000  # (was 17 MB, sent twice)
            assert runaway.structured_content is None

            ai.text("curl is refused.")
            long = await client.call_tool("ai_insights", {"summary_text": "curl was refused. " * 1000})
            assert not long.is_error
            text = _text(long)
            assert text.startswith("_Note: only the first ~") and "of the summary text's 18,000 characters" in text
            assert text.endswith("curl is refused.")
