"""The AI pane end to end: the dashboard (pilot) -> ai_bridge -> openai SDK -> a real OpenAI-compatible
HTTP+SSE server on 127.0.0.1 (tests/fake_openai.py), with the telemetry read through the real in-process
MCP gateway over the demo recording. Nothing in the SDK is patched.
"""

from __future__ import annotations

import html
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Input, Markdown
from textual.widgets.markdown import MarkdownBlock

from netspy_tui.ai import AISettings
from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN
from netspy_tui.analysis.aggregate import aggregate, filter_events
from netspy_tui.mcp_tools.ai_bridge import DATA_TOOLS, dashboard_hooks
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import EventPage, EventQuery, Scope
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.messages import AIFailed, AIStarted
from netspy_tui.tui.widgets.ai_pane import AIPane
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from tests import fake_openai
from tests.fake_openai import FakeOpenAI, FakeToolCall, free_port
from tests.tui.conftest import Clock, demo_events, wait_for
from tests.tui.demo_data import DEMO_NOW

SIZE = (160, 45)
TEST_KEY = "sk-test-netspy-tui-0123456789abcdef"


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def settings(fake: FakeOpenAI) -> AISettings:
    # No SDK retries: each scripted reply answers exactly one request.
    return AISettings(
        api_key=SecretStr(TEST_KEY), base_url=fake.base_url, model="gpt-5-mini", timeout=5.0, max_retries=0
    )


@pytest.fixture
def hangups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every write of the fake server that failed because the client had hung up."""
    seen: list[str] = []
    original = fake_openai._Handler._write

    def write(self: Any, data: bytes, chunked: bool = True) -> None:
        try:
            original(self, data, chunked)
        except OSError as exc:
            seen.append(type(exc).__name__)
            raise

    monkeypatch.setattr(fake_openai._Handler, "_write", write)
    return seen


@pytest.fixture
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("call")
    assert records, "nothing was logged: the check below would prove nothing"
    assert not [r for r in records if TEST_KEY in r.getMessage() or TEST_KEY in (r.exc_text or "")]


@asynccontextmanager
async def ai_dashboard(
    source: MemorySource, clock: Clock, settings: AISettings
) -> AsyncIterator[tuple[NetspyApp, Pilot[int], AIPane]]:
    """The dashboard with the AI hooks the CLI builds, after its first full render."""
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, source_note="demo", ai=dashboard_hooks(settings))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.dashboard.processes.row_count == 6, "six processes")
            yield app, pilot, app.dashboard.ai_pane


async def select(app: NetspyApp, pilot: Pilot[int], name: str) -> None:
    procs = app.dashboard.processes
    procs.focus()
    procs.move_cursor(row=procs.get_row_index(name))
    await pilot.pause()


def shown(pane: AIPane) -> str:
    """The text the pane's Markdown view has rendered (its blocks), not what is queued for it."""
    parts = []
    for block in pane.markdown.query(MarkdownBlock):
        content = block.content
        if isinstance(content, Content) and content.plain:
            parts.append(content.plain)
    return "\n".join(parts)


def screen_text(app: NetspyApp) -> str:
    return html.unescape(app.export_screenshot()).replace("\u00a0", " ")


def telemetry(content: str) -> Any:
    """The JSON inside the one telemetry block of a prompt message."""
    assert content.count(DATA_OPEN) == 1, content
    body = content.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0]
    return json.loads(body)


def user_message(fake: FakeOpenAI, n: int) -> str:
    body = fake.chat_requests[n].body
    assert body is not None
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def notified(app: NetspyApp, needle: str) -> list[Any]:
    return [n for n in app._notifications if needle in str(n.message)]


# --- streaming explanations -------------------------------------------------------------------


