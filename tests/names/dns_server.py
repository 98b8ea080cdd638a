"""A DNS server on 127.0.0.1 that answers PTR questions from a table the test controls, counts the
questions it gets, and can be told to answer late or never (real UDP, dnspython's wire format)."""

from __future__ import annotations

import socket
import threading
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset


class PtrServer:
    def __init__(self, names: dict[str, str] | None = None, *, ttl: int = 300, delay: float = 0.0,
                 silent: bool = False) -> None:  # fmt: skip
        self.names = dict(names or {})  # address -> host name
        self.ttl = ttl
        self.delay = delay
        self.silent = silent
        self.gate = threading.Event()  # answers wait until it is set (set at once unless held)
        self.gate.set()
        self.questions: list[str] = []  # addresses asked about, in order
        self.in_flight = self.in_flight_max = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> PtrServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.questions)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(wire)
            qname = query.question[0].name
            address = dns.reversename.to_address(qname)
            with self._lock:
                self.questions.append(address)
                self.in_flight += 1
                self.in_flight_max = max(self.in_flight_max, self.in_flight)
            if self.silent:
                continue
            threading.Thread(target=self._answer, args=(query, qname, address, peer), daemon=True).start()

    def _answer(self, query: dns.message.Message, qname: dns.name.Name, address: str, peer: object) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.gate.wait(30)
        response = dns.message.make_response(query)
        name = self.names.get(address)
        if name is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.append(dns.rrset.from_text(qname, self.ttl, "IN", "PTR", name + "."))
        with self._lock:
            self.in_flight -= 1
        try:
            self._sock.sendto(response.to_wire(), peer)  # type: ignore[arg-type]
        except OSError:
            pass
