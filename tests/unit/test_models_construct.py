"""models.constructor: the fast model_construct the eBPF codec builds a page's events with must make
exactly what pydantic's model_construct makes (fields, the set of fields given, extras, dumps)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from netspy_tui.models import ConnectionEvent, PacketDropEvent, constructor

pytestmark = pytest.mark.quiet

WHEN = datetime(2026, 12, 3, 17, 0, 1, 123456, tzinfo=UTC)
CONNECT: dict[str, Any] = {
    "id": "00ff", "pid": 42, "command": "curl", "timestamp": 7, "time": WHEN, "source": "ebpf", "thread": None,
    "destination_ip": "10.0.0.1", "destination_port": 443, "destination": "10.0.0.1:443", "address_family": 2,
    "protocol": "TCP", "socket_type": "SOCK_STREAM", "return_code": -111, "raw_ipv4": 16777226,
    "raw_ipv6": [0] * 16, "raw_protocol": 6, "raw_socktype": 1, "outcome": "refused", "protocol_inferred": None,
    "socket_family": None,
}  # fmt: skip
DROP: dict[str, Any] = {
    "id": "0a", "pid": 0, "command": "", "timestamp": 9, "time": WHEN, "source": "ebpf", "thread": None,
    "drop_reason_code": 3, "drop_reason": "NO_SOCKET", "skb_length": 60, "packet_size_bytes": 60,
    "protocol": "UDP", "destination": None,
}  # fmt: skip


def _same(a: BaseModel, b: BaseModel) -> None:
    assert type(a) is type(b)
    assert vars(a) == vars(b) and list(vars(a)) == list(vars(b))
    assert a.model_fields_set == b.model_fields_set
    assert a.model_extra == b.model_extra
    assert a.model_dump(mode="json") == b.model_dump(mode="json")
    assert a.model_dump_json() == b.model_dump_json()
    assert a == b


def test_events_are_what_model_construct_makes() -> None:
    for model, values in ((ConnectionEvent, CONNECT), (PacketDropEvent, DROP)):
        _same(constructor(model)(**values), model.model_construct(**values))
        fewer = {k: v for k, v in values.items() if k not in ("thread", "source", "protocol")}
        _same(constructor(model)(**fewer), model.model_construct(**fewer))


def test_a_default_factory_gives_each_event_its_own_value() -> None:
    build = constructor(ConnectionEvent)
    values = {k: v for k, v in CONNECT.items() if k != "raw_ipv6"}
    a, b = build(**values), build(**values)
    _same(a, ConnectionEvent.model_construct(**values))
    assert a.raw_ipv6 == [] and a.raw_ipv6 is not b.raw_ipv6


def test_unknown_fields_go_the_pydantic_way() -> None:
    build = constructor(ConnectionEvent)
    extra = {**CONNECT, "vendor_field": "x"}
    _same(build(**extra), ConnectionEvent.model_construct(**extra))
    assert build(**extra).model_extra == {"vendor_field": "x"}
