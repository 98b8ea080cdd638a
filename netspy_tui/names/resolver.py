"""Reverse DNS for destination addresses, never in the way of a refresh or a tool call.

:meth:`NameResolver.lookup` answers from memory at once: a name, or None while the address is
unknown, being resolved, known to have no name, or resolution is off. A miss is handed to the
resolver's own thread (an asyncio loop running dnspython's resolver), which asks at most
``concurrency`` questions at a time, each bounded by ``timeout``. Answers are cached for their TTL
(clamped), failures for ``negative_ttl``; the cache holds at most ``max_entries`` addresses (least
recently used go first). ``/etc/hosts`` is read before DNS is asked. With ``enabled=False``
nothing is read and no query is ever sent.

The queries the resolver sends are the product's own traffic: :meth:`is_own_query` tells the
collector's events of this process to a name server apart from the user's.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

__all__ = ["NameResolver", "ResolverStats", "address_of", "normalize_address", "parse_server", "read_hosts"]

logger = logging.getLogger(__name__)

#: what a host name may hold (letters, digits, hyphen, underscore, dots); anything else that came
#: back in a PTR answer is refused rather than shown
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")
#: addresses never worth a question
_SKIP = {"", "0.0.0.0", "::", "*"}


@dataclass(frozen=True)
class ResolverStats:
    """What the resolver did so far (``server_status`` and tests read it)."""

    enabled: bool
    queries: int  # questions sent to a name server
    answered: int  # of which came back with a name
    failed: int  # no name, refused, timed out or an answer that is not a host name
    from_hosts: int  # names found in the hosts file (no question sent)
    cached: int  # addresses held (names and known failures)
    pending: int  # questions waiting or in flight now
    skipped: int  # misses not asked because ``max_pending`` were already waiting
    in_flight_max: int  # the most questions ever in flight at once


@functools.lru_cache(maxsize=16_384)
def normalize_address(address: str) -> str | None:
    """The address in canonical text (IPv4-mapped IPv6 as IPv4), or None if it is not one.

    Remembered for the most recent addresses: every refresh names each event it carries, and parsing
    with :mod:`ipaddress` is most of what a cached name costs (about 3 µs for IPv4, 10 for IPv6)."""
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # fe80::1%eth0
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def parse_server(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` (``[v6]:PORT`` for IPv6 with a port) -> (address, port); ValueError if not."""
    host, port = text.strip(), 53
    if host.count(":") == 1 or (host.startswith("[") and "]:" in host):
        host, _, number = host.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"expected a port 1-65535 after ':', got '{number[:10]}'")
        port = int(number)
    address = normalize_address(host)
    if address is None:
        raise ValueError(f"expected an IP address with an optional :PORT, got '{text[:60]}'")
    return address, port


@functools.lru_cache(maxsize=16_384)
def address_of(destination: str) -> str | None:
    """The address of a destination as the tools show it: ``1.2.3.4:443``, ``[2001:db8::1]:443``,
    or a bare address; None if it holds none."""
    text = destination.strip()
    if text.startswith("["):
        return normalize_address(text.split("]", 1)[0] + "]")
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return normalize_address(text)


def read_hosts(path: str | os.PathLike[str]) -> dict[str, str]:
    """Address -> its first name in a hosts(5) file (the first line that names it wins, as the C
    library does). A missing or unreadable file is an empty map."""
    names: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(4 << 20).splitlines()  # a hosts file is small; read at most 4 MiB
    except OSError:
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = normalize_address(fields[0])
        if address is None or address in names or not _HOSTNAME.match(fields[1]):
            continue
        names[address] = fields[1]
    return names


#: an answer's header flags: the answer (QR), its opcode, truncated (TC); a query's: recursion desired (RD)
_QR, _OPCODE, _TC, _RD = 0x8000, 0x7800, 0x0200, 0x0100


