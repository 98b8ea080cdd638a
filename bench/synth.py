"""Synthetic telemetry with a realistic spread: ring records made with numpy, decoded by the
product's own eBPF decoder (so events are exactly what the collector would hand the store).

Spread over the last ``span`` seconds: ~40 commands (Zipf-weighted, 1-4 pids each), ~2,000
destinations (Zipf; 10% IPv6), common ports, outcomes 85% ok / 5% refused / 3% in progress /
2% unreachable / 2% timeout / 1% reset / 2% denied, and 10% packet drops with kernel reasons.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.decode import Decoder, Event

COMMANDS = [
    "curl", "nginx", "python3", "postgres", "chrome", "firefox", "sshd", "ssh", "node", "java", "redis-server",
    "dockerd", "containerd", "kubelet", "coredns", "systemd-resolve", "apt-get", "wget", "git", "go", "cargo",
    "pip", "npm", "envoy", "haproxy", "mysqld", "mongod", "grafana", "prometheus", "telegraf", "chronyd",
    "NetworkManager", "slack", "zoom", "code", "spotify", "dropbox", "backup-agent", "cron-job", "healthcheck",
]  # fmt: skip
PORTS = np.array([443, 80, 53, 5432, 6379, 8080, 22, 3306, 27017, 9090, 123, 8443, 9200, 11211, 5672], np.uint16)
PORT_W = np.array([40, 15, 10, 6, 5, 5, 3, 3, 2, 2, 2, 3, 2, 1, 1], float)
# (code, extra flags, weight): blocking connects, outcome from the return code
OUTCOMES = [(0, 0, 85), (-111, 0, 5), (-115, 0, 3), (-101, 0, 2), (-110, 0, 2), (-104, 0, 1), (-13, 0, 2)]
DROP_REASONS = {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 5: "TCP_CSUM", 12: "NETFILTER_DROP", 45: "TCP_RESET",
                16: "OTHERHOST", 27: "TCP_INVALID_SEQUENCE"}  # fmt: skip
TCP_STATES = {"TCP_ESTABLISHED": 1, "TCP_SYN_SENT": 2, "TCP_CLOSE": 7}


def _zipf_choice(rng: np.random.Generator, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n_items + 1) ** a
    return rng.choice(n_items, size=size, p=w / w.sum())


#: synthetic "ns since boot" of the newest event (the machine may have booted less than a span ago)
TS_NOW = 10**15


def records(n: int, span: float, rng: np.random.Generator, *, drop_share: float = 0.1,
            now_mono_ns: int = TS_NOW) -> np.ndarray:
    """``n`` ring records with timestamps spread over the ``span`` seconds before ``now_mono_ns``, oldest first."""
    now = now_mono_ns
    out = np.zeros(n, P.RECORD)
    ages = np.sort(rng.uniform(0, span * 1e9, n).astype(np.int64))[::-1]
    out["ts"] = (now - ages).astype(np.uint64)
    cmd_idx = _zipf_choice(rng, len(COMMANDS), n)
    comms = np.array([c.encode()[:15] for c in COMMANDS], "S16")
    out["comm"] = comms[cmd_idx]
    out["pid"] = 1000 + cmd_idx * 10 + rng.integers(0, 4, n)
    drops = rng.random(n) < drop_share
    out["kind"] = np.where(drops, P.KIND_DROP, P.KIND_CONNECT)
    # destinations: 2,000 addresses, 10% of them IPv6
    dest = _zipf_choice(rng, 2000, n, 1.05)
    v6 = dest % 10 == 0
    addr = out["addr"]
    addr[:, 0] = np.where(v6, 0x20, 10)
    addr[:, 1] = np.where(v6, 0x01, (dest >> 8) & 0xFF)
    addr[:, 2] = np.where(v6, 0x0D, dest & 0xFF)
    addr[:, 3] = np.where(v6, 0xB8, 1 + dest % 250)
    addr[v6, 14] = (dest[v6] >> 8) & 0xFF
    addr[v6, 15] = dest[v6] & 0xFF
    out["family"] = np.where(v6, P.AF_INET6, P.AF_INET)
    port = PORTS[rng.choice(len(PORTS), size=n, p=PORT_W / PORT_W.sum())]
    out["port"] = port
    udp = (port == 53) | (port == 123)
    out["socktype"] = np.where(udp, 2, 1)
    out["protocol"] = np.where(udp, 17, 6)
    w = np.array([o[2] for o in OUTCOMES], float)
    pick = rng.choice(len(OUTCOMES), size=n, p=w / w.sum())
    out["code"] = np.array([o[0] for o in OUTCOMES], np.int32)[pick]
    out["flags"] = P.F_SOCKINFO
    # drops: kernel reason in code, L3 info for most
    reasons = np.array(list(DROP_REASONS), np.int32)
    out["code"][drops] = reasons[rng.integers(0, len(reasons), int(drops.sum()))]
    out["flags"][drops] = P.F_L3 | P.F_PORT
    out["length"][drops] = rng.integers(40, 1500, int(drops.sum()))
    out["size"][drops] = out["length"][drops]
    irq = drops & (rng.random(n) < 0.5)
    out["pid"][irq] = 0
    out["comm"][irq] = b""
    out["flags"][irq] |= P.F_IRQ
    return out


def decoder(ts_now: int = TS_NOW) -> Decoder:
    """The product decoder, its clock pinned so that ``ts_now`` is the wall-clock now."""
    dec = Decoder(DROP_REASONS, TCP_STATES, outcome_deadline=3.0, source="ebpf")
    dec.clock._offset_ns = time.time_ns() - ts_now
    dec.clock.maybe_sync = lambda: None  # type: ignore[method-assign]
    return dec


def event_batches(n: int, span: float, *, seed: int = 1, batch: int = 4096, drop_share: float = 0.1
                  ) -> Iterator[list[Event]]:
    """``n`` decoded events over the last ``span`` seconds, oldest first, in batches."""
    rng = np.random.default_rng(seed)
    dec = decoder()
    recs = records(n, span, rng, drop_share=drop_share)
    for i in range(0, n, batch):
        yield dec.feed(recs[i : i + batch], now_ns=TS_NOW)


def storm_records(n: int, port: int = 40000, workers: int = 2) -> np.ndarray:
    """Records shaped like the capture storm: refused loopback connects, each followed by the kernel's
    NO_SOCKET drop of its SYN (one destination, one command, ``workers`` pids)."""
    out = np.zeros(n, P.RECORD)
    out["ts"] = TS_NOW - 5_000_000_000 + np.arange(n, dtype=np.uint64) * 9_000
    drop = np.arange(n) % 2 == 1
    out["kind"] = np.where(drop, P.KIND_DROP, P.KIND_CONNECT)
    out["pid"] = 30000 + (np.arange(n) // 2) % workers
    out["comm"] = b"nsbench-gen"
    out["addr"][:, :4] = (127, 0, 0, 1)
    out["family"] = P.AF_INET
    out["port"] = port
    out["socktype"] = np.where(drop, 0x0800, 1)
    out["protocol"] = 6
    refused = P.F_SOCKINFO | P.F_TCP | P.F_DONE | P.F_RESET | (7 << P.STATE_SHIFT)
    out["flags"] = np.where(drop, P.F_L3 | P.F_PORT, refused)
    out["code"] = np.where(drop, 3, -111)
    out["length"] = np.where(drop, 60, 0)
    out["size"] = np.where(drop, 60, 0)
    out["key"] = np.where(drop, 0, 0xFFFF888000000000 + np.arange(n, dtype=np.uint64) * 64)
    return out
