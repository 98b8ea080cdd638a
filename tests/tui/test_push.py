"""Push, don't poll (issue 17): the in-process MCP server notifies when new telemetry is stored
(``netspy://telemetry/events`` updated over ``subscriptions/listen``); the dashboard refreshes after a
notification and, while nothing changes, does not poll. A source that cannot notify keeps the timer."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools import server as server_module
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui import poller as poller_module
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection, connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.scenes import Polled

SIZE = (160, 45)


async def test_a_notification_refreshes_without_the_timer(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 3600.0)  # the fallback timer cannot fire in this test
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.05, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.polls >= 1 and app.poller.following, "the first data, then push")
            before = app.polls
            assert not any(e.command == "pushed" for e in app.dashboard.connections.events.values())
            source.add_events([connection(pid=4242, command="pushed", time=DEMO_NOW - timedelta(seconds=0.01))])
            await wait_for(
                pilot,
                lambda: any(e.command == "pushed" for e in app.dashboard.connections.events.values()),
                "the pushed event on screen",
            )
            # one refresh for the change (plus at most the one in flight when push began): a 0.05 s timer
            # would have made dozens
            assert app.poller.following and app.polls - before <= 2
            # the header says the data is pushed rather than an age: nothing to redraw each second while idle
            status = app.dashboard.status
            shown = status.build().plain
            assert "updates pushed" in shown and " ago" not in shown
            clock.now += timedelta(seconds=7)
            assert status.build().plain == shown


async def test_the_header_is_built_again_each_second_only_while_it_shows_an_age(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header's once-a-second tick draws ages and countdowns; with updates pushed it shows neither, and the tick
    no longer builds the header to find it unchanged."""
    from netspy_tui.tui.widgets.status import StatusBar

    builds: list[str] = []
    build = StatusBar.build

    def counted(self: StatusBar) -> Any:
        text = build(self)
        builds.append(text.plain)
        return text

    monkeypatch.setattr(StatusBar, "build", counted)
    monkeypatch.setattr(poller_module, "IDLE_REFRESH", 3600.0)  # no refresh (and header) while the ticks are counted
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=3600, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            status = app.dashboard.status
            await wait_for(pilot, lambda: app.polls >= 1 and status.pushed, "the first data, then push")
            ticks: list[int] = []
            timer = next(t for t in status._timers if t.name == "status-tick")
            tick = timer._callback
            assert tick is not None
            timer._callback = lambda: (ticks.append(1), tick())
            for pushed, ago in ((True, False), (False, True)):
                status.pushed = pushed
                status.redraw()
                builds.clear()
                ticks.clear()
                clock.now += timedelta(seconds=3)
                await wait_for(pilot, lambda: len(ticks) >= 2, "two ticks", limit=10)
                assert bool(builds) == ago
                assert (" ago" in builds[-1]) if ago else "updates pushed" in status._shown


async def test_the_server_notifies_outside_agents_and_says_whether_it_can() -> None:
    source = MemorySource([connection(ago=1)])
    async with Client(create_server(source)) as client:
        contents = (await client.read_resource(EVENTS_URI)).contents
        assert '"notifies": true' in contents[0].text  # type: ignore[union-attr]
        async with client.listen(resource_subscriptions=[EVENTS_URI]) as events:
            source.add_events([connection(ago=0)])
            event = await anext(aiter(events))
        assert getattr(event, "uri", None) == EVENTS_URI


async def test_a_burst_of_writes_on_another_thread_is_one_wake_of_the_server_not_one_per_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every write tells the server's loop from the writing thread; a wake per write (a write to the loop's
    self-pipe each) was ~14 % of a busy agent's CPU. While a notification is on its way, later writes add none."""
    monkeypatch.setattr(server_module, "CHANGE_GAP", 3600.0)  # after its first notification the server waits
    source = MemorySource([connection(ago=1)])
    loop = asyncio.get_running_loop()
    writer: list[threading.Thread] = []
    wakes = 0
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal wakes
        if writer and threading.current_thread() is writer[0]:
            wakes += 1
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    async with Client(create_server(source)) as client:
        await client.read_resource(EVENTS_URI)
        async with client.listen(resource_subscriptions=[EVENTS_URI]) as events:
            writer.append(threading.Thread(target=lambda: [source.add_events([connection(ago=0)]) for _ in range(500)]))
            writer[0].start()
            event = await asyncio.wait_for(anext(aiter(events)), 20.0)
            await asyncio.to_thread(writer[0].join, 20.0)
        assert getattr(event, "uri", None) == EVENTS_URI
    assert not writer[0].is_alive()
    assert 1 <= wakes <= 2  # the first write's, and at most one for writes after that notification began


