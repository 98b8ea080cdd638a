"""A file store reopened: after a clean close its first answers come from the memory it kept, at
once and exact; after a crash, or a write the kept memory does not know, it reads its file again."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netspy_tui.models import Scope, WindowStats, utcnow
from netspy_tui.store import EventStore
from tests.store.test_store import held_background_load, unclosed_copy

pytestmark = pytest.mark.quiet

SCOPES = [
    Scope(kind, pid, command, window)  # type: ignore[arg-type]
    for kind in ("connection", "packet_drop")
    for window, pid, command in ((60, None, None), (600, None, None), (3600, None, None), (600, None, "curl"),
                                 (3600, 1001, None))
]  # fmt: skip


def _write(store: EventStore, n: int, span: float, seed: int) -> None:
    from bench import synth

    store.write(list(synth.batches(n, span, seed=seed)))


def _answers(store: EventStore, now: Any) -> list[tuple[WindowStats, WindowStats, int]]:
    return [(store.stats(s, now=now), store.stats(s, top_n=1, buckets=1, now=now), store.count(s, now=now))
            for s in SCOPES]  # fmt: skip


def _answers_at_once(store: EventStore, now: Any) -> list[tuple[WindowStats, WindowStats, int]]:
    got: list[list[tuple[WindowStats, WindowStats, int]]] = []
    asking = threading.Thread(target=lambda: got.append(_answers(store, now)))
    asking.start()
    asking.join(60)
    assert not asking.is_alive(), "a window waited for the background load"
    return got[0]


def test_a_cleanly_closed_store_answers_its_first_calls_from_the_memory_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.db"
    store = EventStore(path, retention_seconds=None, max_rows=None)
    _write(store, 30_000, 3000, seed=1)
    now = utcnow()
    expected = _answers(store, now)  # (a store that never closed)
    store.close()
    kept = Path(f"{path}-memory")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    with held_background_load(monkeypatch):
        with EventStore(path, retention_seconds=None, max_rows=None) as store:
            assert not kept.exists(), "the kept memory is used once"
            assert _answers_at_once(store, now) == expected
            _write(store, 2_000, 5, seed=2)  # and goes on from there
            now = utcnow()
            expected = _answers(store, now)
    with EventStore(path, readonly=True) as view:
        assert [(view.stats(s, now=now), view.count(s, now=now)) for s in SCOPES] == [
            (stats, count) for stats, _, count in expected
        ]


def test_after_a_crash_the_memory_kept_before_is_not_used(tmp_path: Path) -> None:
    """Reopened, written, then crashed: the copy has no token, and the memory an earlier clean close
    kept (planted next to it) is stale; the store reads its file and answers exactly."""
    path = tmp_path / "events.db"
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        _write(store, 20_000, 1800, seed=1)
    stale = shutil.copyfile(f"{path}-memory", tmp_path / "stale-memory")
    store = EventStore(path, retention_seconds=None, max_rows=None)
    try:
        _write(store, 3_000, 5, seed=2)
        now = utcnow()
        expected = _answers(store, now)
        crashed = tmp_path / "crashed.db"
        unclosed_copy(path, crashed)
    finally:
        store.close()
    shutil.copyfile(stale, f"{crashed}-memory")
    with EventStore(crashed, retention_seconds=None, max_rows=None) as reopened:
        assert not Path(f"{crashed}-memory").exists(), "a stale memory file is removed"
        assert reopened._loaded.wait(30)
        assert _answers(reopened, now) == expected


def test_a_write_by_a_version_that_knows_no_kept_memory_makes_it_stale(tmp_path: Path) -> None:
    """An older netspy-tui writes without removing the token (here: one more event counted into the
    newest second, which leaves the newest second, the raw events and the fold boundary as they
    were): the kept memory is not used, the answers include the event."""
    path = tmp_path / "events.db"
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        _write(store, 10_000, 600, seed=1)
    now = utcnow()
    with sqlite3.connect(path) as conn:
        second = conn.execute("SELECT max(second) FROM rollup").fetchone()[0]
        conn.execute("INSERT INTO rollup VALUES (?, 0, 4242, 'older', '10.9.9.9', 443, 'tcp', 'connected', 0, 1, ?, ?)",
                     (second, second * 10**9, second * 10**9))  # fmt: skip
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        assert store._loaded.wait(30)
        with EventStore(path, readonly=True) as view:
            for scope in SCOPES:
                assert store.stats(scope, now=now) == view.stats(scope, now=now)
        assert "older" in [p.command for p in store.stats(Scope("connection", None, None, 60), now=now).processes]


def test_the_kept_memory_is_written_without_following_a_planted_link(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    target = tmp_path / "victim"
    target.write_text("untouched")
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        _write(store, 2_000, 60, seed=1)
        os.symlink(target, f"{path}-memory")
    assert target.read_text() == "untouched"
    kept = Path(f"{path}-memory")
    assert stat.S_ISREG(kept.lstat().st_mode) and stat.S_IMODE(kept.lstat().st_mode) == 0o600


def test_a_store_that_keeps_no_memory_leaves_no_file_and_reopens_from_its_rows(tmp_path: Path) -> None:
    """A scratch store (removed at exit) does not spend its close writing memory nobody reads."""
    path = tmp_path / "events.db"
    with EventStore(path, retention_seconds=None, max_rows=None, keep_memory=False) as store:
        _write(store, 5_000, 600, seed=1)
        now = utcnow()
        expected = _answers(store, now)
    assert not Path(f"{path}-memory").exists()
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        assert store._loaded.wait(30)
        assert _answers(store, now) == expected


def test_a_kept_memory_that_cannot_be_restored_is_read_from_the_file_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kept memory file whose arrays do not fit together (a damaged disk): a warning, and the
    store reads its rows back as after a crash; the answers stay exact."""
    path = tmp_path / "events.db"
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        _write(store, 5_000, 600, seed=1)
        now = utcnow()
        expected = _answers(store, now)
    kept = np.load(f"{path}-memory", allow_pickle=False)  # (the token, the names of the arrays, the arrays)
    assert bytes(kept).decode().isalnum()
    real = np.load

    def damaged(*args: Any, **kwargs: Any) -> Any:
        got = real(*args, **kwargs)
        return got[:-1] if got.dtype == np.int64 and got.ndim == 2 and got.shape[1:] == (5,) else got

    monkeypatch.setattr(np, "load", damaged)  # (the index of the seconds one short)
    with caplog.at_level(logging.WARNING), EventStore(path, retention_seconds=None, max_rows=None) as store:
        assert store._loaded.wait(30)
        assert _answers(store, now) == expected
    assert "kept memory not usable" in caplog.text
