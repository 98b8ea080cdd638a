"""procfs sampling against real sockets: a connection this test opens shows up, once, as sampled."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import psutil
import pytest

from netspy_tui.collector.procfs import ProcfsCollector
from netspy_tui.errors import CollectorError
from netspy_tui.models import ConnectionEvent, PacketDropEvent
from tests.contract import validate_event

try:  # psutil's own record types (they moved between psutil versions)
    from psutil._ntuples import addr, sconn
except ImportError:  # pragma: no cover - psutil < 7.2
    from psutil._common import addr, sconn  # type: ignore[attr-defined,no-redef]

AnyEvent = ConnectionEvent | PacketDropEvent


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class ListSink:
    def __init__(self) -> None:
        self._events: list[AnyEvent] = []
        self._lock = threading.Lock()

    def __call__(self, events: Sequence[AnyEvent]) -> None:
        with self._lock:
            self._events.extend(events)

    @property
    def events(self) -> list[AnyEvent]:
        with self._lock:
            return list(self._events)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture
def collector() -> Iterator[tuple[ProcfsCollector, ListSink]]:
    sink = ListSink()
    c = ProcfsCollector(interval=0.1)
    c.start(sink)
    yield c, sink
    c.stop()
    assert not c.running


def _for(sink: ListSink, pid: int, port: int) -> list[ConnectionEvent]:
    return [e for e in sink.events if isinstance(e, ConnectionEvent) and e.pid == pid and e.destination_port == port]


def test_a_connection_from_this_process_appears_once_as_sampled(
    listener: socket.socket, collector: tuple[ProcfsCollector, ListSink]
) -> None:
    c, sink = collector
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        local_port = client.getsockname()[1]
        me = os.getpid()
        wait_until(lambda: _for(sink, me, port), what="the test's own connection")
        (event,) = _for(sink, me, port)
        assert event.sampled is True and event.source == "procfs"
        assert event.protocol == "TCP" and event.protocol_inferred is False and event.socket_type == "STREAM"
        assert event.outcome == "ok" and event.effective_outcome == "ok" and not event.failed
        assert event.destination == f"127.0.0.1:{port}" and event.destination_ip == "127.0.0.1"
        assert event.address_family == socket.AF_INET
        assert event.raw_ipv4 == int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
        assert event.command == psutil.Process(me).name()[:15]
        assert event.time.tzinfo is not None and len(event.id) == 16
        validate_event(event.model_dump(mode="json", exclude_none=True))  # every contract field, right types
        # later samples do not report it again; the accepted (inbound) side is never reported
        seen = c.samples
        wait_until(lambda: c.samples >= seen + 3, what="three more samples")
        assert len(_for(sink, me, port)) == 1
        assert not [e for e in sink.events if isinstance(e, ConnectionEvent) and e.destination_port == local_port]
    finally:
        client.close()


def test_a_child_process_connection_carries_the_child_pid_and_name(
    listener: socket.socket, collector: tuple[ProcfsCollector, ListSink]
) -> None:
    _, sink = collector
    port = listener.getsockname()[1]
    code = (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        wait_until(lambda: _for(sink, child.pid, port), what="the child's connection")
        (event,) = _for(sink, child.pid, port)
        assert event.command == psutil.Process(child.pid).name()[:15] != ""
        assert event.sampled is True and event.outcome == "ok"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_udp_connected_sockets_are_reported(collector: tuple[ProcfsCollector, ListSink]) -> None:
    _, sink = collector
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", 9))  # connect() on UDP only sets the peer: no packet needed
    try:
        wait_until(lambda: _for(sink, os.getpid(), 9), what="the UDP socket")
        (event,) = _for(sink, os.getpid(), 9)
        assert event.protocol == "UDP" and event.socket_type == "DGRAM" and event.raw_protocol == 17
        assert event.outcome == "ok"
    finally:
        udp.close()


def _conn(
    pid: int | None,
    lport: int,
    rport: int | None,
    status: str = "ESTABLISHED",
    kind: int = socket.SOCK_STREAM,
    rip: str = "10.1.2.3",
) -> sconn:
    raddr = addr(rip, rport) if rport is not None else ()
    return sconn(
        fd=3,
        family=socket.AF_INET6 if ":" in rip else socket.AF_INET,
        type=kind,
        laddr=addr("10.0.0.1", lport),
        raddr=raddr,
        status=status,
        pid=pid,
    )


def test_sampling_rules_on_psutil_records() -> None:
    """Which sockets count, on psutil's own record type: new, outbound, owned; closed ones forgotten."""
    c = ProcfsCollector()
    c._root = False  # (as an ordinary user, whatever runs the test)
    me = os.getpid()
    listen = _conn(me, 8080, None, status="LISTEN")
    out = _conn(me, 40000, 443)
    inbound = _conn(me, 8080, 50000)
    unowned = _conn(None, 40001, 443)
    syn = _conn(me, 40002, 80, status="SYN_SENT")
    v6 = _conn(me, 40003, 53, kind=socket.SOCK_DGRAM, status="NONE", rip="2001:db8::1")
    first = c._sample([listen, out, inbound, unowned, syn, v6])
    assert [(e.destination, e.outcome) for e in first] == [
        ("10.1.2.3:443", "ok"),
        ("10.1.2.3:80", "in_progress"),
        ("[2001:db8::1]:53", "ok"),
    ]
    assert first[2].address_family == socket.AF_INET6 and first[2].raw_ipv6[:2] == [0x20, 0x01]
    # another user's connection (its process unreadable without root) is not shown, and that is said
    assert c.notes == ["1 connection of other users' processes not shown (their owners need root to read)"]
    assert c._sample([listen, out, syn, v6]) == []  # nothing new
    assert c.notes == []
    # a socket the kernel holds after its process closed it has no owner to hide: not "another user's"
    closed = [_conn(None, 40010, 443, status="TIME_WAIT"), _conn(None, 40011, 443, status="CLOSE")]
    assert c._sample([listen, out, syn, v6, *closed]) == [] and c.notes == []
    # root reads every process: a socket without one is never another user's
    c._root = True
    assert c._sample([listen, out, syn, v6, unowned]) == [] and c.notes == []
    c._root = False
    assert c._sample([listen, syn, v6]) == []  # `out` closed ...
    again = c._sample([listen, out, syn, v6])  # ... and the same tuple is a new connection
    assert [e.destination for e in again] == ["10.1.2.3:443"]


def test_bad_interval_is_refused() -> None:
    with pytest.raises(CollectorError, match="interval"):
        ProcfsCollector(interval=0)
