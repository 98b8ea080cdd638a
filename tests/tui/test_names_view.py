"""Destination names in the dashboard: names from a DNS server the test starts, through the real
gateway; n shows addresses; / finds rows by name."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import Input

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.names import NameResolver
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.poller import Poller
from tests.factories import connection
from tests.names.dns_server import PtrServer
from tests.tui.conftest import Clock, spy_snapshots, wait_for
from tests.tui.demo_data import DEMO_NOW

SIZE = (120, 35)


async def test_destinations_read_as_names_n_shows_addresses_and_the_filter_finds_names(clock: Clock) -> None:
    source = MemorySource(clock=clock)
    with PtrServer({"93.184.216.34": "example.com"}) as server:
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        names.resolve(["93.184.216.34"], wait=10)  # seen before: the next list carries the name
        async with open_gateway(source, names=names) as gateway:
            app = NetspyApp(gateway, interval=0.25, clock=clock, source_note="test")
            async with app.run_test(size=SIZE) as pilot:
                ago = [DEMO_NOW - timedelta(seconds=s) for s in (2, 1)]
                source.add_events(
                    [
                        connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=ago[0]),
                        connection(pid=8, command="wget", ip="10.9.9.9", port=80, time=ago[1]),
                    ]
                )
                table = app.dashboard.connections
                await wait_for(pilot, lambda: table.row_count == 2, "two rows")

                def destinations() -> set[str]:
                    return {str(table.get_row(key)[2]) for key in table.events}

                assert destinations() == {"example.com:443", "10.9.9.9:80"}
                await pilot.press("n")
                assert destinations() == {"93.184.216.34:443", "10.9.9.9:80"}
                await pilot.press("n")
                assert "example.com:443" in destinations()

                await pilot.press("slash", *"example")
                assert app.dashboard.query_one("#filter-bar", Input).value == "example"
                await wait_for(pilot, lambda: table.row_count == 1, "the row found by its name")
                assert {e.command for e in table.events.values()} == {"curl"}
        names.close()


async def test_a_row_shown_before_its_name_was_known_gets_it_later(clock: Clock) -> None:
    source = MemorySource(clock=clock)
    with PtrServer({"93.184.216.34": "example.com"}) as server:
        server.gate.clear()  # the answer waits until the row has been shown without it
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        async with open_gateway(source, names=names) as gateway:
            app = NetspyApp(gateway, interval=0.25, clock=clock, source_note="test")
            async with app.run_test(size=SIZE) as pilot:
                ago = DEMO_NOW - timedelta(seconds=2)
                source.add_events([connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=ago)])
                table = app.dashboard.connections
                await wait_for(pilot, lambda: table.row_count == 1, "the row")
                (key,) = table.events
                assert str(table.get_row(key)[2]) == "93.184.216.34:443"  # no name yet: the address
                server.gate.set()
                await wait_for(pilot, lambda: str(table.get_row(key)[2]) == "example.com:443", "the name, later")
                assert table.row_count == 1 and server.count == 1
        names.close()


async def test_lookup_names_says_when_names_are_off() -> None:
    source = MemorySource()
    async with open_gateway(source) as gateway:
        lookup = await gateway.names(["93.184.216.34"])
    assert not lookup.enabled and lookup.names == {}
    off = NameResolver(enabled=False)
    async with open_gateway(source, names=off) as gateway:
        assert not (await gateway.names(["93.184.216.34"])).enabled
        bad = await gateway.call("lookup_names", {"addresses": []})
        assert bad.is_error


async def test_an_address_without_a_name_is_not_asked_about_again_on_every_poll(clock: Clock) -> None:
    ago = DEMO_NOW - timedelta(seconds=2)
    source = MemorySource(
        [
            connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=ago),
            connection(pid=8, command="wget", ip="10.9.9.9", port=80, time=ago),
        ],
        clock=clock,
    )
    with PtrServer({"93.184.216.34": "example.com"}) as server:
        server.gate.clear()  # the first list shows the rows before any answer
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        async with open_gateway(source, names=names) as gateway:
            asked = spy_snapshots(gateway, "addresses")
            poller = Poller(gateway, clock=clock, window=60, interval=1.0)
            first = await poller.poll()  # the rows; their addresses are asked about in the background
            assert {e.hostname for e in first.connections} == {None}
            server.gate.set()
            names.resolve(["93.184.216.34", "10.9.9.9"], wait=10)
            second = await poller.poll()  # the held rows' names: one has one, the other has none
            assert {e.destination_ip: e.hostname for e in second.connections} == {
                "93.184.216.34": "example.com",
                "10.9.9.9": None,
            }
            await poller.poll()
            assert asked == [[], ["10.9.9.9", "93.184.216.34"], []]  # not asked again
            poller._nameless_until = 0.0  # later (the resolver's negative cache has expired): asked again
            await poller.poll()
            assert asked[-1] == ["10.9.9.9"]
            assert server.count == 2
        names.close()


async def test_addresses_without_a_name_are_not_asked_again_while_other_questions_are_in_flight(clock: Clock) -> None:
    """With new addresses arriving all the time some question is always in flight: a poll still asks only about the
    addresses it has not heard back about, not again about every address of the window that has no name; a new
    address's name still comes to its row."""
    ago = DEMO_NOW - timedelta(seconds=3)
    source = MemorySource([connection(pid=8, command="wget", ip="10.9.9.9", port=80, time=ago)], clock=clock)
    with PtrServer({"10.8.8.8": "bee.example"}) as server:
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        async with open_gateway(source, names=names) as gateway:
            asked = spy_snapshots(gateway, "addresses")
            poller = Poller(gateway, clock=clock, window=60, interval=1.0)
            await poller.poll()
            names.resolve(["10.9.9.9"], wait=10)  # answered: no name
            server.gate.clear()  # the next address's answer stays in flight
            source.add_events([connection(pid=9, command="curl", ip="10.8.8.8", port=443, time=ago + timedelta(1))])
            await poller.poll()  # 10.9.9.9 asked about again: the resolver says it has no name
            assert names.stats().pending == 1
            await poller.poll()
            assert asked[1:] == [["10.9.9.9"], ["10.8.8.8"]]  # then only the address not heard back about
            server.gate.set()
            names.resolve(["10.8.8.8"], wait=10)
            last = await poller.poll()
            assert {e.destination_ip: e.hostname for e in last.connections} == {
                "10.9.9.9": None,
                "10.8.8.8": "bee.example",
            }
            assert server.questions == ["10.9.9.9", "10.8.8.8"]
        names.close()


async def test_lookup_names_refuses_what_is_not_an_ip_address_instead_of_dropping_it() -> None:
    """``10.0.0.1:80`` (the lists' own destination form) and ``not-an-ip`` were dropped: "1 of 4 addresses have a
    name", nothing about the other three (an audit's). An outside agent is told, in one line."""
    async with open_gateway(MemorySource()) as gateway:
        bad = await gateway.call("lookup_names", {"addresses": ["93.184.216.34", "10.0.0.1:80", "not-an-ip"]})
        assert bad.is_error
        assert bad.text == (
            "addresses must be IP addresses (without a port, e.g. 10.0.0.1 or 2001:db8::1), not '10.0.0.1:80', "
            "'not-an-ip'."
        )
        good = await gateway.call("lookup_names", {"addresses": ["93.184.216.34", "2001:db8::1"]})
        assert not good.is_error
