"""The committed demo recording is exactly what demo_data.build() makes, and every line is contract-shaped."""

from __future__ import annotations

import json

import pytest

from tests.contract import validate_event
from tests.tui.demo_data import DEMO_PATH, HOSTILE, render

pytestmark = pytest.mark.quiet


def test_demo_file_is_current_and_contract_shaped() -> None:
    text = DEMO_PATH.read_text(encoding="utf-8")
    assert text == render(), "tests/data/demo.jsonl is stale: run python -m tests.tui.demo_data"
    events = [json.loads(line) for line in text.splitlines()]
    for event in events:
        validate_event(event)
    commands = {e["command"] for e in events}
    assert {"curl", "nginx", "python3", "postgres", "sshd", HOSTILE} <= commands
    assert {e.get("outcome") for e in events} >= {"ok", "refused", "in_progress", "unreachable", "timeout"}
    assert {e.get("address_family") for e in events if e["type"] == "connection"} == {2, 10}
    assert {e["kernel_drop_reason"] for e in events if e["type"] == "packet_drop"} == {
        "NO_SOCKET",
        "TCP_INVALID_SEQUENCE",
        "NETFILTER_DROP",
    }
