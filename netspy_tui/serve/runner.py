"""Run the API under uvicorn: in the foreground (``netspy-tui serve``) or in a background thread.

Logging goes through the stdlib root logger (stderr, set up by netspy_tui.logs): uvicorn is told
not to configure logging, so its access log never reaches stdout. SIGINT and SIGTERM stop the
server gracefully (in-flight requests finish); then :func:`serve_async` returns normally after a
SIGINT and raises :class:`~netspy_tui.signals.Terminated` after a SIGTERM, so the caller's cleanup
runs and the process exits 128 + signal like every other command. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from netspy_tui.errors import NetspyError
from netspy_tui.httplimits import (
    KEEP_ALIVE_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    REQUEST_TIMEOUT,
)
from netspy_tui.serve.app import create_app, guard_middleware, text_response
from netspy_tui.serve.connections import GuardedH11Protocol
from netspy_tui.serve.hosts import HostPolicy, is_loopback
from netspy_tui.signals import Terminated
from netspy_tui.telemetry.source import TelemetrySource
from netspy_tui.textsafe import clean

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

logger = logging.getLogger(__name__)


def exposure_warning(host: str, token_required: bool) -> str | None:
    """The warning to log when the API is reachable from other machines without a token."""
    if token_required or is_loopback(host):
        return None
    return (
        f"serving telemetry on {host} without a token: anyone who can reach this address can read "
        "every process's connections; pass --token (or NETSPY_TOKEN) or bind 127.0.0.1"
    )


def _token_required(app: ASGIApp) -> bool:
    state = getattr(app, "state", None)
    return bool(getattr(state, "token_required", False))


class _Server(uvicorn.Server):
    """uvicorn's server with signal handling that ends in a normal return.

    uvicorn re-raises the captured signal after a graceful shutdown, which kills the process before
    ``netspy-tui serve`` finished its own cleanup (closing the collector and store); the signal is
    kept in :attr:`stopped_by` instead, for :func:`serve_async` to report once the server is down.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[_Server], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            logger.warning("received %s: shutting down", signal.Signals(sig).name)
            self.should_exit = True
            if self.stopped_by is None:
                self.stopped_by = sig

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started(self)

    async def shutdown(self, sockets: Any = None) -> None:
        # Long polls (/api/changes) answer now: uvicorn waits for requests in flight before it stops.
        feed = getattr(getattr(self.config.app, "state", None), "changes", None)
        if feed is not None:
            feed.close()
        await super().shutdown(sockets=sockets)

    @property
    def bound_port(self) -> int:
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening")