async def test_a_streams_the_explanation_of_the_selected_process_from_its_real_figures(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, no_key_in_logs: None
) -> None:
    gate = threading.Event()
    fake.text("**nginx** first ", "and the rest.", gate=gate)
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        assert str(pane.border_title) == f"AI · gpt-5-mini at {fake.base_url} (key set)"
        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: "nginx first" in shown(pane), "the first fragment on screen")
        assert not gate.is_set()  # the server is still holding the rest back: this is streaming
        # the subject stays in the state line while it streams and once it is done
        assert pane.streaming and pane.state_text == "Streaming: explaining process 'nginx' over 1m… (esc cancels)"
        assert "and the rest" not in shown(pane)

        # The model got nginx's real figures, gathered through the MCP tools, in the telemetry block.
        data = telemetry(user_message(fake, 0))
        events = demo_events()
        stats = aggregate(events, Scope("connection", None, "nginx", 60), DEMO_NOW)
        assert data["subject"] == "nginx" and data["process"] == {"pid": None, "command": "nginx"}
        assert data["connections"]["total"] == stats.total > 0
        assert data["connections"]["outcomes"] == {c.key: c.count for c in stats.outcomes}
        assert list(data["connections"]["top_destinations"].items()) == [
            (c.key, c.count) for c in stats.top_destinations[: len(data["connections"]["top_destinations"])]
        ]
        recent, _ = filter_events(events, EventQuery(kind="connection", command="nginx", limit=30))
        assert {e["to"] for e in data["examples"]} <= {e.destination for e in recent}
        assert len(data["examples"]) + data.get("examples_omitted", 0) == len(recent)
        drops = aggregate(events, Scope("packet_drop", None, "nginx", 60), DEMO_NOW)
        assert data.get("packet_drops", {}).get("total", 0) == drops.total
        assert fake.chat_requests[0].body["model"] == "gpt-5-mini"  # type: ignore[index]
        assert fake.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"

        gate.set()
        await wait_for(pilot, lambda: pane.state == "finished", "finished")
        assert pane.answer == "**nginx** first and the rest."
        await wait_for(pilot, lambda: "nginx first and the rest." in shown(pane), "the whole answer")
        assert pane.state_text == "Finished: explaining process 'nginx' over 1m · answered by gpt-5-mini."
        assert TEST_KEY not in screen_text(app)


async def test_esc_cancels_the_stream_and_the_client_hangs_up(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, hangups: list[str]
) -> None:
    gate = threading.Event()
    fake.text("first ", "second ", "third ", "fourth", gate=gate, delay=0.05)
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await select(app, pilot, "curl")
        await pilot.press("a")
        await wait_for(pilot, lambda: "first" in shown(pane), "the first fragment")
        await pilot.press("escape")
        assert pane.state == "cancelled"
        assert pane.state_text == "Cancelled; the text so far is kept."
        gate.set()  # the server now tries to send the rest to a client that is gone
        await wait_for(pilot, lambda: bool(hangups), "the server to see the client hang up")
        for _ in range(10):
            await pilot.pause(0.02)
        assert pane.answer == "first " and "second" not in shown(pane)
        assert pane.state == "cancelled"
        assert app.dashboard.focus_subject is None  # esc cancelled the stream and did nothing else
        assert not [n for n in app._notifications if n.severity == "error"]
        assert app.is_running


async def test_a_new_request_cancels_the_old_stream(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, hangups: list[str]
) -> None:
    gate = threading.Event()
    fake.text("About nginx: ", "more ", "and more", gate=gate, delay=0.05)
    fake.text("About curl: ", "done.")
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: "About nginx" in shown(pane), "nginx streaming")
        await select(app, pilot, "curl")
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "finished", "curl's answer")
        assert pane.answer == "About curl: done."
        assert telemetry(user_message(fake, 1))["subject"] == "curl"
        gate.set()
        await wait_for(pilot, lambda: bool(hangups), "the first stream's client to hang up")
        for _ in range(10):
            await pilot.pause(0.02)
        assert "nginx" not in shown(pane) and pane.answer == "About curl: done."
        assert len(fake.chat_requests) == 2


