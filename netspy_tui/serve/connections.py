"""Connection limits for ``serve`` and ``mcp --http``: request and idle timeouts and a connection cap.

uvicorn (h11) closes a connection idle *between* requests after ``timeout_keep_alive``, but has no
limit on how long a client may take to send a request: a fresh connection that sends nothing, or
headers trickled a byte at a time (slowloris), stays open for ever, and ``limit_concurrency`` only
answers 503 once a request is complete. :class:`GuardedH11Protocol` adds what is missing (the
values are in :mod:`netspy_tui.httplimits`, which ``--help`` quotes):

* ``REQUEST_TIMEOUT``: from the moment a connection is accepted, or the first byte of the next
  request on a kept-alive connection, the whole request (headers and body) must arrive within this
  many seconds, else the connection is closed;
* ``KEEP_ALIVE_TIMEOUT``: an idle kept-alive connection is closed after this many seconds;
* ``MAX_CONNECTIONS``: a connection beyond this many open ones is answered ``503`` and closed
  at once;
* ``MAX_HEADER_BYTES``: a request head still unfinished after this many bytes is a ``400`` (h11's
  limit on what it buffers; a complete head that arrives at once may be somewhat larger).

Responses that take long (an MCP event stream) are not limited: only receiving the request is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from netspy_tui.httplimits import MAX_CONNECTIONS, REQUEST_TIMEOUT

logger = logging.getLogger(__name__)

#: h11 states in which the client still owes us (part of) a request.
_RECEIVING = (h11.IDLE, h11.SEND_BODY)
#: At most one log line per this many seconds about refused connections.
_LOG_EVERY = 10.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request timeout and a connection cap (see the module doc)."""

    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    _refused = 0
    _logged_at = -_LOG_EVERY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, request_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
        """A subclass with these limits (uvicorn takes a protocol class)."""
        return type(cls.__name__, (cls,), {"request_timeout": request_timeout, "max_connections": max_connections})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse()
            return
        self._watch_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        self._cancel_request_timer()  # uvicorn's keep-alive timer runs until the next request's first byte
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def _refuse(self) -> None:
        cls = type(self)
        cls._refused += 1
        now = time.monotonic()
        if now - cls._logged_at >= _LOG_EVERY:
            cls._logged_at = now
            logger.warning(
                "refused connections beyond the limit of %d open ones (%d so far)", self.max_connections, cls._refused
            )
        body = f"Service Unavailable: too many connections (the limit is {self.max_connections})\n".encode()
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def _watch_request(self) -> None:
        """Arm the request timer while the client owes a request; disarm it once the request is in."""
        if self.transport.is_closing() or self.conn.their_state not in _RECEIVING:
            self._cancel_request_timer()
        elif self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self.conn.their_state not in _RECEIVING:
            return
        client = f"{self.client[0]}:{self.client[1]} " if self.client else ""
        logger.info(
            "closing the connection from %sthat sent no complete request within %g s", client, self.request_timeout
        )
        self.transport.close()