def _config(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> uvicorn.Config:
    """uvicorn settings for every server netspy-tui runs: the limits of netspy_tui.serve.connections."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=GuardedH11Protocol.with_limits(request_timeout, max_connections),
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_config=None,  # keep the application's logging (stderr, secrets masked)
        log_level=None,
        access_log=True,
        server_header=False,
        lifespan="auto",
        timeout_graceful_shutdown=10,
    )


async def serve_async(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_started: Callable[[str], None] | None = None,
    what: str = "the eBPF server API",
    path: str = "",
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (or cancellation), then shut down gracefully; after a SIGTERM,
    raise :class:`~netspy_tui.signals.Terminated` (the caller cleans up, the process exits 128 + 15).

    ``port=0`` picks a free port; ``on_started`` receives the base URL once it listens. A line on
    stderr says "netspy-tui: serving ``what`` on ``URL`` ``path``".
    """
    warning = exposure_warning(host, _token_required(app))
    if warning:
        logger.warning(warning)

    def started(server: _Server) -> None:
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.bound_port}"
        # A notice, not a warning: one plain line on stderr, whatever the log level (stdout may be a stream)
        sys.stderr.write(f"netspy-tui: serving {what} on {url}{path}\n")
        sys.stderr.flush()
        if on_started is not None:
            on_started(url)

    server = _Server(_config(app, host, port), on_started=started)

    bind_error: list[str] = []

    def bind_failed(record: logging.LogRecord) -> bool:
        """uvicorn logs why it cannot bind (an OSError) before it exits: kept for the one line below, not logged."""
        if isinstance(record.msg, OSError):
            bind_error.append(clean(record.msg.strerror or record.msg, 160))
            return False
        return True

    async def run() -> None:
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(bind_failed)
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind (it logged why): reported below, in one line
            pass
        finally:
            uvicorn_log.removeFilter(bind_failed)

    running = asyncio.ensure_future(run())
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        # Cancelled (e.g. the caller's task group ends): shut down as gracefully as on SIGTERM.
        server.should_exit = True
        await running
        raise
    if not server.started:
        why = bind_error[0] if bind_error else "the line above says why"
        raise NetspyError(
            f"Could not listen on {host}:{port} ({why})",
            "pick another --port, or stop what listens there",
        )
    if server.stopped_by == signal.SIGTERM:
        raise Terminated(server.stopped_by)


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Blocking :func:`serve_async`."""
    asyncio.run(serve_async(app, host, port))


async def serve_source(
    source: TelemetrySource,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    mcp_server: MCPServer[Any] | Callable[[], MCPServer[Any]] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_started: Callable[[str], None] | None = None,
    allowed_hosts: Sequence[str] = (),
    metrics_top: int = 20,
    api: Any = None,
    own_auth_paths: Sequence[str] = (),
    what: str = "the eBPF server API",
) -> None:
    """``netspy-tui serve``: the eBPF server API over ``source``, plus MCP at ``/mcp`` when given.

    ``mcp_server`` may be a function that makes it: it is then called (in a thread) at the first request to
    ``/mcp`` (:class:`LazyMcp`), so a server whose MCP nobody asks for never imports the SDK's server.
    The MCP streamable-HTTP route sits behind the same Host/Origin check, token and body limit as
    the API. ``api`` and ``own_auth_paths``: see :func:`netspy_tui.serve.app.create_app` (``serve
    --aggregate`` passes the aggregator's).
    """
    extra: list[Any] = []
    lifespan = None
    if mcp_server is not None:
        lazy = LazyMcp(mcp_server if callable(mcp_server) else (lambda: mcp_server))
        extra = [Route("/mcp", endpoint=lazy)]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await lazy.aclose()

    app = create_app(
        source,
        token=token,
        max_body_bytes=max_body_bytes,
        extra_routes=extra,
        lifespan=lifespan,
        host=host,
        allowed_hosts=allowed_hosts,
        metrics_top=metrics_top,
        api=api,
        own_auth_paths=own_auth_paths,
    )
    await serve_async(app, host, port, on_started=on_started, what=what)


class LazyMcp:
    """``serve``'s ``/mcp``, made at its first request: the MCP server (``make``, called in a thread: importing
    the SDK's server is most of a start's CPU, which an agent nobody asks over MCP need not pay), its
    streamable-HTTP app and its session manager, run in a task of their own until :meth:`aclose`. The making is
    one task: requests that arrive meanwhile wait for it (a request cancelled meanwhile does not cancel it). If it
    cannot be made, or its session manager stops on its own later, each request is answered 503 with the reason in
    one line (logged once); while the server stops, 503 saying so."""

    def __init__(self, make: Callable[[], MCPServer[Any]]) -> None:
        self._make = make
        self._making: asyncio.Task[ASGIApp | None] | None = None
        self._app: ASGIApp | None = None
        self._problem: str | None = None
        self._stop = asyncio.Event()
        self._sessions: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None and self._problem is None and not self._stop.is_set():
            if self._making is None:
                self._making = asyncio.get_running_loop().create_task(self._start(), name="netspy-mcp-start")
            app = await asyncio.shield(self._making)
        if app is None:
            why = self._problem or "the server is stopping"
            await text_response(503, f"MCP is unavailable: {why}")(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _start(self) -> ASGIApp | None:
        try:
            server = await asyncio.to_thread(self._make)
            app = _mcp_routes_app(server)
            ready = asyncio.Event()
            sessions = self._sessions = asyncio.create_task(self._run(server, ready), name="netspy-mcp-sessions")
            waiting = asyncio.ensure_future(ready.wait())
            await asyncio.wait([waiting, sessions], return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():
                waiting.cancel()
                if not sessions.cancelled() and sessions.exception() is not None:
                    raise sessions.exception()  # type: ignore[misc]
                raise RuntimeError("its session manager stopped before it started")
        except Exception as exc:  # (the app goes on: /mcp answers 503 saying why)
            if not self._stop.is_set():
                self._fail("could not start", exc)
            return None
        sessions.add_done_callback(self._ended)
        self._app = app
        return app

    def _ended(self, sessions: asyncio.Task[None]) -> None:
        if self._stop.is_set():
            return
        self._app = None
        error = None if sessions.cancelled() else sessions.exception()
        self._fail("stopped", error or RuntimeError("its session manager stopped"))

    def _fail(self, what: str, exc: BaseException) -> None:
        self._problem = clean(str(exc) or type(exc).__name__, 200)
        logger.error("serve: MCP at /mcp %s: %s", what, self._problem)

    async def _run(self, server: MCPServer[Any], ready: asyncio.Event) -> None:
        if self._stop.is_set():
            return
        async with server.session_manager.run():
            ready.set()
            await self._stop.wait()

    async def aclose(self) -> None:
        """Stop the session manager, if it was started (the app's lifespan end); a making still under way ends
        first (its thread cannot be stopped)."""
        self._stop.set()
        if self._making is not None:
            with contextlib.suppress(Exception):
                await self._making
        if self._sessions is not None:  # (read after the making: it sets it)
            with contextlib.suppress(Exception):
                await self._sessions


def _mcp_routes_app(mcp_server: MCPServer[Any]) -> Starlette:
    """The SDK's streamable-HTTP app. Its own Host/Origin check is off: ours (HostGuardMiddleware,
    outermost on every path) applies the one policy, with the operator's --allow-host names."""
    from mcp.server.transport_security import TransportSecuritySettings

    no_second_check = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return mcp_server.streamable_http_app(streamable_http_path="/mcp", transport_security=no_second_check)


