"""Streaming AI explanations and answers over any OpenAI-compatible chat-completions server.

Every public stream is an async generator of :data:`~netspy_tui.ai.types.StreamEvent`: text
fragments as they arrive, tool-call start/finish markers, and one final :class:`Finished`. Failures
are raised as :class:`netspy_tui.errors.AIError` with a one-line message; once text has been
yielded they are :class:`AIStreamError` carrying ``partial_text``.

The ``openai`` package is imported lazily, so importing :mod:`netspy_tui.ai` stays cheap for the
CLI paths that never ask a model.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netspy_tui.ai import prompts
from netspy_tui.ai.settings import (
    ENV_BASE_URL,
    ENV_CONTEXT_TOKENS,
    ENV_MAX_RETRIES,
    ENV_MAX_TOOL_ROUNDS,
    ENV_TIMEOUT,
    PLACEHOLDER_KEY,
    AISettings,
)
from netspy_tui.ai.types import (
    MAX_ANSWER_CHARS,
    AIStreamError,
    Finished,
    StreamEvent,
    TextDelta,
    ToolCaller,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    ToolSpec,
)
from netspy_tui.errors import AIError
from netspy_tui.textsafe import clean, first_line

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

_KEYLIKE = re.compile(r"\b(sk|key|pk|rk)-[A-Za-z0-9_\-*.]{4,}")


# --- client and errors -------------------------------------------------------------------


def _client(settings: AISettings) -> AsyncOpenAI:
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    from openai import AsyncOpenAI

    from netspy_tui.logs import add_secrets

    # A query in the base URL (a proxy's ?code=…) goes on every request as its query: left in the base URL, the
    # client appended its paths after it ("/v1/?code=…chat/completions"); and every value of it is masked in logs
    # (the HTTP client logs each request's URL at --verbose), as the README says of query values.
    base, query = settings.effective_base_url, None
    try:
        parts = urlsplit(base)
        if parts.query:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            base = urlunsplit(parts._replace(query="", fragment=""))
            add_secrets(*(v for v in query.values() if v), *(k for k, v in query.items() if not v))
    except ValueError:  # (a URL urlsplit cannot read: the client's own parsing decides)
        pass
    return AsyncOpenAI(
        api_key=settings.key_for_client(),
        base_url=base,
        default_query=query,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


def _scrub(text: str, settings: AISettings) -> str:
    """``text`` without the API key (or anything shaped like one)."""
    if settings.api_key is not None:
        secret = settings.api_key.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-***", text)


def _server_message(exc: Exception, settings: AISettings) -> str:
    """The server's own error message, one line, cleaned, without the key."""
    body = getattr(exc, "body", None)
    message: object = None
    if isinstance(body, dict):
        message = body.get("message")
        if message is None and isinstance(body.get("error"), dict):
            message = body["error"].get("message")
        if message is None and isinstance(body.get("error"), str):
            message = body["error"]
    if not message:
        message = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"^Error code: \d+ - ", "", str(message))
    return _scrub(first_line(text, 200), settings).rstrip(" .,;:")


def _retry_after(headers: Mapping[str, str]) -> str | None:
    """How long a 429 asks to wait (``retry-after-ms``, OpenAI's, or ``Retry-After`` in seconds), as the hint says
    it; None when it says nothing usable (absent, an HTTP date, nonsense, over a day)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if 0 < seconds <= 86_400:
            return f"{seconds:.0f} s" if seconds >= 1 else "a second"
    return None


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return str(code) if code else ""


def _connect_reason(exc: BaseException) -> str | None:
    """Why a connection failed, from the exception chain: refused, DNS, or the OS message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    reason: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host name could not be resolved"
        if isinstance(current, OSError) and reason is None and str(current):
            reason = str(current)
        text = str(current)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo failed" in text:
            return "host name could not be resolved"
        if "Connection refused" in text:
            return "connection refused"
        current = current.__cause__ or current.__context__
    return reason


_CONTEXT_WORDS = re.compile(r"context|token|too long|exceed", re.IGNORECASE)
CONTEXT_HINT = (
    f"set {ENV_CONTEXT_TOKENS} to the model's context length (prompts are then sized to it), "
    "or load the model with a larger context"
)


