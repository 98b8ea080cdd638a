"""``GET /api/changes`` (a netspy-tui extension): a long poll on the store's change sequence, on a real socket
(uvicorn on 127.0.0.1, a free port, stopped by the test), and HttpSource following it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client

from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.app import ChangeFeed
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.telemetry.source import ChangingSource, FollowedSource
from tests.factories import connection, connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import Child, free_port, spawn  # noqa: F401 (fixture)
from tests.hardening.test_security import served_url
from tests.tui.scenes import Polled

#: Generous bound for a wait that must end (never a measured duration): a long poll asked to wait 30 s.
LIMIT = 20.0
TOKEN = "changes-test-token-0123456789"


@pytest.fixture
def source() -> MemorySource:
    return MemorySource([connection(ago=1)])


@pytest.fixture
def live(source: MemorySource) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(source)) as srv:
        yield srv


def _feed(srv: BackgroundServer) -> ChangeFeed:
    feed = srv.app.state.changes  # type: ignore[attr-defined]
    assert isinstance(feed, ChangeFeed)
    return feed


def _until_waiting(feed: ChangeFeed) -> None:
    """Until a request waits on the server (a condition, not a sleep); fails after LIMIT."""
    for _ in range(int(LIMIT / 0.01)):
        if feed._waiting:
            return
        threading.Event().wait(0.01)
    raise AssertionError("no request waited on the server")


def _get(srv: BackgroundServer, **params: Any) -> httpx.Response:
    # the client gives up well before the server's 30 s: an answer means the server did not wait it out
    return httpx.get(f"{srv.url}/api/changes", params=params, timeout=LIMIT)


def test_a_client_behind_is_answered_at_once(live: BackgroundServer, source: MemorySource) -> None:
    first = _get(live)
    assert first.status_code == 200 and first.json() == {"seq": 0, "changed": False}
    source.add_events([connection(ago=0)])
    behind = _get(live, after=first.json()["seq"], timeout=30)
    assert behind.json()["changed"] is True and behind.json()["seq"] > first.json()["seq"]
    # a client holding a sequence from before a restart (not the current one) is answered at once too
    assert _get(live, after=behind.json()["seq"] + 5, timeout=30).json() == {"seq": behind.json()["seq"],
                                                                            "changed": True}  # fmt: skip


def test_a_waiting_request_is_woken_by_a_stored_event(live: BackgroundServer, source: MemorySource) -> None:
    seq = _get(live).json()["seq"]
    answers: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(_get(live, after=seq, timeout=30)))
    waiter.start()
    feed = _feed(live)
    _until_waiting(feed)
    assert feed._waiting == 1
    source.add_events([connection(ago=0, command="new")])
    waiter.join(LIMIT)
    assert not waiter.is_alive() and answers[0].json() == {"seq": seq + 1, "changed": True}
    assert feed._waiting == 0


def test_nothing_stored_times_out_unchanged(live: BackgroundServer) -> None:
    seq = _get(live).json()["seq"]
    assert _get(live, after=seq, timeout=1).json() == {"seq": seq, "changed": False}
    assert _get(live, after=seq, timeout=0).json() == {"seq": seq, "changed": False}


def test_bad_parameters_are_one_line_400s(live: BackgroundServer) -> None:
    for params, word in (({"timeout": 31}, "timeout"), ({"after": "x"}, "after"), ({"after": -1}, "after")):
        resp = _get(live, **params)
        assert resp.status_code == 400 and word in resp.text and resp.text.count("\n") == 1


def test_listed_in_the_root_only_where_the_source_tells_its_changes(live: BackgroundServer) -> None:
    assert "GET /api/changes" in httpx.get(live.url + "/").json()["endpoints"]
    with BackgroundServer(create_app(Polled(MemorySource([])))) as polled:  # type: ignore[arg-type]
        assert "GET /api/changes" not in httpx.get(polled.url + "/").json()["endpoints"]
        resp = _get(polled, timeout=0)
        assert resp.status_code == 404 and resp.text == "404 page not found\n"


def test_stopping_the_server_answers_a_waiting_request() -> None:
    srv = BackgroundServer(create_app(MemorySource([]))).start()
    seq = _get(srv).json()["seq"]
    answers: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(_get(srv, after=seq, timeout=30)))
    waiter.start()
    _until_waiting(_feed(srv))
    srv.stop()
    waiter.join(LIMIT)
    # answered (not cut off when uvicorn's graceful shutdown gives up on requests in flight)
    assert not waiter.is_alive() and answers[0].json() == {"seq": seq, "changed": False}


# --- HttpSource ------------------------------------------------------------------------------


async def test_http_source_follows_a_netspy_server_and_notifies_a_new_event(
    live: BackgroundServer, source: MemorySource
) -> None:
    http = HttpSource(live.url, retries=0)
    assert isinstance(http, ChangingSource) and isinstance(http, FollowedSource)
    changed = asyncio.Event()
    stop = http.on_change(changed.set)
    try:
        assert await http.offers_changes()
        follower = asyncio.create_task(http.follow_changes())
        await asyncio.to_thread(_until_waiting, _feed(live))  # the long poll reached the server
        assert not changed.is_set()
        source.add_events([connection(ago=0, command="new")])
        await asyncio.wait_for(changed.wait(), LIMIT)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    finally:
        stop()
        await http.aclose()


async def test_http_source_stops_following_when_the_server_goes() -> None:
    srv = BackgroundServer(create_app(MemorySource([]))).start()
    http = HttpSource(srv.url, retries=0)
    try:
        assert await http.offers_changes()
        follower = asyncio.create_task(http.follow_changes())
        await asyncio.to_thread(_until_waiting, _feed(srv))
        await asyncio.to_thread(srv.stop)
        await asyncio.wait_for(follower, LIMIT)  # returned: the stream broke (connection refused)
    finally:
        await http.aclose()


async def test_a_server_without_the_stream_is_polled_and_asked_once() -> None:
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        http = HttpSource(srv.url, retries=0)
        try:
            assert not await http.offers_changes()
            await asyncio.wait_for(http.follow_changes(), LIMIT)  # returns at once: nothing to follow
            assert not await http.offers_changes()
            asked = [r for r in srv.requests if r.path == "/api/changes"]
            assert len(asked) == 1
        finally:
            await http.aclose()


async def test_the_mcp_server_over_http_notifies_only_where_the_server_tells_its_changes(
    live: BackgroundServer, source: MemorySource
) -> None:
    http = HttpSource(live.url, retries=0)
    try:
        async with Client(create_server(http)) as client:
            contents = (await client.read_resource(EVENTS_URI)).contents
            assert '"notifies": true' in contents[0].text  # type: ignore[union-attr]
            async with client.listen(resource_subscriptions=[EVENTS_URI]) as events:
                source.add_events([connection(ago=0)])
                event = await asyncio.wait_for(anext(aiter(events)), LIMIT)
            assert getattr(event, "uri", None) == EVENTS_URI
    finally:
        await http.aclose()
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        http = HttpSource(srv.url, retries=0)
        try:
            async with Client(create_server(http)) as client:
                contents = (await client.read_resource(EVENTS_URI)).contents
                assert '"notifies": false' in contents[0].text  # type: ignore[union-attr]
        finally:
            await http.aclose()


async def test_netspy_tui_serve_offers_the_stream_behind_its_token(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    recording = tmp_path / "rec.jsonl"
    recording.write_text(json.dumps(connection_json(ago=1)) + "\n")
    port = free_port()
    child = spawn("serve", "--replay", str(recording), "--replay-speed", "0", "--port", str(port),
                  env={"NETSPY_TOKEN": TOKEN})  # fmt: skip
    url = served_url(child, "the eBPF server API")
    anonymous, http = HttpSource(url, retries=0), HttpSource(url, retries=0, token=TOKEN)
    try:
        assert not await anonymous.offers_changes()  # a 401: not offered to a client without the token
        assert await http.offers_changes()
    finally:
        await anonymous.aclose()
        await http.aclose()