async def test_a_says_it_waits_for_the_model_once_the_telemetry_is_gathered(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock
) -> None:
    """A model server that takes the request and does not answer: the state line said "gathering postgres: …
    via MCP…" for the whole wait, although the figures were in and the request was with the model (an audit's)."""
    fake.stall()
    async with ai_dashboard(source, clock, settings.model_copy(update={"timeout": 60.0})) as (app, pilot, pane):
        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: bool(fake.chat_requests), "the request at the model")
        await wait_for(pilot, lambda: "asking gpt-5-mini" in pane.state_text, "the state line saying so")
        assert "gathering" not in pane.state_text and pane.streaming and pane.answer == ""
        assert str(pane.query_one("#ai-state").content) == pane.state_text, pane.state_text
        await pilot.press("escape")
        assert pane.state == "cancelled"


async def test_streamed_text_starts_at_the_top_and_follows_the_bottom_once_it_fills_the_pane(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock
) -> None:
    gate = threading.Event()
    fake.text(*["An earlier long answer.\n\n"] * 40)  # leaves the pane scrolled far down
    fake.text("About nginx: ", *["more.\n\n"] * 40, gate=gate, delay=0.01)
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await select(app, pilot, "curl")
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "finished", "the long answer")
        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: "About nginx" in shown(pane), "the new answer streaming")
        await pilot.pause(0.1)
        scroll = pane.query_one("#ai-scroll")
        first = pane.markdown.query(MarkdownBlock).first()
        # at the top of the pane, not at its bottom under blank lines (an anchored scroll went negative)
        assert scroll.scroll_y == 0 and first.region.y == scroll.content_region.y, (scroll.scroll_y, first.region)
        gate.set()
        await wait_for(pilot, lambda: pane.state == "finished", "the rest")
        await pilot.pause(0.2)
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == scroll.max_scroll_y  # followed the bottom


# --- free-form questions and tool calls -----------------------------------------------------


async def test_question_key_asks_and_the_models_tool_call_runs_through_mcp(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock
) -> None:
    queries: list[EventQuery] = []
    original = source.query

    async def query(q: EventQuery) -> EventPage:
        queries.append(q)
        return await original(q)

    source.query = query  # type: ignore[method-assign]
    gate = threading.Event()
    fake.tool_calls(FakeToolCall("list_connections", '{"process_name": "nginx", "max_events": 5}', split=4))
    fake.text("nginx connects ", "to 10.0.2.15:8000.", gate=gate)
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await pilot.press("A")
        bar = app.dashboard.query_one("#question-bar", Input)
        assert bar.display and bar.has_focus
        await pilot.press(*"who", "enter")
        assert not bar.display
        call = '→ list_connections({"max_events": 5, "process_name": "nginx"})'
        await wait_for(pilot, lambda: "nginx connects" in shown(pane), "the answer after the tool call")
        assert not gate.is_set()
        assert len(pane.tool_lines) == 1 and pane.tool_lines[0].startswith(call + " ✓ ")
        assert call in shown(pane) and "✓" in shown(pane)

        # The MCP tool really ran against the data source ...
        assert any(q.command == "nginx" and q.kind == "connection" for q in queries)
        # ... and its result, with the real figures, went back to the model in the second request.
        first, second = fake.chat_requests[0].body, fake.chat_requests[1].body
        assert first is not None and second is not None
        assert sorted(t["function"]["name"] for t in first["tools"]) == sorted(DATA_TOOLS)
        assert user_message(fake, 0).endswith("The user's question:\nwho")
        assistant = next(m for m in second["messages"] if m["role"] == "assistant")
        assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {
            "process_name": "nginx",
            "max_events": 5,
        }
        result = telemetry(next(m for m in second["messages"] if m["role"] == "tool")["content"])
        page, total = filter_events(demo_events(), EventQuery(kind="connection", command="nginx", limit=5))
        # (a local server that does not say its context gets 2k-sized results: events with the fields that matter)
        assert [(e["to"], e["outcome"]) for e in result["events"]] == [(e.destination, e.effective_outcome)
                                                                         for e in page]  # fmt: skip
        assert result["total_count"] == total and result["returned"] == 5

        gate.set()
        await wait_for(pilot, lambda: pane.state == "finished", "finished")
        assert pane.answer == "nginx connects to 10.0.2.15:8000."