def create_mcp_app(
    mcp_server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allowed_hosts: Sequence[str] = (),
) -> Starlette:
    """``netspy-tui mcp --http``: the MCP streamable-HTTP endpoint at ``/mcp`` alone, behind the same
    Host/Origin check, bearer token and body limit as ``serve``. Other paths are a plain-text 404."""
    mcp_app = _mcp_routes_app(mcp_server)
    session_manager = mcp_server.session_manager

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with session_manager.run():
            yield

    async def not_found(request: Any, exc: Exception) -> Any:
        return text_response(404, "404 page not found")

    app = Starlette(
        routes=list(mcp_app.routes),
        middleware=guard_middleware(token, max_body_bytes, HostPolicy(host, allowed_hosts)),
        lifespan=lifespan,
        exception_handlers={404: not_found},
    )
    app.state.token_required = token is not None
    return app


async def serve_mcp_http(
    mcp_server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_started: Callable[[str], None] | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve :func:`create_mcp_app` until SIGINT/SIGTERM (see :func:`serve_async`)."""
    app = create_mcp_app(mcp_server, host=host, token=token, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts)
    await serve_async(app, host, port, on_started=on_started, what="MCP (streamable HTTP)", path="/mcp")


class BackgroundServer:
    """``app`` under uvicorn in a daemon thread: for tests and for embedding in another program.

    ::

        with BackgroundServer(create_app(source)) as srv:
            httpx.get(srv.url + "/health")
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = {"request_timeout": request_timeout, "max_connections": max_connections}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        server = _Server(_config(self.app, self.host, self.port, **self.limits))  # type: ignore[arg-type]
        self._server = server

        def run() -> None:
            try:
                server.run()
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.host}:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.host}:{self.port} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server on {self.host}:{self.port} did not start within {timeout} s")
            time.sleep(0.01)
        self.port = server.bound_port
        return self

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
