"""The aggregator's fast ingest path: an ingest body checked in one pass in C (msgspec) and each event
turned into the rows its node's store keeps, without a pydantic model per event.

The structs (:data:`WireConnection`, :data:`WireDrop`) take what the model takes as it is and nothing
else: the model's own fields and no other (an extension field the model would keep fails here), the
JSON type of each exactly (no ``"80"`` for a port: the model's lax conversions are left to it); the
time a string, which :func:`prepare` takes when it is RFC 3339 with an offset or ``Z`` and at most
microseconds (where ``datetime.fromisoformat`` and the model read the same instant; checked there, not
in the decoder: msgspec's pattern check costs more than the rest of an event's decoding). A batch that
does not fit, or an event of it :func:`prepare` cannot take, goes the model's way
(:func:`netspy_tui.models.parse_event`), with its verdict and reason: the fast path changes how fast,
never what is accepted, stored or answered.
"""

from __future__ import annotations

import re
import types
from datetime import datetime
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from pydantic_core import PydanticUndefined

from netspy_tui.models import (
    CONNECT_INT_BOUNDS,
    FAILED_OUTCOMES,
    PID_MAX,
    ConnectionEvent,
    PacketDropEvent,
    format_time,
    outcome_for_return_code,
    time_to_ns,
)

__all__ = ["BOUNDS", "PID_MAX", "Prepared", "WireConnection", "WireDrop", "as_item", "decode_body", "prepare"]

NS = 1_000_000_000
#: RFC 3339 with an offset, at most microseconds: the forms where fromisoformat and pydantic agree
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)\Z", re.ASCII)
#: a minute as format_time writes it (the start of its times)
_MINUTE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d\Z", re.ASCII)
_MAYBE = str | None | msgspec.UnsetType
#: the length of a time as format_time writes it (``2026-12-03T17:00:00.123456Z``)
_CANONICAL = 27


def _wire_type(annotation: Any) -> Any:
    if annotation is datetime:
        return str  # (checked by prepare)
    origin = get_origin(annotation)
    if origin is list:
        return list[_wire_type(get_args(annotation)[0])]  # type: ignore[misc]
    if origin in (Union, types.UnionType):
        return Union[tuple(_wire_type(a) for a in get_args(annotation))]  # noqa: UP007
    return annotation


#: the integer fields' ranges (ingest refuses an event beyond them, ``fleet.store._range_problem``): checked by the
#: decoder in C, an event beyond one sends its batch the model's way, where ingest says which and why
BOUNDS: dict[str, tuple[int | None, int | None]] = {
    "pid": (0, PID_MAX),
    "timestamp": (0, None),
    "destination_port": (0, 65535),
    "peer_port": (0, 65535),
    "address_family": (0, 65535),
    "skb_length": (0, None),
    "packet_size_bytes": (0, None),
    **CONNECT_INT_BOUNDS,
}


def _bounded(name: str, kind: Any) -> Any:
    """``kind`` (``int`` or ``int | None``) with the decoder's check of :data:`BOUNDS` for ``name``."""
    if name not in BOUNDS:
        return kind
    lo, hi = BOUNDS[name]
    bounded = Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if kind is int:
        return bounded
    if kind == int | None:
        return bounded | None
    raise TypeError(f"{name}: {kind} is not an integer")


def _struct(model: type[ConnectionEvent | PacketDropEvent], extra: list[tuple[str, Any, Any]]) -> Any:
    """The model's fields (their defaults its own; those of :data:`BOUNDS` checked), plus ``extra`` (what its
    before-validator reads: unset unless sent)."""
    fields: list[Any] = []
    for name, f in model.model_fields.items():
        if name == "type":
            continue
        kind = _bounded(name, _wire_type(f.annotation))
        if name == "raw_ipv6":  # (16 bytes: int_problem says so on the model's way)
            kind = Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=255)]], msgspec.Meta(max_length=16)]
        if f.default_factory is not None:
            fields.append((name, kind, msgspec.field(default_factory=f.default_factory)))  # type: ignore[arg-type]
        elif f.default is PydanticUndefined:
            fields.append((name, kind))
        else:
            fields.append((name, kind, f.default))
    fields.extend(extra)
    tag = model.model_fields["type"].default
    # gc=False: a struct holds strings, numbers and a list of numbers, never itself (no cycle); untracked, a
    # batch's thousands of them are not walked by every young pass of the cyclic collector while it is stored
    return msgspec.defstruct(f"Wire{model.__name__}", fields, kw_only=True, forbid_unknown_fields=True,
                             tag_field="type", tag=tag, gc=False)  # fmt: skip


WireConnection = _struct(ConnectionEvent, [("protocol_name", _MAYBE, msgspec.UNSET)])
_MAYBE_INT = int | None | msgspec.UnsetType
WireDrop = _struct(PacketDropEvent, [("kernel_drop_reason", _MAYBE, msgspec.UNSET),
                                     ("kernel_drop_reason_code", _MAYBE_INT, msgspec.UNSET)])  # fmt: skip
