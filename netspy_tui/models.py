"""The one domain model: events, server responses, queries (:class:`Scope`, :class:`EventQuery`) and
analysis results.

Wire models (events and the eBPF server's responses) parse exactly the JSON described in
``shared/contracts/ebpf-server``: unknown fields are kept (``extra="allow"``), wrong types raise
a :class:`pydantic.ValidationError` that names the field. Analysis models are what the MCP tools
return as structured content and what the dashboard renders.

Nothing here imports textual, httpx or mcp.

Every model is built when first used (``defer_build``): building the validators of all of them took
~30 ms of every start, and a one-shot ``--tool`` uses a few. A process that will use most of them
builds them ahead, off its critical path (:func:`build_models`). (A first build racing another thread's first
use is safe from pydantic 2.14, the floor in pyproject.toml.)

Annotations are evaluated as each class is defined (no ``from __future__ import annotations`` here): as strings,
pydantic compiled and evaluated each of them (~280) at import, a third of this module's import time.
"""

import errno as _errno
import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from netspy_tui.textsafe import clean

EventKind = Literal["connection", "packet_drop"]

#: Outcome names of a connect(), shown in the table and counted by analyze_patterns.
OUTCOMES = (
    "ok", "in_progress", "refused", "unreachable", "blackholed", "timeout", "reset", "denied", "no_port", "failed",
    "aborted", "unknown",
)  # fmt: skip
"""``aborted``: the application closed the socket before the handshake finished (not a failure).
``no_port``: no local port was free for it (EADDRNOTAVAIL: the host's ephemeral ports to that destination
are all taken, often by sockets in TIME_WAIT) -- a failure of this host, not of the peer.
``blackholed``: a blackhole route dropped it before any packet left (EINVAL from the routing: ``ip route add
blackhole``, as Calico installs them) -- the no-route family, like ``unreachable`` (ENETUNREACH/EHOSTUNREACH:
no route, an unreachable route) and ``denied`` (EACCES: a prohibit route, or a firewall)."""
OUTCOME_SET = frozenset(OUTCOMES)
#: Outcomes counted as failures (packet drops always are).
FAILED_OUTCOMES = frozenset({"refused", "unreachable", "blackholed", "timeout", "reset", "denied", "no_port",
                             "failed"})  # fmt: skip

_ERRNO_OUTCOME = {
    _errno.EINPROGRESS: "in_progress",
    _errno.EALREADY: "in_progress",
    _errno.ECONNREFUSED: "refused",
    _errno.ENETUNREACH: "unreachable",
    _errno.EHOSTUNREACH: "unreachable",
    _errno.ETIMEDOUT: "timeout",
    _errno.ECONNRESET: "reset",
    _errno.EACCES: "denied",
    _errno.EPERM: "denied",
    _errno.EADDRNOTAVAIL: "no_port",
}


def outcome_for_return_code(return_code: int) -> str:
    """Map a connect() return value (0 or -errno) to an outcome name."""
    if return_code == 0:
        return "ok"
    return _ERRNO_OUTCOME.get(-return_code, "failed")


def errno_name(return_code: int) -> str:
    """``-111`` -> ``"ECONNREFUSED"``; ``0`` -> ``"0"``."""
    if return_code >= 0:
        return str(return_code)
    return _errno.errorcode.get(-return_code, str(return_code))


def new_event_id() -> str:
    """16 random hex characters, as the eBPF server makes them."""
    return os.urandom(8).hex()


