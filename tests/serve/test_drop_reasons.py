"""Kernel drop-reason names survive a round trip through `serve`, while the wire stays contract-valid."""

from __future__ import annotations

from netspy_tui.models import contract_drop_reason, parse_event
from netspy_tui.serve.app import event_json
from tests.contract import validate_event
from tests.factories import drop


def test_kernel_reason_is_sent_as_contract_category_plus_extension():
    event = drop(reason="NO_SOCKET", code=3, protocol="UDP")
    wire = event_json(event)
    validate_event(wire)
    assert wire["drop_reason"] == "UDP_DROP" and wire["kernel_drop_reason"] == "NO_SOCKET"
    assert parse_event(wire).drop_reason == "NO_SOCKET"


def test_contract_names_pass_through_unchanged():
    wire = event_json(drop(reason="TCP_DROP", code=2))
    assert wire["drop_reason"] == "TCP_DROP" and "kernel_drop_reason" not in wire


def test_categories():
    assert contract_drop_reason("NETFILTER_DROP", None, 12) == "NETFILTER_DROP"
    assert contract_drop_reason("TCP_INVALID_SEQUENCE", None, 20) == "TCP_DROP"
    assert contract_drop_reason("NO_SOCKET", "TCP", 3) == "TCP_DROP"
    assert contract_drop_reason("OTHERHOST", None, 9) == "UNKNOWN(9)"
