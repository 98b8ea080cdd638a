"""Reverse DNS against a real DNS server on 127.0.0.1 the test starts (tests/names/dns_server.py)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from netspy_tui.names.resolver import NameResolver, normalize_address, ptr_query, ptr_question, read_hosts
from tests.names.dns_server import PtrServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(server: PtrServer, **kw: object) -> NameResolver:
    kw.setdefault("hosts_path", None)
    kw.setdefault("timeout", 2.0)
    return NameResolver(nameservers=["127.0.0.1"], port=server.port, **kw)  # type: ignore[arg-type]


@contextmanager
def hand_answered() -> Iterator[tuple[socket.socket, NameResolver]]:
    """A resolver asking a UDP socket that the test reads and answers by hand."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind(("127.0.0.1", 0))
        fake.settimeout(10)
        resolver = NameResolver(nameservers=["127.0.0.1"], port=fake.getsockname()[1], hosts_path=None, timeout=5)
        try:
            yield fake, resolver
        finally:
            resolver.close()


def test_a_name_is_resolved_once_and_then_served_from_the_cache() -> None:
    with PtrServer({"93.184.216.34": "example.com"}) as server:
        resolver = make(server)
        try:
            assert resolver.lookup("93.184.216.34") is None  # asked in the background
            assert resolver.resolve(["93.184.216.34"], wait=10) == {"93.184.216.34": "example.com"}
            assert resolver.lookup("93.184.216.34") == "example.com"
            assert resolver.lookup("::ffff:93.184.216.34") == "example.com"  # the same address
            assert server.questions == ["93.184.216.34"]  # one question for all of it
            stats = resolver.stats()
            assert (stats.queries, stats.answered, stats.failed) == (1, 1, 0)
            assert resolver.generation == 1
        finally:
            resolver.close()


def test_an_address_without_a_name_is_remembered_and_not_asked_again() -> None:
    with PtrServer({}) as server:
        resolver = make(server)
        try:
            assert resolver.resolve(["10.1.2.3"], wait=10) == {}
            assert resolver.lookup("10.1.2.3") is None
            assert resolver.stats().failed == 1
            assert server.count == 1
        finally:
            resolver.close()


def test_answers_expire_with_their_ttl_clamped_and_failures_with_the_negative_ttl() -> None:
    clock = Clock()
    with PtrServer({"10.0.0.1": "short.example"}, ttl=5) as server:
        resolver = make(server, clock=clock, ttl_bounds=(60.0, 3600.0), negative_ttl=30.0)
        try:
            assert resolver.resolve(["10.0.0.1", "10.0.0.2"], wait=10) == {"10.0.0.1": "short.example"}
            clock.now += 31  # past the negative TTL, not past the answer's (5 s, raised to 60)
            assert resolver.lookup("10.0.0.1") == "short.example"
            resolver.resolve(["10.0.0.2"], wait=10)
            assert server.questions.count("10.0.0.2") == 2
            clock.now += 60
            assert resolver.resolve(["10.0.0.1"], wait=10) == {"10.0.0.1": "short.example"}
            assert server.questions.count("10.0.0.1") == 2
        finally:
            resolver.close()


def test_a_server_that_never_answers_delays_nobody() -> None:
    with PtrServer(silent=True) as server:
        resolver = make(server, timeout=1.0)
        try:
            # lookup returned although the question it asked is never answered: it did not wait
            assert resolver.lookup("10.0.0.9") is None
            assert resolver.resolve(["10.0.0.9"], wait=0) == {}  # a tool that cannot wait does not
            assert resolver.resolve(["10.0.0.9"], wait=5) == {}  # gives up with the resolver's timeout
            assert server.count >= 1
            stats = resolver.stats()
            assert stats.pending == 0 and stats.failed == 1
        finally:
            resolver.close()