async def test_a_during_an_answer_to_a_question_says_what_runs_and_replaces_it_only_on_a_second_press(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, hangups: list[str]
) -> None:
    gate, gate2 = threading.Event(), threading.Event()
    fake.text("Because ", "port 8000 answers.", gate=gate)
    fake.text("About curl: ", "done.")
    fake.text("Again: ", "why.", gate=gate2)
    fake.text("About nginx: ", "done.")
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await pilot.press("A", *"why refused", "enter")
        await wait_for(pilot, lambda: "Because" in shown(pane), "the answer to the question streaming")
        await select(app, pilot, "curl")
        await pilot.press("a")
        await wait_for(pilot, lambda: bool(notified(app, "Still asking: why refused")), "the note on a")
        # not dropped silently: the question's answer goes on, and the user is told what runs and how to replace it
        assert pane.streaming and pane.answer == "Because "
        [note] = notified(app, "Still asking: why refused")
        assert "Press a again to replace it" in str(note.message) and "esc cancels it" in str(note.message)
        assert len(fake.chat_requests) == 1
        await pilot.press("a")  # the second press replaces it
        await wait_for(pilot, lambda: pane.state == "finished", "curl's explanation")
        assert pane.answer == "About curl: done." and len(fake.chat_requests) == 2
        gate.set()
        await wait_for(pilot, lambda: bool(hangups), "the question's stream to hang up")

        # after esc, a starts at once
        await pilot.press("A", *"again", "enter")
        await wait_for(pilot, lambda: "Again" in shown(pane), "the second question")
        await select(app, pilot, "nginx")
        await pilot.press("escape")
        assert pane.state == "cancelled"
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.answer == "About nginx: done.", "nginx's explanation")
        assert len(notified(app, "Still asking")) == 1
        gate2.set()


async def test_command_bar_insights_and_ask_stream_into_the_pane(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock
) -> None:
    fake.text("Insight: ", "curl is busy.")
    fake.text("Because ", "port 8000 answers.")
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await pilot.press("colon")
        bar = app.dashboard.query_one("#command-bar", CommandInput)
        bar.value = 'insights "curl made 500 connections in a minute"'
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.state == "finished", "insights answer")
        assert pane.answer == "Insight: curl is busy."
        assert telemetry(user_message(fake, 0)) == {"summary_text": "curl made 500 connections in a minute"}
        assert not app.dashboard.query_one("#result", ResultPanel).display  # not the non-streaming result panel

        bar.value = 'ask --process nginx "why does it time out?"'
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.state == "finished" and pane.answer.startswith("Because"), "ask answer")
        assert pane.answer == "Because port 8000 answers."
        content = user_message(fake, 1)
        assert content.endswith("why does it time out?")
        assert telemetry(content) == {"process_name": "nginx", "duration": 60}
        assert fake.chat_requests[1].body["tools"]  # type: ignore[index]


# --- failures -------------------------------------------------------------------------------

ERRORS: list[tuple[str, Callable[[FakeOpenAI], None], str]] = [
    (
        "401",
        lambda f: f.error(401, f"Incorrect API key provided: {TEST_KEY}", code="invalid_api_key"),
        "rejected the API key (HTTP 401)",
    ),
    (
        "429",
        lambda f: f.error(429, "Rate limit reached for requests", code="rate_limit_exceeded"),
        "is rate limiting requests (HTTP 429): Rate limit reached for requests",
    ),
    (
        "404 model",
        lambda f: f.error(404, "The model `gpt-5-mini` does not exist", code="model_not_found"),
        "Model 'gpt-5-mini' was not found",
    ),
    ("cut", lambda f: f.cut("partial ", "answer"), "ended early; the text so far is kept"),
    (
        "in-band error",
        lambda f: f.stream_error("half ", "done", message="backend overloaded"),
        "reported an error mid-stream: backend overloaded",
    ),
]


