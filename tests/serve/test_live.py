"""The served API on a real socket: uvicorn on 127.0.0.1, a free port, stopped by the test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from netspy_tui.models import EventQuery, Scope
from netspy_tui.serve import BackgroundServer, create_app, serve_async, serve_source
from netspy_tui.serve.runner import exposure_warning, is_loopback
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from tests.contract import validate_response
from tests.serve.conftest import ProgramSource, sample_events
from tests.serve.test_api import CASES

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def live() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(ProgramSource(sample_events()))) as srv:
        yield srv


@pytest.fixture
def guarded() -> Iterator[BackgroundServer]:
    app = create_app(ProgramSource(sample_events()), token=TOKEN, max_body_bytes=1024)
    with BackgroundServer(app) as srv:
        yield srv


def test_every_endpoint_over_a_real_socket(live: BackgroundServer) -> None:
    assert live.url.startswith("http://127.0.0.1:") and live.port > 0
    with httpx.Client(base_url=live.url, timeout=5) as client:
        for method, path, query, body, definition in CASES:
            resp = client.request(method, path, params=query, json=body)
            assert resp.status_code == 200, (method, path, resp.text)
            validate_response(definition, resp.json())
        bad = client.get("/api/events", params={"limit": "many"})
        assert (bad.status_code, bad.text) == (400, "limit must be an integer, got 'many'\n")


def test_the_events_cursor_is_checked_with_or_without_a_type(live: BackgroundServer) -> None:
    """``after`` is never ignored: a bad one is a 400 whether or not ``type`` is given, and a good one without
    ``type`` (a cursor is one type's) is a 400 saying to pass it, not every event as if it were not there."""
    with httpx.Client(base_url=live.url, timeout=5) as client:
        for query in ({"after": "abc"}, {"after": "abc", "type": "connection"}):
            bad = client.get("/api/events", params=query)
            assert (bad.status_code, bad.text) == (400, "after must be an integer, got 'abc'\n"), query
        assert client.get("/api/events", params={"after": "-1"}).status_code == 400
        untyped = client.get("/api/events", params={"after": "0"})
        assert (untyped.status_code, untyped.text) == (
            400,
            "after needs type (a cursor is one type's): pass type=connection or type=packet_drop\n",
        )
        typed = client.get("/api/events", params={"after": "0", "type": "connection"})
        assert typed.status_code == 200 and typed.json()["count"] == 5


async def test_the_products_http_client_reads_the_served_api(live: BackgroundServer) -> None:
    """netspy-tui's own HttpSource, pointed at netspy-tui serve, sees what the source holds."""
    held = live.app.state.source  # type: ignore[attr-defined]
    client = HttpSource(live.url, retries=0)
    try:
        assert await client.generation() == "current"
        for q in (EventQuery(), EventQuery(kind="packet_drop"), EventQuery(command="curl", limit=1)):
            served, direct = await client.query(q), await held.query(q)
            assert [e.id for e in served.events] == [e.id for e in direct.events]
            assert served.total_count == direct.total_count
        assert await client.count(Scope("connection", window=60)) == await held.count(Scope("connection", window=60))
        assert [p.name for p in await client.programs()] == ["connection", "packet_drop"]
    finally:
        await client.aclose()


# --- token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer  {TOKEN[:-1]}"}],
    ids=["none", "wrong", "basic", "no-scheme", "longer", "empty", "prefix"],
)  # fmt: skip
def test_without_the_token_every_path_is_401(guarded: BackgroundServer, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=guarded.url, timeout=5, headers=headers) as client:
        for path in ("/health", "/", "/api/events", "/api/no-such-path"):
            resp = client.get(path)
            assert resp.status_code == 401, path
            assert resp.headers["content-type"] == "text/plain; charset=utf-8"
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in resp.text
        assert client.post("/api/connection-summary", json={"pid": 1}).status_code == 401


def test_with_the_token_requests_pass(guarded: BackgroundServer) -> None:
    for scheme in ("Bearer", "bearer"):
        with httpx.Client(base_url=guarded.url, timeout=5, headers={"Authorization": f"{scheme} {TOKEN}"}) as c:
            assert c.get("/health").status_code == 200
            validate_response("EventsResponse", c.get("/api/events").json())
            assert c.get("/api/nope").status_code == 404


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(MemorySource(), token="  ")


