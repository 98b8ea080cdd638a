"""``serve --aggregate``: the ebpf-server aggregator API (shared/contracts/ebpf-server,
``aggregator.swagger.json``) over a :class:`~netspy_tui.fleet.store.FleetStore`.

Agents (``serve --forward``, or the Go agents) push ``{"events": [event, ...]}`` to
``POST /api/events/ingest``; every query endpoint answers across the nodes, with the contract's
per-node fields (``count_by_node``, ``events_by_node``, ``total_nodes``) and a ``node`` (or
``k8s_node_name``) filter; ``/api/stats`` says events by node and type, connected agents and the
last event's time. ``/api/inbound`` answers ``"available": false``: agents forward their events, not
the kernel's counts of the connections their processes accepted (ask an agent's own ``serve``).
``GET /api/changes`` is ``serve``'s long poll (:class:`~netspy_tui.serve.app.ChangeFeed`): its sequence moves
after each ingest batch that stored events, so a dashboard on the aggregator refreshes on what agents send
instead of polling on its timer. ``/api/events`` of one ``type`` takes ``serve``'s ``after`` extension and answers
its ``cursor``: the fleet's insertion position (:meth:`FleetStore.changes`), so a poller is sent each event stored
since its last read once, an agent's backlog of minutes-old events included.

Ingest is:

- authenticated: ``Authorization: Bearer <ingest token>`` (401 otherwise), compared in constant time;
- bounded: the body (413), events per batch (413), and events per second per node (429 with
  ``Retry-After``: the agent keeps the batch and retries, nothing is lost);
- uncompressed: a ``Content-Encoding`` other than ``identity`` (gzip) is 415, naming it;
- validated per event: a bad event is refused with its index and reason in ``rejected``, the rest of
  the batch is kept (``success`` is then false, the answer still 200: sending it again cannot help);
- idempotent: an event id a node already sent (a retried batch) is counted once (``duplicates``), except a
  connect it holds in progress sent again with its outcome (``serve --forward`` sends it when the connect ends):
  the held one takes that outcome, its count moves to it (``updated``; ``events_processed`` counts it too).

``/api/events?type=connection&after=…&resolved_after=…`` (serve's extension) also answers ``updates``: the connects
stored by ``after`` that their agents gave their outcome since the ``resolved_cursor`` of an earlier answer, so
a dashboard on the aggregator replaces its rows in progress.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from netspy_tui import __version__
from netspy_tui.fleet.prep import YOUNG_THRESHOLD, IngestChecker, Parsed, parse_and_check, read_body
from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import NODE_NAME, BadBatch, FleetStore, IngestResult, check_batch
from netspy_tui.models import (
    LOSS_CAUSES,
    MAX_CURSOR,
    ConnectionEvent,
    EventKind,
    EventQuery,
    PacketDropEvent,
    Scope,
    counts_exact,
    format_time,
)
from netspy_tui.serve.app import (
    DEFAULT_LIMIT,
    DEFAULT_SUMMARY_SECONDS,
    ENDPOINTS,
    MAX_LIMIT,
    MAX_WINDOW_SECONDS,
    Api,
    BadRequest,
    Params,
    _guarded,
    _uptime,
    dumps,
    event_json,
    json_response,
    query_time,
    text_response,
)
from netspy_tui.serve.forward import AGENT_LOSSES_PATH, INGEST_PATH, encode_events
from netspy_tui.telemetry.source import TelemetrySource
from netspy_tui.textsafe import clean

log = logging.getLogger(__name__)

__all__ = ["INGEST_PATH", "YOUNG_THRESHOLD", "AggregatorApi", "IngestLimits", "tune_collector"]

#: the paths that check the agents' (ingest) token instead of the read token, when there is one
AGENT_PATHS = (INGEST_PATH, AGENT_LOSSES_PATH)
#: rows an agent-losses body may hold (an hour of seconds, a few causes each)
MAX_LOSS_ROWS = 10_000
#: how many refused events an answer lists (the count is always complete)
MAX_REJECTED_SHOWN = 100
AnyEvent = ConnectionEvent | PacketDropEvent

AGGREGATOR_ENDPOINTS = {
    **ENDPOINTS,
    "GET /health": "Aggregator health: nodes, events, connected agents",
    "POST /api/events/ingest": 'Agents push {"events": [...]} here (Authorization: Bearer <ingest token>)',
    "GET /api/stats": "Events by node and type, connected agents, last event time",
}


#: how Go writes a time.Time never set (``/api/stats``' ``last_event_time`` before any event)
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class IngestLimits:
    token: str | None = None
    """The agents' bearer token (None: the server's own ``--token``, if any, guards ingest like every
    path; the CLI refuses to bind beyond loopback without one)."""
    max_events: int = 5000
    """Events in one batch."""
    rate: float = 50_000.0
    """Events per second per node (a burst of one second's worth, or one full batch, is allowed)."""


class _Buckets:
    """A token bucket per node: ``rate`` events a second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, wanted: dict[str, int]) -> float:
        """Take ``wanted`` events from each node's bucket, all or none; 0, or the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            levels = {}
            for key, n in wanted.items():
                level, at = self._state.get(key, (self.burst, now))
                level = min(self.burst, level + (now - at) * self.rate)
                if level < n:
                    return max(0.001, (n - level) / self.rate)
                levels[key] = level - n
            for key, level in levels.items():
                self._state[key] = (level, now)
                self._state.move_to_end(key)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
        return 0.0


def tune_collector() -> None:
    """For the aggregator's process: the cyclic collector's young passes every :data:`YOUNG_THRESHOLD`
    allocations instead of 700. An ingest batch keeps thousands of objects alive while it is checked and
    stored (a struct, its rows and their tuples per event), so at 700 every batch set off several young passes
    that moved them to the older generations, and the full passes that followed walked the whole heap: 1.2 s of
    CPU in 6.5 s of ingest (3 agents x 100,000 events, the fleet bench), 0.05 s at 20,000. Nothing here makes
    cycles, so few wait the longer for the collector."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _resolutions(page: Any, kept: Callable[[AnyEvent], bool] | None = None) -> dict[str, Any]:
    """A page's ``resolved_cursor`` and ``updates`` (serve's extension; those ``kept`` keeps) as the answer's fields,
    when it has them."""
    out: dict[str, Any] = {}
    if page.resolved_cursor is not None:
        out["resolved_cursor"] = page.resolved_cursor
    updates = [event_json(e) for e in page.updates if kept is None or kept(e)]
    if updates:
        out["updates"] = updates
    return out


def _loss_report(body: Any) -> tuple[str, list[tuple[int, str, int]]]:
    """An agent-losses body's node and rows, or a one-line :class:`BadRequest` (nothing of it is stored)."""
    if not isinstance(body, dict) or not isinstance(body.get("node"), str) or not isinstance(body.get("losses"), list):
        raise BadRequest('an agent-losses body is {"node": NAME, "losses": [[second, cause, n], ...]}')
    node, losses = body["node"], body["losses"]
    if not NODE_NAME.match(node):
        raise BadRequest(f"node must be a node name (letters, digits, '.', '-', '_'), got {clean(node, 60)!r}")
    if len(losses) > MAX_LOSS_ROWS:
        raise BadRequest(f"too many loss rows in one body: {len(losses)}, the limit is {MAX_LOSS_ROWS}")
    rows: list[tuple[int, str, int]] = []
    for i, row in enumerate(losses):
        ok = isinstance(row, list) and len(row) == 3
        second, cause, n = row if ok else (None, None, None)
        if not (ok and type(second) is int and 0 <= second <= MAX_LOSS_SECOND and type(n) is int
                and 0 <= n <= MAX_CURSOR and isinstance(cause, str) and cause in LOSS_CAUSES
                and cause != "agent_unforwarded"):  # fmt: skip
            raise BadRequest(f"loss row {i} is not [second, cause, n] (a second since the epoch, one of the causes "
                             f"server_status names, a count >= 0): {clean(json.dumps(row)[:80], 80)}")  # fmt: skip
        rows.append((second, cause, n))
    return node, rows


