"""A local OpenAI-compatible server for tests: real HTTP on 127.0.0.1, real SSE, scripted replies.

Usage::

    with FakeOpenAI() as fake:
        fake.text("Hello ", "world")                  # next /chat/completions answers with streamed text
        fake.tool_calls(FakeToolCall("list_connections", '{"pid": 42}'))
        fake.error(401, "Incorrect API key provided")
        fake.cut("partial ", "text")                  # close the socket mid-stream
        fake.text("cut", finish_reason="length")       # the model's length limit
        fake.text("{...}", plain=True)                 # one JSON reply even to stream: true
        reply = fake.runaway()                         # text without end; reply.outcome: "hung up"?
        settings = AISettings(api_key=SecretStr("sk-test"), base_url=fake.base_url)
        ...
        fake.requests[0].body["messages"]             # every request, recorded

Each ``POST /v1/chat/completions`` pops the next scripted reply (FIFO); with the queue empty the
server answers HTTP 500 with a body saying so, which makes a test that under-scripts fail loudly.
Replies work for ``stream: true`` (SSE, chunked transfer encoding, ``data: [DONE]``) and
``stream: false`` (one ``chat.completion`` JSON). ``GET /v1/models`` lists :attr:`FakeOpenAI.models`.

Waits inside the server (gates, stalls) are bounded, so a broken test cannot hang the run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

#: Longest time a gate or stall keeps a request waiting before the server carries on anyway.
MAX_WAIT_SECONDS = 10.0


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-stream (cancel tests) are expected: no traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass(frozen=True)
class FakeToolCall:
    """One tool call the fake model makes; ``arguments`` is sent in ``split`` pieces."""

    name: str
    arguments: str = "{}"
    id: str | None = None
    split: int = 3


@dataclass
class TextReply:
    """Streamed text: one SSE chunk per item of ``chunks``.

    After ``gate_after`` chunks the server waits for ``gate`` (if given) before sending the rest,
    so a test can observe the first text while the stream is provably still open.
    """

    chunks: tuple[str, ...]
    gate: threading.Event | None = None
    gate_after: int = 1
    delay: float = 0.0
    """Pause between chunks, in seconds."""
    finish_reason: str = "stop"
    model: str | None = None
    plain: bool = False
    """Answer one ``chat.completion`` JSON even to ``stream: true`` (a server or proxy that ignores streaming)."""


@dataclass
class RunawayReply:
    """Text that never ends: ``chunk`` after ``chunk`` with no pause, until the client hangs up (or
    :data:`MAX_WAIT_SECONDS` pass). Then ``outcome`` is "hung up" or "timed out", ``sent`` the characters sent,
    and ``ended`` is set."""

    chunk: str = "Z" * 999 + "\n"
    sent: int = 0
    outcome: str = ""
    ended: threading.Event = field(default_factory=threading.Event)


@dataclass
class ToolCallReply:
    """Tool calls streamed OpenAI-style: id and name first, arguments split across chunks.

    With several calls the argument fragments of the calls are interleaved by index, the way
    parallel tool calls arrive from real servers.
    """

    calls: tuple[FakeToolCall, ...]
    text: str = ""
    """Text content sent before the tool calls (some models think aloud)."""
    model: str | None = None


@dataclass
class ErrorReply:
    """An HTTP error status with an OpenAI-style JSON error body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class CutReply:
    """A stream that stops mid-way.

    ``mode="chunked"`` closes the socket inside a chunked body (the client sees an incomplete
    chunked read); ``mode="eof"`` sends a body delimited by connection close and simply stops:
    no final chunk with ``finish_reason``, no ``[DONE]``.
    """

    chunks: tuple[str, ...]
    mode: Literal["chunked", "eof"] = "chunked"


@dataclass
class StallReply:
    """Accept the request, then send nothing for ``seconds`` (or until the server stops)."""

    seconds: float = MAX_WAIT_SECONDS


@dataclass
class StreamErrorReply:
    """A stream that sends some text, then an in-band ``{"error": {...}}`` event (vLLM, LiteLLM do this)."""

    chunks: tuple[str, ...]
    message: str


Reply = TextReply | ToolCallReply | ErrorReply | CutReply | StallReply | StreamErrorReply | RunawayReply


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: dict[str, Any] | None