def _unanswered(settings: AISettings, waited: float | None, partial_text: str) -> AIError:
    """No answer within the timeout: on every try, the SDK having retried (``max_retries``). The message says the
    wait the user had (``waited``, measured; else the tries' timeouts), not one try's."""
    url, per_try = settings.display_url, f"{settings.timeout:g} s"
    if not settings.max_retries:
        return AIStreamError(
            f"The AI server at {url} did not answer within {per_try}",
            f"check that it is running and not overloaded, or raise {ENV_TIMEOUT} for a slow model",
            partial_text=partial_text,
        )
    tries = settings.max_retries + 1
    total = waited if waited is not None else tries * settings.timeout
    return AIStreamError(
        f"The AI server at {url} did not answer within {per_try} on any of {tries} tries (about {total:.0f} s in all)",
        f"check that it is running and not overloaded; for a slow model raise {ENV_TIMEOUT} (each try's wait) "
        f"and set {ENV_MAX_RETRIES}=0",
        partial_text=partial_text,
    )


def map_error(exc: Exception, settings: AISettings, *, partial_text: str = "", started: bool = False,
              request_tokens: int = 0, waited: float | None = None) -> AIError:  # fmt: skip
    """One-line :class:`AIError` for an exception raised while talking to the model.

    ``started`` means the response had begun streaming; ``partial_text`` is what was yielded so far;
    ``request_tokens`` the estimated size of the request (named when the model's context is the likely cause);
    ``waited`` the seconds the request took, retries included (a timeout before any answer says it).
    The key never appears in the result, even when the server echoes it.
    """
    import openai

    url = settings.display_url
    kept = "; the text so far is kept" if partial_text else ""

    def err(message: str, hint: str) -> AIError:
        return AIStreamError(message, hint, partial_text=partial_text)

    if isinstance(exc, openai.APITimeoutError):
        if started:
            return err(
                f"The AI stream from {url} stalled for more than {settings.timeout:g} s{kept}",
                f"try again, or raise {ENV_TIMEOUT}",
            )
        return _unanswered(settings, waited, partial_text)
    if isinstance(exc, openai.APIConnectionError):
        if started:
            return err(f"The AI stream from {url} ended early{kept or ' before any text arrived'}", "try again")
        reason = _connect_reason(exc)
        if reason == "host name could not be resolved":
            return err(
                f"Could not reach the AI server at {url}: the host name could not be resolved",
                f"check {ENV_BASE_URL} and the network",
            )
        detail = f": {clean(reason, 120)}" if reason else ""
        return err(f"Could not connect to the AI server at {url}{detail}", f"start the server or fix {ENV_BASE_URL}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _error_code(exc)
        if isinstance(exc, openai.AuthenticationError) or status == 401:
            # The server's text is left out on purpose: OpenAI echoes part of the key in it.
            if settings.key_for_client() == PLACEHOLDER_KEY:
                return err(f"The AI server at {url} requires an API key (HTTP 401)", "set OPENAI_API_KEY")
            return err(
                f"The AI server at {url} rejected the API key (HTTP 401)",
                "check that OPENAI_API_KEY is current and meant for this server",
            )
        message = _server_message(exc, settings)
        if status == 403:
            return err(
                f"The AI server at {url} refused access (HTTP 403): {message}",
                "check the key's permissions and the model's availability for your account",
            )
        if status == 429:
            if code == "insufficient_quota" or "quota" in message.lower():
                return err(
                    f"The AI account has no quota left at {url} (HTTP 429): {message}",
                    "check the plan and billing, or use another key",
                )
            wait = _retry_after(exc.response.headers)
            return err(
                f"The AI server at {url} is rate limiting requests (HTTP 429): {message}",
                f"wait {wait} and try again" if wait else "wait a minute and try again",
            )
        if status == 404:
            if code == "model_not_found" or "model" in message.lower():
                return err(
                    f"Model '{clean(settings.model, 80)}' was not found at {url} (HTTP 404)",
                    "choose an available model with --model or NETSPY_MODEL",
                )
            return err(
                f"The AI server at {url} has no chat completions endpoint (HTTP 404)",
                f"check {ENV_BASE_URL}; OpenAI-compatible servers usually end in /v1",
            )
        if status in (405, 501):  # (a web server that does not speak the chat API: a static file server's POST)
            return err(
                f"The AI server at {url} does not serve chat completions (HTTP {status}): it is not an "
                "OpenAI-compatible endpoint",
                f"check {ENV_BASE_URL}; OpenAI-compatible servers usually end in /v1",
            )
        if status >= 500:
            return err(f"The AI server at {url} failed (HTTP {status}): {message}", "try again later")
        if status == 400:
            if request_tokens and _CONTEXT_WORDS.search(message):
                return err(
                    f"The request (~{request_tokens} tokens) does not fit the model's context at {url} "
                    f"(HTTP 400): {message}",
                    CONTEXT_HINT,
                )
            return err(
                f"The AI server at {url} rejected the request (HTTP 400): {message}",
                "check that the model supports chat and tool calls, or try another model",
            )
        return err(f"The AI server at {url} answered HTTP {status}: {message}", "check the server and the settings")
    if isinstance(exc, openai.APIError):
        # An error event inside an otherwise healthy stream.
        message = _server_message(exc, settings)
        return err(f"The AI server reported an error mid-stream: {message}{kept}", "try again")
    if isinstance(exc, json.JSONDecodeError | ValueError):
        return err(
            f"The AI server at {url} sent a malformed stream{kept}",
            "check that it is an OpenAI-compatible chat completions server",
        )
    message = _scrub(first_line(str(exc), 200), settings)
    return err(f"The AI request to {url} failed: {message or type(exc).__name__}{kept}", "try again")


# --- one streamed completion --------------------------------------------------------------


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Round:
    """What one streamed completion produced."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PendingCall] = field(default_factory=dict)
    finish_reason: str | None = None
    model: str | None = None
    content_type: str = ""
    """The response's Content-Type (a server that ignores ``stream: true`` answers ``application/json``)."""


#: Finish reasons that mean the answer was not finished by the model: (what happened, what to do about it).
_CUT_OFF = {
    "length": ("was cut off by the model's length limit (its output or context ran out)",
               "ask a narrower question, or raise the model's output or context limit on the server"),
    "content_filter": ("was filtered by the provider (finish_reason content_filter)",
                       "rephrase the question, or try another model"),
}  # fmt: skip


def _kept(text: str) -> str:
    return "; the text so far is kept" if text else " before any text arrived"


def _add_fragment(rnd: _Round, index: int | None, call_id: str | None, name: str | None, args: str | None) -> None:
    """Join one ``delta.tool_calls[i]`` fragment into the call it belongs to (by index, else by id)."""
    if index is None:
        by_id = [i for i, c in rnd.calls.items() if call_id and c.id == call_id]
        if by_id:
            index = by_id[0]
        elif call_id or not rnd.calls:
            index = len(rnd.calls)
        else:
            index = max(rnd.calls)
    pending = rnd.calls.setdefault(index, _PendingCall())
    if call_id and not pending.id:
        pending.id = call_id
    if name:
        if not pending.name or name.startswith(pending.name):
            pending.name = name  # first fragment, or a server that repeats the name cumulatively
        elif name != pending.name:
            pending.name += name  # a name split across chunks
    if args:
        pending.arguments += args


async def _stream_round(
    client: AsyncOpenAI,
    settings: AISettings,
    messages: list[dict[str, Any]],
    tools: list[ToolSpec],
    rnd: _Round,
    text_so_far: list[str],
    used: int = 0,
) -> AsyncIterator[TextDelta]:
    """Stream one completion: yield its text, collect tool calls and finish reason into ``rnd``. ``used``: characters
    of the answer yielded before this round; at :data:`MAX_ANSWER_CHARS` in all the stream is closed (the server
    sees the client hang up) and :class:`AIStreamError` says so, the text so far kept. An answer the model did not
    finish (its length limit, the provider's filter) is an :class:`AIStreamError` too."""
    request: dict[str, Any] = {"model": settings.model, "messages": messages, "stream": True}
    if tools:
        request["tools"] = [t.to_openai() for t in tools]
    log.debug(
        "AI request: model=%s url=%s messages=%d tools=%d",
        settings.model,
        settings.display_url,
        len(messages),
        len(tools),
    )
    started = False
    asked = time.monotonic()
    try:
        stream = await client.chat.completions.create(**request)  # (the SDK retries: max_retries)
        started = True
        response = getattr(stream, "response", None)
        rnd.content_type = str(response.headers.get("content-type") or "") if response is not None else ""
        async with stream:  # (leaving it closes the response: a stopped stream hangs up on the server)
            async for chunk in stream:
                if chunk.model:
                    rnd.model = chunk.model
                for choice in chunk.choices or []:
                    if choice.index not in (0, None):
                        continue
                    delta = choice.delta
                    if delta is not None and delta.content:
                        # (carriage returns dropped: CRLF line ends are plain newlines on every path; a lone CR
                        # would be shown as \x0d, or overwrite a terminal's line)
                        content = delta.content.replace("\r", "")[: MAX_ANSWER_CHARS - used]
                        used += len(content)
                        if content:
                            rnd.text.append(content)
                            text_so_far.append(content)
                            yield TextDelta(content)
                        if used >= MAX_ANSWER_CHARS:
                            log.debug("AI answer reached %d characters: stream closed", MAX_ANSWER_CHARS)
                            raise AIStreamError(
                                f"The answer passed {MAX_ANSWER_CHARS:,} characters, so the stream from "
                                f"{settings.display_url} was stopped there; the text so far is kept",
                                "ask a narrower question, or try another model",
                                partial_text="".join(text_so_far),
                            )
                    for tc in (delta.tool_calls if delta is not None else None) or []:
                        fn = tc.function
                        _add_fragment(rnd, tc.index, tc.id, fn.name if fn else None, fn.arguments if fn else None)
                    if choice.finish_reason:
                        rnd.finish_reason = choice.finish_reason
    except Exception as exc:
        import openai

        if not isinstance(exc, openai.OpenAIError | json.JSONDecodeError):
            raise
        log.debug("AI request failed: %s (started=%s)", type(exc).__name__, started)
        raise map_error(
            exc,
            settings,
            partial_text="".join(text_so_far),
            started=started,
            request_tokens=prompts.estimate_tokens(messages),
            waited=time.monotonic() - asked,
        ) from None
    if rnd.finish_reason is None:
        # The body ended cleanly but without a final chunk: a proxy or server cut it short.
        log.debug("AI stream ended without finish_reason")
        partial = "".join(text_so_far)
        if not partial and not rnd.calls and "event-stream" not in rnd.content_type.lower():
            raise AIError(
                f"The AI server at {settings.display_url} answered a streaming request with "
                f"{clean(rnd.content_type.split(';')[0], 60) or 'no content type'}, not an event stream",
                "use a server (or proxy) that streams chat completions (stream: true, Server-Sent Events)",
            )
        if not partial:
            raise _nothing_back(settings, messages)
        raise AIStreamError(
            f"The AI stream from {settings.display_url} ended early; the text so far is kept",
            "try again",
            partial_text=partial,
        )
    log.debug(
        "AI response: finish_reason=%s tool_calls=%d chars=%d",
        rnd.finish_reason,
        len(rnd.calls),
        sum(len(t) for t in rnd.text),
    )
    if rnd.finish_reason in _CUT_OFF:
        what, hint = _CUT_OFF[rnd.finish_reason]
        partial = "".join(text_so_far)
        raise AIStreamError(f"The answer from {settings.display_url} {what}{_kept(partial)}", hint,
                            partial_text=partial)  # fmt: skip


def _nothing_back(settings: AISettings, messages: list[dict[str, Any]]) -> AIError:
    """The model sent no text at all: small local models do that when the prompt does not fit."""
    return AIError(f"The model at {settings.display_url} returned no text: the request was "
                   f"~{prompts.estimate_tokens(messages)} tokens and the model's context may be smaller",
                   CONTEXT_HINT)  # fmt: skip


# --- the model's context window ----------------------------------------------------------------

#: Where OpenAI-compatible servers say how long a model's context is, in their ``GET /models``
#: entries: vLLM ``max_model_len``, OpenRouter ``context_length``, LM Studio ``max_context_length``,
#: llama.cpp ``meta.n_ctx_train`` / ``n_ctx``, others ``context_window`` / ``max_input_tokens``.
_CONTEXT_FIELDS = ("max_model_len", "context_length", "max_context_length", "context_window", "n_ctx",
                   "n_ctx_train", "max_input_tokens")  # fmt: skip
_context_of: dict[tuple[str, str], int | None] = {}


def _find_context(entry: Any, depth: int = 0) -> int | None:
    if not isinstance(entry, dict) or depth > 2:
        return None
    for name in _CONTEXT_FIELDS:
        value = entry.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    for value in entry.values():
        found = _find_context(value, depth + 1)
        if found:
            return found
    return None


async def context_tokens(client: AsyncOpenAI, settings: AISettings) -> int:
    """The model's context window: the settings', else :data:`prompts.OPENAI_CONTEXT_TOKENS` for
    OpenAI, else what the server says (asked once per server and model), else
    :data:`prompts.DEFAULT_CONTEXT_TOKENS`."""
    if settings.context_tokens:
        return settings.context_tokens
    if settings.base_url is None:  # OpenAI: its model list says nothing about context
        return prompts.OPENAI_CONTEXT_TOKENS
    key = (settings.effective_base_url, settings.model)
    if key not in _context_of:
        import openai

        try:
            page = await client.with_options(max_retries=0, timeout=min(5.0, settings.timeout)).models.list()
            found = None
            async for entry in page:
                if entry.id == settings.model:
                    found = _find_context(entry.model_dump())
                    break
            _context_of[key] = found
            log.debug("AI model %s context: %s", settings.model, found or "not reported")
        except (openai.OpenAIError, json.JSONDecodeError, ValueError) as exc:  # asked again next time
            log.debug("AI model list failed: %s", type(exc).__name__)
            return prompts.DEFAULT_CONTEXT_TOKENS
    return _context_of[key] or prompts.DEFAULT_CONTEXT_TOKENS


# --- tool calls ---------------------------------------------------------------------------


def _parse_arguments(raw: str) -> tuple[dict[str, Any], str | None]:
    """(arguments, None) or ({}, why they are unusable)."""
    if not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"the arguments are not valid JSON ({exc.msg} at character {exc.pos}): {clean(raw, 200)}"
    if not isinstance(value, dict):
        return {}, f"the arguments must be a JSON object, not {type(value).__name__}"
    return value, None


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """``list_connections({"pid": 42})``, as recorded in ``Finished.tool_calls``."""
    return f"{name}({json.dumps(arguments, ensure_ascii=False, sort_keys=True)})"


def _summary_line(output: ToolOutput) -> str:
    line = first_line(output.text, 160)
    if line:
        return line
    return "failed" if output.is_error else "ok"


async def _run_tool(
    name: str, arguments: dict[str, Any], problem: str | None, specs: dict[str, ToolSpec], call_tool: ToolCaller
) -> ToolOutput:
    if problem is not None:
        return ToolOutput(text=f"Tool call {name} not run: {problem}. Call it again with a JSON object.", is_error=True)
    if name not in specs:
        offered = ", ".join(sorted(specs)) or "none"
        return ToolOutput(
            text=f"There is no tool named {clean(name, 64)!r}. Available tools: {offered}.", is_error=True
        )
    try:
        return await call_tool(name, arguments)
    except Exception as exc:  # the tool's failure is the model's business, not a crash
        log.debug("tool %s raised %s", name, type(exc).__name__)
        message = first_line(str(exc), 300) or type(exc).__name__
        return ToolOutput(text=f"Tool {name} failed: {message}", is_error=True)


# --- public streams -----------------------------------------------------------------------


async def _converse(
    settings: AISettings,
    build: Callable[[int], list[dict[str, Any]]],
    tools: list[ToolSpec],
    call_tool: ToolCaller | None,
    lead_for: Callable[[int], str] | None = None,
) -> AsyncIterator[StreamEvent]:
    """The chat loop: stream, run requested tools, feed results back, until the model answers.
    ``build`` makes the first messages for a model with that many tokens of context; ``lead_for`` (given the same)
    a line the answer starts with, e.g. what of the user's text did not fit ("" for none)."""
    settings.require_configured()
    specs = {t.name: t for t in tools}
    text: list[str] = []
    calls_made: list[str] = []
    model = settings.model
    rounds = 0
    async with _client(settings) as client:
        window = await context_tokens(client, settings)
        messages = build(window)
        lead = lead_for(window) if lead_for is not None else ""
        if lead:
            text.append(lead)
            yield TextDelta(lead)
        while True:
            budget_left = bool(tools) and call_tool is not None and rounds < settings.max_tool_rounds
            if tools and call_tool is not None and not budget_left and rounds:
                messages.append({"role": "user", "content": prompts.TOOL_BUDGET_SPENT})
            rnd = _Round()
            offered = tools if budget_left else []
            async for delta in _stream_round(client, settings, messages, offered, rnd, text, sum(map(len, text))):
                yield delta
            model = rnd.model or model
            if not rnd.calls:
                break
            if not budget_left:
                if rounds:
                    note = (
                        f"_Stopped after {rounds} rounds of tool calls: the model still asked for more data "
                        f"(limit {settings.max_tool_rounds}, set by {ENV_MAX_TOOL_ROUNDS}). "
                        "The answer may be incomplete._"
                    )
                else:
                    note = "_The model asked to call tools, but none are available here. The answer may be incomplete._"
                note = ("\n\n" if text else "") + note
                text.append(note)
                yield TextDelta(note)
                break
            assert call_tool is not None
            rounds += 1
            ordered = [rnd.calls[i] for i in sorted(rnd.calls)]
            parsed = [_parse_arguments(c.arguments) for c in ordered]
            for n, call in enumerate(ordered):
                call.id = call.id or f"call_{rounds}_{n}"
                call.name = call.name or "unnamed_tool"
            messages.append(
                {
                    # "content" must be a string: llama.cpp-based servers answer 500 to null or missing.
                    "role": "assistant",
                    "content": "".join(rnd.text),
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(args) if problem is None else "{}"},
                        }
                        for c, (args, problem) in zip(ordered, parsed, strict=True)
                    ],
                }
            )
            for call, (args, problem) in zip(ordered, parsed, strict=True):
                yield ToolCallStarted(call.name, args)
                calls_made.append(format_call(call.name, args))
                output = await _run_tool(call.name, args, problem, specs, call_tool)
                yield ToolCallFinished(call.name, output.is_error, _summary_line(output))
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": prompts.tool_result_content(
                            call.name, output.text, output.data, output.is_error, context_tokens=window
                        ),
                    }
                )
    if not "".join(text)[len(lead) :].strip():
        raise _nothing_back(settings, messages)
    yield Finished(model=model, text="".join(text), tool_calls=calls_made)