def test_questions_still_in_flight_at_close_are_dropped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Closing with questions unanswered (a dashboard quit on a host whose name server is slow) cancels them:
    no "exception calling callback" traceback for each one."""
    with PtrServer(silent=True) as server:
        resolver = make(server, timeout=30.0)
        try:
            for i in range(20):
                resolver.lookup(f"10.0.1.{i}")
            deadline = time.monotonic() + 10
            while server.count < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert resolver.stats().pending > 0
        finally:
            resolver.close()
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()], caplog.text


def test_a_server_that_refuses_is_passed_over_for_the_next_and_stray_datagrams_are_dropped() -> None:
    """The name servers are asked in turn: one with nothing listening (127.0.0.2, same port: the kernel refuses) is
    passed over for the next. A datagram that does not answer the question (another id) is dropped, and the
    answer that follows it is read."""
    import dns.message

    with PtrServer({"10.0.0.5": "five.example"}) as server:
        resolver = NameResolver(nameservers=["127.0.0.2", "127.0.0.1"], port=server.port, hosts_path=None, timeout=5)
        try:
            assert resolver.resolve(["10.0.0.5"], wait=10) == {"10.0.0.5": "five.example"}
            assert server.questions == ["10.0.0.5"]
        finally:
            resolver.close()
    with hand_answered() as (fake, resolver):
        assert resolver.lookup("10.0.0.6") is None
        wire, peer = fake.recvfrom(4096)
        query = dns.message.from_wire(wire)
        stray = dns.message.make_response(query)
        stray.id = (query.id + 1) % 65536
        stray.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "PTR", "forged.example."))
        fake.sendto(b"not dns", peer)
        fake.sendto(stray.to_wire(), peer)
        right = dns.message.make_response(query)
        right.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "PTR", "six.example."))
        fake.sendto(right.to_wire(), peer)
        assert resolver.resolve(["10.0.0.6"], wait=10) == {"10.0.0.6": "six.example"}


@pytest.mark.parametrize("address", ["10.0.1.2", "192.168.200.254", "2001:db8::1"])
def test_a_question_is_the_one_dnspython_writes(address: str) -> None:
    """The question is written as bytes: the same datagram as dnspython's make_query (recursion desired, one PTR
    question for the reverse name), with a new id each time."""
    import dns.message
    import dns.rdatatype
    import dns.reversename

    wire = ptr_query(ptr_question(address))
    expected = dns.message.make_query(dns.reversename.from_address(address), dns.rdatatype.PTR)
    expected.id = int.from_bytes(wire[:2], "big")
    assert wire == expected.to_wire()
    assert len({ptr_query(ptr_question(address))[:2] for _ in range(20)}) > 1


def test_an_answer_to_another_question_is_dropped_and_an_echo_in_other_case_is_read() -> None:
    """An answer is read from its header as bytes: one with the question's id but another question (a forgery, a
    late answer to a former question) is dropped; the question echoed in upper case (0x20 randomisation) answers it."""
    import dns.message
    import dns.rcode
    import dns.reversename

    with hand_answered() as (fake, resolver):
        assert resolver.lookup("10.0.0.7") is None
        wire, peer = fake.recvfrom(4096)
        query = dns.message.from_wire(wire)
        other = dns.message.make_query(dns.reversename.from_address("10.0.0.8"), "PTR")
        other.id = query.id
        forged = dns.message.make_response(other)
        forged.answer.append(dns.rrset.from_text(other.question[0].name, 300, "IN", "PTR", "forged.example."))
        fake.sendto(forged.to_wire(), peer)
        right = dns.message.make_response(query)
        right.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "PTR", "seven.example."))
        echo = bytearray(right.to_wire())
        echo[12 : len(wire)] = bytes(echo[12 : len(wire)]).upper()
        fake.sendto(bytes(echo), peer)
        assert resolver.resolve(["10.0.0.7"], wait=10) == {"10.0.0.7": "seven.example"}
        assert resolver.lookup("10.0.0.8") is None  # (asked now: the forged answer was not kept for it)
        wire, peer = fake.recvfrom(4096)
        nothing = dns.message.make_response(dns.message.from_wire(wire))
        nothing.set_rcode(dns.rcode.NXDOMAIN)
        fake.sendto(nothing.to_wire(), peer)
        assert resolver.resolve(["10.0.0.8"], wait=10) == {}
        assert resolver.stats().failed == 1


def test_questions_are_asked_with_bounded_concurrency() -> None:
    addresses = [f"10.2.0.{i}" for i in range(1, 41)]
    with PtrServer({a: f"h{a.rsplit('.', 1)[1]}.test" for a in addresses}, delay=0.05) as server:
        resolver = make(server, concurrency=4, timeout=10.0)
        try:
            names = resolver.resolve(addresses, wait=60)
            assert len(names) == 40 and names["10.2.0.7"] == "h7.test"
            assert server.in_flight_max <= 4
            assert resolver.stats().in_flight_max <= 4
            assert server.count == 40
        finally:
            resolver.close()


def test_a_cold_cache_of_2000_addresses_is_resolved_with_the_configured_concurrency_then_asks_nothing() -> None:
    # the figures: 2,000 distinct destinations, IPv4 and IPv6, one in ten without a name
    addresses = [f"10.{i >> 8}.{i & 255}.1" if i % 10 else f"2001:db8::{i + 1:x}" for i in range(2000)]
    names = {a: f"h{i}.test" for i, a in enumerate(addresses) if i % 10 != 7}
    with PtrServer(names) as server:
        server.gate.clear()  # answers wait until as many questions as allowed are in flight
        resolver = make(server, concurrency=8, timeout=30.0)
        try:
            assert resolver.known(addresses) == {}  # all 2,000 asked, none waited for
            deadline = time.monotonic() + 30
            while server.in_flight < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # (a ninth question, if one were sent, would arrive now)
            assert server.in_flight == 8 and resolver.stats().pending == 2000
            server.gate.set()
            assert resolver.resolve(addresses, wait=120) == names
            assert server.count == 2000 and sorted(server.questions) == sorted(addresses)  # one question each
            assert server.in_flight_max == 8 and resolver.stats().in_flight_max == 8
            # every answer is cached, names and failures alike: no question for any of them again
            assert resolver.known(addresses) == names
            assert all(resolver.lookup(a) == names.get(a) for a in addresses)
            assert resolver.resolve(addresses, wait=5) == names
            assert server.count == 2000
            stats = resolver.stats()
            assert (stats.queries, stats.answered, stats.failed, stats.pending) == (2000, 1800, 200, 0)
        finally:
            resolver.close()


def test_known_answers_many_addresses_at_once_and_asks_about_the_others() -> None:
    with PtrServer({"10.6.0.1": "one.example", "10.6.0.2": "two.example"}) as server:
        resolver = make(server)
        try:
            assert resolver.known(["10.6.0.1", "::ffff:10.6.0.2", "not an address", "0.0.0.0"]) == {}
            assert resolver.resolve(["10.6.0.1", "10.6.0.2"], wait=10)  # the misses above were asked
            assert server.count == 2
            assert resolver.known(["10.6.0.1", "::ffff:10.6.0.2"]) == {
                "10.6.0.1": "one.example",
                "10.6.0.2": "two.example",
            }
            assert server.count == 2
        finally:
            resolver.close()


def test_no_dns_asks_nothing_at_all(tmp_path: object) -> None:
    with PtrServer({"10.0.0.1": "a.example"}) as server:
        resolver = make(server, enabled=False)
        assert resolver.lookup("10.0.0.1") is None
        assert resolver.known(["10.0.0.1"]) == {}
        assert resolver.resolve(["10.0.0.1"], wait=1) == {}
        assert server.count == 0
        assert resolver.stats().queries == 0
        resolver.close()


def test_the_hosts_file_answers_before_dns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.1 localhost\n10.5.5.5   db.internal db  # primary\n10.5.5.5 second\n"
                     "fe80::1%eth0 linklocal\nnot-an-address name\n")  # fmt: skip
    assert read_hosts(hosts) == {"127.0.0.1": "localhost", "10.5.5.5": "db.internal", "fe80::1": "linklocal"}
    with PtrServer({"10.5.5.5": "from-dns.example"}) as server:
        resolver = make(server, hosts_path=hosts)
        try:
            assert resolver.lookup("10.5.5.5") == "db.internal"
            assert server.count == 0
            assert resolver.stats().from_hosts == 1
        finally:
            resolver.close()


def test_answers_that_are_not_host_names_are_refused() -> None:
    names = {"10.3.0.1": r"bad\[red\].example", "10.3.0.2": r"esc\027\[31m.example", "10.3.0.3": "ok-name.example"}
    with PtrServer(names) as server:
        resolver = make(server)
        try:
            assert resolver.resolve(list(names), wait=10) == {"10.3.0.3": "ok-name.example"}
            assert resolver.stats().failed == 2
        finally:
            resolver.close()


def test_the_cache_is_bounded() -> None:
    addresses = [f"10.4.0.{i}" for i in range(1, 6)]
    with PtrServer({a: "n.example" for a in addresses}) as server:
        resolver = make(server, max_entries=3)
        try:
            resolver.resolve(addresses, wait=10)
            assert resolver.stats().cached == 3
        finally:
            resolver.close()


def test_own_questions_are_recognised() -> None:
    with PtrServer({}) as server:
        resolver = make(server)
        try:
            resolver.resolve(["10.0.0.1"], wait=10)
            assert resolver.is_own_query(os.getpid(), "127.0.0.1", server.port)
            assert not resolver.is_own_query(os.getpid() + 1, "127.0.0.1", server.port)
            assert not resolver.is_own_query(os.getpid(), "127.0.0.1", server.port + 1)
        finally:
            resolver.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.2.3.4", "1.2.3.4"), ("::ffff:1.2.3.4", "1.2.3.4"), ("[2001:db8::1]", "2001:db8::1"), ("x", None), ("", None)],
)
def test_addresses_are_normalized(text: str, expected: str | None) -> None:
    assert normalize_address(text) == expected
