"""Replaying a JSON-lines recording, and recording any live source to one.

A recording holds one contract-shaped event per line (exactly what ``/api/events`` returns per
event, extension fields included); ``--record FILE`` writes one with :class:`Recorder`.

:class:`ReplayCollector` checks the whole file before it starts (a bad line is a one-line error
naming the file, the line number and what is wrong), then plays the events back on its own thread
at the original pace times ``speed`` (0: as fast as possible). With ``rebase`` every time is moved
by one offset of whole seconds so that the newest event lands within the second before the replay
finishes: window queries then show the data, and the spacing between events is kept. The same file always gives the same
events, apart from that one offset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from netspy_tui import safefs
from netspy_tui.collector.base import Batch, Collector, Sink
from netspy_tui.errors import CollectorError, NetspyError
from netspy_tui.models import (
    ConnectionEvent,
    PacketDropEvent,
    describe_validation_error,
    int_problem,
    new_event_id,
    parse_event,
    time_range_problem,
    utcnow,
)

logger = logging.getLogger(__name__)

AnyEvent = ConnectionEvent | PacketDropEvent

#: Events handed to the sink at once when replaying as fast as possible.
FAST_BATCH = 2000
#: Events due within this many seconds of each other go to the sink together, once the last of them is
#: due (a store write per half second of events, not per event, when a recording plays at its own pace:
#: at 100 events/s the replay thread spent 2.6 % of a core with a write per 50 ms, 0.9 % with one per
#: quarter second). A write's cost is mostly fixed (the commit, the rollups' arrays: ~2.5 ms of CPU in a
#: dashboard's process for 25 events or 50), so half as many took ~3 ms a second off a dashboard replaying
#: 100 events/s (7.7 -> 4.7 ms/s of store writes). The dashboard refreshes once a second, so what it shows
#: is at most a quarter second staler than with a write per quarter second.
BATCH_SLACK = 0.5
#: The longest line a recording may hold: an event is well under 4 KiB, but extension fields may be
#: large; what is read at once (and so memory) stays bounded by this.
MAX_LINE_BYTES = 8 << 20


class ReplayFileError(CollectorError):
    """A recording cannot be read, holds a malformed line or no event: a bad value, exit 2."""

    exit_code = 2


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _line_error(path: Path, lineno: int, what: str) -> ReplayFileError:
    what = " ".join(what.split())
    return ReplayFileError(
        f"{path}:{lineno}: {what}",
        "each line of a recording must be one event object as the eBPF server sends it "
        "(netspy-tui --record FILE writes such files)",
    )


def _open_error(path: Path, exc: OSError) -> ReplayFileError:
    return ReplayFileError(
        f"cannot read recording {path}: {exc.strerror or exc}", "check the file name and permissions"
    )


def _open_recording(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file; a FIFO, device, socket or directory is a
    one-line error at once (opening never waits for a FIFO's writer)."""
    try:
        fd = safefs.open_regular_for_reading(path)
    except safefs.NotRegularFile as exc:
        raise ReplayFileError(
            f"cannot read recording {path}: it is {exc.kind}, not a regular file",
            "a recording must be a regular file: copy it to one first (netspy-tui --record FILE writes them)",
        ) from None
    except OSError as exc:
        raise _open_error(path, exc) from exc
    return os.fdopen(fd, "rb")


def _parse_line(raw: bytes) -> tuple[Any, str]:
    """A line's JSON value, or what is wrong with it."""
    try:
        return json.loads(raw), ""
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"bad JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "bad JSON (nested too deeply to be an event)"
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        return None, f"bad JSON ({str(exc).splitlines()[0][:80]})"


def iter_recording(path: Path, cut: list[int] | None = None) -> Generator[tuple[int, AnyEvent], None, None]:
    """(line number, event) for every non-blank line; raises :class:`ReplayFileError` on a bad line.

    A last line without its line end that is not JSON was cut short as it was written (the recorder
    killed, the disk full): it is skipped, and its number appended to ``cut``. A bad line anywhere else
    is an error. Memory stays bounded whatever the file holds: a line longer than :data:`MAX_LINE_BYTES`
    (e.g. ``/dev/zero``'s or a sparse file's NULs) is an error as soon as that much was read.
    """
    handle = _open_recording(path)
    with handle:
        lineno = 0
        while True:
            try:
                raw = handle.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise _open_error(path, exc) from exc
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise _line_error(
                    path,
                    lineno + 1,
                    f"longer than {MAX_LINE_BYTES >> 20} MiB with no line end (not a recording of events)",
                )
            lineno += 1
            if not raw.strip():
                continue
            data, problem = _parse_line(raw)
            if problem:
                if not raw.endswith(b"\n"):  # (readline returns a line without its end only at the end of the file)
                    if cut is not None:
                        cut.append(lineno)
                    return
                raise _line_error(path, lineno, problem)
            if not isinstance(data, dict):
                raise _line_error(path, lineno, f"expected an event object, got {type(data).__name__}")
            if "time" not in data:
                raise _line_error(path, lineno, "time: missing (every event needs its wall-clock time)")
            try:
                event = parse_event(data)
            except ValidationError as exc:
                raise _line_error(path, lineno, describe_validation_error(exc)) from None
            out_of_range = time_range_problem(event.time)
            if out_of_range:  # (the store could not hold it: its whole batch would be lost)
                raise _line_error(path, lineno, f"time {out_of_range}, not {data['time']!r}")
            for name in ("pid", "timestamp", "destination_port"):  # (SQLite's integers: beyond them the store
                value = getattr(event, name, 0)  # dropped the event, "malformed", and the command exited 0)
                if not _INT64_MIN <= value <= _INT64_MAX:
                    raise _line_error(path, lineno, f"{name}: {value} does not fit in 64 bits")
            beyond = int_problem(event)  # (what no kernel makes: as an aggregator refuses it; an outcome or a name a
            if beyond:  # newer version may write is shown as it is, as the HTTP client shows it)
                raise _line_error(path, lineno, beyond)
            yield lineno, event