def ptr_question(address: str) -> bytes:
    """The question section (one question, wire format) asking for the PTR records of ``address`` (normalized):
    ``4.3.2.1.in-addr.arpa`` or the 32 nibbles of an IPv6 address under ``ip6.arpa``, type PTR, class IN."""
    name = ipaddress.ip_address(address).reverse_pointer
    return b"".join(len(label).to_bytes(1, "big") + label.encode("ascii") for label in name.split(".")) + (
        b"\x00\x00\x0c\x00\x01"
    )


def ptr_query(question: bytes) -> bytes:
    """A query (wire format) asking ``question``: a random id, recursion desired (as dnspython's make_query), one
    question."""
    return secrets.randbits(16).to_bytes(2, "big") + _RD.to_bytes(2, "big") + b"\x00\x01" + bytes(6) + question


def answer_flags(query: bytes, wire: bytes) -> int | None:
    """The header flags of ``wire`` if it answers ``query`` (a response to a standard query with the same id and the
    same one question; names compare without case, as in DNS), else None."""
    if len(wire) < len(query) or wire[:2] != query[:2] or wire[4:6] != b"\x00\x01":
        return None
    flags = int.from_bytes(wire[2:4], "big")
    if not flags & _QR or flags & _OPCODE or wire[12 : len(query)].lower() != query[12:]:
        return None
    return flags