def format_time(value: datetime) -> str:
    """RFC3339 in UTC with a ``Z`` suffix, the way the server writes ``time``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # isoformat, not strftime: strftime's %Y drops the leading zeros of years before 1000 (Go's zero time
    # 0001-01-01 would come out as "1-01-01", which is not RFC3339).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def utcnow() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_to_ns(value: datetime) -> int:
    """Wall-clock datetime -> integer ns since the epoch (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


#: The times a query can name: what the store's 64-bit nanoseconds since the epoch hold (1677-09-21 to
#: 2262-04-11T23:47:16Z), to whole days. A ``since``/``until`` outside is refused (HTTP 400, the tools' isError,
#: the CLI's exit 2) by every entry point, through :func:`time_range_problem`: refused, not clamped, as every other
#: bad argument is (a year 9999 is a typo or a "forever", and leaving ``until`` out says "up to now" already).
FIRST_TIME = datetime(1678, 1, 1, tzinfo=UTC)
LAST_TIME = datetime(2262, 4, 11, tzinfo=UTC)
TIME_RANGE = "between 1678-01-01T00:00:00Z and 2262-04-11T00:00:00Z"


#: The largest store cursor (``after``, ``resolved_after``, ``drops_after``) a request or a tool may pass.
MAX_CURSOR = 2**62


def page_token(t_ns: int, ts: int, seq: int) -> str:
    """A list's page token for one event of it (its time in ns since the epoch, its ``timestamp`` and its store
    ``seq``): :attr:`EventQuery.before` of it lists the events after that one in a list's order (newest first; equal
    times by ``timestamp`` descending, then insertion order), so a page ending inside a run of equal times goes on
    where it ended."""
    return f"{t_ns}:{ts}:{seq}"


def parse_page_token(value: str) -> tuple[int, int, int]:
    """A :func:`page_token` as ``(t_ns, ts, seq)``; ValueError if it is not one a store can have made."""
    found = _PAGE_TOKEN.fullmatch(value)
    if found is not None:
        t_ns, ts, seq = (int(p) for p in found.groups())
        if -(2**63) <= t_ns < 2**63 and ts < 2**63 and seq <= MAX_CURSOR:
            return t_ns, ts, seq
    raise ValueError(f"'{value[:60]}' is not a page token")


_PAGE_TOKEN = re.compile(r"(-?[0-9]{1,19}):([0-9]{1,19}):([0-9]{1,19})")


def time_range_problem(value: datetime) -> str | None:
    """``must be between … and …`` when ``value`` (naive: UTC) is outside the times a query can name, else None."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return None if FIRST_TIME <= value <= LAST_TIME else f"must be {TIME_RANGE}"


#: the kernel's largest process id (PID_MAX_LIMIT, 2^22 on 64-bit)
PID_MAX = 4_194_304


@functools.lru_cache(maxsize=8192)
def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (no port, no brackets). Cached: a host's events name the same
    few thousand destinations over and over, and parsing each was a fifth of what checking an aggregator's ingest
    cost (py-spy of the checking process during ``python -m bench.fleet --ingest 1``)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def int_problem(event: "ConnectionEvent | PacketDropEvent") -> str | None:
    """An event's integer field beyond what it can be (a pid, boot time, size, port or family), else None: what no
    kernel makes, refused where events come in from outside (an aggregator's ingest, a recording)."""
    if not 0 <= event.pid <= PID_MAX:
        return f"pid: must be 0 to {PID_MAX}, got {event.pid}"
    if event.timestamp < 0:
        return f"timestamp: must be 0 or more (ns since boot), got {event.timestamp}"
    if isinstance(event, PacketDropEvent):
        if event.skb_length < 0 or event.packet_size_bytes < 0:
            return "skb_length, packet_size_bytes: must be 0 or more"
        return None
    if not 0 <= event.destination_port <= 65535:
        return f"destination_port: must be 0 to 65535, got {event.destination_port}"
    if event.peer_port is not None and not 0 <= event.peer_port <= 65535:
        return f"peer_port: must be 0 to 65535, got {event.peer_port}"
    if not 0 <= event.address_family <= 65535:
        return f"address_family: must be 0 to 65535, got {event.address_family}"
    for name, (lo, hi) in CONNECT_INT_BOUNDS.items():  # (the contract's u32 and int32 fields)
        value = getattr(event, name)
        if value is not None and not lo <= value <= hi:
            return f"{name}: must be {lo} to {hi}, got {value}"
    if any(not 0 <= b <= 255 for b in event.raw_ipv6) or len(event.raw_ipv6) > 16:
        return "raw_ipv6: must be at most 16 bytes, each 0 to 255"
    return None


#: a connect's other integer fields and their ranges (the contract's types: raw_ipv4 u32, return_code an errno)
CONNECT_INT_BOUNDS = {"raw_ipv4": (0, 2**32 - 1), "raw_protocol": (0, 2**32 - 1), "raw_socktype": (0, 2**32 - 1),
                 "return_code": (-(2**31), 2**31 - 1), "socket_family": (0, 65535)}  # fmt: skip


def text_problem(event: Any) -> str | None:
    """A connect's address that is not an IP address or an outcome that is none, else None (a drop has neither).
    ``event``: a :class:`ConnectionEvent`, or anything with its ``destination_ip``, ``peer_ip`` and ``outcome``."""
    if isinstance(event, PacketDropEvent):
        return None
    for name in ("destination_ip", "peer_ip"):
        ip = getattr(event, name)
        if ip and not is_ip_address(ip):
            return f"{name}: not an IP address: {clean(ip, 60)!r}"
    if event.outcome and event.outcome not in OUTCOME_SET:
        return f"outcome: must be one of {', '.join(OUTCOMES)}, got {clean(event.outcome, 40)!r}"
    return None


def ns_to_time(value: int) -> datetime:
    """Integer ns since the epoch -> UTC datetime (microsecond precision)."""
    return EPOCH + timedelta(microseconds=value // 1000)


_DATETIME = TypeAdapter(datetime, config=ConfigDict(defer_build=True))


def parse_time(value: str) -> datetime:
    """Parse an RFC3339 time given by a user or a model (naive means UTC); ValueError if it is not one."""
    try:
        parsed = _DATETIME.validate_python(value)
    except ValidationError:
        raise ValueError(f"'{value[:60]}' is not an RFC3339 time (e.g. 2026-11-24T12:00:00Z)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _Wire(BaseModel):
    """Base of every model that comes off the wire: tolerant of extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)


def _null_is_empty(value: Any) -> Any:
    """The Go server encodes an empty slice or map as ``null``."""
    return [] if value is None else value


def _in_utc(value: datetime) -> datetime:
    """An event's time in UTC: a server writes its local time with its offset (the Go server's RFC3339Nano in the
    host's zone, ``…T23:36:19+05:30``), and every figure and label here is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.utcoffset():
        try:
            return value.astimezone(UTC)
        except OverflowError:  # (0001-01-01T00:00:00+05:30: before the first UTC instant a datetime holds)
            raise ValueError(f"must be {TIME_RANGE}") from None
    return value


class _EventBase(_Wire):
    id: str = ""
    pid: int = 0
    command: str = ""
    timestamp: int = 0
    """Nanoseconds since boot (bpf_ktime_get_ns)."""
    time: Annotated[datetime, AfterValidator(_in_utc)]
    """Wall-clock time of the event (in UTC, whatever offset it was sent with)."""
    k8s_node_name: str | None = None
    k8s_pod_name: str | None = None
    k8s_namespace: str | None = None
    source: str | None = None
    """netspy-tui extension: which collector produced the event (``ebpf``, ``procfs``, ``replay``)."""
    thread: str | None = None
    """netspy-tui extension: the calling thread's name when it differs from the process name
    (``command`` is the process's, the thread-group leader's)."""


#: Which end opened a connection: ``outbound`` a ``connect()`` made here, ``inbound`` one this host accepted.
Direction = Literal["outbound", "inbound"]


class ConnectionEvent(_EventBase):
    """One ``connect()`` attempt (``direction`` ``outbound``), or one connection a local process accepted
    (``inbound``: ``destination_*`` is the local address and port it was accepted on, ``peer_*`` who connected)."""

    type: Literal["connection"] = "connection"
    destination_ip: str = ""
    destination_port: int = 0
    destination: str = ""
    address_family: int = 0
    protocol: str = ""
    socket_type: str = ""
    return_code: int = 0
    raw_ipv4: int = 0
    raw_ipv6: list[int] = Field(default_factory=list)
    raw_protocol: int = 0
    raw_socktype: int = 0
    # netspy-tui extensions (absent from the original server's events):
    outcome: str | None = None
    """Final outcome when the collector saw it (``ok``, ``refused``, ...); None when unknown."""
    protocol_inferred: bool | None = None
    """True when ``protocol`` was guessed (e.g. from the port) rather than read from the kernel."""
    sampled: bool | None = None
    """True for events from the procfs sampler: short-lived connections can be missed."""
    socket_family: int | None = None
    """The socket's own address family when it differs from ``address_family``: an IPv6 socket
    connecting to an IPv4-mapped address (``::ffff:a.b.c.d``) is reported as IPv4 with 10 here."""
    hostname: str | None = None
    """The destination's name (``/etc/hosts`` or reverse DNS) when known; the address stays in
    ``destination_ip``. Untrusted text, like every name."""
    own_dns_query: bool | None = None
    """True for netspy-tui's own reverse-DNS questions (not the user's traffic)."""
    workload: str | None = None
    """The process's workload on this host (``docker 3f2a…``, ``pod 7c1e…/…``, ``nginx.service``,
    ``host``) from its cgroup, when the source is this host's own collector."""
    direction: Direction = "outbound"
    """``outbound``: a ``connect()`` made on this host (every event of the contract's servers, which send no
    direction); ``inbound``: a connection a local process accepted (a passive open: SYN_RECV -> ESTABLISHED)."""
    peer_ip: str | None = None
    """Inbound only: the address that connected (the connection's remote end)."""
    peer_port: int | None = None
    """Inbound only: the port it connected from."""

    @model_validator(mode="before")
    @classmethod
    def _protocol_name(cls, data: Any) -> Any:
        """``netspy-tui serve`` sends a protocol the contract has no name for (MPTCP) as
        ``Unknown(262)`` with the name in ``protocol_name``: parsing restores it."""
        if isinstance(data, dict) and isinstance(data.get("protocol_name"), str) and data["protocol_name"]:
            data = {**data, "protocol": data["protocol_name"]}
            data.pop("protocol_name")
        return data

    @property
    def effective_outcome(self) -> str:
        """The outcome to show: the collector's own, else derived from a non-zero return code.

        A return code of 0 without an explicit outcome is "unknown": the original server
        always sends 0, so it proves nothing.
        """
        if self.outcome:
            return self.outcome
        if self.return_code != 0:
            return outcome_for_return_code(self.return_code)
        return "unknown"

    @property
    def failed(self) -> bool:
        return self.effective_outcome in FAILED_OUTCOMES


CONTRACT_DROP_REASONS = ("SKB_FREE", "TCP_DROP", "UDP_DROP", "ICMP_DROP", "NETFILTER_DROP")


def contract_drop_reason(reason: str, protocol: str | None, code: int) -> str:
    """The original server's coarse category for a kernel drop reason (``NO_SOCKET`` + UDP -> ``UDP_DROP``)."""
    if reason in CONTRACT_DROP_REASONS or reason.startswith("UNKNOWN("):
        return reason
    if reason.startswith("NETFILTER"):
        return "NETFILTER_DROP"
    proto = (protocol or "").upper()
    if proto in ("TCP", "UDP", "ICMP"):
        return f"{proto}_DROP"
    for prefix in ("TCP", "UDP", "ICMP"):
        if reason.startswith(prefix):
            return f"{prefix}_DROP"
    return f"UNKNOWN({code})"


def contract_drop(reason: str, protocol: str | None, code: int) -> tuple[str, int]:
    """The original server's ``(drop_reason, drop_reason_code)`` for a kernel reason and its number.

    Its codes are 1 ``SKB_FREE``, 2 ``TCP_DROP``, 3 ``UDP_DROP``, 4 ``ICMP_DROP``, 5 ``NETFILTER_DROP``;
    any other ``n`` reads ``UNKNOWN(n)``. A reason without a category keeps its kernel number unless that
    number is one of 1–5, which a client would read as a category: then it is ``UNKNOWN(0)``, 0.
    """
    category = contract_drop_reason(reason, protocol, code)
    if category in CONTRACT_DROP_REASONS:
        return category, CONTRACT_DROP_REASONS.index(category) + 1
    number = category.removeprefix("UNKNOWN(").removesuffix(")")
    n = int(number) if number.isdigit() and len(number) < 11 else code
    if 1 <= n <= len(CONTRACT_DROP_REASONS) or not 0 <= n < 2**32:
        n = 0
    return f"UNKNOWN({n})", n


#: What a packet dropped in kernel context (no process: pid 0, no name) is called where a process's name goes: the
#: dashboard's drops list and /metrics' ``process`` label
KERNEL_CONTEXT = "(kernel)"


class PacketDropEvent(_EventBase):
    """One packet dropped by the kernel.

    ``drop_reason`` holds the kernel's own reason name (``NO_SOCKET``, ``TCP_INVALID_SEQUENCE``, ...)
    whenever it is known, and ``drop_reason_code`` its number (``enum skb_drop_reason``). On the wire,
    ``netspy-tui serve`` sends the original server's category and code (:func:`contract_drop`) in
    ``drop_reason`` / ``drop_reason_code`` and the kernel's in ``kernel_drop_reason`` /
    ``kernel_drop_reason_code``; parsing swaps them back.
    """

    type: Literal["packet_drop"] = "packet_drop"
    drop_reason_code: int = 0
    drop_reason: str = ""
    skb_length: int = 0
    packet_size_bytes: int = 0
    protocol: str | None = None
    destination: str | None = None
    workload: str | None = None
    """netspy-tui extension: the dropping process's workload on its host, as ``ConnectionEvent.workload`` (an
    agent's, forwarded to an aggregator); None when unknown (a drop no process was charged with)."""

    @model_validator(mode="before")
    @classmethod
    def _kernel_reason(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        reason, code = data.get("kernel_drop_reason"), data.get("kernel_drop_reason_code")
        if isinstance(reason, str) and reason:
            data = {**data, "drop_reason": reason}
            data.pop("kernel_drop_reason")
        if isinstance(code, int) and not isinstance(code, bool):
            data = {**data, "drop_reason_code": code}
            data.pop("kernel_drop_reason_code")
        return data


Event = Annotated[ConnectionEvent | PacketDropEvent, Field(discriminator="type")]
_EVENT_ADAPTER: TypeAdapter[ConnectionEvent | PacketDropEvent] = TypeAdapter(Event, config=ConfigDict(defer_build=True))
_M = TypeVar("_M", bound=BaseModel)


def constructor(model: type[_M]) -> Any:
    """``model.model_construct`` for values already known good (a collector's decoded records),
    seven times faster: pydantic resolves every absent field's default per call (~25 us an event,
    the whole cost of a 100-event page), this sets them from a table made once. The instance is
    what ``model_construct`` makes (tests/unit/test_models_construct.py holds them equal); a model
    with a post-init hook or a root model gets ``model_construct`` itself."""
    fields = model.model_fields
    if model.__pydantic_root_model__ or model.__pydantic_post_init__ is not None:
        return model.model_construct
    names = tuple(fields)
    required = frozenset(n for n, f in fields.items() if f.is_required())
    factories = {n: f.default_factory for n, f in fields.items() if f.default_factory is not None}
    if any(f.default_factory_takes_validated_data for f in fields.values()):
        return model.model_construct
    defaults = {n: f.default for n, f in fields.items() if n not in required and n not in factories}
    extra_allowed = model.model_config.get("extra") == "allow"
    new, setattr_ = model.__new__, object.__setattr__

    def default(name: str) -> Any:
        factory = factories.get(name)
        return defaults[name] if factory is None else factory()  # type: ignore[call-arg]

    def build(**values: Any) -> _M:
        if not required <= values.keys() or not values.keys() <= fields.keys():
            return model.model_construct(**values)  # (a field left out or an extra one: pydantic's way)
        obj = new(model)
        setattr_(obj, "__dict__", {n: values[n] if n in values else default(n) for n in names})
        setattr_(obj, "__pydantic_fields_set__", set(values))
        setattr_(obj, "__pydantic_extra__", {} if extra_allowed else None)
        setattr_(obj, "__pydantic_private__", None)
        return obj

    return build


def parse_event(data: Any) -> ConnectionEvent | PacketDropEvent:
    """Parse one event object; raises ValidationError naming the bad field."""
    return _EVENT_ADAPTER.validate_python(data)


def _is_event(item: Any) -> bool:
    """An object of a known event ``type``: anything else in a list of events (``null``, a number, an
    object of a kind this client does not know) is not an event to show."""
    return isinstance(item, dict) and item.get("type") in ("connection", "packet_drop")


def split_events(items: list[Any]) -> tuple[list[Any], int]:
    """The items of a list that are events, and how many were not (skipped)."""
    kept = [item for item in items if _is_event(item)]
    return kept, len(items) - len(kept)


def parse_events(items: Any) -> tuple[list[ConnectionEvent | PacketDropEvent], int]:
    """Parse a list of events, skipping (and counting) items that are not events (:func:`split_events`).

    Events of a known type with wrong field types still raise: that is a broken server.
    """
    if not isinstance(items, list):
        raise TypeError(f"expected a list of events, got {type(items).__name__}")
    kept, skipped = split_events(items)
    return [parse_event(item) for item in kept], skipped


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending field: ``events.0.pid: Input should be ...``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{loc}: {err['msg']}"


# --- eBPF server responses -------------------------------------------------------------


def _time_or_text(value: Any) -> Any:
    """``query_time`` is a plain string in the specs: a time when it parses, else the text as sent."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return _DATETIME.validate_python(value)
        except ValidationError:
            return value
    return None  # not even a string: nothing to keep


QueryTime = Annotated[datetime | str | None, BeforeValidator(_time_or_text)]
"""A server's ``query_time``: a datetime when it is one, otherwise its text (never an error)."""


class HealthResponse(_Wire):
    status: str = ""
    component: str = ""
    uptime: str = ""
    version: str = ""
    # netspy-tui serve extensions (absent from the original server's answer):
    events_lost: int | None = None
    losses: dict[str, int] | None = None
    recent_losses: dict[str, int] | None = None


class SummaryResponse(_Wire):
    """``/api/connection-summary`` and ``/api/packet-drop-summary``."""

    count: int = 0
    pid: int | None = None
    command: str | None = None
    duration_seconds: int = 0
    query_time: QueryTime = None
    count_by_node: dict[str, int] | None = None


def _skip_non_events(data: Any, key: str) -> Any:
    """A response with the items that are not events taken out of ``data[key]`` (a list of events, or a
    map of them: ``events_by_pid``) and counted in ``not_events``; ``null`` lists read as empty."""
    if not isinstance(data, dict):
        return data
    value = _null_is_empty(data.get(key))
    skipped = 0
    if isinstance(value, list):
        value, skipped = split_events(value)
    elif isinstance(value, dict):
        kept: dict[Any, Any] = {}
        for name, items in value.items():
            items = _null_is_empty(items)
            if isinstance(items, list):
                items, n = split_events(items)
                skipped += n
            kept[name] = items
        value = kept
    return {**data, key: value, "not_events": skipped}


class ListResponse(_Wire):
    """``/api/list-connections`` and ``/api/list-packet-drops``."""

    total_events: int = 0
    total_pids: int = 0
    events_by_pid: dict[str, list[Event]] = Field(default_factory=dict)
    query_time: QueryTime = None
    events_by_node: dict[str, int] | None = None
    total_nodes: int | None = None

    not_events: int = 0
    """netspy-tui: items of the lists that were not events (``null``, ...), skipped (:func:`split_events`)."""

    _skip = model_validator(mode="before")(classmethod(lambda cls, data: _skip_non_events(data, "events_by_pid")))  # type: ignore[arg-type]


class EventFilters(_Wire):
    type: str | None = None
    pid: int | None = None
    command: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int | None = None


def _events_only(value: Any) -> Any:
    """The items of a list that are events (``null``: none)."""
    value = _null_is_empty(value)
    return split_events(value)[0] if isinstance(value, list) else value


class EventsResponse(_Wire):
    """``/api/events``."""

    events: list[Event] = Field(default_factory=list)
    count: int = 0
    total_count: int = 0
    query_time: QueryTime = None
    filters: EventFilters | None = None

    not_events: int = 0
    """netspy-tui: items of ``events`` that were not events (``null``, ...), skipped (:func:`split_events`)."""
    cursor: int | None = None
    """netspy-tui server: its store's insertion position after this answer (pass it back as ``after``)."""
    not_kept: int = 0
    """netspy-tui server: events of the page's seconds counted but not kept (see :attr:`EventPage.not_kept`)."""
    not_kept_since: QueryTime = None
    not_kept_until: QueryTime = None
    updates: list[Event] = Field(default_factory=list)
    """netspy-tui server, with ``resolved_after``: events stored at or before ``after`` whose outcome was resolved
    since (see :attr:`EventPage.updates`)."""
    resolved_cursor: int | None = None
    """netspy-tui server: its store's resolution position (pass it back as ``resolved_after``)."""

    _skip = model_validator(mode="before")(classmethod(lambda cls, data: _skip_non_events(data, "events")))  # type: ignore[arg-type]
    _updates = field_validator("updates", mode="before")(classmethod(lambda cls, v: _events_only(v)))


class ProgramInfo(_Wire):
    name: str = ""
    type: str = ""
    status: str = ""
    id: int | None = None
    event_count: int | None = None
    node: str | None = None


class ProgramsResponse(_Wire):
    programs: list[ProgramInfo] = Field(default_factory=list)
    all_programs: list[ProgramInfo] | None = None

    _null_programs = field_validator("programs", mode="before")(classmethod(lambda cls, v: _null_is_empty(v)))
    total_count: int = 0
    query_time: QueryTime = None


class AggregatorStats(_Wire):
    """``/api/stats`` (aggregator only)."""

    total_events: int = 0
    events_by_type: dict[str, int] = Field(default_factory=dict)
    events_by_node: dict[str, int] = Field(default_factory=dict)
    connected_agents: int = 0
    _null_maps = field_validator("events_by_type", "events_by_node", mode="before")(
        classmethod(lambda cls, v: {} if v is None else v)  # (Go encodes an empty map as null)
    )
    aggregation_start: str | None = None
    last_event_time: str | None = None


# --- what the sources and MCP tools return ---------------------------------------------

ApiGeneration = Literal["seed", "current", "aggregator", "embedded"]


class SourceInfo(BaseModel):
    """Where the data comes from, for status lines and ``server_status``."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    label: str
    """Human wording, e.g. ``eBPF (embedded)`` or ``ebpf-server at http://localhost:8080``."""
    kind: Literal["http", "embedded"]
    generation: ApiGeneration
    healthy: bool = True
    detail: str = ""
    """Why this source was chosen, or what is wrong with it."""
    collector: str | None = None
    """``ebpf``, ``procfs`` or ``replay`` for embedded sources."""
    sampled: bool = False
    """True when short-lived connections can be missed (procfs sampling)."""
    events_seen: int = 0
    """Connects and drops the collector made since start, each once (the eBPF collector's kernel counts: raw
    events shed under load included); an aggregator's: the events it took in from its agents since it started."""
    events_lost: int = 0
    """Everything lost, shed or not followed since start (the sum of ``losses``)."""
    losses: dict[str, int] = Field(default_factory=dict)
    """Since start, by cause (see :data:`LOSS_CAUSES`)."""
    recent_losses: dict[str, int] = Field(default_factory=dict)
    """In the last minute, by cause: while there are any the source is ``degraded``."""
    degraded: bool = False
    stored_events: int | None = None
    uptime_seconds: float | None = None
    forwarding: dict[str, Any] | None = None
    """``serve --forward``: where to, events forwarded, waiting, dropped, failures, last error."""
    recording: dict[str, Any] | None = None
    """``--record``: the file (``path``), the events written (``events``) and why recording stopped (``error``,
    None while it records)."""
    notes: list[str] = Field(default_factory=list)
    """What the collector cannot do on this kernel, one line each (a missing tracepoint, no BTF)."""
    nodes: dict[str, int] | None = None
    """An aggregator's nodes (``serve --aggregate``): events stored per node; None for one host."""
    node: str | None = None
    """The node a one-host server says it is (netspy-tui ``serve``'s ``/health`` ``node``): the one name its
    ``node`` filter accepts. None: not said (another eBPF server, an aggregator, this host's own collector)."""

    @property
    def status(self) -> Literal["healthy", "degraded", "unhealthy"]:
        if not self.healthy:
            return "unhealthy"
        return "degraded" if self.degraded else "healthy"


#: What each loss cause means, and whether the counts are still exact despite it.
LOSS_CAUSES: dict[str, tuple[str, bool]] = {
    "shed": ("raw events shed under load", True),
    "ring_full": ("raw events lost (kernel ring buffer full)", True),
    "counts_full": ("events counted without their process (kernel count map full)", True),
    "traffic_full": (
        "send/read calls, retransmits and opened or closed connections counted without their process "
        "and connection (kernel traffic map full; their bytes and connections are in the totals)",
        True,
    ),
    "conns_full": ("connections whose outcome could not be followed", True),
    "tcp_tail_uncounted": (
        "TCP connections open before the collector started that closed before they could be followed to their "
        "close (within a drain of the start, or no room to follow them): their bytes since the last drain are not "
        "counted",
        False,
    ),
    "finals_full": (
        "TCP connections that closed while the kernel's map of closing connections was full: their bytes since "
        "the last drain are not counted",
        False,
    ),
    "tcp_netns_unread": (
        "network namespaces whose TCP connections are not read while open (past the collector's bound of 1,024, or "
        "not openable or enterable: that needs CAP_SYS_ADMIN): they count their bytes when they close",
        True,
    ),
    "tcp_forgotten_dropped": (
        "TCP connections missing from their namespace's passes while open, past the collector's bound of 65,536 "
        "remembered: if they show up again or close, their bytes since they opened may be counted again",
        True,
    ),
    "outcome_lost": ("raw events whose outcome was lost (kernel ring buffer full; shown in progress)", True),
    "restart_unresolved": ("connects the collector was following when it last stopped (outcome unknown)", True),
    "state_unseen": (
        "connections whose handshake end the kernel did not show (outcome from connect()'s return or the freed socket)",
        True,
    ),
    "kernel_skipped": (
        "runs of the collector's kernel programs the kernel skipped (an event they follow came while one ran on its "
        "CPU: not counted)",
        False,
    ),
    "sink_rejected": ("raw events the store refused", True),
    "bad_records": ("unreadable kernel records", True),
    "forward_dropped": ("raw events removed by retention before they were forwarded", True),
    "forward_rejected": ("raw events the aggregator refused (not forwarded)", True),
    "agent_unforwarded": (
        "events agents saw but could not forward (shed under load or lost on their node: each agent's own "
        "server_status says why)",
        False,
    ),
    "sockaddr_fault": ("connects not counted (address unreadable)", False),
    "inflight_full": ("connects not counted (too many at once)", False),
    "exit_without_enter": ("connects not counted (call not seen starting)", False),
    "unstored": ("raw events not stored (store write failed; their counts kept)", True),
    "store_error": ("events whose counts could not be stored (store write failed)", False),
    "rejected": ("malformed events not stored", False),
}


def counts_exact(losses: dict[str, int]) -> bool:
    """True when none of ``losses`` affected the counts (only raw detail was lost)."""
    return all(LOSS_CAUSES.get(cause, ("", False))[1] for cause, n in losses.items() if n)


def describe_losses(losses: dict[str, int], when: str = "") -> str:
    """One line: ``12,345 raw events shed under load in the last 60 s; counts are exact``."""
    parts = [f"{n:,} {LOSS_CAUSES.get(cause, (cause.replace('_', ' '), False))[0]}"
             for cause, n in sorted(losses.items(), key=lambda kv: -kv[1]) if n]  # fmt: skip
    if not parts:
        return ""
    tail = "counts are exact" if counts_exact(losses) else "counts are incomplete"
    return f"{', '.join(parts)}{' ' + when if when else ''}; {tail}"


class Counted(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)
    key: str
    count: int


class ProcessStat(BaseModel):
    """One process (command) in a window: the row of the per-process summary table."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    command: str
    pids: list[int]
    attempts: int
    distinct_destinations: int
    failures: int
    first_seen: datetime
    last_seen: datetime
    workloads: list[str] = Field(default_factory=list)
    """The workloads its pids run in, in pid order, each once (see ``ConnectionEvent.workload``)."""
    nodes: list[str] = Field(default_factory=list)
    """The nodes it ran on, sorted (an aggregator's ``k8s_node_name``s); empty for one host."""
    by_node: list["ProcessStat"] = Field(default_factory=list)
    """Each node's own row (``nodes`` that one node), by node, when it ran on several (an aggregator's); else
    empty (its one node's figures are the row's)."""

    def per_node(self) -> list["ProcessStat"]:
        """This process as a row per node it ran on, each with that node's figures (one host: itself)."""
        return list(self.by_node) or [self]


class WindowStats(BaseModel):
    """Aggregates of one event kind over a time window, optionally for one pid or command.

    Produced by :func:`netspy_tui.analysis.aggregate.aggregate` from events (HTTP and in-memory
    sources) and by :func:`netspy_tui.store.rollups.window_stats` from the store's per-second
    rollups (embedded source); both must agree on the same data.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)
    kind: EventKind
    window_seconds: int
    pid: int | None = None
    command: str | None = None
    total: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    top_destinations: list[Counted] = Field(default_factory=list)
    """Connections: ``host:port``. Drops: destination when known."""
    protocols: list[Counted] = Field(default_factory=list)
    ports: list[Counted] = Field(default_factory=list)
    outcomes: list[Counted] = Field(default_factory=list)
    """Connections: outcome names. Drops: drop reasons."""
    processes: list[ProcessStat] = Field(default_factory=list)
    bucket_seconds: int = 1
    rate_buckets: list[int] = Field(default_factory=list)
    """Event counts per bucket, oldest first, covering the window up to ``until``."""
    until: datetime | None = None
    not_events: int = 0
    """Items of a server's answer that were not events (``null``, an unknown kind): skipped."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which traffic a figure is about: events of one ``kind``, from every process or one ``pid`` or
    ``command`` (the kernel comm, matched exactly), in the last ``window`` whole seconds.

    The one value passed through sources, store, tools and the dashboard's poller. ``node`` (the
    events' ``k8s_node_name``: an aggregator's node, or this host) and ``workload`` (the process's
    workload, ``ConnectionEvent.workload``) narrow it further; None is "every". The MCP tools name
    ``command`` ``process_name`` and ``window`` ``duration``: :meth:`as_arguments` speaks their language.
    """

    kind: EventKind = "connection"
    pid: int | None = None
    command: str | None = None
    window: int = 60
    node: str | None = None
    workload: str | None = None

    @property
    def is_all(self) -> bool:
        """True when no process narrows it."""
        return self.pid is None and self.command is None

    @property
    def label(self) -> str:
        """Who, for a title: ``process 'curl'``, ``pid 42`` or ``all traffic`` (the name wins)."""
        if self.command is not None:
            return f"process '{clean(self.command, 32)}'"
        if self.pid is not None:
            return f"pid {self.pid}"
        return "all traffic"

    def as_arguments(self) -> dict[str, int | str | None]:
        """``pid`` and ``process_name`` (and ``node``, ``workload`` when set), as the MCP tools take them."""
        args: dict[str, int | str | None] = {"pid": self.pid, "process_name": self.command}
        args.update({k: v for k, v in (("node", self.node), ("workload", self.workload)) if v is not None})
        return args


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of events: of one ``kind``, from every process or one ``pid`` or ``command`` (as in a
    :class:`Scope`, with its ``node`` and ``workload``), bounded in time by ``since`` and ``until`` instead of a window.

    ``since`` is exclusive and ``until`` inclusive, both wall-clock, so an incremental poll can
    pass the newest time it has seen. Results are newest first, at most ``limit``.
    """

    kind: EventKind = "connection"
    pid: int | None = None
    command: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    node: str | None = None
    workload: str | None = None
    after: int | None = None
    """Only events stored after this position of the source's insertion order (an :attr:`EventPage.cursor`),
    so an incremental poll gets each event once, however late it arrived; a source without one ignores it."""
    resolved_after: int | None = None
    """With ``after``: also the events stored at or before ``after`` whose outcome the source resolved after this
    position of its resolutions (an :attr:`EventPage.resolved_cursor`), as :attr:`EventPage.updates`: a connect
    listed in progress comes again with its outcome. A source without resolutions ignores it."""
    before: tuple[int, int, int] | None = None
    """Only the events after this one in the list's order (a :func:`parse_page_token` of an :attr:`EventPage.before`:
    older ones, and those of its time listed after it), so paging back goes on inside a run of equal times, where
    ``until`` (inclusive) lists the same events again. Only a source that numbers its events honours it (the
    embedded store, and MemorySource, its stand-in: they have ``pages_by_token``); the tools refuse it for another."""


class EventPage(BaseModel):
    """A page of events, newest first, plus how many matched in total."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    events: list[Event]
    total_count: int
    """Events kept that match (the page is the newest of them)."""
    truncated: bool = False
    not_kept: int = 0
    """Events counted between ``not_kept_since`` and ``not_kept_until`` (the seconds the page
    spans) that were not kept as raw events (shed under load, or lost from the ring): the page
    shows what was kept; counts and summaries include them all."""
    not_kept_since: datetime | None = None
    not_kept_until: datetime | None = None
    not_events: int = 0
    """Items of the server's answer that were not events (``null``, an unknown kind): skipped."""
    cursor: int | None = None
    """The source's insertion-order position when the page was read (pass it as ``after`` next time); None:
    the source has no such order (a remote server): page forward by time."""
    updates: list[Event] = Field(default_factory=list)
    """Events stored at or before ``after`` (so listed before) whose outcome was resolved since ``resolved_after``,
    with that outcome (same ids)."""
    resolved_cursor: int | None = None
    """The source's resolution position when the page was read (pass it as ``resolved_after`` next time); None:
    the source does not number its resolutions."""
    before: str | None = None
    """The page token of the page's last (oldest) event (:func:`page_token`; pass it parsed as
    :attr:`EventQuery.before` for the next page back); None: no events, or the source does not number them."""


# --- traffic (bytes per process and connection) -----------------------------------------------


class TrafficFlow(BaseModel):
    """Bytes one process sent and read on one socket (its addresses as the socket had them) in a
    window. ``remote`` is ``""`` when the socket had no peer (an unconnected UDP socket)."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    pid: int
    command: str
    protocol: str
    local: str
    local_port: int
    remote: str
    remote_port: int
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_calls: int | None = 0
    """recv()/read() calls that returned data; None: not counted (TCP bytes read from the kernel's per-socket
    counters, or sampled with sock_diag, come without their calls)."""
    tx_calls: int | None = 0
    """send()/write() calls that sent data; None as for :attr:`rx_calls`."""
    retransmits: int = 0
    """TCP segments the kernel sent again on this connection (SYNs included)."""
    direction: Literal["inbound", "outbound", ""] = ""
    """``inbound``: the kernel saw it accepted (a passive open) in the window; ``outbound``: the
    kernel saw its connect() establish in the window; ``""``: neither (UDP, or opened earlier)."""
    lifetime_us: int | None = None
    """Established to closed, in microseconds, when it closed in the window (tcplife's view; the
    sum when the same addresses were used by several connections)."""
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class TrafficProcess(BaseModel):
    """One process (command) in a window: bytes in and out, and their average rates."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    command: str
    pids: list[int]
    rx_bytes: int
    tx_bytes: int
    rx_rate: float
    """Bytes per second read, averaged over the window."""
    tx_rate: float
    flows: int
    """Distinct sockets (by addresses) it moved bytes on."""
    retransmits: int = 0
    inbound: int = 0
    """Connections accepted on its listening sockets in the window."""
    outbound: int = 0
    """TCP connections it established in the window."""


class TrafficRemote(BaseModel):
    """One remote address in a window (``""``: sockets with no peer address)."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    remote: str
    rx_bytes: int
    tx_bytes: int
    commands: list[str]
    retransmits: int = 0


class _SocketFigures(BaseModel):
    """A window's figures for one pid/command or all, from a source that may not have them."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    window_seconds: int
    pid: int | None = None
    command: str | None = None
    until: datetime | None = None
    available: bool = True
    """False when the source does not measure this (procfs sampling, a plain eBPF server, an old kernel)."""
    unavailable_reason: str = ""
    """Why not, when ``available`` is False and the source knows better than "needs the eBPF collector" (an
    aggregator: :data:`NOT_AGGREGATED`)."""


#: Why an aggregator (``serve --aggregate``) has no traffic or connect-latency figures: agents forward their
#: events, not these (counted and timed on each node); the node's agent has them.
NOT_AGGREGATED = (
    "the aggregator does not aggregate traffic or connect latency (agents forward their events, not these): "
    "ask the node's agent for its node's (netspy-tui --server http://AGENT:8080, the agent's serve)"
)


class TrafficStats(_SocketFigures):
    """Bytes sent and read per process, remote address and connection over a window (exact: summed
    in the kernel per socket and process). Lists are largest first, at most ``limit`` each."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    retransmits: int = 0
    """TCP segments retransmitted (``tcp/tcp_retransmit_skb``; the kernel's RetransSegs counts the same)."""
    inbound_connections: int = 0
    """TCP connections accepted (passive opens: SYN_RECV -> ESTABLISHED)."""
    outbound_connections: int = 0
    """TCP connections established by connect() (SYN_SENT -> ESTABLISHED)."""
    closed_connections: int = 0
    """TCP connections the kernel saw open (either way) and then close."""
    sampled: bool = False
    """Read from the kernel's per-socket TCP counters every sample (procfs sampling): connections
    that came and went between two samples, the last bytes of a closed one, and UDP are missing."""
    processes: list[TrafficProcess] = Field(default_factory=list)
    remotes: list[TrafficRemote] = Field(default_factory=list)
    flows: list[TrafficFlow] = Field(default_factory=list)
    total_processes: int = 0
    total_remotes: int = 0
    total_flows: int = 0


# --- connect latency ----------------------------------------------------------------------------


class LatencyGroup(BaseModel):
    """Connect attempts of one process (command) to one destination in a window, and how long their
    handshakes took (microseconds; percentiles are values of real attempts, nearest rank)."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    command: str
    pids: list[int]
    destination: str
    """``ip:port`` (``[ip]:port`` for IPv6); empty for a whole process's figures."""
    attempts: int
    p50_us: int
    p95_us: int
    max_us: int
    outcomes: dict[str, int] = Field(default_factory=dict)


class LatencyStats(_SocketFigures):
    """TCP connect latency (connect() to the end of its handshake: established, refused, timed out,
    or closed first) per process and per (process, destination) over a window."""

    attempts: int = 0
    p50_us: int = 0
    p95_us: int = 0
    max_us: int = 0
    processes: list[LatencyGroup] = Field(default_factory=list)
    destinations: list[LatencyGroup] = Field(default_factory=list)
    """Per (process, destination), slowest p95 first."""
    total_destinations: int = 0


# The MCP tools' structured results (``outputSchema``): what the gateway hands the CLI, the dashboard
# and the AI layer. Each carries a readable ``text`` next to the data.


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)
    text: str
    """The same readable sentence(s) as the text content block."""


class _Windowed(_Result):
    losses: dict[str, int] = Field(default_factory=dict)
    """What was lost or shed in the window, by cause (``shed``, ``ring_full``, ...); empty when
    nothing was. Causes that only cost raw detail leave every count exact."""
    counts_exact: bool = True
    """False when something lost in the window was never counted (see ``losses``)."""


#: Unconstrained: importing this module parametrizes :class:`_Listed` (below), and pydantic builds the generic origin's
#: validator then, ``defer_build`` or not; with the two event models as constraints that built both of them (~10 ms
#: of every start). The parametrized lists validate their own event model, as before.
_E = TypeVar("_E")


class _Listed(_Result, Generic[_E]):
    """A page of events, newest first, for everyone or one pid or process name."""

    not_kept: int = 0
    """Events counted in the seconds the list spans that were not kept as raw events (shed under
    load): the list shows what was kept; counts and summaries include them."""
    not_events: int = 0
    """Items of the server's answer that were not events (``null``, an unknown kind): skipped."""
    events: list[_E]
    total_count: int
    returned: int
    truncated: bool
    pid: int | None = None
    process_name: str | None = None
    since: datetime | None = None
    source: str
    cursor: int | None = None
    """Where the source's store stood when listed: pass it as ``after`` to list only events stored since (each
    once, even one that arrived late); None: this source has no store order (use ``since``)."""
    updates: list[_E] = Field(default_factory=list)
    """With ``resolved_after``: events listed before (stored at or before ``after``) whose outcome was resolved
    since, with that outcome and their ids (a connect listed in progress, now ended)."""
    resolved_cursor: int | None = None
    """Where the source's resolutions stood when listed: pass it as ``resolved_after`` with ``after`` to get the
    outcomes resolved since as ``updates``; None: this source does not number them."""
    before: str | None = None
    """The page token of the last (oldest) event listed: pass it as ``before`` (with the same filters) to list the
    events after it, older or of its time, each once; None: nothing listed, or this source cannot page by token (a
    remote server, a merge of several lists: page back with ``until``)."""


class NetworkSummary(_Windowed):
    """``get_network_summary`` and ``get_packet_drop_summary``."""

    kind: EventKind
    count: int
    pid: int | None = None
    process_name: str | None = None
    duration_seconds: int
    source: str
    query_time: datetime


class ConnectionList(_Listed[ConnectionEvent]):
    """``list_connections``: newest first."""

    direction: Literal["outbound", "inbound", "all"] = "outbound"
    """Which connections were listed: ``connect()`` attempts (outbound), accepted ones (inbound), or both."""
    inbound_available: bool | None = None
    """With ``direction`` inbound or all: False when this source does not see accepted connections (a remote
    eBPF server, a recording; they are this host's own collector's kernel counts), None for outbound."""

    sampled: bool = False
    """True when the source samples sockets and may miss short-lived connections."""


class PacketDropList(_Listed[PacketDropEvent]):
    """``list_packet_drops``: newest first."""


class NameLookup(_Result):
    """``lookup_names``: the names known now for the addresses asked about (the rest are being
    resolved in the background, or have none)."""

    names: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    """False when names are off (``--no-dns``) or this server does not resolve them."""
    pending: int = 0
    """Questions waiting or in flight in the resolver now."""
    nameless: list[str] = Field(default_factory=list)
    """Of the addresses asked about, those the resolver already found have no name (answers it keeps for a while)."""


class PatternAnalysis(_Windowed):
    """``analyze_patterns``: the window's aggregates plus derived rates."""

    stats: WindowStats
    rate_per_minute: float
    """Events per minute over ``observed_seconds``."""
    failure_ratio: float
    source: str
    observed_seconds: int | None = None
    """The seconds of the window the source observed (see :func:`netspy_tui.analysis.aggregate.observed_seconds`):
    the window, or less when the source started later and holds nothing older; None: not said (the window)."""
    hostnames: dict[str, str] = Field(default_factory=dict)
    """Names of the top destinations that have one (address -> name; reverse DNS or /etc/hosts)."""


class GroupStat(BaseModel):
    """``list_processes`` grouped by node or workload: one group's figures in the window."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    key: str
    """The node or workload (``unknown``: events that did not say theirs)."""
    attempts: int
    failures: int
    processes: list[str] = Field(default_factory=list)
    """Its busiest processes' names (at most 10)."""


class ProcessList(_Windowed):
    """``list_processes``: top talkers in the window."""

    kind: EventKind
    duration_seconds: int
    processes: list[ProcessStat]
    group_by: Literal["process", "workload", "node"] = "process"
    groups: list[GroupStat] = Field(default_factory=list)
    """With ``group_by`` node or workload: the groups, busiest first (``processes`` stays per process)."""
    total_events: int
    source: str
    not_events: int = 0
    """Items of the server's answer that were not events (``null``, an unknown kind): skipped."""
    first_seen: datetime | None = None
    """The window's first event (of every process counted in ``total_events``); None: none, or not said."""


class ServerStatus(_Result):
    """``server_status``."""

    source: SourceInfo
    programs: list[ProgramInfo] = Field(default_factory=list)
    kubernetes: dict[str, str] = Field(default_factory=dict)
    """This node's ``k8s_*`` fields when netspy-tui runs in a Kubernetes pod (downward API)."""


class Insight(_Result):
    """``ai_insights`` and ``contextual_analysis``."""

    model: str | None = None
    """The model that wrote ``text``; None when the local rule-based explainer did."""
    engine: str
    """``openai`` (any OpenAI-compatible server) or ``rules``."""
    tool_calls: list[str] = Field(default_factory=list)
    """Tools the model called, in order, e.g. ``list_connections({"pid": 42})``."""


class TrafficReport(_Windowed):
    """``get_traffic``: bytes sent and read per process, remote address and connection."""

    stats: TrafficStats
    source: str


class LatencyReport(_Windowed):
    """``get_connect_latency``: TCP connect latency per process and destination. The attempts come
    from raw connect records: ``counts_exact`` is False when some were shed or lost in the window."""

    stats: LatencyStats
    source: str


def build_models() -> None:
    """Build every model's (and the event adapter's) validator and serializer now, not at first use: the
    dashboard calls this in the thread that imports its MCP pair, so its first refresh does not."""
    for value in list(globals().values()):
        if (
            isinstance(value, type)
            and issubclass(value, BaseModel)
            and value.__module__ == __name__
            and not value.__pydantic_complete__
        ):
            value.model_rebuild()
    _EVENT_ADAPTER.rebuild()
    _DATETIME.rebuild()