def check_start(path: str | Path) -> None:
    """Fail fast (before anything slow starts) if ``path`` is not a regular file, its first line is not
    an event or it holds none (a replay of nothing shows nothing: a wrong name or a failed recording);
    the whole file is checked again when the replay starts."""
    events = iter_recording(Path(path))
    try:
        if next(events, None) is None:
            raise ReplayFileError(f"recording {path} holds no events: there is nothing to replay",
                                  "check the file name (netspy-tui --record FILE writes recordings)")  # fmt: skip
    finally:
        events.close()


@dataclass(frozen=True)
class RecordingSummary:
    """What a full pass over a recording found."""

    events: int
    first_time: datetime | None
    newest_time: datetime | None
    cut_line: int | None = None
    """The number of a last line cut short as it was written (skipped), if there is one."""

    @property
    def cut_note(self) -> str:
        """One line about the cut last line, or ''."""
        if self.cut_line is None:
            return ""
        return f"line {self.cut_line}, the last, is cut short (the recording was interrupted): 1 event skipped"


def check_recording(path: str | Path) -> RecordingSummary:
    """Read every line of ``path``; raise :class:`ReplayFileError` on the first bad one."""
    path = Path(path)
    count = 0
    first: datetime | None = None
    newest: datetime | None = None
    cut: list[int] = []
    for _, event in iter_recording(path, cut):
        count += 1
        if first is None:
            first = event.time
        if newest is None or event.time > newest:
            newest = event.time
    return RecordingSummary(count, first, newest, cut[0] if cut else None)


class ReplayCollector(Collector):
    """Events from a JSON-lines recording, replayed at ``speed`` times their original pace."""

    name = "replay"
    sampled = False

    def __init__(self, path: str | Path, speed: float = 1.0, rebase: bool = True) -> None:
        super().__init__()
        if not speed >= 0:  # also refuses NaN
            raise CollectorError(f"replay speed {speed} is not a number >= 0", "use 1 for real time, 0 for instant")
        self.path = Path(path)
        self.speed = float(speed)
        self.rebase = rebase
        self.label = f"replay of {self.path}"
        self.summary: RecordingSummary | None = None
        self.notes: list[str] = []
        """What the replay skipped, one line each (server_status shows them)."""
        self.offset = timedelta(0)
        """How far every event time was moved (zero without ``rebase``)."""
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._stop.set()  # not running until start()

    @property
    def finished(self) -> bool:
        """True once every event of the file went to the sink (or replay stopped)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the replay is finished; False on timeout."""
        return self._done.wait(timeout)

    def start(self, sink: Sink) -> None:
        if self._thread is not None:
            raise CollectorError("this replay was already started", "create a new ReplayCollector to replay again")
        self.summary = check_recording(self.path)
        if self.summary.events == 0:
            logger.warning("recording %s holds no events", self.path)
        if self.summary.cut_note:
            self.notes.append(f"recording {self.path}: {self.summary.cut_note}")
            logger.warning("recording %s: %s", self.path, self.summary.cut_note)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sink,), name="netspy-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._done.set()

    def _run(self, sink: Sink) -> None:
        try:
            self._replay(sink)
        except NetspyError as exc:  # the file changed under us since start() checked it
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            logger.error("replay stopped: %s", exc)
        except Exception as exc:  # pragma: no cover - never let the thread die silently
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("replay failed")
        finally:
            self._done.set()

    def _replay(self, sink: Sink) -> None:
        summary = self.summary
        assert summary is not None
        if summary.first_time is None or summary.newest_time is None:
            return
        t0 = summary.first_time
        duration = 0.0 if self.speed == 0 else max(0.0, (summary.newest_time - t0).total_seconds()) / self.speed
        started = time.monotonic()
        if self.rebase:
            # the newest event lands within the second before the replay finishes; the shift is whole
            # seconds, so every event keeps its place in its second (windows are whole seconds)
            shift = utcnow() + timedelta(seconds=duration) - summary.newest_time
            self.offset = timedelta(seconds=math.floor(shift.total_seconds()))
            if abs(self.offset) >= timedelta(seconds=1):  # (said where users look: server_status's notes)
                self.notes.append(
                    f"replay of {self.path}: every time moved {abs(self.offset)} "
                    f"{'later' if self.offset > timedelta(0) else 'earlier'}, so its newest event lands now "
                    "(--replay-times recorded keeps the recording's own times)"
                )
        batch: list[AnyEvent] = []
        batch_due = 0.0
        due = 0.0
        for _, event in iter_recording(self.path):
            if self._stop.is_set():
                return
            if self.speed > 0:
                due = max(due, (event.time - t0).total_seconds() / self.speed)
                if batch and due - batch_due > BATCH_SLACK:
                    self.deliver(sink, batch)
                    batch = []
                if not batch:  # (no event goes to the sink before its time: wait for the batch's last)
                    batch_due = due
                    delay = started + due + BATCH_SLACK - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
            update: dict[str, object] = {"source": self.name}
            if self.offset:
                update["time"] = event.time + self.offset
            batch.append(event.model_copy(update=update))
            if self.speed == 0 and len(batch) >= FAST_BATCH:
                self.deliver(sink, batch)
                batch = []
        self.deliver(sink, batch)


