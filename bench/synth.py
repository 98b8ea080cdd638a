"""Synthetic telemetry with a realistic spread, as the eBPF collector hands it to the store: ring
records (:data:`programs.RECORD`) and the counts the kernel would have kept for them.

Spread over the last ``span`` seconds: ~40 commands (Zipf-weighted, 1-4 pids each), ~2,000
destinations (Zipf; 10% IPv6), common ports, outcomes 85% ok / 5% refused / 3% in progress /
2% unreachable / 2% timeout / 1% reset / 2% denied, and 10% packet drops with kernel reasons.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import numpy as np

from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.decode import Codec, Event, random_ids

COMMANDS = [
    "curl", "nginx", "python3", "postgres", "chrome", "firefox", "sshd", "ssh", "node", "java", "redis-server",
    "dockerd", "containerd", "kubelet", "coredns", "systemd-resolve", "apt-get", "wget", "git", "go", "cargo",
    "pip", "npm", "envoy", "haproxy", "mysqld", "mongod", "grafana", "prometheus", "telegraf", "chronyd",
    "NetworkManager", "slack", "zoom", "code", "spotify", "dropbox", "backup-agent", "cron-job", "healthcheck",
]  # fmt: skip
PORTS = np.array([443, 80, 53, 5432, 6379, 8080, 22, 3306, 27017, 9090, 123, 8443, 9200, 11211, 5672], np.uint16)
PORT_W = np.array([40, 15, 10, 6, 5, 5, 3, 3, 2, 2, 2, 3, 2, 1, 1], float)
# (return code, result, weight): what connect() said and what the kernel made of it
OUTCOMES = [(0, 0, 85), (-111, 111, 5), (-115, P.RESULT_PENDING, 3), (-101, 101, 2), (-110, 110, 2),
            (-104, 104, 1), (-13, 13, 2)]  # fmt: skip
DROP_REASONS = {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 5: "TCP_CSUM", 12: "NETFILTER_DROP", 45: "TCP_RESET",
                16: "OTHERHOST", 27: "TCP_INVALID_SEQUENCE"}  # fmt: skip
#: distinct destination addresses (10% of them IPv6)
DESTINATIONS = 2000
#: "ns since boot" of the newest event (the machine may have booted less than a span ago)
TS_NOW = 10**15


def _zipf_choice(rng: np.random.Generator, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n_items + 1) ** a
    return rng.choice(n_items, size=size, p=w / w.sum())


def records(
    n: int,
    span: float,
    rng: np.random.Generator,
    *,
    drop_share: float = 0.1,
    now_wall_ns: int | None = None,
    every_destination: bool = False,
) -> np.ndarray:
    """``n`` ring records spread over the ``span`` seconds before ``now_wall_ns`` (default: now), oldest first.
    ``every_destination``: the destinations in turn, each round shuffled, instead of Zipf-weighted: every one of
    the :data:`DESTINATIONS` appears once ``n`` is that many, and fewer records go to as many destinations."""
    now = time.time_ns() if now_wall_ns is None else now_wall_ns
    out = np.zeros(n, P.RECORD)
    ages = np.sort(rng.uniform(0, span * 1e9, n).astype(np.int64))[::-1]
    out["wall"] = (now - ages).astype(np.uint64)
    out["ts"] = (TS_NOW - ages).astype(np.uint64)
    cmd_idx = _zipf_choice(rng, len(COMMANDS), n)
    comms = np.array([c.encode()[:15] for c in COMMANDS], "S16")
    out["comm"] = comms[cmd_idx]
    out["pid"] = 1000 + cmd_idx * 10 + rng.integers(0, 4, n)
    out["tid"] = out["pid"]
    drops = rng.random(n) < drop_share
    out["kind"] = np.where(drops, P.KIND_DROP, P.KIND_CONNECT)
    if every_destination:
        dest = np.concatenate([rng.permutation(DESTINATIONS) for _ in range(-(-n // DESTINATIONS))])[:n]
    else:
        dest = _zipf_choice(rng, DESTINATIONS, n, 1.05)  # 2,000 addresses, 10% of them IPv6
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
    out["result"] = np.array([o[1] for o in OUTCOMES], np.uint32)[pick]
    pending = out["result"] == P.RESULT_PENDING
    out["flags"] = P.F_SOCKINFO | np.where(pending, P.F_PENDING | P.F_TCP, P.F_RESOLVED)
    out["key"] = np.where(pending, 0xFFFF888000000000 + np.arange(n, dtype=np.uint64) * 64, 0)
    # drops: kernel reason in code, L3 info
    reasons = np.array(list(DROP_REASONS), np.int32)
    nd = int(drops.sum())
    out["code"][drops] = reasons[rng.integers(0, len(reasons), nd)]
    out["result"][drops] = 0
    out["flags"][drops] = P.F_L3 | P.F_PORT
    out["socktype"][drops] = 0x0800
    out["key"][drops] = 0
    out["length"][drops] = rng.integers(40, 1500, nd)
    out["size"][drops] = out["length"][drops]
    irq = drops & (rng.random(n) < 0.5)
    out["pid"][irq] = 0
    out["tid"][irq] = 0
    out["comm"][irq] = b""
    out["flags"][irq] |= P.F_IRQ
    return out


def destination_address(index: int) -> str:
    """The address :func:`records` gives destination ``index`` (0 to :data:`DESTINATIONS` - 1), as text."""
    if index % 10 == 0:
        return str(
            ipaddress.IPv6Address(bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 10 + [(index >> 8) & 0xFF, index & 0xFF]))
        )
    return f"10.{(index >> 8) & 0xFF}.{index & 0xFF}.{1 + index % 250}"


def counts(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The counts the kernel would have kept for these CONNECT/DROP records: one row per key."""
    recs = recs[recs["kind"] != P.KIND_OUTCOME]
    keys = np.zeros(len(recs), P.COUNT_KEY)
    keys["second"] = recs["wall"] // P.NS
    keys["tgid"], keys["comm"], keys["addr"], keys["port"] = recs["pid"], recs["comm"], recs["addr"], recs["port"]
    keys["protocol"], keys["family"], keys["kind"] = recs["protocol"], recs["family"], recs["kind"]
    keys["result"] = np.where(recs["kind"] == P.KIND_DROP, recs["code"], recs["result"]).astype(np.uint16)
    drops = recs["kind"] == P.KIND_DROP
    keys["family"][drops & ((recs["flags"] & P.F_L3) == 0)] = 0
    uniq, inverse = np.unique(keys.view(f"V{P.KEY_SIZE}"), return_inverse=True)
    values = np.zeros(len(uniq), P.COUNT_VALUE)
    np.add.at(values["n"], inverse, 1)
    values["first"] = np.iinfo(np.uint64).max
    np.minimum.at(values["first"], inverse, recs["wall"])
    np.maximum.at(values["last"], inverse, recs["wall"])
    return uniq.view(P.COUNT_KEY).reshape(-1), values