class NameResolver:
    """Address -> host name, from ``/etc/hosts`` and reverse DNS, asynchronous and bounded.

    ``nameservers`` None reads ``/etc/resolv.conf`` (the system's servers); tests pass their own
    server and ``port``. Thread-safe: the dashboard, the MCP tools and the AI context may all ask.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 1.0,
        concurrency: int = 8,
        max_entries: int = 10_000,
        max_pending: int = 4_096,
        ttl_bounds: tuple[float, float] = (60.0, 3600.0),
        negative_ttl: float = 300.0,
        hosts_path: str | os.PathLike[str] | None = "/etc/hosts",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1 or max_entries < 1 or timeout <= 0:
            raise ValueError("concurrency and max_entries must be >= 1 and timeout > 0")
        self.enabled = enabled
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_entries = max_entries
        self.max_pending = max_pending
        self.ttl_bounds = ttl_bounds
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._nameservers = list(nameservers) if nameservers is not None else None
        self._port = port
        self._hosts = read_hosts(hosts_path) if enabled and hosts_path is not None else {}
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._resolver: Any = None  # dns.asyncresolver.Resolver, imported on first use
        self._server_addresses: frozenset[tuple[str, int]] = frozenset()
        self._servers: list[tuple[str, int]] = []
        """The name servers asked, in order (address, port)."""
        self._closed = False
        self._queries = self._answered = self._failed = self._from_hosts = self._skipped = 0
        self._in_flight = self._in_flight_max = 0
        self.generation = 0
        """Bumped whenever a new name is learnt: a view that shows names redraws when it changed."""

    # --- asking ------------------------------------------------------------------------------

    def lookup(self, address: str) -> str | None:
        """The name of ``address`` if known now; otherwise None, and the question is asked in the
        background (at most once at a time per address). Never blocks on the network."""
        if not self.enabled:
            return None
        key = normalize_address(address)
        if key is None or key in _SKIP:
            return None
        with self._lock:
            return self._known(key)

    def known(self, addresses: Iterable[str]) -> dict[str, str]:
        """:meth:`lookup` for many addresses at once (one lock): address (normalized) -> name for those with a
        name known now; the unknown ones are asked in the background."""
        names, _ = self.lookup_many(addresses)
        return {key: name for address, name in names.items() if (key := normalize_address(address)) is not None}

    def lookup_many(self, addresses: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """:meth:`lookup` for each of ``addresses`` (one lock): the names known now, and the addresses known to have
        none (answered without one, kept for ``negative_ttl``), each as given."""
        names: dict[str, str] = {}
        nameless: list[str] = []
        if not self.enabled:
            return names, nameless
        with self._lock:
            for address in addresses:
                key = normalize_address(address)
                if key is None or key in _SKIP:
                    continue
                hit = self._cached(key)
                name = hit[0] if hit is not None else self._known(key)
                if name is not None:
                    names[address] = name
                elif hit is not None:
                    nameless.append(address)
        return names, nameless

    def resolve(self, addresses: Iterable[str], wait: float) -> dict[str, str]:
        """The names of ``addresses`` that are known within ``wait`` seconds (asking for the
        others meanwhile): for a tool call that can afford a short wait. Addresses without a
        name are left out."""
        keys = {k for a in addresses if (k := normalize_address(a)) is not None and k not in _SKIP}
        for key in keys:
            self.lookup(key)
        deadline = self._clock() + max(0.0, wait)
        with self._done:
            while self.enabled and any(k in self._pending for k in keys):
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._done.wait(min(left, 0.05))
            out = {}
            for key in keys:
                hit = self._cached(key)
                if hit is not None and hit[0] is not None:
                    out[key] = hit[0]
        return out

    def stats(self) -> ResolverStats:
        with self._lock:
            return ResolverStats(
                enabled=self.enabled,
                queries=self._queries,
                answered=self._answered,
                failed=self._failed,
                from_hosts=self._from_hosts,
                cached=len(self._cache),
                pending=len(self._pending),
                skipped=self._skipped,
                in_flight_max=self._in_flight_max,
            )

    def is_own_query(self, pid: int, address: str, port: int) -> bool:
        """Whether an event of process ``pid`` to ``address:port`` is one of this resolver's own
        questions (this process, to a name server it asks)."""
        if pid != os.getpid() or not self.enabled:
            return False
        key = normalize_address(address)
        return key is not None and (key, port) in self._server_addresses

    def close(self) -> None:
        """Stop the resolver's thread; later misses are not asked."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._done.notify_all()
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=2.0)

    # --- cache (the lock held) ---------------------------------------------------------------

    def _known(self, key: str) -> str | None:
        hit = self._cached(key)
        if hit is not None:
            return hit[0]
        name = self._hosts.get(key)
        if name is not None:
            self._from_hosts += 1
            self._store(key, name, float("inf"))
            return name
        self._ask(key)
        return None

    def _cached(self, key: str) -> tuple[str | None, float] | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return hit

    def _store(self, key: str, name: str | None, ttl: float) -> None:
        self._cache[key] = (name, self._clock() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        if name is not None:
            self.generation += 1

    def _ask(self, key: str) -> None:
        if key in self._pending or self._closed:
            return
        if len(self._pending) >= self.max_pending:
            self._skipped += 1
            return
        loop = self._start()
        if loop is None:
            return
        self._pending.add(key)
        future: Future[None] = asyncio.run_coroutine_threadsafe(self._query(key), loop)
        # never "exception was never retrieved"; a question cancelled at close() has none (exception() would raise)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    # --- the resolver's thread -----------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop | None:
        """The resolver thread's loop, started on the first miss (the lock held)."""
        if self._loop is not None:
            return self._loop
        try:
            import dns.asyncresolver

            resolver = dns.asyncresolver.Resolver(configure=self._nameservers is None)
        except Exception as exc:  # no resolv.conf, unreadable: say once, resolve nothing
            logger.warning("reverse DNS off: %s", exc)
            self.enabled = False
            return None
        if self._nameservers is not None:
            resolver.nameservers = list(self._nameservers)
            resolver.port = self._port
        resolver.lifetime = self.timeout
        resolver.timeout = self.timeout
        resolver.cache = None  # this class caches, bounded
        ports = getattr(resolver, "nameserver_ports", {}) or {}
        servers: list[tuple[str, int]] = []
        for server in resolver.nameservers:
            text = str(getattr(server, "address", server))
            address = normalize_address(text)
            if address is not None:
                servers.append((address, int(ports.get(text, resolver.port))))
        self._servers = list(dict.fromkeys(servers))
        self._server_addresses = frozenset(servers)
        self._resolver = resolver
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._semaphore = asyncio.Semaphore(self.concurrency)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                loop.close()

        thread = threading.Thread(target=run, name="netspy-names", daemon=True)
        thread.start()
        ready.wait(5.0)
        self._loop, self._thread = loop, thread
        return loop

    async def _ptr(self, key: str) -> Any:
        """The PTR records of ``key`` (an RRset, or None: no name), asking the name servers in turn within
        :attr:`timeout` (the next one when a server fails or refuses); raises DNSException or OSError when none
        answered.

        One question is one datagram on a socket of its own (a new source port and a new id each time, as
        dnspython's resolver uses), sent and read here: the resolver's own path cost ~0.35 ms of CPU a question (its
        transport, a resolution object, a timer). The question is written as bytes and an answer's header read as
        bytes (:func:`ptr_query`, :func:`answer_flags`): dnspython's message objects for both cost half of what was
        left (~0.15 of ~0.3 ms), and the usual answer for a private address, no such name, needs nothing else; only
        an answer with records is decoded by dnspython. An answer too long for a datagram (truncated) is asked again
        by dnspython's resolver (over TCP)."""
        import dns.exception
        import dns.rcode

        if not self._servers:  # (servers not given as addresses: dnspython's resolver finds and asks them)
            return (await self._resolver.resolve_address(key, lifetime=self.timeout)).rrset
        loop = asyncio.get_running_loop()
        question = ptr_question(key)
        deadline = loop.time() + self.timeout
        failure: Exception = dns.exception.Timeout()
        for address, port in self._servers:
            left = deadline - loop.time()
            if left <= 0:
                break
            query = ptr_query(question)
            try:
                async with asyncio.timeout_at(deadline):  # (no task of its own, as wait_for makes)
                    flags, response = await self._exchange(query, address, port)
            except TimeoutError:
                break  # (the time is up: as dnspython's resolver, no other server is asked)
            except OSError as exc:  # (unreachable, refused: the next server)
                failure = exc
                continue
            if flags & _TC:
                answer = await self._resolver.resolve_address(key, lifetime=max(0.05, deadline - loop.time()))
                return answer.rrset
            rcode = dns.rcode.Rcode.make(flags & 0xF)
            if rcode == dns.rcode.NXDOMAIN:
                return None
            if rcode != dns.rcode.NOERROR:
                failure = dns.exception.DNSException(f"{dns.rcode.to_text(rcode)} from {address}")
                continue  # (SERVFAIL, REFUSED: the next server)
            return response.resolve_chaining().answer
        raise failure

    @staticmethod
    async def _exchange(query: bytes, address: str, port: int) -> tuple[int, Any]:
        """Send ``query`` to ``address``:``port`` over UDP; return its answer's header flags and, for an answer with no
        error that is not truncated, the answer decoded (else None). Datagrams that do not answer it (by id and
        question) or cannot be decoded are dropped."""
        import dns.exception
        import dns.message

        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((address, port))  # (only the server's datagrams come in)
            await loop.sock_sendall(sock, query)
            while True:
                wire = await loop.sock_recv(sock, 65535)
                flags = answer_flags(query, wire)
                if flags is None:
                    continue
                if flags & (_TC | 0xF):
                    return flags, None
                try:
                    return flags, dns.message.from_wire(wire)
                except (dns.exception.DNSException, ValueError):
                    continue

    async def _query(self, key: str) -> None:
        import dns.exception
        import dns.resolver

        name: str | None = None
        ttl = self.negative_ttl
        assert self._semaphore is not None
        try:
            async with self._semaphore:
                with self._lock:
                    self._queries += 1
                    self._in_flight += 1
                    self._in_flight_max = max(self._in_flight_max, self._in_flight)
                try:
                    rrset = await self._ptr(key)
                finally:
                    with self._lock:
                        self._in_flight -= 1
            if rrset is not None and len(rrset):
                text = str(next(iter(rrset))).rstrip(".")
                if _HOSTNAME.match(text):
                    name = text
                    low, high = self.ttl_bounds
                    ttl = min(max(float(rrset.ttl), low), high)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            logger.debug("no name for %s: %s", key, type(exc).__name__)
        finally:
            with self._done:
                self._pending.discard(key)
                if name is None:
                    self._failed += 1
                else:
                    self._answered += 1
                self._store(key, name, ttl)
                self._done.notify_all()