async def test_a_source_that_cannot_notify_keeps_the_timer(clock: Clock, source: MemorySource) -> None:
    async with open_gateway(Polled(source)) as gateway:  # type: ignore[arg-type]
        async with gateway.changes() as changes:
            assert changes is None
        app = NetspyApp(gateway, interval=0.05, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.polls >= 3, "polls on the timer")
            assert not app.poller.following
            shown = app.dashboard.status.build().plain
            assert "updated 0s ago" in shown and "pushed" not in shown  # polled: how old the data is


async def test_a_quiet_remote_server_is_polled_less_often_yet_a_new_event_shows_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote eBPF server cannot notify: after IDLE_BACKOFF_AFTER empty polls the wait doubles up to
    IDLE_POLL_MAX; the next event still shows (within that bound) and the poller is back to every interval."""
    monkeypatch.setattr(poller_module, "IDLE_BACKOFF_AFTER", 2)
    monkeypatch.setattr(poller_module, "IDLE_POLL_MAX", 0.4)
    with FakeEbpfServer("current", events=[connection_json(ago=1, command="first")]) as srv:
        source = HttpSource(srv.url, retries=0)
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.05)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.polls >= 1, "the first data")
                assert not app.poller.following
                # quiet: 0.05, 0.05, 0.1, 0.2, then 0.4 (however long each poll takes on a busy machine)
                await wait_for(pilot, lambda: app.poller.idle_wait() == pytest.approx(0.4), "the wait at its bound")
                before, started = app.polls, time.monotonic()
                await pilot.pause(2.0)
                took = time.monotonic() - started  # (the 0.05 s timer polled ~40 times in 2 s)
                assert app.polls - before <= took / 0.4 + 2, (app.polls - before, took)
                assert app.poller.idle_wait() == pytest.approx(0.4)
                srv.events.append(connection_json(ago=0, command="pushed", pid=4242))
                await wait_for(
                    pilot,
                    lambda: any(e.command == "pushed" for e in app.dashboard.connections.events.values()),
                    "the new event on screen",
                )
        await source.aclose()


def test_the_idle_wait_doubles_past_the_empty_polls_allowed_up_to_the_bound() -> None:
    poller = poller_module.Poller(None, clock=lambda: DEMO_NOW, window=60, interval=0.5)  # type: ignore[arg-type]
    waits = []
    for ticks in range(poller_module.IDLE_BACKOFF_AFTER, poller_module.IDLE_BACKOFF_AFTER + 6):
        poller._idle_ticks = ticks
        waits.append(poller.idle_wait())
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    poller.names_pending = True  # names of shown rows still being asked: every interval
    assert poller.idle_wait() == 0.5
    poller.names_pending, poller._idle_ticks = False, 0  # a poll that brought events: every interval again
    assert poller.idle_wait() == 0.5


async def test_the_dashboards_own_server_tells_it_of_changes_at_most_once_a_refresh(
    source: MemorySource, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The dashboard refreshes at most every interval, so its in-process server (opened by the CLI's ``connect``)
    notifies at most that often: the first change after a quiet spell at once, later ones after the interval.
    Each notification was a message through the SDK's streams and a wake of the loop from the writing thread, up
    to ten a second while events arrive (outside agents still get them every CHANGE_GAP)."""
    from contextlib import asynccontextmanager

    from netspy_tui import cli, runtime
    from netspy_tui.config import load_settings

    @asynccontextmanager
    async def open_source(settings: Any, mode: str) -> Any:
        yield source

    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)  # (the dashboard's process freezes its heap; not pytest's)
    monkeypatch.setattr(runtime, "open_source", open_source)
    settings = load_settings({"dns": False, "interval": 30.0})[0]
    async with cli._connect_dashboard(settings, "the data source")(lambda what: None) as (gateway, _):
        app = NetspyApp(gateway, interval=settings.interval, clock=clock)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.polls >= 1 and app.poller.following, "the first data, then push")
            notified: list[float] = []
            changed = app.poller.changed
            setter = changed.set
            monkeypatch.setattr(changed, "set", lambda: (notified.append(time.monotonic()), setter()))
            source.add_events([connection(pid=4242, command="first", time=DEMO_NOW)])
            await wait_for(pilot, lambda: bool(notified), "the first change told at once")
            for _ in range(10):  # a change every 0.1 s: told every 0.1 s before
                source.add_events([connection(pid=4242, command="later", time=DEMO_NOW)])
                await pilot.pause(0.1)
            assert len(notified) == 1, notified  # (the next one is due 30 s after the first)