_Body = msgspec.defstruct("WireBody", [("events", list[WireConnection | WireDrop])])  # type: ignore[valid-type]
_DECODER = msgspec.json.Decoder(_Body)
_ENCODER = msgspec.json.Encoder()

#: (idempotency key, kind 0/1, t ns, raw row for the store, its rollup row: the key, then n 1, first and last t)
Prepared = tuple[str, int, int, tuple[Any, ...], tuple[Any, ...]]


def decode_body(raw: bytes) -> list[Any] | None:
    """The body's events as structs when every one fits (one pass in C), else None."""
    try:
        body: Any = _DECODER.decode(raw)
        return list(body.events)
    except (msgspec.DecodeError, RecursionError):  # (a bad event, an unusual one, or not a body at all: the model's
        return None  # way, which answers for each; nested too deeply for the decoder: so it is for the model too)


def as_item(event: Any) -> dict[str, Any]:
    """A struct back as the JSON object it was (its defaults filled in), for the model's way."""
    return msgspec.to_builtins(event)


#: the instant each minute a time names starts (``2026-12-03T17:00`` -> ns), for times as format_time writes
#: them: a batch's thousand times name a few minutes (bounded: cleared when full)
_MINUTES: dict[str, int] = {}
_MINUTES_KEPT = 4096
_LO, _HI = -(2**63), 2**63 - 1


def _canonical_ns(text: str) -> int | None:
    """The instant of a time of format_time's length, ``.`` and ``Z`` where it writes them: what
    ``time_to_ns(datetime.fromisoformat(text))`` says when the rest is its form too (``…Thh:mm:ss.ffffffZ``,
    ASCII digits), without parsing it each time; None when it is not that form or not a real date, hour,
    minute or second (the model says why)."""
    minute = text[:16]
    base = _MINUTES.get(minute)
    if base is None:
        if not _MINUTE.match(minute):
            return None
        try:
            base = time_to_ns(datetime.fromisoformat(minute + ":00+00:00"))
        except ValueError:
            return None
        if len(_MINUTES) >= _MINUTES_KEPT:
            _MINUTES.clear()
        _MINUTES[minute] = base
    micros = text[17:19] + text[20:26]  # (the second and its microseconds: 8 digits)
    if text[16] != ":" or not micros.isascii() or not micros.isdigit() or micros > "59999999":
        return None  # (not that form; a second 60 or more: fromisoformat has no leap second either)
    return base + int(micros) * 1000


def prepare(event: Any) -> Prepared | None:
    """A decoded struct's rows, as the model and the store would make them (None: the model's way).

    Applies what the models' before-validators do: a connection's ``protocol_name`` is its protocol, a
    drop's ``kernel_drop_reason``/``_code`` its reason and code."""
    connection = type(event) is WireConnection
    if connection:
        name = event.protocol_name
        if name is not msgspec.UNSET:
            if not name:  # (null or "": the model keeps it as an extra field)
                return None
            event.protocol, event.protocol_name = name, msgspec.UNSET
        port = event.destination_port
    else:
        reason, code = event.kernel_drop_reason, event.kernel_drop_reason_code
        if reason is not msgspec.UNSET:
            if not reason:
                return None
            event.drop_reason, event.kernel_drop_reason = reason, msgspec.UNSET
        if code is not msgspec.UNSET:
            if code is None:
                return None
            event.drop_reason_code, event.kernel_drop_reason_code = code, msgspec.UNSET
        port = 0
    pid, stamp, text = event.pid, event.timestamp, event.time
    if not (_LO <= pid <= _HI and _LO <= stamp <= _HI and _LO <= port <= _HI):
        return None  # (what the store cannot hold: the model's way says so)
    if len(text) == _CANONICAL and text[19] == "." and text[-1] == "Z":
        t = _canonical_ns(text)
        if t is None:  # (a day 31 of a short month, ...: the model says why)
            return None
    else:
        if not _TIME.match(text):
            return None
        try:
            when = datetime.fromisoformat(text)
            t = time_to_ns(when)
            event.time = format_time(when)  # stored as format_time writes it (the same instant)
        except (ValueError, OverflowError):  # (0001-01-01T00:00:00+05:30 is before the first UTC instant: the
            return None  # model's way says why; it was a 500 and the whole batch lost)
    if connection:
        key = event.id or f"connection|{pid}|{stamp}|{t}"
        outcome = event.outcome
        if not outcome:
            outcome = outcome_for_return_code(event.return_code) if event.return_code != 0 else "unknown"
        kind, failed = 0, 1 if outcome in FAILED_OUTCOMES else 0
    else:
        key = event.id or f"packet_drop|{pid}|{stamp}|{t}"
        outcome = event.drop_reason or "UNKNOWN"
        kind, failed = 1, 1
    command = event.command
    row = (kind, t, stamp, pid, command, outcome, _ENCODER.encode(event))
    rollup = (t // NS, kind, pid, command, event.destination or "", port, event.protocol or "", outcome, failed, 1, t,
              t)  # fmt: skip
    return key, kind, t, row, rollup
