"""Kernel drop reasons survive a round trip through `serve`, while the wire stays contract-valid: the
contract's category and code (1 SKB_FREE ... 5 NETFILTER_DROP) in ``drop_reason``/``drop_reason_code``,
the kernel's name and number (``enum skb_drop_reason``: 3 = NO_SOCKET) in ``kernel_drop_reason[_code]``."""

from __future__ import annotations

import httpx
import pytest

from netspy_tui.models import CONTRACT_DROP_REASONS, EventQuery, contract_drop, contract_drop_reason, parse_event
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.app import event_json
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from tests.contract import validate_event
from tests.factories import drop

#: What a contract client does with a code (the ebpf-server's formatDropReason).
CONTRACT_NAME = {i + 1: name for i, name in enumerate(CONTRACT_DROP_REASONS)}


def _contract_name(code: int) -> str:
    return CONTRACT_NAME.get(code, f"UNKNOWN({code})")


def test_kernel_reason_is_sent_as_contract_category_and_code_plus_extension():
    event = drop(reason="NO_SOCKET", code=3, protocol="UDP")
    wire = event_json(event)
    validate_event(wire)
    assert (wire["drop_reason"], wire["drop_reason_code"]) == ("UDP_DROP", 3)
    assert (wire["kernel_drop_reason"], wire["kernel_drop_reason_code"]) == ("NO_SOCKET", 3)
    back = parse_event(wire)
    assert (back.drop_reason, back.drop_reason_code) == ("NO_SOCKET", 3)


def test_a_kernel_number_is_never_sent_as_the_contract_code():
    # NO_SOCKET (kernel 3) on TCP: a contract client must read TCP_DROP (2), not UDP_DROP (3).
    wire = event_json(drop(reason="NO_SOCKET", code=3, protocol="TCP"))
    assert (wire["drop_reason"], wire["drop_reason_code"]) == ("TCP_DROP", 2)
    assert _contract_name(wire["drop_reason_code"]) == wire["drop_reason"]
    assert wire["kernel_drop_reason_code"] == 3
    back = parse_event(wire)
    assert (back.drop_reason, back.drop_reason_code) == ("NO_SOCKET", 3)


@pytest.mark.parametrize(
    ("reason", "code", "protocol"),
    [
        ("NO_SOCKET", 3, "UDP"),
        ("NO_SOCKET", 3, "TCP"),
        ("NOT_SPECIFIED", 2, None),
        ("OTHERHOST", 9, None),
        ("NETFILTER_DROP", 12, None),
        ("TCP_INVALID_SEQUENCE", 81, None),
        ("ICMP_CSUM", 60, None),
        ("UNKNOWN(4)", 4, None),
        ("UNKNOWN(777)", 777, None),
        ("", 1, None),
        ("TCP_DROP", 2, None),
    ],
)
def test_the_code_on_the_wire_always_names_the_category_on_the_wire(reason, code, protocol):
    wire = event_json(drop(reason=reason, code=code, protocol=protocol))
    validate_event(wire)
    assert _contract_name(wire["drop_reason_code"]) == wire["drop_reason"]
    back = parse_event(wire)
    assert back.drop_reason_code == code
    assert back.drop_reason == (reason or wire["drop_reason"])


def test_contract_names_pass_through_unchanged():
    wire = event_json(drop(reason="TCP_DROP", code=2))
    assert (wire["drop_reason"], wire["drop_reason_code"]) == ("TCP_DROP", 2)
    assert "kernel_drop_reason" not in wire and "kernel_drop_reason_code" not in wire


def test_categories():
    assert contract_drop_reason("NETFILTER_DROP", None, 12) == "NETFILTER_DROP"
    assert contract_drop_reason("TCP_INVALID_SEQUENCE", None, 20) == "TCP_DROP"
    assert contract_drop_reason("NO_SOCKET", "TCP", 3) == "TCP_DROP"
    assert contract_drop_reason("OTHERHOST", None, 9) == "UNKNOWN(9)"
    assert contract_drop("NETFILTER_DROP", None, 12) == ("NETFILTER_DROP", 5)
    assert contract_drop("OTHERHOST", None, 9) == ("UNKNOWN(9)", 9)
    assert contract_drop("NOT_SPECIFIED", None, 2) == ("UNKNOWN(0)", 0)  # 2 would read TCP_DROP


def test_an_original_server_event_keeps_its_contract_code():
    # No kernel fields: what the ebpf-server sends is read as it is.
    back = parse_event({**event_json(drop(reason="UDP_DROP", code=3)), "drop_reason_code": 3})
    assert (back.drop_reason, back.drop_reason_code) == ("UDP_DROP", 3)


async def test_the_client_reads_both_codes_from_serve():
    # `serve` on a real socket: what a client sees on the wire, and what HttpSource makes of it.
    drops = [
        drop(pid=7, reason="NO_SOCKET", code=3, protocol="TCP", ago=3),
        drop(pid=7, reason="NO_SOCKET", code=3, protocol="UDP", ago=2),
        drop(pid=7, reason="NOT_SPECIFIED", code=2, ago=1),
        drop(pid=7, reason="UDP_DROP", code=3, ago=4),
    ]
    with BackgroundServer(create_app(MemorySource(drops))) as srv:
        source = HttpSource(srv.url, retries=0)
        try:
            async with httpx.AsyncClient() as http:
                raw = (await http.get(f"{srv.url}/api/events", params={"type": "packet_drop"})).json()["events"]
            page = await source.query(EventQuery(kind="packet_drop"))
        finally:
            await source.aclose()
    assert [(w["drop_reason"], w["drop_reason_code"]) for w in raw] == [
        ("UNKNOWN(0)", 0),
        ("UDP_DROP", 3),
        ("TCP_DROP", 2),
        ("UDP_DROP", 3),
    ]
    assert [(e.drop_reason, e.drop_reason_code) for e in page.events] == [
        ("NOT_SPECIFIED", 2),
        ("NO_SOCKET", 3),
        ("NO_SOCKET", 3),
        ("UDP_DROP", 3),
    ]