async def test_each_failure_is_one_line_in_the_pane_keeps_the_partial_text_and_notifies_once(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, no_key_in_logs: None
) -> None:
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await select(app, pilot, "python3")
        for name, script, expected in ERRORS:
            script(fake)
            before = len(list(app._notifications))
            await pilot.press("a")
            await wait_for(pilot, lambda: pane.state == "failed", f"{name} failure")
            assert pane.state_text.startswith("Failed: ") and expected in pane.state_text, name
            assert "\n" not in pane.state_text and "Traceback" not in pane.state_text
            assert TEST_KEY not in pane.state_text
            partial = {"cut": "partial answer", "in-band error": "half done"}.get(name, "")
            assert pane.answer == partial, name
            if partial:
                await wait_for(pilot, lambda p=partial: p in shown(pane), f"{name} partial text")  # type: ignore[misc]
            new = list(app._notifications)[before:]
            assert len(new) == 1 and new[0].severity == "error" and not new[0].markup, name
            assert expected in new[0].message and TEST_KEY not in new[0].message
        assert app.is_running
        assert TEST_KEY not in screen_text(app)


async def test_an_answer_the_model_did_not_finish_or_that_runs_away_is_said_and_kept(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, hangups: list[str]
) -> None:
    """finish_reason "length": not "Finished" but a failure naming the length limit, the text kept. A model that
    never stops: the pane keeps the first 100,000 characters, says so, and the client hangs up on the server."""
    fake.text("## Findings\n\n- the most likely cause is", finish_reason="length")
    reply = fake.runaway()
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await select(app, pilot, "curl")
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "failed", "the cut-off answer")
        assert pane.state_text.startswith("Failed: ") and "cut off by the model's length limit" in pane.state_text
        assert pane.answer == "## Findings\n\n- the most likely cause is"
        await wait_for(pilot, lambda: "the most likely cause is" in shown(pane), "the partial text rendered")
        assert notified(app, "cut off by the model's length limit")

        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "failed" and "nginx" in pane.title, "the runaway answer", 20)
        assert "passed 100,000 characters" in pane.state_text, pane.state_text
        assert len(pane.answer) == 100_000
        assert reply.ended.wait(10) and reply.outcome == "hung up" and hangups


async def test_an_unreachable_server_is_one_line_too(source: MemorySource, clock: Clock) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = AISettings(base_url=url, timeout=5.0, max_retries=0)
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "failed", "failure")
        assert pane.state_text == (
            f"Failed: Could not connect to the AI server at {url}: connection refused. "
            "Start the server or fix OPENAI_BASE_URL."
        )
        assert notified(app, "connection refused")
        assert app.is_running


