"""Choosing and opening the telemetry source every front end reads from.

* ``--replay FILE``, ``--record FILE`` or ``--db FILE``: the embedded collector (a server cannot be replayed or
  recorded, nor keep that store); a one-shot ``--tool`` with ``--db`` alone reads the history in it.
* ``--server URL`` (or ``NETSPY_SERVER``): that eBPF server over HTTP, whatever state it is in.
* otherwise, if an eBPF server answers at ``http://localhost:8080`` (its ``/health`` the contract's object,
  :func:`~netspy_tui.telemetry.client.probe`): that server.
* otherwise long-running front ends (dashboard, REPL, MCP server, ``serve``) start the embedded
  collector in-process; a one-shot ``--tool`` explains how to get data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

from netspy_tui.config import DEFAULT_SERVER, Settings
from netspy_tui.errors import NoData
from netspy_tui.telemetry.client import HttpSource, probe
from netspy_tui.telemetry.source import TelemetrySource

if TYPE_CHECKING:
    from netspy_tui.telemetry.embedded import EmbeddedSource

log = logging.getLogger(__name__)

Mode = Literal["oneshot", "live", "serve"]


def http_source(settings: Settings, url: str) -> HttpSource:
    return HttpSource(
        url,
        connect_timeout=min(3.0, settings.timeout),
        read_timeout=settings.timeout,
        retries=settings.retries,
        token=settings.token.get_secret_value() if settings.token else None,
    )


@asynccontextmanager
async def open_source(settings: Settings, mode: Mode) -> AsyncIterator[TelemetrySource]:
    """Open the source for ``mode`` and close it (and any collector) on exit."""
    # (the command line resolved a server given with --replay/--record: see cli._server_or_collector)
    # (and --db: a store named is read or kept by netspy-tui itself, not by whatever answers at localhost:8080)
    wants_embedded = settings.replay is not None or settings.record is not None or settings.db is not None
    wants_embedded = wants_embedded or (settings.server is None and settings.collector != "auto")
    if mode != "serve" and not wants_embedded:
        url = settings.server
        if url is None and await probe(DEFAULT_SERVER):
            url = DEFAULT_SERVER
            log.info("an eBPF server answers at %s; using it", url)
        if url is not None:
            source: TelemetrySource = http_source(settings, url)
            try:
                yield source
            finally:
                await source.aclose()
            return
    if mode == "oneshot" and settings.replay is None:
        if settings.db is None:
            raise NoData(
                f"No eBPF server answers at {settings.server or DEFAULT_SERVER}, and a one-shot --tool "
                "has not seen the past",
                "start `netspy-tui serve` (as root) and retry, pass --db FILE with recorded history, "
                "or open the live dashboard with `netspy-tui`",
            )
        async with _history_source(settings) as source:
            yield source
        return
    async with _embedded_source(settings, oneshot=mode == "oneshot") as source:
        from netspy_tui.collector.replay import ReplayCollector

        replay = source.collector
        if mode == "oneshot" and isinstance(replay, ReplayCollector) and replay.speed == 0:
            await asyncio.to_thread(replay.wait)  # (one answer over the whole recording)
        yield source
        if source.recorder is not None and source.recorder.error is not None:
            raise source.recorder.error  # (a command whose recording failed did not do what it was asked)


@asynccontextmanager
async def _embedded_source(settings: Settings, *, oneshot: bool = False) -> AsyncIterator[EmbeddedSource]:
    from netspy_tui.telemetry.embedded import open_embedded

    async with open_embedded(settings, oneshot=oneshot) as source:
        yield source


@asynccontextmanager
async def _history_source(settings: Settings) -> AsyncIterator[TelemetrySource]:
    from netspy_tui.telemetry.embedded import open_history

    async with open_history(settings) as source:
        yield source
