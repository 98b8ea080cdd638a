"""A store whose events are all older than the window (``--db`` of yesterday, a replay at its recorded times) showed
an empty dashboard and said nothing of why: the header says how many are stored and that ``w`` widens the window
(an audit's: the replay's own note was cut at 80 columns before "at its recorded times")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.tui.conftest import wait_for
from tests.tui.screen_text import screen_text

NOTE = "12 events stored, none in the last 1m: w widens the window"


async def test_events_older_than_the_window_are_said_and_w_shows_them() -> None:
    store = EventStore(None)
    old = datetime.now(UTC) - timedelta(minutes=40)
    store.add_events([connection(pid=40 + i, command="nightly", port=9000 + i, time=old) for i in range(12)])
    source = EmbeddedSource(None, store)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, source_note="test")
            async with app.run_test(size=(80, 24)) as pilot:
                d = app.dashboard
                await wait_for(pilot, lambda: d.latest is not None and d.latest.status is not None, "the first poll")
                await wait_for(pilot, lambda: NOTE in screen_text(app), "the note")
                assert d.connections.row_count == 0
                for _ in range(3):  # 1m -> 5m -> 15m -> 1h: the events are 40 minutes old
                    await pilot.press("w")
                await wait_for(pilot, lambda: d.connections.row_count == 12, "the old events in the 1 h window")
                await pilot.pause()
                assert "events stored, none in" not in screen_text(app)
    finally:
        await source.aclose()


async def test_at_the_longest_window_the_note_names_the_flag_not_w() -> None:
    """Past 1 h ``w`` starts again at 1m: at 1 h the note points at --window instead."""
    store = EventStore(None)
    old = datetime.now(UTC) - timedelta(hours=3)
    store.add_events([connection(pid=40, command="nightly", time=old)])
    source = EmbeddedSource(None, store)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, window=3600, source_note="test")
            async with app.run_test(size=(120, 24)) as pilot:
                note = "1 event stored, none in the last 1h: --window S shows a longer one"
                await wait_for(pilot, lambda: note in screen_text(app), "the note")
    finally:
        await source.aclose()
