"""Sampling sockets from /proc with psutil: the collector for unprivileged users or kernels without eBPF.

Every ``interval`` seconds the collector lists the host's inet sockets
(``psutil.net_connections("inet")``) and reports each outbound connection it has not seen before
as a :class:`~netspy_tui.models.ConnectionEvent` marked ``sampled``: a connection opened and closed
between two samples is never seen. A connection is outbound when it has a remote address and its
local port is not a listening port (accepted connections are inbound and skipped).

Sockets whose owner cannot be read (``pid`` None: other users' processes when not root, or
sockets in TIME_WAIT that no process owns any more) are skipped: the collector reports only what
it can attribute to a process.

The first sample reports the connections already open when the collector starts, stamped with
the time they were first seen.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Hashable
from typing import Any

import psutil

from netspy_tui.collector.base import Batch, Collector, Sink
from netspy_tui.errors import CollectorError
from netspy_tui.models import ConnectionEvent, new_event_id, utcnow

logger = logging.getLogger(__name__)

#: Length of the kernel's ``comm`` (TASK_COMM_LEN - 1): psutil may return the longer cmdline name.
COMM_LEN = 15

#: states of a socket the kernel holds after its process closed it (no process owns it: psutil gives no pid)
_NO_OWNER = frozenset({psutil.CONN_TIME_WAIT, psutil.CONN_CLOSE})

_TCP_OUTCOME = {
    psutil.CONN_SYN_SENT: "in_progress",
    psutil.CONN_ESTABLISHED: "ok",
    # the connect() succeeded before the connection started closing
    psutil.CONN_FIN_WAIT1: "ok",
    psutil.CONN_FIN_WAIT2: "ok",
    psutil.CONN_CLOSE_WAIT: "ok",
    psutil.CONN_LAST_ACK: "ok",
    psutil.CONN_CLOSING: "ok",
    psutil.CONN_TIME_WAIT: "ok",
}


def _outcome(kind: int, status: str) -> str | None:
    if kind == socket.SOCK_DGRAM:
        return "ok"  # a UDP socket with a remote address: connect() succeeded
    return _TCP_OUTCOME.get(status)


class ProcfsCollector(Collector):
    """Outbound inet connections, sampled every ``interval`` seconds."""

    name = "procfs"
    label = "procfs sampling"
    sampled = True

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        if not 0 < interval <= 3600:
            raise CollectorError(
                f"procfs sampling interval {interval} s is out of range", "use a positive number of seconds, e.g. 1"
            )
        self.interval = float(interval)
        self._seen: set[Hashable] = set()
        self._names: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.unowned = 0
        """Connections of the last sample whose process could not be read (another user's, without root)."""
        self._root = os.geteuid() == 0
        self._traffic: Any = None  # a sockdiag.TrafficSampler while sampling traffic
        self._stop.set()  # not running until start()

    @property
    def notes(self) -> list[str]:
        """What this sampler cannot show, one line each (``server_status``, the dashboard's header)."""
        if not self.unowned:
            return []
        n = self.unowned
        return [f"{n:,} connection{'' if n == 1 else 's'} of other users' processes not shown (their owners need "
                "root to read)"]  # fmt: skip

    @property
    def counts_traffic(self) -> bool:
        """Whether this collector samples bytes per TCP connection (socket diagnostics answered)."""
        return self._traffic is not None

    def start(self, sink: Sink) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise CollectorError("the procfs collector is already running", "stop it before starting it again")
        try:
            first = psutil.net_connections("inet")
        except (psutil.Error, OSError) as exc:
            raise CollectorError(
                f"cannot list sockets with psutil: {exc}",
                "procfs sampling needs a readable /proc (Linux); try --collector replay",
            ) from exc
        ingest = getattr(sink, "ingest", None)
        if ingest is not None and self._traffic is None:
            try:
                from netspy_tui.collector.sockdiag import TrafficSampler  # noqa: PLC0415

                self._traffic = TrafficSampler()
            except Exception as exc:  # no netlink socket diagnostics here: events only
                logger.info("procfs: no byte counters from socket diagnostics (%s)", exc)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sink, first), name="netspy-procfs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, self.interval * 2))
        sampler, self._traffic = self._traffic, None
        if sampler is not None and (thread is None or not thread.is_alive()):
            sampler.close()

    def _run(self, sink: Sink, first: list[Any]) -> None:
        conns: list[Any] | None = first
        while True:
            try:
                if conns is None:
                    conns = psutil.net_connections("inet")
                events = self._sample(conns)
            except Exception as exc:  # keep sampling: /proc races are transient
                self.stats.errors += 1
                self.stats.last_error = f"sampling failed: {exc}"
                logger.warning("procfs sample failed: %s", exc)
                events = []
            self.samples += 1
            self.deliver(sink, events)
            if self._traffic is not None and conns is not None:
                self._sample_traffic(sink, conns)
            conns = None
            if self._stop.wait(self.interval):
                return

    def _sample_traffic(self, sink: Sink, conns: list[Any]) -> None:
        """Bytes per TCP connection since the last sample, to the store (``sink.ingest``)."""
        from netspy_tui.collector.sockdiag import normal_address  # noqa: PLC0415

        listening = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
        owners = {
            (normal_address(c.laddr.ip), c.laddr.port, normal_address(c.raddr.ip), c.raddr.port):
                (c.pid, self._command(c.pid))
            for c in conns if c.pid is not None and c.laddr and c.raddr and c.type == socket.SOCK_STREAM
        }  # fmt: skip
        try:
            rows = self._traffic.sample(owners, listening, time.time_ns())
            if rows:
                sink.ingest(Batch(traffic_rows=rows))  # type: ignore[attr-defined]
        except Exception as exc:  # keep sampling events: a socket-diagnostics hiccup costs one sample
            self.stats.errors += 1
            self.stats.last_error = f"traffic sample failed: {exc}"
            logger.warning("procfs traffic sample failed: %s", exc)

    def _command(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            try:
                name = psutil.Process(pid).name()[:COMM_LEN]
            except (psutil.Error, OSError):
                name = ""
            self._names[pid] = name
        return name

    def _sample(self, conns: list[Any]) -> list[ConnectionEvent]:
        """Events for the outbound connections in ``conns`` not seen in the previous sample."""
        listening = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
        now = utcnow()
        stamp = time.monotonic_ns()  # CLOCK_MONOTONIC, like bpf_ktime_get_ns
        current: set[Hashable] = set()
        pids: set[int] = set()
        events: list[ConnectionEvent] = []
        unowned = 0
        for c in conns:
            if not c.raddr or (c.laddr and c.laddr.port in listening):
                continue
            if c.pid is None:  # (another user's process, whose /proc/PID/fd this user cannot read; or none at all)
                # a socket in TIME_WAIT or CLOSE is held by the kernel after its process closed it, and root reads
                # every process: neither is a connection hidden from this user
                if c.status not in _NO_OWNER and not self._root:
                    unowned += 1
                continue
            key = (c.pid, c.type, c.laddr, c.raddr)
            current.add(key)
            pids.add(c.pid)
            if key in self._seen:
                continue
            event = self._event(c, now, stamp)
            if event is not None:
                events.append(event)
        self.unowned = unowned
        self._seen = current  # closed connections are forgotten
        self._names = {pid: name for pid, name in self._names.items() if pid in pids}  # pids may be reused
        return events

    def _event(self, c: Any, now: Any, stamp: int) -> ConnectionEvent | None:
        ip, port = c.raddr.ip, c.raddr.port
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return None
        if c.type == socket.SOCK_STREAM:
            protocol, socket_type, raw_protocol = "TCP", "STREAM", socket.IPPROTO_TCP
        elif c.type == socket.SOCK_DGRAM:
            protocol, socket_type, raw_protocol = "UDP", "DGRAM", socket.IPPROTO_UDP
        else:
            return None
        if addr.version == 4:
            family, destination = socket.AF_INET, f"{ip}:{port}"
            raw_ipv4, raw_ipv6 = int.from_bytes(addr.packed, "little"), [0] * 16
        else:
            family, destination = socket.AF_INET6, f"[{ip}]:{port}"
            raw_ipv4, raw_ipv6 = 0, list(addr.packed)
        return ConnectionEvent.model_construct(
            id=new_event_id(),
            type="connection",
            pid=c.pid,
            command=self._command(c.pid),
            timestamp=stamp,
            time=now,
            k8s_node_name=None,
            k8s_pod_name=None,
            k8s_namespace=None,
            source=self.name,
            destination_ip=ip,
            destination_port=port,
            destination=destination,
            address_family=int(family),
            protocol=protocol,
            socket_type=socket_type,
            return_code=0,
            raw_ipv4=raw_ipv4,
            raw_ipv6=raw_ipv6,
            raw_protocol=int(raw_protocol),
            raw_socktype=int(c.type),
            outcome=_outcome(c.type, c.status),
            protocol_inferred=False,
            sampled=True,
        )