class FakeOpenAI:
    """The server. Start with ``with FakeOpenAI() as fake:`` or :meth:`start` / :meth:`stop`."""

    def __init__(self, models: tuple[str, ...] = ("gpt-5-mini", "local-model"), *,
                 context_limit: int | None = None, overflow: Literal["empty", "400"] = "empty",
                 model_info: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.models = list(models)
        self.context_limit = context_limit
        """Tokens a request may take (``prompt_tokens``); past it the server answers like a small
        local model does: ``overflow`` "empty" streams no text (llama.cpp, Ollama truncating the
        prompt away), "400" refuses with an error naming the context (vLLM, llama.cpp --ctx-size)."""
        self.overflow = overflow
        self.model_info = dict(model_info or {})
        """Extra fields of every model in ``GET /v1/models`` (e.g. ``{"max_model_len": 8192}``)."""
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._completion_ids = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        server = _QuietServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- scripting -------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def text(
        self,
        *chunks: str,
        gate: threading.Event | None = None,
        gate_after: int = 1,
        delay: float = 0.0,
        finish_reason: str = "stop",
        model: str | None = None,
        plain: bool = False,
    ) -> None:
        self.enqueue(
            TextReply(chunks, gate=gate, gate_after=gate_after, delay=delay, finish_reason=finish_reason, model=model,
                      plain=plain)
        )  # fmt: skip

    def runaway(self) -> RunawayReply:
        """Next reply: text without end (see :class:`RunawayReply`); returned, to read how it ended."""
        reply = RunawayReply()
        self.enqueue(reply)
        return reply

    def tool_calls(self, *calls: FakeToolCall, text: str = "") -> None:
        self.enqueue(ToolCallReply(calls, text=text))

    def error(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.enqueue(ErrorReply(status, message, type=type, code=code, headers=headers or {}))

    def cut(self, *chunks: str, mode: Literal["chunked", "eof"] = "chunked") -> None:
        self.enqueue(CutReply(chunks, mode=mode))

    def stall(self, seconds: float = MAX_WAIT_SECONDS) -> None:
        self.enqueue(StallReply(seconds))

    def stream_error(self, *chunks: str, message: str) -> None:
        self.enqueue(StreamErrorReply(chunks, message))

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        with self._lock:
            return len(self._replies)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.partition("?")[0].endswith("/chat/completions")]

    # --- used by the handler ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def _next_id(self) -> str:
        with self._lock:
            self._completion_ids += 1
            return f"chatcmpl-fake{self._completion_ids}"


def prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of a request's messages, counted as strictly as netspy-tui's own estimate (3 characters
    a token, 4 per message: real tokenizers give ~3.5-4 characters a token on this data)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        total += -(-len(content if isinstance(content, str) else json.dumps(content)) // 3) + 4
    return total


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    def setup(self) -> None:
        super().setup()
        # Many small SSE writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per chunk.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log (it would print request lines in test output)."""

    # --- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record(None)
        if self.path.partition("?")[0].rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake", **self.fake.model_info}
                    for m in self.fake.models]  # fmt: skip
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error_body(404, f"no route for GET {self.path}", "invalid_request_error", None)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        self._record(body)
        if not self.path.partition("?")[0].rstrip("/").endswith("/chat/completions"):  # (a query: the base URL's)
            self._send_error_body(404, f"no route for POST {self.path}", "invalid_request_error", None)
            return
        if not isinstance(body, dict):
            self._send_error_body(400, "request body is not a JSON object", "invalid_request_error", None)
            return
        limit = self.fake.context_limit
        if limit is not None and prompt_tokens(body) > limit:
            if self.fake.overflow == "400":
                self._send_error_body(400, f"the request exceeds the available context size ({prompt_tokens(body)} "
                                      f"tokens, the model's context is {limit})", "invalid_request_error",
                                      "context_length_exceeded")  # fmt: skip
            else:
                self._stream(TextReply(()), str(body.get("model", "")))
            return
        reply = self.fake._next_reply()
        if reply is None:
            self._send_error_body(500, "fake server: no scripted reply left", "server_error", None)
            return
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        if isinstance(reply, ErrorReply):
            self._send_error_body(reply.status, reply.message, reply.type, reply.code, reply.headers)
        elif isinstance(reply, StallReply):
            self.fake._stopped.wait(min(reply.seconds, MAX_WAIT_SECONDS))
            self.close_connection = True
        elif stream and not (isinstance(reply, TextReply) and reply.plain):
            self._stream(reply, model)
        else:
            self._complete(reply, model)

    def _record(self, body: dict[str, Any] | None) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake._record(RecordedRequest(self.command, self.path, headers, body))

    # --- plain responses -------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error_body(
        self, status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
    ) -> None:
        payload = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        # Tell the SDK not to retry unless the test asks otherwise: keeps error tests fast.
        self._send_json(status, payload, {"x-should-retry": "false", **(headers or {})})

    def _complete(self, reply: Reply, model: str) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if isinstance(reply, TextReply):
            message["content"] = "".join(reply.chunks)
            finish = reply.finish_reason
            model = reply.model or model
        elif isinstance(reply, ToolCallReply):
            message["content"] = reply.text or None
            message["tool_calls"] = [
                {"id": c.id or f"call_{i}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for i, c in enumerate(reply.calls)
            ]
            finish = "tool_calls"
            model = reply.model or model
        else:  # cut / stream error have no non-streaming form: answer with what was scripted, as text
            message["content"] = "".join(getattr(reply, "chunks", ()))
        self._send_json(
            200,
            {
                "id": self.fake._next_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            },
        )

    # --- streaming -------------------------------------------------------------------------

    def _start_stream(self, chunked: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _write(self, data: bytes, chunked: bool = True) -> None:
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)
        self.wfile.flush()

    def _event(self, payload: Any, chunked: bool = True) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write(f"data: {text}\n\n".encode(), chunked)

    def _end_stream(self) -> None:
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _abort(self) -> None:
        """Close the TCP connection now, mid-body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _stream(self, reply: Reply, model: str) -> None:
        cid = self.fake._next_id()
        try:
            if isinstance(reply, TextReply):
                self._stream_text(reply, cid, reply.model or model)
            elif isinstance(reply, ToolCallReply):
                self._stream_tool_calls(reply, cid, reply.model or model)
            elif isinstance(reply, CutReply):
                chunked = reply.mode == "chunked"
                self._start_stream(chunked)
                self._event(self._chunk(cid, model, {"role": "assistant", "content": ""}), chunked)
                for text in reply.chunks:
                    self._event(self._chunk(cid, model, {"content": text}), chunked)
                self._abort()
            elif isinstance(reply, RunawayReply):
                self._stream_runaway(reply, cid, model)
            elif isinstance(reply, StreamErrorReply):
                self._start_stream()
                self._event(self._chunk(cid, model, {"role": "assistant", "content": ""}))
                for text in reply.chunks:
                    self._event(self._chunk(cid, model, {"content": text}))
                self._event({"error": {"message": reply.message, "type": "server_error", "code": None}})
                self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream_text(self, reply: TextReply, cid: str, model: str) -> None:
        self._start_stream()
        self._event(self._chunk(cid, model, {"role": "assistant", "content": ""}))
        for i, text in enumerate(reply.chunks):
            if reply.gate is not None and i == reply.gate_after:
                reply.gate.wait(MAX_WAIT_SECONDS)
            if reply.delay and i:
                self.fake._stopped.wait(reply.delay)
            self._event(self._chunk(cid, model, {"content": text}))
        if reply.gate is not None and reply.gate_after >= len(reply.chunks):
            reply.gate.wait(MAX_WAIT_SECONDS)
        self._event(self._chunk(cid, model, {}, reply.finish_reason))
        self._end_stream()

    def _stream_runaway(self, reply: RunawayReply, cid: str, model: str) -> None:
        self._start_stream()
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        try:
            self._event(self._chunk(cid, model, {"role": "assistant", "content": ""}))
            while time.monotonic() < deadline and not self.fake._stopped.is_set():
                self._event(self._chunk(cid, model, {"content": reply.chunk}))
                reply.sent += len(reply.chunk)
            reply.outcome = "timed out"
            self._event(self._chunk(cid, model, {}, "stop"))
            self._end_stream()
        except OSError:
            reply.outcome = "hung up"
            self.close_connection = True
        finally:
            reply.ended.set()

    def _stream_tool_calls(self, reply: ToolCallReply, cid: str, model: str) -> None:
        self._start_stream()
        self._event(self._chunk(cid, model, {"role": "assistant", "content": None}))
        if reply.text:
            self._event(self._chunk(cid, model, {"content": reply.text}))
        pieces: list[list[str]] = []
        for index, call in enumerate(reply.calls):
            head = {
                "index": index,
                "id": call.id or f"call_fake_{cid[-4:]}_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            self._event(self._chunk(cid, model, {"tool_calls": [head]}))
            pieces.append(_split(call.arguments, call.split))
        # Interleave the argument fragments of all calls, by index.
        for step in range(max((len(p) for p in pieces), default=0)):
            for index, parts in enumerate(pieces):
                if step < len(parts):
                    frag = {"index": index, "function": {"arguments": parts[step]}}
                    self._event(self._chunk(cid, model, {"tool_calls": [frag]}))
        self._event(self._chunk(cid, model, {}, "tool_calls"))
        self._end_stream()


def _split(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` roughly equal non-empty pieces (fewer when it is short)."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released; below the ephemeral range, where another
    test's listener cannot take it meanwhile)."""
    from tests.hardening.conftest import free_port as unused  # noqa: PLC0415

    return unused()


__all__ = [
    "CutReply",
    "ErrorReply",
    "FakeOpenAI",
    "FakeToolCall",
    "RecordedRequest",
    "RunawayReply",
    "StallReply",
    "StreamErrorReply",
    "TextReply",
    "ToolCallReply",
    "free_port",
]