# --- body size ----------------------------------------------------------------------------


def test_bodies_over_the_limit_are_413(guarded: BackgroundServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=guarded.url, timeout=5, headers=auth) as client:
        small = b'{"pid": 100}' + b" " * 900
        assert client.post("/api/connection-summary", content=small).status_code == 200

        declared = client.post("/api/connection-summary", content=b'{"pid": 100}' + b" " * 4000)
        assert declared.status_code == 413
        assert declared.text == "Request body too large: the limit is 1024 bytes\n"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
            yield b'{"pid": 100'
            for _ in range(8):
                yield b" " * 400
            yield b"}"

        streamed = client.post("/api/list-connections", content=chunks())
        assert streamed.status_code == 413
        assert streamed.headers["content-type"] == "text/plain; charset=utf-8"

        def small_chunks() -> Iterator[bytes]:
            yield b'{"pid": '
            yield b"100}"

        assert client.post("/api/list-connections", content=small_chunks()).status_code == 200


async def test_streamed_overflow_in_process() -> None:
    app = create_app(MemorySource(sample_events()), max_body_bytes=10)

    async def body() -> Any:
        yield b'{"pid":'
        yield b" 100}    "

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        resp = await client.post("/api/connection-summary", content=body())
        assert resp.status_code == 413
        bad_length = await client.post("/api/connection-summary", content=b"{}", headers={"Content-Length": "x"})
        assert bad_length.status_code == 400


