"""The blocks a checking process makes of a batch (``Checked.blocks``) are what the storing process would have made:
stored as they are when every event of a node is new, and made again from the rows when some were not (an agent's
retry mixed with new events)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.fleet.prep import parse_and_check
from netspy_tui.fleet.store import FleetStore, check_batch, parse_batch
from netspy_tui.store import jsonblocks as J
from tests.fleet.test_fleet_ingest_fast import answers, body, fast_events

pytestmark = pytest.mark.quiet


def _blocks(fleet: FleetStore) -> dict[str, list[tuple[Any, ...]]]:
    """Each node's stored blocks, as SQLite holds them."""
    out = {}
    for node, store in sorted(fleet.nodes().items()):
        store.flush()
        conn = sqlite3.connect(store.path)
        try:
            out[node] = conn.execute("SELECT * FROM json_blocks ORDER BY seq").fetchall()
        finally:
            conn.close()
    return out


def _checked(raw: bytes, *, made_here: bool = False) -> Any:
    """``raw`` as a checking process answers it (packed, then read back by the storing process: the rows of a node
    with blocks without their JSON); ``made_here``: checked here, without its blocks (the storing process makes
    them, as before they were made where the batch was checked)."""
    if made_here:
        checked = check_batch(parse_batch(raw))
        checked.blocks.clear()
        return checked
    checked = parse_and_check(raw, 5000, pack=True).batch()
    assert checked is not None
    assert all(len(e[3]) == 6 for events in checked.by_node.values() for e in events)  # (the JSON: in the blocks)
    return checked


def _made_here(tmp_path: Path, raw: bytes) -> FleetStore:
    """A fleet store given ``raw`` the way it was before blocks were made where a batch is checked."""
    fleet = FleetStore(tmp_path / "here")
    fleet.store_checked(_checked(raw, made_here=True))
    return fleet


def _stored_with(path: Path, checked: Any, monkeypatch: pytest.MonkeyPatch, name: str, stand_in: Any) -> Any:
    """A fleet store at ``path`` given ``checked`` while ``jsonblocks.<name>`` is ``stand_in``; (store, result)."""
    monkeypatch.setattr(J, name, stand_in)
    fleet = FleetStore(path)
    result = fleet.store_checked(checked)
    monkeypatch.undo()
    return fleet, result


def test_blocks_made_where_a_batch_was_checked_are_stored_as_the_store_would_make_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = body(fast_events())
    made_here = _made_here(tmp_path, raw)
    checked = _checked(raw)
    assert set(checked.blocks) == {"node-a", "node-b"}

    def no_packing(*_: Any) -> Any:
        raise AssertionError("the storing process packed blocks a checking process had made")

    prebuilt, result = _stored_with(tmp_path / "prebuilt", checked, monkeypatch, "rows", no_packing)
    assert (result.accepted, result.duplicates, result.rejected) == (len(fast_events()), 0, [])
    assert _blocks(prebuilt) == _blocks(made_here)
    now = datetime.now(UTC)
    assert answers(prebuilt, now) == answers(made_here, now)
    made_here.close()
    prebuilt.close()


def test_a_retry_mixed_with_new_events_stores_only_the_new_ones(tmp_path: Path) -> None:
    events = fast_events()
    first, second = events[: len(events) // 2], events[len(events) // 4 :]  # (a quarter sent twice)
    fleet = FleetStore(tmp_path / "fleet")
    once = FleetStore(tmp_path / "once")
    fleet.store_checked(_checked(body(first)))
    again = fleet.store_checked(_checked(body(second)))
    assert (again.accepted, again.duplicates) == (len(events) - len(first), len(first) - len(events) // 4)
    once.store_checked(_checked(body(events)))
    now = datetime.now(UTC)
    mine, expected = answers(fleet, now), answers(once, now)
    for key in expected:  # (the same events, counts and figures; listed in the order each store got them)
        if key == "stats":
            assert mine[key] == expected[key]
            continue
        listed, total, count, stats = mine[key]
        assert sorted(map(repr, listed)) == sorted(map(repr, expected[key][0]))
        assert (total, count, stats) == expected[key][1:]
    fleet.close()
    once.close()


def test_rows_sent_without_their_json_get_it_back_from_their_blocks() -> None:
    checked = check_batch(parse_batch(body(fast_events())))
    for node, events in checked.by_node.items():
        rows = [e[3] for e in events]
        blocks = J.rows(rows, 0)
        assert J.with_bodies([r[:6] for r in rows], blocks) == rows
        assert J.with_bodies([r[:6] for r in rows], J.renumbered(blocks, 1000)) == rows, node


def test_blocks_sqlite_refuses_leave_their_events_stored_as_rows_with_their_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = body(fast_events())
    made_here = _made_here(tmp_path, raw)
    refused = []

    def refuse(*_: Any) -> None:  # (what SQLite would raise for a value a block cannot hold)
        refused.append(1)
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    as_rows, result = _stored_with(tmp_path / "rows", _checked(raw), monkeypatch, "write", refuse)
    assert refused and (result.accepted, result.rejected) == (len(fast_events()), [])
    now = datetime.now(UTC)
    assert answers(as_rows, now) == answers(made_here, now)
    made_here.close()
    as_rows.close()