def stream_explanation(settings: AISettings, subject: str, context: dict[str, Any]) -> AsyncIterator[StreamEvent]:
    """Explain one process's recent network behaviour from ``context`` (see :mod:`netspy_tui.ai.context`).

    ``subject`` names the process (e.g. ``curl (pid 1234)``); it is untrusted and goes into the data block.
    """
    return _converse(settings, lambda n: prompts.explanation_messages(subject, context, context_tokens=n), [], None)


def stream_answer(
    settings: AISettings,
    question: str,
    tools: list[ToolSpec],
    call_tool: ToolCaller,
    context: dict[str, Any] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Answer a free-form ``question``; the model may call ``tools`` through ``call_tool``.

    At most ``settings.max_tool_rounds`` rounds of tool calls; then the model is asked to answer
    without tools. ``context`` (what the user is looking at: pid, window, ...) is sent as data.
    """
    return _converse(
        settings, lambda n: prompts.question_messages(question, context, context_tokens=n), list(tools), call_tool
    )


def stream_summary_explanation(settings: AISettings, summary_text: str) -> AsyncIterator[StreamEvent]:
    """An explanation of a summary text: the seed-compatible ``ai_insights(summary_text)`` tool. A text longer
    than the model's context takes is cut, and the answer starts by saying so."""

    def note(window: int) -> str:
        sent = prompts.summary_sent(summary_text, context_tokens=window)
        if sent >= len(summary_text):
            return ""
        assumed = settings.context_tokens is None and window == prompts.DEFAULT_CONTEXT_TOKENS
        how = f"{window:,} tokens assumed: the server does not report it" if assumed else f"{window:,} tokens"
        return (f"_Note: only the first ~{sent:,} of the summary text's {len(summary_text):,} characters fit the "
                f"model's context ({how}); the rest was not sent. Set {ENV_CONTEXT_TOKENS} to the model's context "
                "length to send more._\n\n")  # fmt: skip

    return _converse(settings, lambda n: prompts.summary_messages(summary_text, context_tokens=n), [], None, note)


async def collect(stream: AsyncIterator[StreamEvent]) -> Finished:
    """Drain ``stream`` and return its :class:`Finished` (errors propagate as :class:`AIError`)."""
    finished: Finished | None = None
    async with aclosing(stream) as events:  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, Finished):
                finished = event
    if finished is None:
        raise AIError("The AI stream ended without an answer", "try again")
    return finished


async def available_models(settings: AISettings) -> list[str]:
    """Model names the server offers (``GET /models``), sorted; errors as :class:`AIError`."""
    settings.require_configured()
    import openai

    async with _client(settings) as client:
        try:
            page = await client.models.list()
            names = [m.id async for m in page]
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise map_error(exc, settings) from None
    return sorted(names)