# --- runner -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.internal", False)],
)  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (exposure_warning(host, token_required=False) is None) is loopback
    assert exposure_warning(host, token_required=True) is None


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
async def test_serve_async_warns_when_exposed_without_token(
    token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Binding every interface is allowed, but without a token it is logged as a warning."""
    app = create_app(MemorySource(sample_events()), token=token)
    started: asyncio.Queue[str] = asyncio.Queue()
    caplog.set_level(logging.WARNING, logger="netspy_tui.serve.runner")
    task = asyncio.create_task(serve_async(app, host="0.0.0.0", port=0, on_started=started.put_nowait))
    try:
        url = await asyncio.wait_for(started.get(), timeout=10)
        port = url.rsplit(":", 1)[-1]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=5, headers=headers) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=15)  # cancellation shuts down gracefully, then re-raises
    warned = [r.getMessage() for r in caplog.records if "without a token" in r.getMessage()]
    assert bool(warned) is (token is None)
    if warned:
        assert "0.0.0.0" in warned[0] and "--token" in warned[0]
    assert TOKEN not in caplog.text  # the token itself is never logged
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/health")


_SERVE_SCRIPT = """
import logging, sys
from netspy_tui.serve import create_app, serve
from netspy_tui.signals import Terminated
from netspy_tui.telemetry.memory import MemorySource
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
try:
    serve(create_app(MemorySource()), host="127.0.0.1", port=0)
except Terminated as exc:
    logging.getLogger("test").warning("serve returned: %s", exc)
    raise SystemExit(exc.exit_code)
logging.getLogger("test").warning("serve returned")
"""


def _read_lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


def _wait_for_line(lines: queue.Queue[str], needle: str, seen: list[str], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} on stderr within {timeout} s; got: {''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_process_shuts_down_gracefully_on_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    try:
        line = _wait_for_line(lines, "serving the eBPF server API on ", seen)
        url = line.rsplit(" ", 1)[-1].strip()
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        proc.send_signal(sig)
        # serve() came back (SIGTERM: with Terminated, for the exit status 128 + 15): cleanup code runs
        returned = _wait_for_line(lines, "serve returned", seen)
        if sig == signal.SIGTERM:
            assert "stopped by SIGTERM" in returned
            assert proc.wait(timeout=15) == 128 + signal.SIGTERM
        else:
            assert proc.wait(timeout=15) == 0
        stdout = proc.stdout.read() if proc.stdout else ""
        assert stdout == ""  # stdout stays clean (it may be a protocol stream)
        assert any(f"received {sig.name}" in s for s in seen)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_source_mounts_mcp_behind_the_token() -> None:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.mcpserver import MCPServer

    mcp_server = MCPServer("serve-test", log_level="WARNING")

    @mcp_server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    with serving_in_a_thread(MemorySource(sample_events()), token=TOKEN, mcp_server=mcp_server) as url:
        assert httpx.post(url + "/mcp", json={}, timeout=5).status_code == 401
        root = httpx.get(url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
        assert "/mcp" in root["endpoints"]

        async def call() -> str:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
                async with Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
                    result = await client.call_tool("echo", {"text": "hi"})
                    return result.content[0].text  # type: ignore[union-attr]

        assert asyncio.run(call()) == "echo: hi"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as client:
            validate_response("EventsResponse", client.get("/api/events").json())


def test_an_mcp_server_that_cannot_be_made_is_a_one_line_503_and_the_api_answers_on() -> None:
    """serve makes its MCP server at the first request to /mcp (serve.runner.LazyMcp)."""

    def broken() -> Any:
        raise RuntimeError("no tools\ttoday\x1b[31m")

    with serving_in_a_thread(MemorySource([]), mcp_server=broken) as url:
        for _ in range(2):  # (and the same the second time: it is not tried again)
            answer = httpx.post(url + "/mcp", json={}, headers={"Accept": "application/json, text/event-stream"},
                                timeout=10)  # fmt: skip
            assert (answer.status_code, answer.text) == (503, "MCP is unavailable: no tools\\x09today\\x1b[31m\n")
        assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_concurrent_first_mcp_requests_make_one_server_and_are_all_answered() -> None:
    from mcp.server.mcpserver import MCPServer

    made: list[int] = []

    def make() -> Any:
        made.append(1)
        time.sleep(0.3)  # (the making takes a while: the other requests arrive meanwhile)
        return MCPServer("lazy-test", log_level="WARNING")

    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip

    async def post(url: str) -> int:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(url + "/mcp", json=initialize,
                                     headers={"Accept": "application/json, text/event-stream"})  # fmt: skip
            return answer.status_code

    async def together(url: str) -> list[int]:
        return list(await asyncio.gather(*(post(url) for _ in range(4))))

    with serving_in_a_thread(MemorySource([]), mcp_server=make) as url:
        assert asyncio.run(together(url)) == [200] * 4
    assert made == [1]


@contextlib.contextmanager
def serving_in_a_thread(source: Any, **kw: Any) -> Iterator[str]:
    """:func:`serve_source` on a free port in a thread of its own, cancelled after the block; yields its URL."""
    urls: queue.Queue[str] = queue.Queue()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve_source(source, port=0, on_started=urls.put, **kw))

    def run() -> None:
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield urls.get(timeout=30)
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=15)
        assert not thread.is_alive(), "serve_source did not stop after cancellation"
        loop.close()


def test_a_path_with_a_trailing_slash_is_answered_as_the_path_over_a_real_socket(source: MemorySource) -> None:
    """``/api/events/`` was a 307 to an absolute URL with an empty body: httpx (and netspy-tui's own client) does
    not follow it and saw an error; behind a reverse proxy's path prefix the Location left the prefix out. The
    path is answered as ``/api/events`` is, the token checks included."""
    with BackgroundServer(create_app(source, token="s3cret"), host="127.0.0.1", port=0) as srv:
        auth = {"Authorization": "Bearer s3cret"}
        for method, path, query in (("GET", "/api/events", {"limit": 1}), ("POST", "/api/connection-summary", None),
                                    ("GET", "/health", None), ("GET", "/api/programs", None)):  # fmt: skip
            plain = httpx.request(method, srv.url + path, params=query, headers=auth, timeout=10)
            slashed = httpx.request(method, srv.url + path + "/", params=query, headers=auth, timeout=10)
            assert plain.status_code == slashed.status_code == 200, (path, slashed.status_code, slashed.text)
            assert slashed.json().keys() == plain.json().keys()
        assert httpx.get(srv.url + "/api/events/", timeout=10).status_code == 401  # (the token still asked)
        assert httpx.get(srv.url + "/livez/", timeout=10).status_code == 200  # (as /livez: no token)
        assert httpx.get(srv.url + "/api/nothing/", headers=auth, timeout=10).text == "404 page not found\n"
