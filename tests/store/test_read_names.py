"""The names a store's readers give raw records (destination, protocol, outcome) are cached once for every
reading thread, bounded, and answered the same from any thread (the soak's heap grew while each thread of the
asyncio and anyio worker pools filled a cache of its own)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf.decode import NameCache
from netspy_tui.models import EventQuery
from netspy_tui.store.sqlite import EventStore

pytestmark = pytest.mark.quiet


def _key(e: object) -> tuple[int, str, str, str]:
    outcome = getattr(e, "outcome", None) or getattr(e, "drop_reason", "")
    return (e.pid, e.command, e.destination or "", outcome)  # type: ignore[attr-defined]


def test_readers_on_many_threads_share_one_bounded_cache_and_answer_alike(tmp_path: Path) -> None:
    recs = synth.records(4000, 600.0, np.random.default_rng(3), drop_share=0.3, every_destination=True)
    with EventStore(tmp_path / "s.db", retention_seconds=None, max_rows=None) as store:
        store.write([Batch(records=recs, codec=synth.codec())])
        want = [_key(e) for e in store.query(EventQuery(kind="connection", limit=5000)).events]
        assert len(want) > 2000 and len({k[2] for k in want}) > 1000  # many destinations: many names
        got: list[list[tuple[int, str, str, str]]] = []
        caches: list[object] = []

        def read() -> None:
            got.append([_key(e) for e in store.query(EventQuery(kind="connection", limit=5000)).events])
            caches.append(store._codec()._names)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == [want] * 8
        assert len({id(c) for c in caches}) == 1  # one cache, not one a thread
        first = caches[0]
        assert isinstance(first, NameCache) and 0 < len(first) <= first.kept


def test_the_cache_keeps_its_bound_and_its_newest_names() -> None:
    cache = NameCache(kept=8)
    name = ("10.0.0.1:80", "10.0.0.1", 80, "TCP", "refused", False)
    for i in range(100):
        cache.put((i,), (*name[:4], f"o{i}", False))  # type: ignore[arg-type]
        assert len(cache) <= 8
    assert cache.get((99,)) == ("10.0.0.1:80", "10.0.0.1", 80, "TCP", "o99", False)
    assert cache.get((0,)) is None


def test_new_drop_reason_names_are_not_answered_from_old_names(tmp_path: Path) -> None:
    recs = synth.records(200, 60.0, np.random.default_rng(5), drop_share=1.0)
    recs = recs[recs["code"] == recs["code"][0]]  # one drop reason
    code = int(recs["code"][0])
    with EventStore(tmp_path / "d.db", retention_seconds=None, max_rows=None) as store:
        unnamed = synth.codec()
        unnamed.drop_reasons = {}
        store.write([Batch(records=recs, codec=unnamed)])
        before = {e.drop_reason for e in store.query(EventQuery(kind="packet_drop", limit=500)).events}  # type: ignore[union-attr]
        assert before == {f"UNKNOWN({code})"}
        named = synth.codec()
        named.drop_reasons = {code: "NETFILTER_DROP"}
        store.write([Batch(records=recs[:1].copy(), codec=named)])  # the collector learnt the kernel's names
        after = {e.drop_reason for e in store.query(EventQuery(kind="packet_drop", limit=500)).events}  # type: ignore[union-attr]
        assert after == {"NETFILTER_DROP"}
