"""File export of what the dashboard shows: headless, no Textual.

The dashboard gathers an :class:`ExportRequest` (the rows on screen and what narrowed them) and
hands it to :func:`export_async`, which writes on a worker thread so the UI never waits for the
disk. Files follow the :mod:`netspy_tui.safefs` rules: the directory is created ``0700``, each file
is created exclusively (a name someone planted, a link included, is skipped, never followed) with
mode ``0600``, and every string is inert (no raw control or bidi characters; CSV cells that a
spreadsheet would run as a formula are quoted).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel

from netspy_tui import safefs
from netspy_tui.analysis.describe import destination_text
from netspy_tui.models import (
    ConnectionEvent,
    LatencyGroup,
    PacketDropEvent,
    ProcessStat,
    TrafficFlow,
    TrafficProcess,
    TrafficRemote,
)
from netspy_tui.textsafe import clean, inert_json

Format = Literal["json", "csv"]
View = Literal["connections", "drops", "traffic", "processes"]
"""(``processes``: the process table, which ``E`` exports when it has the focus)"""
FORMATS: tuple[str, ...] = ("json", "csv")
#: The Traffic view's lists and the model of their rows (a CSV has the model's fields as columns).
TRAFFIC_ROWS: dict[str, type[BaseModel]] = {
    "processes": TrafficProcess,
    "connections": TrafficFlow,
    "remotes": TrafficRemote,
    "latency": LatencyGroup,
}


def default_export_dir() -> Path:
    """Where exports go without ``export_dir`` / ``NETSPY_EXPORT_DIR``: the per-user state directory
    (``~/.local/state/netspy-tui/exports``, created 0700), never the working directory."""
    from netspy_tui.config import state_dir

    return state_dir() / "exports"


def export_dir(configured: Path | None) -> Path:
    """The absolute export directory: ``configured`` or :func:`default_export_dir`."""
    return Path(os.path.abspath(configured or default_export_dir()))


@dataclass(frozen=True)
class ExportRequest:
    """What to write: the rows as shown and what narrowed them (for the JSON header)."""

    view: View
    exported_at: datetime
    window_seconds: int
    connections: Sequence[ConnectionEvent]
    drops: Sequence[PacketDropEvent]
    processes: Sequence[ProcessStat] = ()
    source: str | None = None
    filter: str | None = None
    focus: dict[str, Any] | None = None
    patterns: dict[str, Any] | None = None
    drop_patterns: dict[str, Any] | None = None
    traffic_list: str | None = None
    """The Traffic view's list shown (a key of :data:`TRAFFIC_ROWS`), with its rows as shown."""
    traffic_rows: Sequence[BaseModel] = ()
    traffic: dict[str, Any] | None = None
    """The poll's ``get_traffic`` and ``get_connect_latency`` results (while the Traffic view is shown)."""
    connect_latency: dict[str, Any] | None = None
    process_rates: dict[str, TrafficProcess] | None = None
    """The process table's Rx/s and Tx/s by process (None: not read this poll, the cells blank)."""

    @property
    def rows(self) -> int:
        """Rows of the current view (what the notification counts)."""
        if self.view == "traffic":
            return len(self.traffic_rows)
        if self.view == "processes":
            return len(self.processes)
        return len(self.drops) if self.view == "drops" else len(self.connections)

    @property
    def name(self) -> str:
        """What the file is named after: the view (and the Traffic view's list)."""
        return f"traffic-{self.traffic_list}" if self.view == "traffic" and self.traffic_list else self.view


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int


