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
    def __init__(self, token: str | None = None, max_events: int = 5000) -> None:
        self.token = token
        self.max_events = max_events
        self.too_large = 0  # batches refused with 413
        self.events: list[dict[str, Any]] = []
        self.batches = 0
        self.refused = 0
        self.down = False  # answer 503 (the aggregator is up but cannot take events)
        self.port = 0
        self._lock = threading.Lock()
        self._server: BackgroundServer | None = None

    def app(self) -> Starlette:
        async def ingest(request: Request) -> Response:
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                return PlainTextResponse("unauthorized", status_code=401)
            if self.down:
                with self._lock:
                    self.refused += 1
                return PlainTextResponse("storage unavailable", status_code=503)
            body = await request.json()
            events = body["events"]
            if len(events) > self.max_events:
                with self._lock:
                    self.too_large += 1
                return PlainTextResponse(f"Too many events in one batch: {len(events)}", status_code=413)
            with self._lock:
                self.events.extend(events)
                self.batches += 1
            return JSONResponse({"success": True, "events_processed": len(events), "message": "ok",
                                 "timestamp": datetime.now(UTC).isoformat()})  # fmt: skip

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

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def __enter__(self) -> FakeAggregator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
