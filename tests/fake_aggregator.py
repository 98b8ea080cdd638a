"""An ebpf-server aggregator's ingest endpoint on 127.0.0.1 (real HTTP, uvicorn in a thread): it
records every event it accepts, checks the bearer token, refuses batches of more than ``max_events``
(413, as ``serve --aggregate`` does), and can be told to refuse (503) or be stopped and started again on
the same port, like an aggregator that restarts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from netspy_tui.serve import BackgroundServer


class FakeAggregator:
    def __init__(self, token: str | None = None, max_events: int = 5000, refuse_ports: frozenset[int] = frozenset(),
                 answer: str = "netspy") -> None:  # fmt: skip
        self.token = token
        self.max_events = max_events
        #: events to these destination ports are refused one by one (the rest of their batch kept), answered as
        #: ``serve --aggregate`` does (``answer="netspy"``: ``rejected_count`` and reasons) or as the contract's
        #: ``IngestResponse`` only says (``"contract"``: ``success`` false, fewer ``events_processed``);
        #: ``"updates"``: as ``"netspy"``, with ``updated`` (it takes a connect's outcome sent after it);
        #: ``"list-only"``: the refused listed in ``rejected`` without ``rejected_count``; ``"not-json"``: every post
        #: answered 200 with a body that is no ingest answer (and nothing kept)
        self.refuse_ports = refuse_ports
        self.answer = answer
        self.too_large = 0  # batches refused with 413
        self.events: list[dict[str, Any]] = []
        self.batches = 0
        self.raw: list[bytes] = []  # each accepted batch's body as it came
        self.refused = 0
        self.down = False  # answer 503 (the aggregator is up but cannot take events)
        self.misrouted = 0  # when set, every post is answered this status (a 421, 404 of a proxy in front), counted
        self.misrouted_posts = 0
        self.port = 0
        self._lock = threading.Lock()
        self._server: BackgroundServer | None = None

    def app(self) -> Starlette:
        async def ingest(request: Request) -> Response:
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                return PlainTextResponse("unauthorized", status_code=401)
            if self.misrouted:
                with self._lock:
                    self.misrouted_posts += 1
                return PlainTextResponse("Misdirected Request", status_code=self.misrouted)
            if self.down:
                with self._lock:
                    self.refused += 1
                return PlainTextResponse("storage unavailable", status_code=503)
            raw = await request.body()
            if self.answer == "not-json":  # (a proxy's or another server's 200 page: nothing stored)
                return PlainTextResponse("not json", status_code=200)
            body = await request.json()
            events = body["events"]
            if len(events) > self.max_events:
                with self._lock:
                    self.too_large += 1
                return PlainTextResponse(f"Too many events in one batch: {len(events)}", status_code=413)
            refused = [i for i, e in enumerate(events) if e.get("destination_port") in self.refuse_ports]
            with self._lock:
                self.events.extend(e for i, e in enumerate(events) if i not in refused)
                self.batches += 1
                self.raw.append(raw)
            answer: dict[str, Any] = {"success": not refused, "events_processed": len(events) - len(refused),
                                      "message": "ok", "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
            if self.answer == "updates":
                answer["updated"] = 0  # (a test counts what was sent; the store it would update is not kept)
            if refused and self.answer == "list-only":  # (the refused listed, without their count)
                answer["success"] = True
                answer["rejected"] = [{"index": i, "reason": "destination_port: refused by the test"} for i in refused]
            if refused and self.answer in ("netspy", "updates"):
                answer["rejected_count"] = len(refused)
                answer["rejected"] = [{"index": i, "reason": "destination_port: refused by the test"} for i in refused]
            return JSONResponse(answer)

        return Starlette(routes=[Route("/api/events/ingest", ingest, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAggregator:
        self._server = BackgroundServer(self.app(), port=self.port).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def bodies(self) -> list[bytes]:
        with self._lock:
            return list(self.raw)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def __enter__(self) -> FakeAggregator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
