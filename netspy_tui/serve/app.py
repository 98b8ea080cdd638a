"""The eBPF server's HTTP API (shared/contracts/ebpf-server) over any :class:`TelemetrySource`.

Both API generations are served: the current one (``GET`` query parameters, ``/api/events``,
``/api/programs``, ``GET /``) and the seed one (``POST`` JSON bodies, ``process_name`` as an alias of
``command``). The JSON is the contract's, field for field; errors are one-line plain text.

Where this server differs from the original, on purpose:

- ``/api/list-connections`` and ``/api/list-packet-drops`` honour ``pid``, ``command`` (or
  ``process_name``) and ``limit`` (default 100, at most 10,000) from the query string or the JSON
  body, and ``duration_seconds`` (default 3600: the original's fixed "last hour"). The original
  ignores every filter.
- Parameters are validated: a value that is not what the parameter needs is a ``400`` naming the
  parameter (the original silently ignores it). On the contract's paths zero stays "no filter" for
  ``pid`` and "the default" for ``duration_seconds`` and ``limit``, as unset Go struct fields are zero;
  the extensions below refuse 0 like any other value out of range.
- ``/api/events`` treats ``since`` as exclusive and ``until`` as inclusive (EventQuery semantics, so a
  poll that passes the newest time it has seen gets no repeats); Kubernetes filters are a ``400``
  because this server has no Kubernetes metadata.
- With a token, every request (``/health`` included) needs ``Authorization: Bearer <token>``: one
  rule, nothing about the host is visible without it. Bodies above ``max_body_bytes`` are a ``413``.
- ``GET /api/traffic`` and ``GET /api/connect-latency`` are extensions (no such paths in the
  original): bytes sent and read and TCP retransmits per process, remote address and connection, and
  TCP connect latency per process and destination, over ``duration_seconds`` (default 60), ``limit``
  (default 20, at most 1,000) of each, for one ``pid``/``command`` or all. ``GET /api/window-stats``
  (also an extension) answers a window's figures from the store's exact counts: the total, top
  destinations, protocols, ports, outcomes (drop reasons), processes and the rate per bucket, for
  ``type`` (connection or packet_drop), ``duration_seconds``, ``pid``/``command``, ``top_n`` (at most
  1,000) and ``buckets`` (at most 3,600) — what a dashboard over HTTP shows, without fetching the events
  (a client of another server aggregates events it fetched). ``GET /api/inbound`` (an extension too)
  lists the connections local processes accepted, newest first (``pid``, ``command``, ``since``,
  ``until``, ``limit`` as ``/api/events``), with ``available`` false when the source does not see them.
  ``GET /api/changes`` (an extension) is a long poll on the store's change sequence: ``after`` (the ``seq`` of
  the last answer; absent: answer at once), ``timeout`` (seconds, at most 30, default 25); it answers
  ``{"seq": N, "changed": bool}`` as soon as the sequence is not ``after`` (a change, or a restarted server),
  else when ``timeout`` passes. Only a server whose source says when it changes has it (404 elsewhere, as on
  ebpf-server): a client follows it instead of polling. ``GET /api/losses`` (an extension) answers the events
  lost or shed in the last ``duration_seconds``, by cause, and ``/api/events`` of one ``type`` adds ``not_kept``
  (with ``not_kept_since``/``not_kept_until``) when events of its page's seconds were counted but not kept: a
  client's tools note a window's losses as they do over this host's own store. The existing paths answer as before.
- Only ``/health`` asks the source for its health (503 when unhealthy: the health answer's JSON with status
  ``unhealthy`` and why, as ``detail``; plain ``System not initialized`` when the source cannot even say);
  other endpoints answer from whatever the source holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from netspy_tui import __version__
from netspy_tui.errors import NetspyError
from netspy_tui.httplimits import MAX_BODY_BYTES
from netspy_tui.models import (
    MAX_CURSOR,
    ConnectionEvent,
    EventKind,
    EventQuery,
    LatencyStats,
    PacketDropEvent,
    ProgramInfo,
    Scope,
    SourceInfo,
    TrafficStats,
    contract_drop,
    counts_exact,
    describe_losses,
    format_time,
    time_range_problem,
    utcnow,
)
from netspy_tui.names.workload import host_node, k8s_identity
from netspy_tui.serve.hosts import HostGuardMiddleware, HostPolicy
from netspy_tui.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from netspy_tui.serve.metrics import MetricsExporter, counted_of
from netspy_tui.telemetry.source import (
    ChangingSource,
    FollowedSource,
    InboundSource,
    TelemetrySource,
    TrafficSource,
)
from netspy_tui.textsafe import valid_utf8

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_SUMMARY_SECONDS = 60
DEFAULT_LIST_SECONDS = 3600
MAX_WINDOW_SECONDS = 366 * 24 * 3600
MAX_COMMAND_CHARS = 256
MAX_UINT32 = 2**32 - 1

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_INTEGER = re.compile(r"^[+-]?[0-9]{1,19}$")
_DIGITS = re.compile(r"^[+-]?[0-9]+$")
_KINDS: tuple[EventKind, ...] = ("connection", "packet_drop")
_K8S_FILTERS = ("k8s_node_name", "k8s_pod_name", "k8s_namespace", "node")

ENDPOINTS: dict[str, str] = {
    "GET /health": "Service health check (503 when the telemetry source is not ready)",
    "GET|POST /api/connection-summary": "Count connection events (pid, command, duration_seconds)",
    "GET|POST /api/packet-drop-summary": "Count packet-drop events (pid, command, duration_seconds)",
    "GET|POST /api/list-connections": "Connection events grouped by PID (pid, command, limit, duration_seconds)",
    "GET|POST /api/list-packet-drops": "Packet-drop events grouped by PID (pid, command, limit, duration_seconds)",
    "GET /api/events": "Filtered events (type, pid, command, since, until, limit; netspy-tui: after, a cursor)",
    "GET /api/programs": "The eBPF programs behind the data",
    "GET /metrics": "Prometheus counters: connects by process and outcome, drops by reason, collector health "
    "(a netspy-tui extension)",
    "GET /api/traffic": "netspy-tui extension: bytes sent and read and TCP retransmits per process, remote address "
    "and connection (pid, command, duration_seconds, limit)",
    "GET /api/connect-latency": "netspy-tui extension: TCP connect latency p50/p95/max per process and destination "
    "(pid, command, duration_seconds, limit)",
    "GET /api/window-stats": "netspy-tui extension: a window's exact figures — total, top destinations, protocols, "
    "ports, outcomes, processes, rate (type, pid, command, duration_seconds, top_n, buckets)",
    "GET /api/inbound": "netspy-tui extension: connections local processes accepted, newest first, with the peer "
    "(pid, command, since, until, limit)",
    "GET /api/losses": "netspy-tui extension: events lost or shed in the last duration_seconds, by cause, and "
    "whether the counts are still exact",
    "GET /livez": "netspy-tui extension: liveness probe, no token needed: 200 ok while the server answers",
    "GET /readyz": "netspy-tui extension: readiness probe, no token needed: 200 ok, or 503 unhealthy when /health "
    "is (nothing else: the reasons are /health's, behind the token)",
}
#: Probe paths: no token needed (a kubelet probe sends none), nothing in the answer but ok/unhealthy; the Host
#: check still applies (a kubelet sends the pod's address, an IP literal every server bound to 0.0.0.0 answers).
PROBE_PATHS = ("/livez", "/readyz")
CHANGES_ENDPOINT = (
    "GET /api/changes",
    "netspy-tui extension: a long poll that answers {seq, changed} once the store changed after seq "
    "(after, timeout: seconds, at most 30)",
)
MAX_CHANGES_WAIT, DEFAULT_CHANGES_WAIT = 30, 25
DEFAULT_TRAFFIC_LIMIT = 20
MAX_TRAFFIC_LIMIT = 1000
MAX_STATS_TOP, MAX_STATS_BUCKETS = 1000, 3600


class BadRequest(Exception):
    """A request parameter is unusable; the message names it and goes back as a 400."""


class RequestTooLarge(Exception):
    """The request body grew past the limit while it was read."""


# --- JSON and text responses -----------------------------------------------------------------


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON; strings holding undecodable bytes come out with U+FFFD, like Go's encoder.
    (msgspec: a page of 1,000 events in a tenth of the stdlib encoder's time, which held the GIL
    against the collector and the dashboard in the same process.)"""
    try:
        return msgspec.json.encode(payload)
    except UnicodeEncodeError:
        return msgspec.json.encode(valid_utf8(payload, "replace"))


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """A plain-text error: one line, as the original's ``http.Error`` writes it."""
    line = " ".join(text.split()) or "error"
    all_headers = {"X-Content-Type-Options": "nosniff", **(headers or {})}
    return PlainTextResponse(line + "\n", status_code=status, headers=all_headers)