async def test_a_failure_right_behind_the_start_is_shown_with_its_partial_text(
    source: MemorySource, clock: Clock
) -> None:
    """The worker can post AIFailed before the pane has finished starting the answer (a refused connection on a
    busy machine): the answer's stream is then stopped before its task ever ran. The pane must still say
    "failed" and keep the partial text (it used to raise CancelledError out of the handler and stay "started")."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with ai_dashboard(source, clock, AISettings(base_url=url, max_retries=0)) as (app, pilot, pane):
        pane.expect(7, "explaining process 'x' over 1m")
        pane.post_message(AIStarted(7, "explaining process 'x' over 1m"))
        pane.post_message(AIFailed(7, "refused", title="AI explanation failed"))
        await wait_for(pilot, lambda: pane.state == "failed", "failure")
        assert pane.state_text == "Failed: refused" and pane.answer == ""
        assert notified(app, "refused")
        # the pane still answers the next request
        pane.expect(8, "explaining process 'x' over 1m")
        pane.post_message(AIStarted(8, "explaining process 'x' over 1m"))
        pane.post_message(AIFailed(8, "the stream broke", title="AI explanation failed", partial_text="**half**"))
        await wait_for(pilot, lambda: pane.state == "failed" and pane.answer, "second failure")
        assert pane.state_text == "Failed: the stream broke" and pane.answer == "**half**"
        await wait_for(pilot, lambda: shown(pane) == "half", "the partial text rendered")
        assert app.is_running


# --- without AI, and untrusted output --------------------------------------------------------


async def test_without_a_model_a_explains_with_labelled_rules_and_questions_say_how_to_enable_ai(
    source: MemorySource, clock: Clock
) -> None:
    async with ai_dashboard(source, clock, AISettings()) as (app, pilot, pane):
        assert str(pane.border_title) == "AI · rules (no AI configured)"
        await select(app, pilot, "nginx")
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "finished", "rule-based explanation")
        total = aggregate(demo_events(), Scope("connection", None, "nginx", 60), DEMO_NOW).total
        assert pane.answer.startswith("### Local rule-based explanation — no AI model configured")
        assert f"**Activity:** {total} connect() attempts" in pane.answer
        assert "OPENAI_API_KEY" in pane.answer and "OPENAI_BASE_URL" in pane.answer
        assert pane.state_text == "Finished: explaining process 'nginx' over 1m · local rules (no AI model configured)."
        await wait_for(pilot, lambda: "Local rule-based explanation" in shown(pane), "rendered")

        await pilot.press("A", *"why", "enter")
        assert pane.state == "notice"
        assert pane.state_text.startswith(
            "No AI model is configured, so questions cannot be answered. Set "
            "OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL"
        )
        assert "\n" not in pane.state_text and pane.answer == ""
        await pilot.press("colon")
        app.dashboard.query_one("#command-bar", CommandInput).value = 'insights "x made 5 connections"'
        await pilot.press("enter")
        assert pane.state == "notice" and pane.state_text.startswith("No AI model is configured")


async def test_model_output_renders_as_markdown_but_cannot_inject_escapes_markup_or_open_links(
    fake: FakeOpenAI, settings: AISettings, source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = (
        "## Findings\n\n**bold** [red]x[/red] \x1b[2J\x9b31m\u202eevil <b>raw</b>\r\n\n"
        "[click me](https://example.com/x)\n"
    )
    fake.text(hostile[:30], hostile[30:])
    opened: list[str] = []
    async with ai_dashboard(source, clock, settings) as (app, pilot, pane):
        monkeypatch.setattr(app, "open_url", lambda url, **kw: opened.append(url))
        await pilot.press("a")
        await wait_for(pilot, lambda: pane.state == "finished", "finished")
        text = shown(pane)
        assert "Findings" in text and "bold" in text and "**" not in text  # Markdown is rendered
        assert "[red]x[/red]" in text  # Textual markup stays literal
        assert "\\x1b[2J" in text and "\\x9b31m" in text and "\\u202e" in text  # controls made visible
        assert "<b>raw</b>" in text  # raw HTML shown as text
        screen = screen_text(app)
        assert "\x1b" not in screen and "\x9b" not in screen and "\u202e" not in screen and "\r" not in pane.answer
        pane.markdown.post_message(Markdown.LinkClicked(pane.markdown, "https://example.com/x"))
        await wait_for(pilot, lambda: bool(notified(app, "Not opened")), "link notice")
        assert opened == []


def test_ai_bridge_builds_the_dashboard_hooks_without_importing_textual() -> None:
    code = (
        "import sys; from netspy_tui.ai import AISettings; from netspy_tui.mcp_tools.ai_bridge import "
        "dashboard_hooks; h = dashboard_hooks(AISettings()); print(h.label, 'textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "rules (no AI configured) False"