def codec() -> Codec:
    return Codec(DROP_REASONS)


def batches(
    n: int,
    span: float,
    *,
    seed: int = 1,
    batch: int = 4096,
    drop_share: float = 0.1,
    now_wall_ns: int | None = None,
    every_destination: bool = False,
) -> Iterator[Batch]:
    """What the eBPF collector would hand the store (records and their counts), oldest first."""
    rng = np.random.default_rng(seed)
    recs = records(n, span, rng, drop_share=drop_share, now_wall_ns=now_wall_ns, every_destination=every_destination)
    c = codec()
    for i in range(0, n, batch):
        part = recs[i : i + batch].copy()  # (a view would keep every record alive with the last batch)
        yield Batch(records=part, counts=counts(part), second=time.time_ns() // P.NS, codec=c)


def event_batches(
    n: int, span: float, *, seed: int = 1, batch: int = 4096, drop_share: float = 0.1, now_wall_ns: int | None = None
) -> Iterator[list[Event]]:
    """The same data as built events (what a plain sink or an HTTP server would see)."""
    rng = np.random.default_rng(seed)
    recs = records(n, span, rng, drop_share=drop_share, now_wall_ns=now_wall_ns)
    c = codec()
    for i in range(0, n, batch):
        part = recs[i : i + batch]
        yield c.events(part, random_ids(len(part)))


def storm_records(n: int, port: int = 40000, workers: int = 2) -> np.ndarray:
    """Records shaped like the capture storm: refused loopback connects, each followed by the kernel's
    NO_SOCKET drop of its SYN (one destination, one command, ``workers`` pids)."""
    out = np.zeros(n, P.RECORD)
    now = time.time_ns()
    out["wall"] = now - 5_000_000_000 + np.arange(n, dtype=np.uint64) * 9_000
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
    out["flags"] = np.where(drop, P.F_L3 | P.F_PORT | P.F_IRQ, P.F_TCP | P.F_RESOLVED)
    out["code"] = np.where(drop, 3, -111)
    out["result"] = np.where(drop, 0, 111)
    out["length"] = np.where(drop, 40, 8 + np.arange(n) % 37)  # a connect: its latency, microseconds
    out["size"] = np.where(drop, 60, 0)
    return out