def query_time() -> str:
    return format_time(utcnow())


def _figures_response(figures: Any, *times: str) -> Response:
    """An extension's figures as JSON: ``times`` written as the server writes ``time``, and the query time."""
    payload = figures.model_dump(mode="json")
    for key in times:
        value = getattr(figures, key)
        payload[key] = format_time(value) if value is not None else None
    payload["query_time"] = query_time()
    return json_response(payload)


# --- events on the wire ----------------------------------------------------------------------


def _stable_id(event: ConnectionEvent | PacketDropEvent) -> str:
    seed = f"{event.type}|{event.pid}|{event.timestamp}|{format_time(event.time)}|{event.command}"
    return hashlib.blake2b(seed.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _raw_ipv6(event: ConnectionEvent) -> list[int]:
    try:
        address = ipaddress.ip_address(event.destination_ip)
    except ValueError:
        return [0] * 16
    return list(address.packed) if address.version == 6 else [0] * 16


CONTRACT_PROTOCOL = re.compile(r"^(TCP|UDP|Unknown\(\d+\))$")


def event_json(event: ConnectionEvent | PacketDropEvent, identity: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One event as the contract's JSON object.

    ``identity``: this node's ``k8s_*`` fields (:func:`netspy_tui.names.workload.k8s_identity`),
    filled in where the event has none, as ebpf-server does when it runs in a pod.

    ``model_dump(mode="json")`` without ``None`` fields (optional ones are absent, never null),
    ``time`` in RFC3339 UTC with a ``Z``. Gaps a collector may leave are filled so the object stays
    valid: a missing ``id`` becomes a stable hash of the event, a missing ``raw_ipv6`` is derived
    from ``destination_ip``.
    """
    data = event.model_dump(mode="json", exclude_none=True)
    for key, value in (identity or {}).items():
        data.setdefault(key, value)
    data["time"] = format_time(event.time)
    if not event.id:
        data["id"] = _stable_id(event)
    if isinstance(event, ConnectionEvent) and len(event.raw_ipv6) != 16:
        data["raw_ipv6"] = _raw_ipv6(event)
    if isinstance(event, ConnectionEvent) and event.protocol and not CONTRACT_PROTOCOL.match(event.protocol):
        # the contract names TCP and UDP only: MPTCP goes out as the original server would say it
        data["protocol"] = f"Unknown({event.raw_protocol})"
        data["protocol_name"] = event.protocol
    if isinstance(event, PacketDropEvent):
        # The contract's category and code (3 = UDP_DROP); the kernel's name and number (3 = NO_SOCKET)
        # go in fields of their own.
        category, code = contract_drop(event.drop_reason, event.protocol, event.drop_reason_code)
        data["drop_reason"], data["drop_reason_code"] = category, code
        if (category, code) != (event.drop_reason, event.drop_reason_code):
            data["kernel_drop_reason"] = event.drop_reason
            data["kernel_drop_reason_code"] = event.drop_reason_code
    return data


def _newest_first(event: ConnectionEvent | PacketDropEvent) -> tuple[datetime, int]:
    return event.time, event.timestamp


# --- parameters ------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Params:
    """Request parameters: the query string, overlaid by the JSON object body of a POST.

    ``strict`` (our extension endpoints): 0 is out of range like any other bad number. The contract's
    endpoints take 0 as unset (the default, or no pid filter), as the original's Go struct fields do."""

    def __init__(self, values: dict[str, Any], *, strict: bool = False) -> None:
        self.values = values
        self.strict = strict

    @classmethod
    async def read(cls, request: Request, *, strict: bool = False) -> Params:
        # (a name given twice: its first value, as Go's Query().Get reads it; a dict of the params kept the last)
        values: dict[str, Any] = {}
        for name, value in request.query_params.multi_items():
            values.setdefault(name, value)
        if request.method == "POST":
            raw = await request.body()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise BadRequest("Invalid JSON: the request body is not valid JSON") from exc
                except RecursionError:  # (arrays or objects nested thousands deep)
                    raise BadRequest("Invalid JSON: the request body is nested too deeply") from None
                if not isinstance(body, dict):
                    raise BadRequest("Invalid JSON: the request body must be a JSON object")
                values.update(body)
        return cls(values, strict=strict)

    def _raw(self, name: str) -> Any:
        value = self.values.get(name)
        return None if value is None or value == "" else value

    def integer(self, name: str, *, default: int, minimum: int, maximum: int, zero_is_default: bool = True) -> int:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, str):
            if not _INTEGER.match(value.strip()):
                if _DIGITS.match(value.strip()):  # (an integer past 19 digits: no field holds one)
                    raise BadRequest(f"{name} is out of range ({minimum}..{maximum}), got {_show(value)}")
                raise BadRequest(f"{name} must be an integer, got {_show(value)}")
            number = int(value.strip())
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise BadRequest(f"{name} must be an integer, got {_show(value)}")
        if number == 0 and zero_is_default and not self.strict:
            return default
        if not minimum <= number <= maximum:
            raise BadRequest(f"{name} must be between {minimum} and {maximum}, got {number}")
        return number

    def pid(self) -> int | None:
        pid = self.integer("pid", default=0, minimum=1 if self.strict else 0, maximum=MAX_UINT32)
        return pid or None

    def string(self, name: str, *, max_chars: int = MAX_COMMAND_CHARS) -> str | None:
        value = self._raw(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string, got {_show(value)}")
        if len(value) > max_chars:
            raise BadRequest(f"{name} must be at most {max_chars} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # (a JSON body's "\ud800": a lone surrogate no store or answer can hold)
            raise BadRequest(f"{name} must be valid Unicode text, got {_show(value)}") from None
        return value

    def command(self) -> str | None:
        """``command``, or the seed generation's ``process_name`` when ``command`` is absent."""
        return self.string("command") or self.string("process_name")

    def time(self, name: str) -> datetime | None:
        value = self._raw(name)
        if value is None:
            return None
        if not isinstance(value, str) or not _RFC3339.match(value.strip()):
            if isinstance(value, str) and _RFC3339.match(value.strip().replace(" ", "+")):  # (a + not encoded)
                raise BadRequest(f"{name} lost its '+' on the way (a '+' in a URL's query is a space): encode it "
                                 f"as %2B, e.g. {value.strip().replace(' ', '%2B')}")  # fmt: skip
            raise BadRequest(f"{name} must be an RFC3339 time such as 2026-11-24T12:00:00Z, got {_show(value)}")
        try:
            when = datetime.fromisoformat(value.strip().upper())
        except ValueError as exc:
            raise BadRequest(f"{name} is not a valid time: {_show(value)}") from exc
        problem = time_range_problem(when)
        if problem:
            raise BadRequest(f"{name} {problem}, got {_show(value)}")
        return when

    def between(self) -> tuple[datetime | None, datetime | None]:
        """``since`` and ``until`` (either may be absent); ``since`` must be earlier."""
        since, until = self.time("since"), self.time("until")
        if since is not None and until is not None and since >= until:
            raise BadRequest("since must be earlier than until")
        return since, until

    def kind(self) -> EventKind | None:
        value = self._raw("type")
        if value is None:
            return None
        if value not in _KINDS:
            raise BadRequest(f"type must be 'connection' or 'packet_drop', got {_show(value)}")
        return value


# --- endpoints -------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(fn: Endpoint) -> Endpoint:
    """Turn every failure into a one-line plain-text answer; never a traceback."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except BadRequest as exc:
            return text_response(400, str(exc))
        except (RequestTooLarge, ClientDisconnect):
            raise
        except NetspyError as exc:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
            return text_response(503, str(exc))
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return text_response(500, "Internal server error")

    return wrapper


def _uptime(seconds: float | None) -> str:
    """Go's ``time.Duration`` text, e.g. ``1h2m3s``; ``active`` when unknown (as the original)."""
    if seconds is None or seconds < 0:
        return "active"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class ChangeFeed:
    """The source's changes as a sequence number a request can wait on (``/api/changes``).

    The source's ``on_change`` (on its writing thread) bumps :attr:`seq` and, only while requests wait, wakes
    them on the event loop (``call_soon_threadsafe``). No thread per waiter: each waits on one shared
    :class:`asyncio.Event` with a timeout. Idle (nothing stored, nobody waiting) it costs nothing; the source
    is only listened to from the first request on."""

    def __init__(self, source: ChangingSource) -> None:
        self.source = source
        self.seq = 0
        self._counter = itertools.count(1)
        self._stop: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._waiting = 0
        self._closed = False

    def _changed(self) -> None:  # on the writing thread: be quick
        self.seq = next(self._counter)  # (atomic: two writing threads cannot lose a change)
        loop = self._loop
        if self._waiting and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def close(self) -> None:
        """Answer every waiting request now, and later ones at once (the server is shutting down)."""
        self._closed = True
        if self._stop is not None:
            self._stop()
            self._stop = None
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    async def wait(self, after: int | None, seconds: float) -> tuple[int, bool]:
        """The sequence and whether it is not ``after``: at once when it is not (or ``after`` is None), else
        as soon as it changes or ``seconds`` passed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._event = loop, None
        if self._stop is None and not self._closed:
            self._stop = self.source.on_change(self._changed)
        if after is None or self.seq != after or seconds <= 0 or self._closed:
            return self.seq, after is not None and self.seq != after
        deadline = loop.time() + seconds
        self._waiting += 1  # before the check below: a change from now on wakes this request
        try:
            while self.seq == after and not self._closed:
                if self._event is None:
                    self._event = asyncio.Event()
                event = self._event
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    break
        finally:
            self._waiting -= 1
        return self.seq, self.seq != after


def changes_feed(source: TelemetrySource) -> ChangeFeed | None:
    """A feed of ``source``'s changes when it says when it changes itself (the embedded store, a MemorySource);
    None for a source that only relays another server (it may not have changes to tell)."""
    if isinstance(source, ChangingSource) and not isinstance(source, FollowedSource):
        return ChangeFeed(source)
    return None


class Api:
    def __init__(self, source: TelemetrySource, extra_paths: Sequence[str], metrics_top: int = 20) -> None:
        self.source = source
        self.extra_paths = list(extra_paths)
        self.exporter = MetricsExporter(metrics_top)
        self.identity = k8s_identity()  # the node/pod/namespace of a pod this runs in (downward API)
        self.feed = changes_feed(source)

    def endpoints(self, listed: Mapping[str, str]) -> dict[str, str]:
        """The root's endpoint list: ``listed``, ``/api/changes`` where it is served, the mounted paths."""
        endpoints = dict(listed)
        if self.feed is not None:
            endpoints[CHANGES_ENDPOINT[0]] = CHANGES_ENDPOINT[1]
        for path in self.extra_paths:
            endpoints[path] = "Mounted application"
        return endpoints

    async def root(self, request: Request) -> Response:
        return json_response(
            {
                "service": "netspy-tui",
                "version": __version__,
                "description": "eBPF Network Monitor API (ebpf-server compatible) served by netspy-tui",
                "endpoints": self.endpoints(ENDPOINTS),
            }
        )

    async def health(self, request: Request) -> Response:
        try:
            info = await self.source.info()
        except Exception:
            logger.exception("health check: the telemetry source failed")
            return text_response(503, "System not initialized")
        self._log_health(info)
        if not info.healthy:
            return self._unhealthy(info)
        payload: dict[str, Any] = {
            "status": info.status,
            "component": "netspy-tui",
            "uptime": _uptime(info.uptime_seconds),
            "version": __version__,
            "source": info.label,
        }
        if info.collector:
            payload["collector"] = info.collector
        if info.kind == "embedded":
            # netspy-tui extensions: the node this is (the one name the tools' node filter takes over --server);
            # what was lost or shed, by cause, since start and in the last minute
            payload["node"] = host_node()
            payload["events_lost"] = info.events_lost
            payload["losses"] = info.losses
            payload["recent_losses"] = info.recent_losses
            payload["counts_exact"] = counts_exact(info.recent_losses)
            if info.degraded:  # why: losses in the last minute, forwarding failing for a while
                stalled = (info.forwarding or {}).get("problem")
                why = [describe_losses(info.recent_losses, "in the last minute")] if info.recent_losses else []
                payload["detail"] = "; ".join(why + ([str(stalled)] if stalled else []))
            if info.forwarding is not None:
                payload["forwarding"] = info.forwarding
            if info.recording is not None:
                payload["recording"] = info.recording
            if info.notes:  # (what the collector cannot do on this kernel: server_status says them from afar too)
                payload["notes"] = info.notes
        return json_response(payload)

    _health_logged: str | None = None  # (the unhealthy state last logged, its figures left out; None: healthy)

    def _log_health(self, info: SourceInfo) -> None:
        """The source's health as ``/health`` finds it, logged when it changes or recovers: not at every request
        (a dashboard asks several times a second)."""
        state = None if info.healthy else re.sub(r"\d[\d,.]*", "#", info.detail)
        if state == self._health_logged:
            return
        if state is None:
            logger.warning("health check: source %s again", info.status)
        else:
            logger.warning("health check: source unhealthy: %s", info.detail)
        self._health_logged = state

    def _unhealthy(self, info: SourceInfo) -> Response:
        """``/health``'s 503 while the source is unhealthy (a probe fails): the healthy answer's text fields with
        status ``unhealthy`` and why (``detail``: not the bare "System not initialized", which read as still
        starting). Every value is a string, as the contract types this answer (a client decoding it into a map of
        strings, as the Go one does, must not fail on it): the loss figures are ``/api/losses``'."""
        detail = " ".join(info.detail.split()) or "not ready"
        uptime = _uptime(info.uptime_seconds)
        payload: dict[str, Any] = {"status": info.status, "component": "netspy-tui", "version": __version__,
                                   "uptime": uptime, "source": info.label, "detail": detail}  # fmt: skip
        if info.collector:
            payload["collector"] = info.collector
        if info.kind == "embedded":
            payload["node"] = host_node()
        return json_response(payload, 503)

    async def ready(self) -> bool:
        """What /readyz says: False when /health would say unhealthy (503)."""
        try:
            return (await self.source.info()).healthy
        except Exception:  # noqa: BLE001 (a source that cannot say is not ready: /health logs why)
            return False

    async def livez(self, request: Request) -> Response:
        return text_response(200, "ok")

    async def readyz(self, request: Request) -> Response:
        return text_response(200, "ok") if await self.ready() else text_response(503, "unhealthy")

    async def summary(self, request: Request, kind: EventKind) -> Response:
        params = await Params.read(request)
        pid = params.pid()
        command = params.command()
        duration = params.integer(
            "duration_seconds", default=DEFAULT_SUMMARY_SECONDS, minimum=1, maximum=MAX_WINDOW_SECONDS
        )
        _, foreign = self.k8s_filters(params)
        count = 0 if foreign else await self.source.count(Scope(kind, pid, command, duration))
        return json_response(
            {
                "count": count,
                "pid": pid or 0,
                "command": command or "",
                "duration_seconds": duration,
                "query_time": query_time(),
            }
        )

    async def listing(self, request: Request, kind: EventKind) -> Response:
        params = await Params.read(request)
        pid = params.pid()
        command = params.command()
        limit = params.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        window = params.integer("duration_seconds", default=DEFAULT_LIST_SECONDS, minimum=1, maximum=MAX_WINDOW_SECONDS)
        since = utcnow() - timedelta(seconds=window)
        narrow = self.narrowing(params)
        _, foreign = self.k8s_filters(params)
        events: Sequence[ConnectionEvent | PacketDropEvent] = []
        if not foreign:  # (another pod's: none of this server's events, nothing to read)
            query = EventQuery(kind=kind, pid=pid, command=command, since=since, limit=limit, **narrow)
            events = (await self.source.query(query)).events
        by_pid: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_pid.setdefault(str(event.pid), []).append(event_json(event, self.identity))
        return json_response(
            {
                "total_pids": len(by_pid),
                "total_events": sum(len(group) for group in by_pid.values()),
                "events_by_pid": by_pid,
                **self.listing_extra(events),
                "query_time": query_time(),
            }
        )

    def narrowing(self, params: Params) -> dict[str, Any]:
        """Filters beyond pid and command, as EventQuery fields: none here (the aggregator's node and workload)."""
        return {}

    def k8s_filters(self, params: Params) -> tuple[dict[str, str], bool]:
        """Kubernetes filters (``k8s_node_name`` or ``node``, ``k8s_pod_name``, ``k8s_namespace``): every event here
        carries this pod's own k8s_* fields (the downward API's, when it runs in one), so its own values keep them
        all and another value none: the filters given, and True when nothing matches. Without that metadata a filter
        cannot be answered (a 400: the summaries and lists ignored it, counting every event for any pod)."""
        k8s: dict[str, str] = {}
        for name in _K8S_FILTERS:
            value = params._raw(name)
            if value is None:
                continue
            own = self.identity.get("k8s_node_name" if name == "node" else name)
            if own is None:
                raise BadRequest(f"{name} is not supported: this server has no Kubernetes metadata")
            k8s[name] = value
        return k8s, any(v != self.identity.get("k8s_node_name" if n == "node" else n) for n, v in k8s.items())

    def listing_extra(self, events: Sequence[ConnectionEvent | PacketDropEvent]) -> dict[str, Any]:
        """More fields of a listing (the aggregator's ``events_by_node``): none here."""
        return {}

    async def events(self, request: Request) -> Response:
        params = await Params.read(request)
        k8s, foreign = self.k8s_filters(params)
        if params._raw("workload") is not None:
            raise BadRequest("workload is not supported: this server's events do not carry their workload; its MCP "
                             "tools at /mcp take workload (this host's processes by cgroup)")  # fmt: skip
        kind = params.kind()
        pid = params.pid()
        command = params.command()
        since, until = params.between()
        limit = params.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        # netspy-tui extension: of one type, only events stored after ``after`` (the ``cursor`` a previous answer
        # gave), so that a poller is sent each event once instead of re-reading the overlap it asks again by time
        after = params.integer("after", default=-1, minimum=0, maximum=MAX_CURSOR, zero_is_default=False)
        if after >= 0 and kind is None:
            raise BadRequest("after needs type (a cursor is one type's): pass type=connection or type=packet_drop")
        # and with ``after``, the connects stored up to it whose outcome was resolved after ``resolved_after`` (the
        # ``resolved_cursor`` a previous answer gave), as ``updates``: a row listed in progress gets its outcome
        resolved_after = params.integer(
            "resolved_after", default=-1, minimum=0, maximum=MAX_CURSOR, zero_is_default=False
        )
        if resolved_after >= 0 and (after < 0 or kind != "connection"):
            raise BadRequest("resolved_after needs type=connection and after (it updates the connects listed up to it)")
        updates: list[ConnectionEvent | PacketDropEvent] = []
        resolved: int | None = None
        events: list[ConnectionEvent | PacketDropEvent] = []
        total = 0
        cursor: int | None = None
        not_kept: dict[str, Any] = {}
        for k in () if foreign else (kind,) if kind else _KINDS:
            q = EventQuery(kind=k, pid=pid, command=command, since=since, until=until, limit=limit,
                           after=None if after < 0 else after)  # fmt: skip
            if resolved_after >= 0:
                q = dataclasses.replace(q, resolved_after=resolved_after)
            page = await self.source.query(q)
            events.extend(page.events)
            if kind:
                updates, resolved = list(page.updates), page.resolved_cursor
            total += page.total_count
            cursor = page.cursor if kind else None
            if kind and page.not_kept:  # netspy-tui extension: events of the page's seconds counted but not kept
                not_kept = {
                    "not_kept": page.not_kept,
                    "not_kept_since": page.not_kept_since and format_time(page.not_kept_since),
                    "not_kept_until": page.not_kept_until and format_time(page.not_kept_until),
                }
        events.sort(key=_newest_first, reverse=True)
        events = events[:limit]
        filters: dict[str, Any] = {}
        if kind:
            filters["type"] = kind
        if pid:
            filters["pid"] = pid
        if command:
            filters["command"] = command
        if since is not None:
            filters["since"] = format_time(since)
        if until is not None:
            filters["until"] = format_time(until)
        filters["limit"] = limit
        filters.update(k8s)
        return json_response(
            {
                "events": [event_json(e, self.identity) for e in events],
                "count": len(events),
                "total_count": max(total, len(events)),
                "query_time": query_time(),
                "filters": filters,
                **({} if cursor is None else {"cursor": cursor}),
                **({} if resolved is None else {"resolved_cursor": resolved}),
                **({"updates": [event_json(e, self.identity) for e in updates]} if updates else {}),
                **not_kept,
            }
        )

    async def losses(self, request: Request) -> Response:
        """``/api/losses``: what the source lost or shed in the last ``duration_seconds``, by cause (the window's
        figure every tool result notes; ``/health`` has only the last minute and since start)."""
        params = await Params.read(request, strict=True)  # (an extension: 0 is refused, not the default)
        duration = params.integer(
            "duration_seconds", default=DEFAULT_SUMMARY_SECONDS, minimum=1, maximum=MAX_WINDOW_SECONDS
        )
        losses = await self.source.losses(duration)
        return json_response({"losses": losses, "counts_exact": counts_exact(losses), "duration_seconds": duration,
                              "query_time": query_time()})  # fmt: skip

    async def programs(self, request: Request) -> Response:
        programs: list[ProgramInfo] = await self.source.programs()
        items = []
        for program in programs:
            item = program.model_dump(mode="json", exclude_none=True)
            item.setdefault("id", 0)
            items.append(item)
        return json_response({"programs": items, "total_count": len(items), "query_time": query_time()})

    async def metrics(self, request: Request) -> Response:
        info = await self.source.info()
        counted = await asyncio.to_thread(counted_of, self.source)
        return Response(self.exporter.render(info, counted), media_type=METRICS_CONTENT_TYPE)

    async def extension(self, request: Request, method: str, model: type[Any]) -> Response:
        """``/api/traffic`` and ``/api/connect-latency``: a :class:`TrafficSource` figure as JSON."""
        params = await Params.read(request, strict=True)
        pid = params.pid()
        command = params.command()
        duration = params.integer(
            "duration_seconds", default=DEFAULT_SUMMARY_SECONDS, minimum=1, maximum=MAX_WINDOW_SECONDS
        )
        limit = params.integer("limit", default=DEFAULT_TRAFFIC_LIMIT, minimum=1, maximum=MAX_TRAFFIC_LIMIT)
        source = self.source
        if isinstance(source, TrafficSource):
            stats = await getattr(source, method)(pid, command, duration, limit)
        else:
            stats = model(window_seconds=duration, pid=pid, command=command, until=utcnow(), available=False,
                          unavailable_reason=getattr(source, "figures_unavailable", ""))  # fmt: skip
        return _figures_response(stats, "until")

    async def window_stats(self, request: Request) -> Response:
        """``/api/window-stats``: the source's :class:`WindowStats` of one kind and window as JSON."""
        params = await Params.read(request, strict=True)
        kind = params.kind() or "connection"
        duration = params.integer(
            "duration_seconds", default=DEFAULT_SUMMARY_SECONDS, minimum=1, maximum=MAX_WINDOW_SECONDS
        )
        top_n = params.integer("top_n", default=10, minimum=1, maximum=MAX_STATS_TOP)
        buckets = params.integer("buckets", default=60, minimum=1, maximum=MAX_STATS_BUCKETS)
        scope = Scope(kind, params.pid(), params.command(), duration)
        stats = await self.source.stats(scope, top_n=top_n, buckets=buckets)
        return _figures_response(stats, "first_seen", "last_seen", "until")

    async def inbound(self, request: Request) -> Response:
        """``/api/inbound``: the source's accepted connections (:class:`InboundSource`), newest first;
        ``available`` false (no events) when it has none to tell."""
        params = await Params.read(request, strict=True)
        pid = params.pid()
        command = params.command()
        since, until = params.between()
        limit = params.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        page = None
        if isinstance(self.source, InboundSource):
            q = EventQuery(kind="connection", pid=pid, command=command, since=since, until=until, limit=limit)
            page = await self.source.inbound(q)
        events = page.events if page is not None else []  # (newest first, at most limit: InboundSource's promise)
        return json_response(
            {
                "events": [event_json(e, self.identity) for e in events],
                "count": len(events),
                "total_count": max(page.total_count, len(events)) if page is not None else 0,
                "available": page is not None,
                "query_time": query_time(),
            }
        )

    async def changes(self, request: Request) -> Response:
        """``/api/changes``: a long poll on the source's changes (see :class:`ChangeFeed`)."""
        assert self.feed is not None
        params = await Params.read(request)
        after = params.integer("after", default=-1, minimum=0, maximum=MAX_CURSOR, zero_is_default=False)
        timeout = params.integer(
            "timeout", default=DEFAULT_CHANGES_WAIT, minimum=0, maximum=MAX_CHANGES_WAIT, zero_is_default=False
        )
        seq, changed = await self.feed.wait(None if after < 0 else after, timeout)
        return json_response({"seq": seq, "changed": changed})

    def routes(self) -> list[BaseRoute]:
        both = ["GET", "POST"]
        changes: list[BaseRoute] = []
        if self.feed is not None:
            changes.append(Route("/api/changes", _guarded(self.changes), methods=["GET"]))
        return changes + [
            Route("/", _guarded(self.root), methods=["GET"]),
            Route("/health", _guarded(self.health), methods=["GET"]),
            Route("/livez", _guarded(self.livez), methods=["GET"]),
            Route("/readyz", _guarded(self.readyz), methods=["GET"]),
            Route(
                "/api/connection-summary",
                _guarded(functools.partial(self.summary, kind="connection")),
                methods=both,
            ),
            Route(
                "/api/packet-drop-summary",
                _guarded(functools.partial(self.summary, kind="packet_drop")),
                methods=both,
            ),
            Route(
                "/api/list-connections",
                _guarded(functools.partial(self.listing, kind="connection")),
                methods=both,
            ),
            Route(
                "/api/list-packet-drops",
                _guarded(functools.partial(self.listing, kind="packet_drop")),
                methods=both,
            ),
            Route("/api/events", _guarded(self.events), methods=["GET"]),
            Route("/api/programs", _guarded(self.programs), methods=["GET"]),
            Route("/metrics", _guarded(self.metrics), methods=["GET"]),
            Route(
                "/api/traffic",
                _guarded(functools.partial(self.extension, method="traffic", model=TrafficStats)),
                methods=["GET"],
            ),
            Route(
                "/api/connect-latency",
                _guarded(functools.partial(self.extension, method="connect_latency", model=LatencyStats)),
                methods=["GET"],
            ),
            Route("/api/window-stats", _guarded(self.window_stats), methods=["GET"]),
            Route("/api/inbound", _guarded(self.inbound), methods=["GET"]),
            Route("/api/losses", _guarded(self.losses), methods=["GET"]),
        ]


# --- middleware ------------------------------------------------------------------------------


class BearerTokenMiddleware:
    """Every HTTP (and websocket) request needs ``Authorization: Bearer <token>``; else 401.
    ``own_auth_paths`` check a token of their own (the aggregator's ingest: the agents' token)."""

    def __init__(self, app: ASGIApp, token: str, own_auth_paths: Sequence[str] = ()) -> None:
        self.app = app
        self.expected = token.encode("utf-8")
        self.own_auth_paths = frozenset(own_auth_paths)

    def _authorized(self, scope: ASGIScope) -> bool:
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        scheme, _, credentials = header.partition(b" ")
        # compare_digest runs in time independent of where the two differ.
        matched = hmac.compare_digest(credentials.strip(), self.expected)
        return scheme.lower() == b"bearer" and matched

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or scope.get("path") in self.own_auth_paths
            or (scope["type"] == "http" and scope.get("path") in PROBE_PATHS)
            or self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        response = text_response(
            401,
            "Unauthorized: send the server token as Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="netspy-tui"'},
        )
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to bodies above ``max_bytes``: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        return text_response(413, f"Request body too large: the limit is {self.max_bytes} bytes")

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.strip().isdigit():
                    await text_response(400, "Invalid Content-Length header")(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        received = 0
        overflow = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflow = True
                    raise RequestTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if overflow:  # whatever the app answers after the overflow, the client gets the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except RequestTooLarge:
            pass
        if overflow and not started:
            await self._too_large()(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return text_response(404, "404 page not found")
    if exc.status_code == 405:
        return text_response(405, "Method not allowed", dict(exc.headers or {}))
    return text_response(exc.status_code, exc.detail or "error", dict(exc.headers or {}))


class OneSlashMiddleware:
    """``/api/events/`` is ``/api/events``: a path's trailing slash is dropped before the checks and the routes see
    it. Starlette answered it with a 307 to an absolute URL, which a client that does not follow redirects (httpx's
    default, netspy-tui's own client) took for an error, and which dropped a reverse proxy's path prefix."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and len(raw) > 1 and raw.endswith(b"/"):
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


def guard_middleware(
    token: str | None, max_body_bytes: int, hosts: HostPolicy, own_auth_paths: Sequence[str] = ()
) -> list[Middleware]:
    """The Host/Origin check (DNS rebinding), the bearer-token check (when ``token`` is set) and the
    body limit, outermost first.

    Every app netspy-tui serves over HTTP (the eBPF API, ``/mcp``, ``mcp --http``) sits behind these.
    """
    if token is not None and not token.strip():
        raise ValueError("token must not be empty")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    middleware = [Middleware(OneSlashMiddleware), Middleware(HostGuardMiddleware, policy=hosts)]
    if token is not None:
        middleware.append(Middleware(BearerTokenMiddleware, token=token, own_auth_paths=own_auth_paths))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=max_body_bytes))
    return middleware


def create_app(
    source: TelemetrySource,
    *,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    extra_routes: list[BaseRoute] | None = None,
    lifespan: Lifespan[Starlette] | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    metrics_top: int = 20,
    api: Callable[[TelemetrySource, list[str], int], Api] | None = None,
    own_auth_paths: Sequence[str] = (),
) -> Starlette:
    """The eBPF server API over ``source`` as a Starlette app.

    ``api`` builds the endpoints (``serve --aggregate``'s own, :mod:`netspy_tui.serve.aggregate`);
    ``own_auth_paths`` are paths that check a token of their own instead of ``token``.

    ``token``: require ``Authorization: Bearer <token>`` on every request (``None``: no auth).
    ``host`` (the address it is bound to) and ``allowed_hosts`` (``--allow-host``) decide which
    ``Host``/``Origin`` names are answered on every path (:mod:`netspy_tui.serve.hosts`).
    ``extra_routes`` are mounted after the API routes (e.g. the MCP streamable-HTTP route) and sit
    behind the same token and body limit; ``lifespan`` runs with the app (an MCP session manager).
    The source is not closed by the app: its owner closes it.
    """
    extra = list(extra_routes or [])
    paths = [getattr(r, "path", "") for r in extra if getattr(r, "path", "")]
    endpoints = (api or Api)(source, paths, metrics_top)
    app = Starlette(
        routes=endpoints.routes() + extra,
        middleware=guard_middleware(token, max_body_bytes, HostPolicy(host, allowed_hosts), own_auth_paths),
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.token_required = token is not None
    app.state.source = source
    app.state.changes = endpoints.feed
    return app
