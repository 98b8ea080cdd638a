"""Builds tests/data/demo.jsonl: a deterministic recording of a busy little host.

Run ``python -m tests.tui.demo_data`` to rewrite the file; ``test_demo_data.py`` checks the
committed file is exactly what this builds (so it cannot drift) and that it is contract-shaped.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from netspy_tui.models import CONTRACT_DROP_REASONS
from tests.factories import connection_json, drop_json

#: The fixed "now" of the recording: the demo clock for screenshots and snapshot tests.
DEMO_NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
DEMO_PATH = Path(__file__).resolve().parents[1] / "data" / "demo.jsonl"
HOSTILE = "[bold red]x\x1b[2J"
#: Boot time of the recorded host: ``timestamp`` is nanoseconds since then, as bpf_ktime_get_ns gives.
_BOOT = DEMO_NOW - timedelta(days=3, hours=4)


def _ktime(when: datetime) -> int:
    return round((when - _BOOT).total_seconds() * 1e9)


# (pid, command, destination ip, port, protocol, outcome, weight, protocol_inferred)
_FLOWS: list[tuple[int, str, str, int, str, str, int, bool]] = [
    (4211, "curl", "93.184.216.34", 443, "TCP", "ok", 14, False),
    (4211, "curl", "2606:2800:220:1:248:1893:25c8:1946", 443, "TCP", "ok", 6, False),
    (4388, "curl", "10.0.0.9", 8080, "TCP", "refused", 5, False),
    (812, "nginx", "10.0.2.15", 8000, "TCP", "ok", 30, False),
    (813, "nginx", "10.0.2.15", 8000, "TCP", "in_progress", 8, False),
    (813, "nginx", "10.0.2.16", 8000, "TCP", "timeout", 4, False),
    (2048, "python3", "127.0.0.1", 5432, "TCP", "ok", 22, False),
    (2048, "python3", "10.0.3.4", 6379, "TCP", "refused", 9, False),
    (2048, "python3", "10.0.0.2", 53, "UDP", "ok", 12, True),
    (2051, "python3", "::1", 8125, "UDP", "ok", 6, True),
    (1337, "postgres", "10.0.3.7", 5432, "TCP", "ok", 7, False),
    (1337, "postgres", "fd00::7", 5432, "TCP", "unreachable", 4, False),
    (977, "sshd", "10.0.0.5", 636, "TCP", "ok", 3, False),
    (977, "sshd", "10.0.0.6", 636, "TCP", "timeout", 2, False),
    (6666, HOSTILE, "198.51.100.66", 4444, "TCP", "refused", 5, False),
    (6666, HOSTILE, "2001:db8::66", 4444, "TCP", "unreachable", 2, False),
]

_RC = {"ok": 0, "in_progress": -115, "refused": -111, "unreachable": -101, "timeout": -110}

# (pid, command, kernel reason, code, size, destination, the original server's category)
# On the wire (as ``netspy-tui serve`` sends it) ``drop_reason``/``drop_reason_code`` are the category and
# its contract code, ``kernel_drop_reason[_code]`` the kernel's; parsing shows the kernel's.
_DROPS: list[tuple[int, str, str, int, int, str | None, str]] = [
    (0, "swapper/0", "NO_SOCKET", 3, 60, "10.0.0.77:9100", "TCP_DROP"),
    (0, "swapper/1", "NO_SOCKET", 3, 52, "10.0.0.78:9100", "TCP_DROP"),
    (812, "nginx", "TCP_INVALID_SEQUENCE", 81, 1448, "10.0.2.15:8000", "TCP_DROP"),
    (6666, HOSTILE, "NETFILTER_DROP", 7, 74, "198.51.100.66:4444", "NETFILTER_DROP"),
    (2048, "python3", "TCP_INVALID_SEQUENCE", 81, 40, "10.0.3.4:6379", "TCP_DROP"),
]


def build() -> list[dict[str, Any]]:
    rng = random.Random(20261124)
    events: list[dict[str, Any]] = []
    weights = [f[6] for f in _FLOWS]
    # 240 connections over the last 10 minutes, denser in the last minute (what the 1m window shows).
    for i in range(240):
        if i < 150:
            ago = rng.uniform(0.2, 58.0)
        else:
            ago = rng.uniform(60.0, 600.0)
        pid, cmd, ip, port, proto, outcome, _, inferred = rng.choices(_FLOWS, weights)[0]
        when = DEMO_NOW - timedelta(seconds=round(ago, 3))
        ev = connection_json(
            pid, cmd, ip, port, time=when, protocol=proto, return_code=_RC[outcome], timestamp=_ktime(when)
        )
        ev["id"] = f"{rng.getrandbits(64):016x}"
        ev["outcome"] = outcome
        if inferred:
            ev["protocol_inferred"] = True
        if i % 17 == 0:
            del ev["outcome"]  # an original-server event: outcome derived from the return code
        events.append(ev)
    for i in range(14):
        pid, cmd, reason, code, size, dest, category = _DROPS[i % len(_DROPS)]
        ago = rng.uniform(1.0, 55.0) if i < 10 else rng.uniform(70.0, 500.0)
        when = DEMO_NOW - timedelta(seconds=round(ago, 3))
        ev = drop_json(
            pid, cmd, category, CONTRACT_DROP_REASONS.index(category) + 1, time=when, size=size, timestamp=_ktime(when)
        )
        ev["kernel_drop_reason"], ev["kernel_drop_reason_code"] = reason, code
        ev["id"] = f"{rng.getrandbits(64):016x}"
        if dest:
            ev["destination"] = dest
            ev["protocol"] = "TCP"
        events.append(ev)
    events.sort(key=lambda e: e["time"])
    return events


def render() -> str:
    return "".join(json.dumps(e, ensure_ascii=True, sort_keys=False) + "\n" for e in build())


if __name__ == "__main__":
    DEMO_PATH.parent.mkdir(parents=True, exist_ok=True)
    DEMO_PATH.write_text(render(), encoding="utf-8")
