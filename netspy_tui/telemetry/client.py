"""The eBPF server over HTTP (httpx, async), for every API generation.

:class:`HttpSource` implements :class:`~netspy_tui.telemetry.source.TelemetrySource`. It detects the
server's API generation once (seed / current / aggregator) and uses the best endpoint for each
query: ``/api/events`` with filters and ``since`` where it exists, the seed's POST bodies where it
does not, and client-side filtering wherever the server ignores a filter. Every failure becomes a
one-line :class:`~netspy_tui.errors.NetspyError` that names the URL and what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from netspy_tui.analysis.aggregate import AnyEvent, aggregate, filter_events
from netspy_tui.errors import ContractError, NetspyError, ServerError, ServerUnavailable
from netspy_tui.models import (
    AggregatorStats,
    ApiGeneration,
    EventPage,
    EventQuery,
    EventsResponse,
    HealthResponse,
    LatencyStats,
    ListResponse,
    ProgramInfo,
    ProgramsResponse,
    Scope,
    SourceInfo,
    SummaryResponse,
    TrafficStats,
    WindowStats,
    describe_losses,
    describe_validation_error,
    format_time,
    utcnow,
)
from netspy_tui.textsafe import clean, first_line, mask_secrets, redact_url, secret_forms, url_secrets

#: a node name as the tools' node filter takes it (a server's ``/health`` ``node`` that is not one is not used)
_NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
log = logging.getLogger(__name__)

DEFAULT_SERVER = "http://localhost:8080"
#: How many events ``stats`` fetches to aggregate a window on the client.
STATS_FETCH_LIMIT = 10_000
_RETRY_STATUSES = {502, 503, 504}
#: Seconds one long poll of a netspy-tui server's ``/api/changes`` waits for a change (its bound is 30).
CHANGES_WAIT = 25

M = TypeVar("M", bound=BaseModel)

NO_SERVER_HINT = (
    "start the eBPF server (or `netspy-tui serve`), check --server / NETSPY_SERVER, "
    "or run without --server to use the embedded collector"
)


class InboundResponse(EventsResponse):
    """``/api/inbound`` (a netspy-tui server's): accepted connections, as ``/api/events`` sends events."""

    available: bool = True
    """False: the server's source does not see inbound connections (the list is empty)."""


class ChangesResponse(BaseModel):
    """``/api/changes`` (a netspy-tui server's long poll): the store's change sequence, and whether it moved."""

    seq: int
    changed: bool = False


class LossesResponse(BaseModel):
    """``/api/losses`` (a netspy-tui server's): the events lost or shed in a window, by cause."""

    losses: dict[str, int] = {}


def _positive(losses: dict[str, int] | None) -> dict[str, int]:
    """``losses`` without the causes that lost nothing."""
    return {k: v for k, v in (losses or {}).items() if isinstance(v, int) and v > 0}


def _unhealthy_health(body: bytes) -> HealthResponse | None:
    """A 503's body as the health answer of a server that says why it is unhealthy (JSON, status ``unhealthy``)."""
    try:
        health = HealthResponse.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):
        return None
    return health if health.status == "unhealthy" else None


def _says_aggregator(health: HealthResponse) -> bool:
    """The aggregator's ``/health``: ``component`` names it, or it carries the aggregator's ``stats``."""
    stats = (health.model_extra or {}).get("stats")
    return "aggregator" in health.component.lower() or (isinstance(stats, dict) and "total_events" in stats)