def _json_line(event: AnyEvent) -> str:
    try:
        return event.model_dump_json() + "\n"
    except PydanticSerializationError:
        # Text that is not valid Unicode (undecodable bytes from the kernel): the json module
        # escapes it, and the replay's json.loads reads it back unchanged.
        return json.dumps(event.model_dump(mode="json"), separators=(",", ":")) + "\n"


class Recorder:
    """A sink that writes every event as one JSON line to ``path``, then forwards the batch.

    Each batch is written straight to the file. If writing fails (disk full, ...), recording stops
    with one logged error and :attr:`error` set, while events keep flowing to the inner sink; a line
    the failure cut is taken back, so the file holds :attr:`written` whole events and replays.
    """

    def __init__(self, sink: Sink, path: str | Path, *, append: bool = False, log_failure: bool = True) -> None:
        self.path = Path(path)
        self.log_failure = log_failure
        """Log a failure when it happens (a session runs on: the log says it then); a one-shot says it once, as
        its one line at exit (:attr:`error`)."""
        self._sink = sink
        self._lock = threading.Lock()
        self.written = 0
        self.error: NetspyError | None = None
        hint = "choose a new file name for --record (an existing file or link is never overwritten)"
        try:
            # never through a link; a new file is created exclusively, 0600
            if append:
                fd = safefs.open_append(self.path, "the recording", hint)
            else:
                fd = safefs.create_exclusive(self.path, "the recording", hint)
        except OSError as exc:
            raise CollectorError(
                f"cannot write recording {self.path}: {exc.strerror or exc}",
                "choose a writable file for --record",
            ) from exc
        self._fd: int | None = fd

    def __call__(self, events: Sequence[AnyEvent]) -> None:
        self._record(events)
        self._sink(events)

    def ingest(self, batch: Batch) -> None:
        """A collector's batch (eBPF: ring records and counts): its events are recorded as they
        were reported (a connect in progress as in progress), then the batch goes on unchanged."""
        if self._fd is not None and batch.records is not None and len(batch.records) and batch.codec is not None:
            recs = batch.records[batch.records["kind"] != 2]  # (OUTCOME records update earlier events)
            self._record(batch.codec.events(recs, [new_event_id() for _ in range(len(recs))]))
        inner = getattr(self._sink, "ingest", None)
        if inner is not None:
            inner(batch)
        elif batch.events:
            self._sink(batch.events)

    def _record(self, events: Sequence[AnyEvent]) -> None:
        with self._lock:
            if self._fd is None or not events:
                return
            data = "".join(_json_line(e) for e in events).encode()
            done = 0
            try:
                while done < len(data):
                    done += os.write(self._fd, data[done:])
                self.written += len(events)
            except OSError as exc:
                whole = data.rfind(b"\n", 0, done) + 1
                self.written += data.count(b"\n", 0, whole)
                with contextlib.suppress(OSError):  # (a line cut by the failure is taken back)
                    os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_CUR) - (done - whole))
                self.error = CollectorError(
                    f"recording to {self.path} stopped after {self.written} events: {exc.strerror or exc}",
                    "free disk space or choose another file for --record",
                )
                if self.log_failure:
                    logger.error("%s", self.error)
                self._close_file()

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                logger.debug("closing the recording failed", exc_info=True)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_file()

    @property
    def status(self) -> dict[str, Any]:
        """For ``server_status``, ``/health`` and the header: the file, the events written so far and, once
        recording stopped, why (None while it records)."""
        return {"path": str(self.path), "events": self.written, "error": str(self.error) if self.error else None}

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_sink(sink: Sink, path: str | Path, *, append: bool = False) -> Recorder:
    """``sink`` wrapped so every batch is also appended to the recording at ``path``."""
    return Recorder(sink, path, append=append)
