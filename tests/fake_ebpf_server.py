"""A real, misbehaving eBPF server for tests: HTTP on 127.0.0.1, a free port, a background thread.

Speaks one of the three API generations of shared/contracts/ebpf-server/README.md, with the Go
server's own semantics (read from its source): a pid of 0 or an empty command means "no filter",
unparseable query values are ignored, ``since``/``until`` are inclusive, results are newest
first (by ``time``, then ``timestamp``), summary windows count ``time >= now - duration``, and
errors are plain text with a trailing newline (Go's ``http.Error``).

    with FakeEbpfServer("current", events=[connection_json(ago=5)]) as srv:
        httpx.get(srv.url + "/api/events")
        srv.events.append(drop_json(ago=1))          # visible to the next request
        srv.fail_with(503, times=2)                  # next two requests: plain-text 503
        srv.delay(30)                                # responses hang (until srv.release())
        srv.reply_raw(b'{"count": "x"', "application/json")
        srv.stop(); srv.start()                      # dies and comes back on the same port
        srv.requests[-1].query                       # what the client sent

``events`` holds event dicts exactly as served; a malformed one is served as it is wherever no
filter has to read the malformed field (an unparseable ``time`` is "zero time", like Go).
Every successful response validates with tests/contract.py (tests/test_fake_server.py).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest

logger = logging.getLogger(__name__)

Generation = Literal["seed", "current", "aggregator"]
GENERATIONS: tuple[Generation, ...] = ("seed", "current", "aggregator")

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_UINT32 = re.compile(r"^\+?[0-9]{1,10}$")
_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_NOT_FOUND = "404 page not found"
_K8S_FILTERS = ("k8s_node_name", "k8s_pod_name", "k8s_namespace")
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    """Query parameters (the last value of a repeated name), blank values kept."""
    body: Any
    """The JSON body parsed, or None when empty or not JSON."""
    raw_body: bytes
    headers: dict[str, str]
    """Header names lower-cased."""


@dataclass
class _Canned:
    status: int
    body: bytes
    content_type: str
    remaining: int | None
    path: str | None

    def applies(self, path: str) -> bool:
        return self.path is None or self.path == path


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _BadJSON(Exception):
    pass


def _json(status: int, payload: Any) -> _Reply:
    # Go's json.Encoder ends the document with a newline.
    return _Reply(status, (json.dumps(payload) + "\n").encode("utf-8"))


def _text(status: int, text: str) -> _Reply:
    body = text if text.endswith("\n") else text + "\n"
    return _Reply(status, body.encode("utf-8"), "text/plain; charset=utf-8", {"X-Content-Type-Options": "nosniff"})


def _rfc3339(value: datetime) -> str:
    """Go's ``time.Format(time.RFC3339)``: seconds precision, numeric offset or Z."""
    text = value.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _uint32(value: str | None) -> int:
    """Go's ``strconv.ParseUint(s, 10, 32)`` with the error ignored (0 = no filter)."""
    if value and _UINT32.match(value) and int(value) < 2**32:
        return int(value)
    return 0