def _connect_reason(exc: BaseException) -> str:
    """``connection refused`` / ``name not resolved`` / the OS's words, from the exception chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not resolved"
        if isinstance(seen, OSError) and seen.strerror:
            return clean(seen.strerror.lower(), 80)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else clean(text or "cannot connect", 120)


class HttpSource:
    """A client of one eBPF server (or aggregator, or ``netspy-tui serve``)."""

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)
        """``base_url`` as messages and labels show it: a password in it is masked."""
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        headers = {"Accept": "application/json", "User-Agent": "netspy-tui"}
        # Never repeat our own credentials, even when a server echoes them back in an error body.
        self._secrets = [form for s in (token, *url_secrets(self.base_url)) if s for form in secret_forms(s)]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            headers=headers,
            transport=transport,
            # Loading the system's CA certificates is ~30 ms of a one-shot command: only for https. A plain
            # http:// base URL never uses TLS (requests are relative to it and redirects are not followed).
            verify=self.base_url.lower().startswith("https://"),
        )
        self._generation: ApiGeneration | None = None
        self._window_stats = True  # the server may answer /api/window-stats (a netspy-tui server)
        self._window_stats_seen = False  # ... and it did
        self._inbound = True  # the server may answer /api/inbound (a netspy-tui server)
        self._losses_path = True  # the server may answer /api/losses (a netspy-tui server)
        self._health_losses_told = False  # (without it: /health's last minute said once, not asked at every poll)
        self._warned_losses = False
        self._detect_lock = asyncio.Lock()
        self._warned_not_events = False
        self._changes_offered: bool | None = None  # the server has /api/changes (None: not asked yet)
        self._change_seq = 0
        self._change_listeners: dict[object, Callable[[], None]] = {}

    # --- plumbing ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        url = f"{self.shown_url}{path}"
        timeout: Any = httpx.USE_CLIENT_DEFAULT  # (a long poll waits longer than other requests)
        if read_timeout:
            timeout = httpx.Timeout(read_timeout, connect=self.connect_timeout)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                resp = await self._http.request(method, path, params=params or None, json=body, timeout=timeout)
            except httpx.ConnectError as exc:
                if attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                reason = _connect_reason(exc)
                raise ServerUnavailable(
                    f"Cannot reach the eBPF server at {self.shown_url} ({reason})", NO_SERVER_HINT
                ) from None
            except httpx.TimeoutException as exc:
                which = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
                limit = self.connect_timeout if which == "connect" else read_timeout or self.read_timeout
                raise ServerUnavailable(
                    f"The eBPF server at {self.shown_url} did not answer {path} within {limit:g} s ({which} timeout)",
                    "check that it is not overloaded, or raise --timeout",
                ) from None
            except httpx.HTTPError as exc:
                raise ServerUnavailable(
                    f"HTTP error talking to {url}: {clean(str(exc) or type(exc).__name__, 160)}", NO_SERVER_HINT
                ) from None
            if (
                resp.status_code in _RETRY_STATUSES
                and attempt < self.retries
                and not (
                    resp.status_code == 503 and _unhealthy_health(resp.content) is not None  # (up, and it said why)
                )
            ):
                attempt += 1
                log.debug("retrying %s %s after %s", method, path, resp.status_code)
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return resp

    def _body_line(self, resp: httpx.Response, max_len: int) -> str:
        """The first line of a response body, cleaned, with our token (or URL password) masked."""
        text = resp.content.decode("utf-8", errors="backslashreplace")
        return first_line(mask_secrets(text, self._secrets), max_len)

    def _status_error(self, resp: httpx.Response, path: str) -> NetspyError:
        body = self._body_line(resp, 160) or resp.reason_phrase
        if resp.status_code == 503:
            return ServerError(
                f"The eBPF server at {self.shown_url} is not ready (503 on {path}: {body})",
                "it is still starting or its eBPF programs failed to load; retry shortly or check its log",
            )
        if resp.status_code == 401:
            return ServerError(
                f"The eBPF server at {self.shown_url} refused the request (401 on {path})",
                "pass the server's bearer token with --token or NETSPY_TOKEN",
            )
        if 300 <= resp.status_code < 400:  # (not followed: a redirect can take the token elsewhere)
            where = clean(redact_url(resp.headers.get("location", "")), 120) or "nowhere"
            return ServerError(
                f"The server at {self.shown_url} redirects {path} ({resp.status_code}) to {where}",
                "pass the URL it redirects to as --server (e.g. https:// instead of http://)",
            )
        page = _looks_like_a_web_page(resp)
        if resp.status_code == 501 or (resp.status_code in (404, 405) and page):  # (another kind of web server's
            return ServerError(  # answer to the API's paths; a proxy's 502 page still says its status and body)
                f"The server at {self.shown_url} is not an eBPF server: it answered {resp.status_code} on {path}"
                + (" with a web page" if page else f": {body}"),
                "check that --server (or NETSPY_SERVER) points at an eBPF server or a netspy-tui serve",
            )
        return ServerError(
            f"The eBPF server at {self.shown_url} answered {resp.status_code} on {path}: {body}",
            "check the server's log",
        )

    def _parse(self, resp: httpx.Response, path: str, model: type[M]) -> M:
        if resp.status_code >= 300:
            raise self._status_error(resp, path)
        try:
            data = json.loads(resp.content)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply, a 5,000-digit number
            snippet = self._body_line(resp, 80)
            raise ContractError(
                f"The eBPF server at {self.shown_url} sent a body that is not JSON on {path}: {snippet!r}",
                "check that --server points at an eBPF server",
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ContractError(
                f"The eBPF server at {self.shown_url} sent unexpected JSON on {path} "
                f"({describe_validation_error(exc)})",
                "the server may be a different version; report it with --verbose output",
            ) from None

    async def _get(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> M:
        return self._parse(await self._request("GET", path, params=params), path, model)

    async def _post(self, path: str, model: type[M], body: dict[str, Any]) -> M:
        return self._parse(await self._request("POST", path, body=body), path, model)

    # --- generation detection -----------------------------------------------------------

    async def health(self) -> HealthResponse:
        """``/health``; a 503 that says why (a netspy-tui server's JSON, status ``unhealthy``) is that answer, not an
        error: the caller shows why (a full disk), not "still starting"."""
        resp = await self._request("GET", "/health")
        if resp.status_code == 503 and (unhealthy := _unhealthy_health(resp.content)) is not None:
            return unhealthy
        if resp.status_code >= 400:
            raise self._status_error(resp, "/health")
        try:
            return HealthResponse.model_validate(json.loads(resp.content))
        except (ValueError, RecursionError, ValidationError):
            # Some servers answer plain "OK"; a 2xx is healthy enough.
            return HealthResponse(status=self._body_line(resp, 40) or "ok")

    async def generation(self) -> ApiGeneration:
        """What API the server speaks, detected once from what it says it is.

        ``/api/events`` answering 404 (or 405) means the seed generation: the one difference that
        changes which requests work. Otherwise an aggregator is told from a plain agent by what it
        says it is: ``/health``'s ``component`` ("aggregator"), the aggregator's health shape (a
        ``stats`` object) and, later, per-node fields in its answers (:meth:`_note_shape`) — never by
        whether ``/api/stats`` answers, since a plain agent's own spec lists that path too. The
        label changes nothing that works: non-seed servers are queried alike.
        """
        if self._generation is not None:
            return self._generation
        async with self._detect_lock:
            if self._generation is None:
                resp = await self._request("GET", "/api/events", params={"limit": 1})
                if resp.status_code in (404, 405):
                    gen: ApiGeneration = "seed"
                elif resp.status_code >= 400:
                    raise self._status_error(resp, "/api/events")
                else:
                    try:
                        health = await self.health()
                    except NetspyError as exc:  # the label must not stop queries that work
                        log.info("no /health from %s (%s): labelled current", self.shown_url, exc)
                        health = HealthResponse()
                    gen = "aggregator" if _says_aggregator(health) else "current"
                log.info("eBPF server at %s speaks the %s API", self.shown_url, gen)
                self._generation = gen
        return self._generation

    def _note_shape(self, resp: SummaryResponse) -> None:
        """Per-node fields (``count_by_node``) are the aggregator's: label a "current" server so."""
        if self._generation == "current" and resp.count_by_node is not None:
            log.info("eBPF server at %s answers with per-node counts: an aggregator", self.shown_url)
            self._generation = "aggregator"

    # --- TelemetrySource ----------------------------------------------------------------

    async def info(self) -> SourceInfo:
        what = "ebpf-server"
        try:
            health = await self.health()
            gen = await self.generation()
            if gen == "aggregator":
                what = "aggregator"
            recent = _positive(health.recent_losses)
            losses = _positive(health.losses)
            detail = f"{gen} API"
            extra = health.model_extra or {}
            stats = extra.get("stats")
            forwarding = extra.get("forwarding")  # (a netspy-tui agent's: serve --forward's state)
            recording = extra.get("recording")  # (a netspy-tui server's: serve --record's state)
            notes = extra.get("notes")  # (a netspy-tui server's: what its collector cannot do there)
            collector = extra.get("collector")
            node = extra.get("node")  # (a netspy-tui server's: the node it is, the one its node filter takes)
            by_node = stats.get("events_by_node") if isinstance(stats, dict) else None
            nodes = {str(k): v for k, v in by_node.items() if isinstance(v, int)} if isinstance(by_node, dict) else None
            why = extra.get("detail")
            if health.status == "unhealthy":  # (why first: the dashboard's header shows the start)
                detail = (
                    f"the server is unhealthy: {clean(why, 300) if isinstance(why, str) else 'no detail'}; {detail}"
                )
            elif health.status == "degraded" and isinstance(why, str) and why and not recent:
                # (why it is degraded when no loss says it: an aggregator's store that cannot be written, an agent's
                # forwarding failing; it read "aggregator API" alone)
                detail = f"the server is degraded: {clean(why, 300)}; {detail}"
            if recent:
                detail += f"; the server reports {describe_losses(recent, 'in the last minute')}"
            return SourceInfo(
                label=f"{what} at {self.shown_url}",
                kind="http",
                generation=gen,
                healthy=health.status != "unhealthy",
                detail=detail,
                degraded=health.status == "degraded" or bool(recent),
                losses=losses,
                recent_losses=recent,
                events_lost=health.events_lost or sum(losses.values()),
                nodes=nodes,
                node=node if isinstance(node, str) and gen != "aggregator" and _NODE_NAME.match(node) else None,
                forwarding=forwarding if isinstance(forwarding, dict) else None,
                recording=recording if isinstance(recording, dict) else None,
                notes=[clean(n, 300) for n in notes if isinstance(n, str)][:20] if isinstance(notes, list) else [],
                collector=clean(collector, 80) if isinstance(collector, str) else None,
            )
        except NetspyError as exc:
            return SourceInfo(
                label=f"{what} at {self.shown_url}",
                kind="http",
                generation=self._generation or "current",
                healthy=False,
                detail=str(exc),
            )

    async def query(self, q: EventQuery) -> EventPage:
        gen = await self.generation()
        if gen == "seed":
            return await self._seed_query(q)
        params: dict[str, Any] = {
            "type": q.kind,
            "pid": q.pid,
            "command": q.command,
            "since": format_time(q.since) if q.since else None,
            "until": format_time(q.until) if q.until else None,
            "limit": q.limit,
            "after": q.after,  # (a netspy-tui server's insertion cursor: each event comes once; others ignore it)
            # (and its resolutions': the connects listed before whose outcome came since)
            "resolved_after": q.resolved_after if q.after is not None else None,
        }
        if gen == "aggregator":  # the aggregator filters by node (the contract names both) and, netspy-tui's, workload
            params["node"] = params["k8s_node_name"] = q.node
            params["workload"] = q.workload  # (matched here again: another aggregator may ignore it)
        return self._filtered(await self._get("/api/events", EventsResponse, params), q, "/api/events")

    def _filtered(self, resp: EventsResponse, q: EventQuery, path: str) -> EventPage:
        """``resp``'s events filtered again on the client: servers differ on since/until edges and on ignored
        filters."""
        self._note_not_events(resp.not_events, path)
        events, matched = filter_events(resp.events, q)
        dropped = len(resp.events) + resp.not_events - matched
        total = max(resp.total_count - dropped, matched)
        span = [t if isinstance(t, datetime) else None for t in (resp.not_kept_since, resp.not_kept_until)]
        return EventPage(events=events, total_count=total, truncated=total > len(events), not_events=resp.not_events,
                         cursor=resp.cursor, not_kept=max(0, resp.not_kept), not_kept_since=span[0],
                         not_kept_until=span[1], updates=filter_events(resp.updates, q)[0] if resp.updates else [],
                         resolved_cursor=resp.resolved_cursor)  # fmt: skip

    def _note_not_events(self, n: int, path: str) -> None:
        """Log skipped non-events once as a warning (a poller would repeat it every second), then at debug."""
        if not n:
            return
        level = logging.DEBUG if self._warned_not_events else logging.WARNING
        self._warned_not_events = True
        log.log(
            level,
            "the eBPF server at %s sent %d item%s in %s that %s not events (null or an unknown kind); skipped",
            self.shown_url,
            n,
            "" if n == 1 else "s",
            path,
            "is" if n == 1 else "are",
        )

    async def _seed_query(self, q: EventQuery) -> EventPage:
        if q.kind != "connection":
            raise ServerError(
                f"The eBPF server at {self.shown_url} speaks the seed API, which has no packet-drop endpoints",
                "upgrade the server, or use the embedded collector",
            )
        body: dict[str, Any] = {"limit": max(q.limit, 1000)}
        if q.pid is not None:
            body["pid"] = q.pid
        resp = await self._post("/api/list-connections", ListResponse, body)
        self._note_not_events(resp.not_events, "/api/list-connections")
        flat: list[AnyEvent] = [e for events in resp.events_by_pid.values() for e in events]
        events, total = filter_events(flat, q)
        return EventPage(events=events, total_count=total, truncated=total > len(events), not_events=resp.not_events)

    async def count(self, scope: Scope) -> int:
        kind, pid, command, window_seconds = scope.kind, scope.pid, scope.command, scope.window
        gen = await self.generation()
        path = "/api/connection-summary" if kind == "connection" else "/api/packet-drop-summary"
        if scope.workload is not None or (scope.node is not None and gen != "aggregator"):
            return (await self.stats(scope, top_n=1, buckets=1)).total  # matched on the events, here
        if gen == "seed":
            if kind != "connection":
                await self._seed_query(EventQuery(kind=kind))  # raises the explanatory error
            body: dict[str, Any] = {"duration_seconds": window_seconds}
            if pid is not None:
                body["pid"] = pid
            if command is not None:
                body["command"] = command
                body["process_name"] = command
            return (await self._post(path, SummaryResponse, body)).count
        params = {"pid": pid, "command": command, "duration_seconds": window_seconds}
        resp = await self._get(path, SummaryResponse, params)
        self._note_shape(resp)
        if scope.node is not None:
            if resp.count_by_node is None:  # (the contract's aggregator summaries have no count_by_node, the Go
                return (await self.stats(scope, top_n=1, buckets=1)).total  # aggregator sends none: not 0, counted)
            return resp.count_by_node.get(scope.node, 0)
        return resp.count

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        """Aggregates of the newest :data:`STATS_FETCH_LIMIT` events of the window, computed here.

        When the window holds more, ``total`` is still the server's count of the whole window (the
        breakdowns describe the newest events), so rates and totals stay right on a busy host.

        A netspy-tui server answers them itself, exactly and without sending the events
        (``/api/window-stats``); asked once, a server without that path is not asked again.
        """
        if self._window_stats and scope.node is None and scope.workload is None and await self.generation() != "seed":
            params = {"type": scope.kind, "pid": scope.pid, "command": scope.command,
                      "duration_seconds": scope.window, "top_n": top_n, "buckets": buckets}  # fmt: skip
            resp = await self._request("GET", "/api/window-stats", params=params)
            if resp.status_code not in (400, 404, 405, 501):
                try:
                    stats = self._parse(resp, "/api/window-stats", WindowStats)
                    self._window_stats_seen = True
                    return stats
                except ContractError:
                    if self._window_stats_seen:  # it answered before: this server is broken now
                        raise
            self._window_stats = False  # not a netspy-tui server (a page of its own for unknown paths)
        now = utcnow()
        page = await self.query(
            EventQuery(
                kind=scope.kind,
                pid=scope.pid,
                command=scope.command,
                since=now - timedelta(seconds=scope.window),
                until=now,
                limit=STATS_FETCH_LIMIT,
                node=scope.node,
                workload=scope.workload,
            )
        )
        stats = aggregate(page.events, scope, now, top_n, buckets)
        if page.truncated and page.total_count > stats.total:
            log.debug("stats over %d of %d events in the window", stats.total, page.total_count)
            stats = stats.model_copy(update={"total": page.total_count})
        if page.not_events:
            stats = stats.model_copy(update={"not_events": page.not_events})
        return stats

    async def inbound(self, q: EventQuery) -> EventPage | None:
        """Connections local processes accepted, from a netspy-tui server's ``/api/inbound``; None where the
        server does not see them (``available`` false) or has no such path (an ebpf-server: asked once)."""
        if not self._inbound or await self.generation() == "seed":
            return None
        params = {"pid": q.pid, "command": q.command, "since": format_time(q.since) if q.since else None,
                  "until": format_time(q.until) if q.until else None, "limit": q.limit}  # fmt: skip
        resp = await self._request("GET", "/api/inbound", params=params)
        if resp.status_code in (404, 405):
            log.info("no /api/inbound at %s: inbound connections are not listed", self.shown_url)
            self._inbound = False
            return None
        page = self._parse(resp, "/api/inbound", InboundResponse)
        return self._filtered(page, q, "/api/inbound") if page.available else None

    async def losses(self, window_seconds: int) -> dict[str, int]:
        """What the server lost or shed in the last ``window_seconds``: a netspy-tui server answers for any window
        (``/api/losses``). Another has at most its ``/health``'s figure for the last minute: said on stderr (a
        one-shot's; once), not returned as the window's (a tool would print it as "in this window")."""
        try:
            if self._losses_path and await self.generation() != "seed":
                resp = await self._request("GET", "/api/losses", params={"duration_seconds": window_seconds})
                if resp.status_code not in (400, 404, 405, 501):
                    return self._note_losses(_positive(self._parse(resp, "/api/losses", LossesResponse).losses),
                                             f"in the last {window_seconds} s")  # fmt: skip
                self._losses_path = False
            if self._health_losses_told:
                return {}
            health = await self.health()
        except NetspyError as exc:  # (a note must not fail the tool: its own queries say what is wrong)
            log.debug("no losses from %s: %s", self.shown_url, exc)
            return {}
        self._health_losses_told = True
        self._note_losses(_positive(health.recent_losses), "in the last minute")
        return {}

    def _note_losses(self, losses: dict[str, int], when: str) -> dict[str, int]:
        """``losses``, logged as a warning the first time there are any (a one-shot command's stderr; a
        poller would repeat it every second), then at debug."""
        if losses:
            level = logging.DEBUG if self._warned_losses else logging.WARNING
            self._warned_losses = True
            log.log(level, "the eBPF server at %s reports %s", self.shown_url, describe_losses(losses, when))
        return losses

    async def programs(self) -> list[ProgramInfo]:
        if await self.generation() == "seed":
            return []
        resp = await self._get("/api/programs", ProgramsResponse)
        return list(resp.programs or resp.all_programs or [])

    async def aggregator_stats(self) -> AggregatorStats | None:
        """``/api/stats`` where the server has it (whatever its label); None where it does not."""
        if await self.generation() == "seed":
            return None
        resp = await self._request("GET", "/api/stats")
        if resp.status_code in (404, 405):
            return None
        return self._parse(resp, "/api/stats", AggregatorStats)

    async def _extension(self, path: str, model: type[M], pid: int | None, command: str | None,
                         window_seconds: int, limit: int) -> M:  # fmt: skip
        """A netspy-tui server's extension path; ``available`` False where the server has none."""
        params = {"pid": pid, "command": command, "duration_seconds": window_seconds, "limit": limit}
        resp = await self._request("GET", path, params=params)
        if resp.status_code in (404, 405):
            return model.model_validate({"window_seconds": window_seconds, "pid": pid, "command": command,
                                         "until": utcnow(), "available": False})  # fmt: skip
        return self._parse(resp, path, model)

    async def traffic(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                      ) -> TrafficStats:  # fmt: skip
        """``/api/traffic``."""
        return await self._extension("/api/traffic", TrafficStats, pid, command, window_seconds, limit)

    async def connect_latency(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                              ) -> LatencyStats:  # fmt: skip
        """``/api/connect-latency``."""
        return await self._extension("/api/connect-latency", LatencyStats, pid, command, window_seconds, limit)

    # --- changes (a netspy-tui server's /api/changes) ------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each change the server reports while :meth:`follow_changes` runs (a
        :class:`~netspy_tui.telemetry.source.FollowedSource`); returns the call that stops it."""
        token = object()
        self._change_listeners[token] = listener

        def stop() -> None:
            self._change_listeners.pop(token, None)

        return stop

    async def offers_changes(self) -> bool:
        """Whether the server has ``/api/changes`` (a netspy-tui server): asked once; an ebpf-server or an
        aggregator without it (404/405) is polled from then on. A failure (unreachable, 401) is False for now."""
        if self._changes_offered is None:
            try:
                resp = await self._request("GET", "/api/changes", params={"timeout": 0})
                if resp.status_code in (404, 405):
                    log.info("no /api/changes at %s: polled", self.shown_url)
                    self._changes_offered = False
                else:
                    self._change_seq = self._parse(resp, "/api/changes", ChangesResponse).seq
                    self._changes_offered = True
            except NetspyError as exc:
                log.info("no change stream from %s for now (%s): polled", self.shown_url, exc)
                return False
        return self._changes_offered

    async def follow_changes(self) -> None:
        """Long-poll ``/api/changes`` and call the listeners after each change; returns at once when the server
        has no such path, and when the stream breaks (the server is gone, or answers an error)."""
        if not await self.offers_changes():
            return
        while True:
            started = time.monotonic()
            try:
                params = {"after": self._change_seq, "timeout": CHANGES_WAIT}
                resp = await self._request("GET", "/api/changes", params=params, read_timeout=CHANGES_WAIT + 10.0)
                answer = self._parse(resp, "/api/changes", ChangesResponse)
            except NetspyError as exc:
                log.warning("the change stream of %s stopped: %s", self.shown_url, exc)
                return
            if answer.seq == self._change_seq:
                if time.monotonic() - started < 1.0:  # unchanged yet not waited: a server that does not hold
                    await asyncio.sleep(1.0)
                continue
            self._change_seq = answer.seq
            for listener in list(self._change_listeners.values()):
                try:
                    listener()
                except Exception:  # a listener must not end the stream
                    log.exception("change listener failed")

    async def aclose(self) -> None:
        await self._http.aclose()


def _looks_like_a_web_page(resp: httpx.Response) -> bool:
    """An HTML answer (``text/html``, or a body that starts as a page does): a web server's, not an eBPF server's,
    which answers JSON, or plain text for its errors."""
    if resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/html":
        return True
    return resp.content[:256].lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


async def probe(url: str, wait: float = 0.5) -> bool:
    """True when an eBPF server answers at ``url`` within ``wait`` seconds: ``GET /health`` gives 2xx and the
    contract's health object (a JSON object whose ``status`` and ``component`` are strings). Anything else that
    listens there (a web app's own ``/health``, Spring Boot's ``{"status": "UP"}``, a file server) is not one:
    taking it for one left the dashboard retrying a server that never was, instead of its embedded collector."""
    try:
        async with httpx.AsyncClient(timeout=wait) as http:
            resp = await http.get(f"{url.rstrip('/')}/health")
            if resp.status_code >= 300:
                return False
            try:
                body = resp.json()
            except ValueError:
                body = None
            fields = body if isinstance(body, dict) else {}
            if isinstance(fields.get("status"), str) and isinstance(fields.get("component"), str):
                return True
            log.info("%s answers /health, but not as an eBPF server does: not used", url)
            return False
    except (httpx.HTTPError, OSError):
        return False