def csv_safe(value: object) -> str:
    """Cleaned text that a spreadsheet will not run as a formula."""
    text = clean(value, None)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def write_json(fh: IO[str], req: ExportRequest) -> None:
    data = {
        "exported_at": req.exported_at.isoformat(),
        "source": req.source,
        "view": req.view,
        "window_seconds": req.window_seconds,
        "filter": req.filter,
        "focus": req.focus,
        "connections": [e.model_dump(mode="json") for e in req.connections],
        "packet_drops": [e.model_dump(mode="json") for e in req.drops],
        "processes": [p.model_dump(mode="json") for p in req.processes],
        "patterns": req.patterns,
        "drop_patterns": req.drop_patterns,
        "traffic_list": req.traffic_list,
        "traffic_rows": [r.model_dump(mode="json") for r in req.traffic_rows],
        "traffic": req.traffic,
        "connect_latency": req.connect_latency,
    }
    # the same inert writer as every other output: no raw bidi or C1 controls in the file
    fh.write(inert_json(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")


def _csv_value(value: Any) -> object:
    if isinstance(value, list):
        return csv_safe(" ".join(str(v) for v in value))
    if isinstance(value, dict):
        return csv_safe(" ".join(f"{k}={v}" for k, v in value.items()))
    if isinstance(value, datetime):
        return value.isoformat()
    return csv_safe(value) if isinstance(value, str) else value


def write_csv(fh: IO[str], req: ExportRequest) -> None:
    """The current view's table (connections, drops, or the Traffic view's list with its model's fields), or the
    process table."""
    writer = csv.writer(fh)
    if req.view == "processes":
        writer.writerow(["process", "pids", "attempts", "destinations", "failures", "first_seen", "last_seen",
                         "workloads", "nodes", "rx_rate", "tx_rate"])  # fmt: skip
        rates = req.process_rates
        for p in req.processes:
            rate = rates.get(p.command) if rates is not None else None
            writer.writerow(
                [csv_safe(p.command), _csv_value(p.pids), p.attempts, p.distinct_destinations, p.failures,
                 p.first_seen.isoformat(), p.last_seen.isoformat(), _csv_value(p.workloads), _csv_value(p.nodes),
                 "" if rates is None else rate.rx_rate if rate else 0.0,
                 "" if rates is None else rate.tx_rate if rate else 0.0]
            )  # fmt: skip
        return
    if req.view == "traffic":
        fields = list(TRAFFIC_ROWS[req.traffic_list or "processes"].model_fields)
        writer.writerow(fields)
        for row in req.traffic_rows:
            writer.writerow([_csv_value(getattr(row, f)) for f in fields])
        return
    if req.view == "drops":
        writer.writerow(["time", "pid", "process", "reason", "reason_code", "bytes", "destination", "id"])
        for d in req.drops:
            writer.writerow(
                [
                    d.time.isoformat(),
                    d.pid,
                    csv_safe(d.command),
                    csv_safe(d.drop_reason),
                    d.drop_reason_code,
                    d.packet_size_bytes,
                    csv_safe(d.destination or ""),
                    csv_safe(d.id),
                ]
            )
        return
    writer.writerow(
        ["time", "pid", "process", "destination", "protocol", "protocol_inferred", "outcome", "return_code",
         "hostname", "workload", "id", "direction", "peer"]
    )  # fmt: skip
    for c in req.connections:
        writer.writerow(
            [
                c.time.isoformat(),
                c.pid,
                csv_safe(c.command),
                csv_safe(destination_text(c)),
                csv_safe(c.protocol),
                bool(c.protocol_inferred),
                csv_safe(c.effective_outcome),
                c.return_code,
                csv_safe(c.hostname or ""),
                csv_safe(c.workload or ""),
                csv_safe(c.id),
                c.direction,
                csv_safe(f"{c.peer_ip}:{c.peer_port}" if c.peer_ip else ""),
            ]
        )


_EXPORT_HINT = "set export_dir (NETSPY_EXPORT_DIR) to a directory of root's or yours"


def export(req: ExportRequest, fmt: Format, directory: Path) -> ExportResult:
    """Write ``req`` as ``fmt`` to a fresh file ``netspy-<view>-<stamp>[-N].<fmt>`` in ``directory``
    (blocking; raises OSError, and :class:`~netspy_tui.safefs.UnsafePath` for a directory it refuses)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    write = write_json if fmt == "json" else write_csv
    path = _create(directory, f"netspy-{req.name}-{stamp_of(req.exported_at)}", f".{fmt}", lambda fh: write(fh, req))
    return ExportResult(path, req.rows)


def stamp_of(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def _create(directory: Path, stem: str, suffix: str, write: Callable[[IO[str]], object]) -> Path:
    """A fresh private file ``stem[-N]suffix`` in ``directory`` (created 0700 if missing), filled by ``write``;
    :class:`~netspy_tui.safefs.UnsafePath` (nothing written) when the way there goes through another user's
    link or directory (root keeping a user's ``HOME``)."""
    directory = Path(os.path.abspath(directory))
    safefs.make_private_dirs(directory, "the export directory", _EXPORT_HINT)
    path, fd = safefs.create_unique(directory, stem, suffix)
    try:
        with safefs.open_text(fd) as fh:
            write(fh)
    except BaseException:  # (a full disk: no cut-off file left under an export's name)
        with contextlib.suppress(OSError):
            os.unlink(path)  # (ours: made by create_unique in a directory only we can write)
        raise
    return path


def save_text(directory: Path, stem: str, suffix: str, text: str) -> Path:
    """Write ``text`` (e.g. a screenshot's SVG) to a fresh private file in ``directory``; raises as :func:`export`."""
    return _create(directory, stem, suffix, lambda fh: fh.write(text))


async def save_text_async(directory: Path, stem: str, suffix: str, text: str) -> Path:
    """:func:`save_text` on a worker thread."""
    return await asyncio.to_thread(save_text, directory, stem, suffix, text)


async def export_async(req: ExportRequest, fmt: Format, directory: Path) -> ExportResult:
    """:func:`export` on a worker thread (the event loop keeps drawing while the disk works)."""
    return await asyncio.to_thread(export, req, fmt, directory)