def _atoi(value: str | None) -> int:
    return int(value) if value and _INT.match(value) else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeEbpfServer) -> None:
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop every open keep-alive connection, as a dying process would."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
            self.open_sockets.clear()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("fake ebpf server: connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake ebpf server: " + format, *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        raw = self._read_body()
        reply = self.server.fake._dispatch(self.command, self.path, raw, dict(self.headers.items()))
        if reply is None:  # the server was stopped while this request waited
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class FakeEbpfServer:
    """An eBPF server of one API ``generation`` over ``events`` (see the module docstring)."""

    def __init__(
        self,
        generation: Generation = "current",
        events: list[dict[str, Any]] | None = None,
        *,
        programs: list[dict[str, Any]] | None = None,
        clock: Callable[[], datetime] | None = None,
        go_null_slices: bool = False,
        not_events: list[Any] | None = None,
        query_time: str | None = None,
        health: dict[str, Any] | None = None,
        stats_endpoint: bool | None = None,
        node_counts: bool = True,
    ) -> None:
        if generation not in GENERATIONS:
            raise ValueError(f"generation must be one of {GENERATIONS}, not {generation!r}")
        self.generation: Generation = generation
        self.events: list[dict[str, Any]] = list(events or [])
        """Served events; mutate freely while the server runs."""
        self.requests: list[RecordedRequest] = []
        self.programs = programs
        """``/api/programs`` entries; None derives them from the events like the server does."""
        self.clock = clock or (lambda: datetime.now(UTC))
        self.go_null_slices = go_null_slices
        """Encode empty ``events``/``programs`` as ``null``, as the real Go server does (a nil slice).
        Off by default because the specs say "array"; turn it on to test a client's tolerance."""
        self.not_events = list(not_events or [])
        """Items served after the events in every list of events (``[None]``: the specs' ``items: {}``
        allows anything, and their own example is ``"events": [null]``). They count in totals."""
        self.query_time = query_time
        """Sent as every ``query_time`` instead of the clock's RFC3339 time (the specs say "string")."""
        self.health = health
        """The ``/health`` object; None sends the generation's own."""
        self.stats_endpoint = generation == "aggregator" if stats_endpoint is None else stats_endpoint
        """Serve ``GET /api/stats`` (the aggregator's): a plain agent whose spec lists it may too."""
        self.node_counts = node_counts
        """An aggregator's summaries carry ``count_by_node``/``total_nodes`` (False: as the paths' own response
        schema, ``api.ConnectionSummaryResponse``, which has neither)."""
        self.started_at = self.clock()
        self._lock = threading.Lock()
        self._override: _Canned | None = None
        self._delay = 0.0
        self._delay_path: str | None = None
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the fake server was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeEbpfServer:
        """Listen (again) on 127.0.0.1: a free port the first time, the same port afterwards."""
        if self._server is not None:
            return self
        self._release = threading.Event()
        server = _Server(("127.0.0.1", self._port), self)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-ebpf-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections; requests waiting in ``delay`` end unanswered."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._release.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeEbpfServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- misbehaviour ------------------------------------------------------------------

    def fail_with(
        self, status: int, body: str = "System not initialized", times: int | None = None, *, path: str | None = None
    ) -> None:
        """Answer ``status`` with a plain-text ``body`` (``times`` requests, or until :meth:`reset`).

        ``path`` limits it to one path (e.g. ``/api/events``). Replaces an earlier override.
        """
        text = body if body.endswith("\n") else body + "\n"
        with self._lock:
            self._override = _Canned(status, text.encode("utf-8"), "text/plain; charset=utf-8", times, path)
            if times is not None and times <= 0:
                self._override = None

    def reply_raw(
        self,
        body: bytes,
        content_type: str = "application/json",
        *,
        status: int = 200,
        times: int | None = None,
        path: str | None = None,
    ) -> None:
        """Answer with these exact bytes: non-JSON, truncated JSON, wrong types... Replaces an override."""
        with self._lock:
            self._override = _Canned(status, body, content_type, times, path)
            if times is not None and times <= 0:
                self._override = None

    def delay(self, seconds: float, *, path: str | None = None) -> None:
        """Hold every response (to ``path``) for ``seconds``; :meth:`release` or :meth:`stop` ends it."""
        with self._lock:
            self._delay = max(0.0, seconds)
            self._delay_path = path
            if self._release.is_set():  # a fresh gate; requests held by the old one were let go
                self._release = threading.Event()

    def release(self) -> None:
        """Let held responses go now and stop delaying new ones."""
        with self._lock:
            self._delay = 0.0
            self._release.set()

    def reset(self) -> None:
        """Behave again: no override, no delay (recorded requests and events are kept)."""
        self.release()
        with self._lock:
            self._override = None

    # --- helpers for tests -------------------------------------------------------------

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def wait_for_requests(self, n: int, timeout: float = 5.0, *, path: str | None = None) -> list[RecordedRequest]:
        """Poll until ``n`` requests (to ``path``) arrived; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.requests_to(path) if path else list(self.requests)
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"fake server got {len(got)} requests to {path or 'any path'}, expected {n}")
            time.sleep(0.005)

    # --- request handling --------------------------------------------------------------

    def _dispatch(self, method: str, target: str, raw: bytes, headers: dict[str, str]) -> _Reply | None:
        parts = urlsplit(target)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            body = None
        self.requests.append(
            RecordedRequest(method, path, query, body, raw, {k.lower(): v for k, v in headers.items()})
        )

        with self._lock:
            delay, delay_path, release = self._delay, self._delay_path, self._release
        if delay and (delay_path is None or delay_path == path):
            release.wait(delay)
            if self._server is None:
                return None

        with self._lock:
            canned = self._override
            if canned is not None and canned.applies(path):
                if canned.remaining is not None:
                    canned.remaining -= 1
                    if canned.remaining <= 0:
                        self._override = None
                headers_out = {"X-Content-Type-Options": "nosniff"} if canned.content_type.startswith("text/") else {}
                return _Reply(canned.status, canned.body, canned.content_type, headers_out)

        try:
            return self._route(method, path, query, raw)
        except _BadJSON:
            return _text(400, "Invalid JSON")
        except Exception:  # a fake must never hang a test: report it as the Go server would
            logger.exception("fake ebpf server failed on %s %s", method, target)
            return _text(500, "Internal server error")

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> _Reply:
        gen = self.generation
        seed = gen == "seed"
        agg = gen == "aggregator"
        if path == "/health":
            return self._health()
        if path == "/api/connection-summary":
            return self._summary("connection", method, query, raw)
        if path == "/api/list-connections":
            return self._list("connection", method, raw)
        if seed:
            return _text(404, _NOT_FOUND)
        if path == "/":
            return _json(200, self._service_info())
        if path == "/api/packet-drop-summary":
            return self._summary("packet_drop", method, query, raw)
        if path == "/api/list-packet-drops":
            return self._list("packet_drop", method, raw)
        if path == "/api/events":
            if agg and method != "GET":
                return _text(405, "Method not allowed")
            return self._events(query)
        if path == "/api/programs":
            return self._programs()
        if self.stats_endpoint and path == "/api/stats":
            return self._stats() if method == "GET" else _text(405, "Method not allowed")
        if agg and path == "/api/events/ingest":
            return self._ingest(raw) if method == "POST" else _text(405, "Method not allowed")
        return _text(404, _NOT_FOUND)

    # --- event selection (Go storage semantics) ----------------------------------------

    def _snapshot(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if isinstance(e, dict)]

    def _select(
        self,
        kind: str = "",
        pid: int = 0,
        command: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        extra: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Matching events, newest first (no limit)."""
        out = []
        for event in self._snapshot():
            if kind and event.get("type") != kind:
                continue
            if pid and event.get("pid") != pid:
                continue
            if command and event.get("command") != command:
                continue
            if since is not None or until is not None:
                when = _parse_time(event.get("time"))
                if when is None:  # Go's zero time: before any since, after no until
                    if since is not None:
                        continue
                else:
                    if since is not None and when < since:
                        continue
                    if until is not None and when > until:
                        continue
            if extra and any(event.get(k) != v for k, v in extra.items()):
                continue
            out.append(event)

        def newest_first(e: dict[str, Any]) -> tuple[datetime, int]:
            # Go sorts by ``timestamp`` (ns since boot), which follows ``time`` on a real host; test
            # fixtures make the two disagree, so ``time`` leads and ``timestamp`` breaks ties.
            value = e.get("timestamp")
            stamp = value if isinstance(value, int) and not isinstance(value, bool) else 0
            return _parse_time(e.get("time")) or _ZERO_TIME, stamp

        out.sort(key=newest_first, reverse=True)
        return out

    @staticmethod
    def _node(event: dict[str, Any]) -> str | None:
        node = event.get("k8s_node_name")
        return node if isinstance(node, str) and node else None

    def _by_node(self, events: list[dict[str, Any]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in events:
            node = self._node(event)
            if node:
                counts[node] = counts.get(node, 0) + 1
        return counts

    # --- endpoints ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock()

    def _query_time(self) -> str:
        return self.query_time if self.query_time is not None else _rfc3339(self._now())

    def _health(self) -> _Reply:
        if self.health is not None:
            return _json(200, self.health)
        component = "eBPF Event Aggregator" if self.generation == "aggregator" else "eBPF Monitor API"
        return _json(200, {"status": "healthy", "component": component, "uptime": "active", "version": "1.0.0"})

    def _service_info(self) -> dict[str, Any]:
        endpoints = {
            "POST /api/connection-summary": "Get connection summary for a process",
            "POST /api/packet-drop-summary": "Get packet drop summary for a process",
            "GET|POST /api/list-connections": "List network connections",
            "GET|POST /api/list-packet-drops": "List packet drops",
            "GET /api/programs": "List active eBPF programs",
            "GET /api/events": "Get filtered events",
            "GET /health": "Service health check",
        }
        if self.generation == "aggregator":
            endpoints["GET /api/stats"] = "Aggregation statistics"
            endpoints["POST /api/events/ingest"] = "Ingest events from agents"
        return {
            "service": "eBPF Event Aggregator" if self.generation == "aggregator" else "eBPF Network Monitor",
            "version": "v1.0.0",
            "description": "HTTP API for eBPF-based network connection and packet drop monitoring",
            "endpoints": endpoints,
            "documentation": {
                "api": "/docs/",
                "swagger_json": "/docs/swagger.json",
                "swagger_yaml": "/docs/swagger.yaml",
            },
        }

    @staticmethod
    def _body_object(raw: bytes) -> dict[str, Any]:
        """Decode a POST body the way Go decodes into a struct: any type mismatch is an error."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadJSON from exc
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise _BadJSON
        return body

    @staticmethod
    def _body_uint(body: dict[str, Any], name: str) -> int:
        value = body.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise _BadJSON
        return value

    @staticmethod
    def _body_int(body: dict[str, Any], name: str) -> int:
        value = body.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadJSON
        return value

    @staticmethod
    def _body_str(body: dict[str, Any], name: str) -> str:
        value = body.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _BadJSON
        return value

    def _summary(self, kind: str, method: str, query: dict[str, str], raw: bytes) -> _Reply:
        if method == "POST":
            body = self._body_object(raw)
            pid = self._body_uint(body, "pid")
            command = self._body_str(body, "command")
            if self.generation == "seed" and not command:
                command = self._body_str(body, "process_name")
            duration = self._body_int(body, "duration_seconds")
        elif self.generation == "seed":
            return _text(405, "Method not allowed")
        else:
            pid = _uint32(query.get("pid"))
            command = query.get("command", "")
            duration = _atoi(query.get("duration_seconds"))
        if duration == 0:
            duration = 60
        now = self._now()
        hits = self._select(kind, pid, command, since=now - timedelta(seconds=duration))
        payload: dict[str, Any] = {
            "count": len(hits),
            "pid": pid,
            "command": command,
            "duration_seconds": duration,
            "query_time": self._query_time(),
        }
        if self.generation == "aggregator" and self.node_counts:
            payload["count_by_node"] = self._by_node(hits)
            payload["total_nodes"] = len(payload["count_by_node"])
        return _json(200, payload)

    def _list(self, kind: str, method: str, raw: bytes) -> _Reply:
        pid, limit = 0, 100
        if self.generation == "seed" and method == "POST":
            body = self._body_object(raw)
            pid = self._body_uint(body, "pid")
            limit = self._body_int(body, "limit")
            if limit <= 0:
                limit = 100
        elif self.generation == "aggregator" and method != "GET":
            return _text(405, "Method not allowed")
        # The current server's quirk: every filter and the method are ignored.
        hits = self._select(kind, pid, since=self._now() - timedelta(hours=1))[:limit]
        by_pid: dict[str, list[Any]] = {}
        for event in hits:
            by_pid.setdefault(str(event.get("pid", 0)), []).append(event)
        if self.not_events:
            by_pid.setdefault("0", []).extend(self.not_events)
        payload: dict[str, Any] = {
            "total_pids": len(by_pid),
            "total_events": len(hits) + len(self.not_events),
            "events_by_pid": by_pid,
            "query_time": self._query_time(),
        }
        if self.generation == "aggregator":
            payload["events_by_node"] = self._by_node(hits)
            payload["total_nodes"] = len(payload["events_by_node"])
        return _json(200, payload)

    def _events(self, query: dict[str, str]) -> _Reply:
        kind = query.get("type", "")
        pid = _uint32(query.get("pid"))
        command = query.get("command", "")
        since = _parse_time(query.get("since"))
        until = _parse_time(query.get("until"))
        limit = _atoi(query.get("limit"))
        if limit <= 0:
            limit = 100
        extra: dict[str, str] = {}
        if self.generation == "aggregator":
            for name in _K8S_FILTERS:
                if query.get(name):
                    extra[name] = query[name]
            if query.get("node"):
                extra["k8s_node_name"] = query["node"]
        hits = self._select(kind, pid, command, since, until, extra)
        filters: dict[str, Any] = {}  # Go: omitempty on every field
        if kind:
            filters["type"] = kind
        if pid:
            filters["pid"] = pid
        if command:
            filters["command"] = command
        if since is not None:
            filters["since"] = _rfc3339(since)
        if until is not None:
            filters["until"] = _rfc3339(until)
        filters["limit"] = limit
        for name, value in extra.items():
            filters[name] = value
        if "node" in query and query["node"]:
            filters["node"] = query["node"]
        page = hits[:limit] + self.not_events
        return _json(
            200,
            {
                "events": page if page or not self.go_null_slices else None,
                "count": len(page),
                "total_count": len(hits) + len(self.not_events),
                "query_time": self._query_time(),
                "filters": filters,
            },
        )

    def _programs(self) -> _Reply:
        if self.programs is not None:
            programs = self.programs
        else:
            snapshot = self._snapshot()
            programs = [
                {
                    "name": name,
                    "type": "eBPF",
                    "status": "active",
                    # The Go server fills id with the program's event count.
                    "id": sum(1 for e in snapshot if e.get("type") == name),
                }
                for name in ("connection", "packet_drop")
            ]
        payload: dict[str, Any] = {
            "programs": programs if programs or not self.go_null_slices else None,
            "total_count": len(programs),
            "query_time": self._query_time(),
        }
        if self.generation == "aggregator":
            payload["all_programs"] = [
                {**p, "node": node, "event_count": count}
                for node, count in sorted(self._by_node(self._snapshot()).items())
                for p in programs
            ]
        return _json(200, payload)

    def _stats(self) -> _Reply:
        snapshot = self._snapshot()
        by_type: dict[str, int] = {}
        for event in snapshot:
            kind = event.get("type")
            if isinstance(kind, str):
                by_type[kind] = by_type.get(kind, 0) + 1
        by_node = self._by_node(snapshot)
        times = [t for t in (_parse_time(e.get("time")) for e in snapshot) if t is not None]
        payload = {
            "total_events": len(snapshot),
            "events_by_type": by_type,
            "events_by_node": by_node,
            "connected_agents": len(by_node),
            "last_event_time": _rfc3339(max(times)) if times else "0001-01-01T00:00:00Z",  # Go's zero time
            "aggregation_start": _rfc3339(self.started_at),
            "query_time": self._query_time(),
        }
        return _json(200, payload)

    def _ingest(self, raw: bytes) -> _Reply:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _text(400, "Bad request")
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            return _text(400, "Bad request")
        items = body.get("events") or []
        accepted = [e for e in items if isinstance(e, dict)]
        self.events.extend(accepted)
        return _json(
            200,
            {
                "events_processed": len(accepted),
                "success": True,
                "message": "Events ingested successfully",
                "timestamp": self._query_time(),
                # What the aggregator's code sends besides the documented fields:
                "status": "success",
                "processed": len(accepted),
                "total": len(items),
            },
        )


@pytest.fixture
def fake_ebpf_server() -> Iterator[FakeEbpfServer]:
    """A running current-generation fake, stopped after the test.

    Enable it with ``pytest_plugins = ["tests.fake_ebpf_server"]`` in a conftest.py.
    """
    with FakeEbpfServer("current") as srv:
        yield srv