#: the latest second an agent's loss row may name (year 9999)
MAX_LOSS_SECOND = 253_402_300_799


def _node_param(params: Params) -> str | None:
    node = params.string("node") or params.string("k8s_node_name")
    if node is not None and not NODE_NAME.match(node):
        raise BadRequest(f"node must be a node name (letters, digits, '.', '-', '_'), got {clean(node, 60)!r}")
    return node


def _workload_param(params: Params) -> str | None:
    return params.string("workload")


class AggregatorApi(Api):
    """The aggregator's endpoints; build with :meth:`factory`."""

    def __init__(self, fleet: FleetStore, limits: IngestLimits, extra_paths: Sequence[str], metrics_top: int,
                 checker: IngestChecker | None = None) -> None:  # fmt: skip
        self.fleet = fleet
        self.checker = checker
        self._check_failed = False
        self.fleet_source = FleetSource(fleet)
        super().__init__(self.fleet_source, extra_paths, metrics_top)
        self.identity = {}  # every event carries its own node: the aggregator adds none
        self.limits = limits
        self._expected = limits.token.encode("utf-8") if limits.token else None
        self._buckets = _Buckets(limits.rate, max(limits.rate, float(limits.max_events)))
        self._started = time.monotonic()
        # Batches are checked and stored one at a time, in one thread: a thread per agent's body (different
        # nodes' stored in parallel, FleetStore) let SQLite's part of one overlap the Python of another, up to
        # 20 % more events a second in process with a core free, but in the fleet bench (the agents and the
        # dashboard on the second core) no more events a second for ~10 % more CPU; SQLite's part of a batch
        # still overlaps the event loop's reading of the next body. With a ``checker``, bodies are read and checked
        # in its processes (on other cores), and this thread only stores them (:mod:`netspy_tui.fleet.prep`).
        self._ingest_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netspy-ingest")

    @classmethod
    def factory(cls, fleet: FleetStore, limits: IngestLimits, checker: IngestChecker | None = None) -> Any:
        """What :func:`netspy_tui.serve.app.create_app` takes as ``api`` (``checker``: the processes that read and
        check ingest bodies; None: the ingest thread does)."""

        def build(source: TelemetrySource, extra_paths: list[str], metrics_top: int) -> AggregatorApi:
            return cls(fleet, limits, extra_paths, metrics_top, checker)

        return build

    # --- ingest --------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        if self._expected is None:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        matched = hmac.compare_digest(credentials.strip().encode("utf-8"), self._expected)
        return scheme.lower() == "bearer" and matched

    def _ingest_body(self, raw: bytes) -> IngestResult | Response:
        """In the ingest thread: read, bound, rate-limit, check and store one ingest body; the result, or the
        answer that refuses it (a body refused whole is not checked). Every event valid (the usual batch): read in
        one pass over the JSON; else the items as sent, each checked on its own."""
        try:
            items, wanted = read_body(raw)
        except BadBatch as exc:
            raise BadRequest(str(exc)) from None
        refused = self._refused(len(items), wanted)
        return refused or self.fleet.store_checked(check_batch(items))

    def _store(self, parsed: Parsed) -> IngestResult | Response:
        """In the ingest thread: bound, rate-limit and store a body a checking process read and checked."""
        refused = self._refused(parsed.count, parsed.wanted)
        if refused is not None:
            return refused
        checked = parsed.batch()
        assert checked is not None  # (the process checks every body up to the limit refused above)
        return self.fleet.store_checked(checked)

    def _refused(self, count: int, wanted: dict[str, int]) -> Response | None:
        """The answer that refuses a body of ``count`` events, ``wanted`` of them from each node, whole: more than a
        batch's limit (413), or more than a node's rate (429; taken from its bucket otherwise); None: neither."""
        if count > self.limits.max_events:
            return text_response(413, f"Too many events in one batch: {count}, the limit is "
                                 f"{self.limits.max_events}; send smaller batches")  # fmt: skip
        wait = self._buckets.take(wanted)
        if wait:
            seconds = math.ceil(wait)
            return text_response(429, f"Too many events: more than {self.limits.rate:g} events/s from one node; "
                                 f"retry in {seconds} s", {"Retry-After": str(seconds)})  # fmt: skip
        return None

    async def _checked(self, raw: bytes, checker: IngestChecker) -> Parsed:
        """``raw`` read and checked by ``checker``'s processes (by this one's ingest thread if they broke)."""
        loop = asyncio.get_running_loop()
        try:
            future = checker.submit(raw, self.limits.max_events)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                return await loop.run_in_executor(self._ingest_thread, checker.broke, raw, self.limits.max_events,
                                                  future)  # fmt: skip
            except BadBatch:
                raise
            except Exception as exc:  # noqa: BLE001 (a process that failed on this body: checked here, said once)
                if not self._check_failed:
                    self._check_failed = True
                    log.warning("ingest: a checking process failed on a body (%s); checked here", clean(str(exc), 200))
                return await loop.run_in_executor(self._ingest_thread, parse_and_check, raw, self.limits.max_events)
        except BadBatch as exc:
            raise BadRequest(str(exc)) from None

    async def ingest(self, request: Request) -> Response:
        if not self._authorized(request):
            return text_response(401, "Unauthorized: send the aggregator's ingest token as Authorization: Bearer "
                                 "<token> (--forward-token on the agent)",
                                 {"WWW-Authenticate": 'Bearer realm="netspy-tui-ingest"'})  # fmt: skip
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):  # (gzip and the rest were read as JSON: a misleading "Invalid JSON")
            return text_response(415, f"Unsupported Content-Encoding '{clean(encoding, 40)}': send the events "
                                 "uncompressed (no Content-Encoding, or identity)",
                                 {"Accept-Encoding": "identity"})  # fmt: skip
        raw = await request.body()
        # up to the body limit: not on the event loop (one hop to the ingest thread for all of it, or to a checking
        # process and then the ingest thread)
        loop = asyncio.get_running_loop()
        if self.checker is None:
            result = await loop.run_in_executor(self._ingest_thread, self._ingest_body, raw)
        else:
            parsed = await self._checked(raw, self.checker)
            result = await loop.run_in_executor(self._ingest_thread, self._store, parsed)
        if isinstance(result, Response):
            return result
        rejected = [{"index": i, "reason": why} for i, why in result.rejected[:MAX_REJECTED_SHOWN]]
        message = f"{result.accepted} events ingested"
        if result.updated:
            message += f", {result.updated} connects held in progress given their outcome"
        if result.duplicates:
            message += f", {result.duplicates} already received (not counted again)"
        if result.rejected:
            index, why = result.rejected[0]
            message += f", {len(result.rejected)} rejected (first: event {index}: {why})"
        return json_response({
            "success": not result.rejected,
            "events_processed": result.accepted + result.updated,
            "message": message,
            "timestamp": query_time(),
            "duplicates": result.duplicates,
            "updated": result.updated,
            "rejected_count": len(result.rejected),
            "rejected": rejected,
            "nodes": result.nodes,
        })  # fmt: skip

    async def agent_losses(self, request: Request) -> Response:
        """``POST /api/agent-losses``: what an agent saw and could not forward (its shed and lost events), by second
        and cause; answered ``{"success": true, "stored": N}`` or a one-line 400."""
        if not self._authorized(request):
            return text_response(401, "Unauthorized: send the aggregator's ingest token as Authorization: Bearer "
                                 "<token> (--forward-token on the agent)",
                                 {"WWW-Authenticate": 'Bearer realm="netspy-tui-ingest"'})  # fmt: skip
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise BadRequest('the body is not JSON: send {"node": NAME, "losses": [[second, cause, n], ...]}') from None
        node, rows = _loss_report(body)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._ingest_thread, self.fleet.put_agent_losses, node, rows)
        except OverflowError as exc:  # (more nodes than the aggregator keeps)
            return text_response(429, str(exc))
        except Exception as exc:  # noqa: BLE001 (a store that cannot be written now, a full disk: the agent retries)
            return text_response(503, f"the losses of node {node} could not be stored ({clean(str(exc), 160)}); "
                                 "retry later")  # fmt: skip
        return json_response({"success": True, "stored": len(rows)})

    # --- queries across nodes ------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        stats = self.fleet.stats()
        for key in ("aggregation_start", "last_event_time"):
            value = stats[key]  # (none yet: Go's zero time, as the Go aggregator writes it; "" failed RFC3339 parsers)
            stats[key] = format_time(value) if isinstance(value, datetime) else GO_ZERO_TIME
        return stats

    async def stats(self, request: Request) -> Response:
        return json_response({**self._stats(), "query_time": query_time()})

    async def root(self, request: Request) -> Response:
        return json_response({"service": "netspy-tui aggregator", "version": __version__,
                              "description": "eBPF Event Aggregator API (ebpf-server compatible) served by netspy-tui",
                              "endpoints": self.endpoints(AGGREGATOR_ENDPOINTS)})  # fmt: skip

    async def health(self, request: Request) -> Response:
        """Healthy, or degraded/unhealthy with why while a node's store cannot be written (every ingest of it
        answered 503): unhealthy is a 503 with the contract's error shape (strings only), so a probe fails."""
        status, detail, ever, unsent = await self.fleet_source.fleet_health()  # (with what the fleet's counts lack)
        uptime = _uptime(time.monotonic() - self._started)
        recent = {"agent_unforwarded": sum(unsent.values())} if unsent else {}
        if status == "unhealthy":
            return json_response({"status": status, "component": "aggregator", "uptime": uptime,
                                  "version": __version__, "detail": detail}, 503)  # fmt: skip
        stats = self._stats()
        nodes = len(stats["events_by_node"])
        payload = {
            "status": status,
            "component": "aggregator",
            "uptime": uptime,
            "version": __version__,
            "source": f"netspy-tui aggregator of {nodes} node{'' if nodes == 1 else 's'}",
            "nodes": nodes,
            "stats": stats,
            "store_failures": self.fleet.store_failures,
            "in_progress_forgotten": self.fleet.pending_forgotten,
            "events_lost": ever,
            "losses": {"agent_unforwarded": ever} if ever else {},
            "recent_losses": recent,
            "counts_exact": counts_exact(recent),
        }
        if self.checker is not None:  # (a checking process that died: no body lost, new ones started)
            payload["ingest_check_processes"] = 0 if self.checker.given_up else self.checker.workers
            payload["ingest_check_restarts"] = self.checker.restarts
        if detail:
            payload["detail"] = detail
        return json_response(payload)

    async def ready(self) -> bool:
        return self.fleet.health()[0] != "unhealthy"  # (what makes /health a 503)

    async def summary(self, request: Request, kind: EventKind) -> Response:
        params = await Params.read(request)
        pid = params.pid()
        command = params.command()
        duration = params.integer("duration_seconds", default=DEFAULT_SUMMARY_SECONDS, minimum=1,
                                  maximum=MAX_WINDOW_SECONDS)  # fmt: skip
        self.k8s_filters(params)
        scope = Scope(kind, pid, command, duration, _node_param(params), _workload_param(params))
        # the nodes with events in the scope (the contract's total_nodes), as the Go aggregator lists them
        by_node = {node: n for node, n in (await self.fleet_source.count_by_node(scope)).items() if n}
        return json_response({
            "count": sum(by_node.values()),
            "count_by_node": by_node,
            "total_nodes": len(by_node),
            "pid": pid or 0,
            "command": command or "",
            "duration_seconds": duration,
            "query_time": query_time(),
        })  # fmt: skip

    def narrowing(self, params: Params) -> dict[str, Any]:
        return {"node": _node_param(params), "workload": _workload_param(params)}

    def k8s_filters(self, params: Params) -> tuple[dict[str, str], bool]:
        """The nodes are :meth:`narrowing`'s; a pod or namespace (each event's agent's, not counted apart) filters
        ``/api/events`` only: refused here (the summaries and lists ignored it, counting every node's events)."""
        for name in ("k8s_pod_name", "k8s_namespace"):
            if params._raw(name) is not None:
                raise BadRequest(f"{name} filters /api/events only on this aggregator (each event's agent); the "
                                 "summaries and lists take node (one agent per node)")  # fmt: skip
        return {}, False

    def listing_extra(self, events: Sequence[AnyEvent]) -> dict[str, Any]:
        by_node: dict[str, int] = {}
        for event in events:
            node = event.k8s_node_name or ""
            by_node[node] = by_node.get(node, 0) + 1
        return {"events_by_node": by_node, "total_nodes": len(by_node)}

    async def events(self, request: Request) -> Response:
        params = await Params.read(request)
        kind = params.kind()
        pid = params.pid()
        command = params.command()
        narrow = self.narrowing(params)
        node, workload = narrow["node"], narrow["workload"]
        pod = params.string("k8s_pod_name")
        namespace = params.string("k8s_namespace")
        since, until = params.between()
        limit = params.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        # netspy-tui extension (as serve's): of one type, only events stored after ``after`` (a ``cursor`` an earlier
        # answer gave: the fleet's insertion position), whatever their times
        raw_after = params.integer("after", default=-1, minimum=0, maximum=MAX_CURSOR, zero_is_default=False)
        if raw_after >= 0 and kind is None:
            raise BadRequest("after needs type (a cursor is one type's): pass type=connection or type=packet_drop")
        after = None if raw_after < 0 else raw_after
        # and the connects stored by then given their outcome since ``resolved_after`` (a ``resolved_cursor``)
        raw_resolved = params.integer("resolved_after", default=-1, minimum=0, maximum=MAX_CURSOR,
                                      zero_is_default=False)  # fmt: skip
        if raw_resolved >= 0 and (after is None or kind != "connection"):
            raise BadRequest("resolved_after needs type=connection and after (it updates the connects listed up to it)")
        resolved_after = None if raw_resolved < 0 else raw_resolved
        filters: dict[str, Any] = {"type": kind, "pid": pid, "command": command, "node": node, "workload": workload,
                                   "k8s_pod_name": pod, "k8s_namespace": namespace,
                                   "since": format_time(since) if since else None,
                                   "until": format_time(until) if until else None}  # fmt: skip
        filters = {k: v for k, v in filters.items() if v is not None}
        filters["limit"] = limit
        if pod is None and namespace is None and workload is None:
            queries = [EventQuery(kind=k, pid=pid, command=command, since=since, until=until, limit=limit,
                                  node=node, after=after, resolved_after=resolved_after)
                       for k in ((kind,) if kind else ("connection", "packet_drop"))]  # fmt: skip
            return await asyncio.to_thread(self._stored_events, queries, limit, filters)
        # pod and namespace are the agents' own (one agent pod per node), kept in each event only: filtered on the
        # newest MAX_LIMIT events of each node read (a page of the whole fleet's newest hid a quiet node's pod behind
        # a busy node's events), and said when a node had more
        identity = pod is not None or namespace is not None
        events: list[AnyEvent] = []
        total = 0
        unread: list[str] = []  # the nodes whose newest MAX_LIMIT events did not hold all of the query's
        cursor: int | None = None
        positions: dict[str, Any] = {}

        def kept(e: AnyEvent) -> bool:
            return (pod is None or e.k8s_pod_name == pod) and (namespace is None or e.k8s_namespace == namespace)

        nodes: list[str | None] = [node]
        if identity and after is None:
            nodes = [*sorted(self.fleet.nodes())] if node is None else [node]
        for k in (kind,) if kind else ("connection", "packet_drop"):
            for one in nodes:
                q = EventQuery(kind=k, pid=pid, command=command, since=since, until=until,
                               limit=MAX_LIMIT if identity else limit, node=one, workload=workload, after=after,
                               resolved_after=resolved_after)  # fmt: skip
                page = await self.source.query(q)
                if kind and cursor is None:  # (any node's page has the fleet's positions)
                    cursor = page.cursor
                    positions = _resolutions(page, kept)
                hits = list(filter(kept, page.events)) if identity else page.events
                events.extend(hits)
                total += len(hits) if identity else page.total_count
                if identity and page.truncated and (one or "") not in unread:
                    unread.append(one or "")
        events.sort(key=lambda e: (e.time, e.timestamp), reverse=True)
        events = events[:limit]
        extra: dict[str, Any] = {}
        if unread:  # (netspy-tui's fields: the count is of the events read)
            extra = {"total_count_exact": False,
                     "note": f"k8s_pod_name and k8s_namespace filter the newest {MAX_LIMIT:,} events of each node: "
                             f"{', '.join(n or 'the fleet' for n in unread)} had more; narrow with since and until "
                             "for all of them"}  # fmt: skip
        return json_response({"events": [event_json(e) for e in events], "count": len(events),
                              "total_count": max(total, len(events)), "query_time": query_time(),
                              "filters": filters, **({} if cursor is None else {"cursor": cursor}),
                              **positions, **extra})  # fmt: skip

    def _stored_events(self, queries: list[EventQuery], limit: int, filters: dict[str, Any]) -> Response:
        """``/api/events`` without a pod, namespace or workload filter: the nodes' pages merged as stored and
        the newest ``limit`` written out as the contract's JSON without a model each (what
        :func:`~netspy_tui.serve.forward.encode_events` makes of stored JSON is what :func:`event_json`
        makes of the event). The dashboard over HTTP asks this for 10,000 events of each kind a poll."""
        items: list[tuple[int, int, int, int, Any]] = []
        total = 0
        cursor: dict[str, Any] = {}
        for n, q in enumerate(queries):
            page, stored = self.fleet_source.query_stored(q)
            total += page.total_count
            items.extend((-t, -ts, n, i, item) for i, (t, ts, item) in enumerate(stored))
            if len(queries) == 1 and page.cursor is not None:  # (of one type: serve's cursor extension)
                cursor["cursor"] = page.cursor
            if len(queries) == 1:
                cursor.update(_resolutions(page))
        if len(queries) > 1:  # newest first (ties: connections first, then as each page has them; one page is so)
            items.sort(key=lambda k: k[:4])
        kept = [k[4] for k in items[:limit]]
        rest = dumps({"count": len(kept), "total_count": max(total, len(kept)), "query_time": query_time(),
                      "filters": filters, **cursor})  # fmt: skip
        body = b'{"events":' + encode_events(kept, {}) + b"," + rest[1:]
        return Response(body, media_type="application/json")

    def routes(self) -> list[BaseRoute]:
        return [
            *super().routes(),
            Route(INGEST_PATH, _guarded(self.ingest), methods=["POST"]),
            Route(AGENT_LOSSES_PATH, _guarded(self.agent_losses), methods=["POST"]),
            Route("/api/stats", _guarded(self.stats), methods=["GET"]),
        ]
