"""The store's SQL must give exactly the figures of analysis.aggregate (the executable definition)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netspy_tui.store.sqlite as store_module
from netspy_tui.analysis.aggregate import aggregate, filter_events, second_of
from netspy_tui.models import ConnectionEvent, EventQuery, PacketDropEvent, Scope, parse_event, utcnow
from netspy_tui.store import EventStore
from tests.factories import BASE_TIME, connection_json, drop_json

pytestmark = pytest.mark.quiet

NOW = BASE_TIME


@contextmanager
def count_probe(rows: int) -> Iterator[None]:
    """Make the store count big windows as total-minus-outside even on small data."""
    saved = store_module.COUNT_PROBE
    store_module.COUNT_PROBE = rows
    try:
        yield
    finally:
        store_module.COUNT_PROBE = saved


PIDS = [1, 2, 77, 4_000_000]
COMMANDS = ["curl", "nginx", "", "Zeta", "zeta", "é-app", "a" * 15, "unknown", "[bold]x"]
DESTINATIONS = ["", "unknown", "1.2.3.4:443", "1.2.3.4:80", "[::1]:8080", "10.0.0.1:9"]
# Offsets in microseconds before NOW: the window edges exactly, ties, and events after NOW.
EDGES = [0, 1, -1, 59_999_999, 60_000_000, 60_000_001, 7_000_000, 3_600_000_000, 3_600_000_001, 600_000_000]


@st.composite
def events(draw: st.DrawFn) -> ConnectionEvent | PacketDropEvent:
    region = draw(st.sampled_from(["edge"] * 3 + ["past"] * 6 + ["future"]))
    if region == "edge":
        offset = draw(st.sampled_from(EDGES))
    elif region == "past":
        offset = draw(st.integers(0, 4_000_000_000))
    else:
        offset = draw(st.integers(-5_000_000, 0))
    common: dict[str, Any] = {
        "pid": draw(st.sampled_from(PIDS)),
        "command": draw(st.sampled_from(COMMANDS)),
        "time": NOW - timedelta(microseconds=offset),
        "timestamp": draw(st.integers(0, 5)),
    }
    if draw(st.booleans()):
        data = connection_json(
            port=draw(st.sampled_from([0, 9, 10, 80, 443, 8080])),
            protocol=draw(st.sampled_from(["TCP", "UDP", "", "Unknown(3)"])),
            return_code=draw(st.sampled_from([0, 0, -111, -115, -110, -1, -999])),
            **common,
        )
        data["destination"] = draw(st.sampled_from(DESTINATIONS))
        outcome = draw(st.sampled_from([None, None, "", "ok", "refused", "in_progress", "weird", "failed"]))
        if outcome is not None:
            data["outcome"] = outcome
        if draw(st.booleans()):
            data["sampled"] = True
    else:
        data = drop_json(
            reason=draw(st.sampled_from(["", "TCP_DROP", "UNKNOWN", "NETFILTER_DROP", "UNKNOWN(9)"])), **common
        )
        if draw(st.booleans()):
            data["destination"] = draw(st.sampled_from(DESTINATIONS))
        if draw(st.booleans()):
            data["protocol"] = draw(st.sampled_from(["TCP", "", "UDP"]))
    return parse_event(data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(events(), max_size=60),
    kind=st.sampled_from(["connection", "packet_drop"]),
    pid=st.sampled_from([None, None, 1, 77, 5]),
    command=st.sampled_from([None, None, "curl", "", "zeta"]),
    window=st.sampled_from([1, 7, 60, 61, 600, 3600, 86_400]),
    top_n=st.sampled_from([0, 1, 2, 3, 10]),
    buckets=st.sampled_from([1, 7, 60, 61, 500]),
    shift_us=st.sampled_from([0, 1, 500_000]),
    probe=st.sampled_from([1, 3, 8, 20, store_module.COUNT_PROBE]),
)
def test_stats_equal_aggregate(
    evs: list[Any],
    kind: Any,
    pid: int | None,
    command: str | None,
    window: int,
    top_n: int,
    buckets: int,
    shift_us: int,
    probe: int,
) -> None:
    now = NOW + timedelta(microseconds=shift_us)
    with EventStore() as store, count_probe(probe):
        if evs:
            store.add_events(evs)
        got = store.stats(Scope(kind, pid, command, window), top_n=top_n, buckets=buckets, now=now)
        want = aggregate(evs, Scope(kind, pid, command, window), now, top_n, buckets)
        assert got == want
        assert store.count(Scope(kind, pid, command, window), now=now) == want.total


@settings(max_examples=200, deadline=None)
@given(
    evs=st.lists(events(), max_size=50),
    kind=st.sampled_from(["connection", "packet_drop"]),
    pid=st.sampled_from([None, None, 2, 77]),
    command=st.sampled_from([None, None, "curl", ""]),
    since=st.sampled_from([None, 60_000_000, 0, 1]),
    until=st.sampled_from([None, 0, -1, 7_000_000]),
    limit=st.sampled_from([0, 1, 3, 100]),
    probe=st.sampled_from([1, 3, 8, 20, store_module.COUNT_PROBE]),
)
def test_query_equal_filter_events(
    evs: list[Any],
    kind: Any,
    pid: int | None,
    command: str | None,
    since: int | None,
    until: int | None,
    limit: int,
    probe: int,
) -> None:
    q = EventQuery(
        kind=kind,
        pid=pid,
        command=command,
        since=None if since is None else NOW - timedelta(microseconds=since),
        until=None if until is None else NOW - timedelta(microseconds=until),
        limit=limit,
    )
    with EventStore() as store, count_probe(probe):
        if evs:
            store.add_events(evs)
        page = store.query(q)
    want, total = filter_events(evs, q)
    assert page.total_count == total
    assert page.truncated == (total > len(want))
    assert [e.id for e in page.events] == [e.id for e in want]
    assert page.events == want


def test_file_store_matches_aggregate_on_a_varied_day(tmp_path: Path) -> None:
    """A file store (read connection pool, WAL) over thousands of events in many batches."""
    rng = random.Random(7)
    evs = []
    for i in range(3000):
        offset_us = rng.choice([0, 60_000_000, rng.randint(0, 90_000_000_000)])
        if rng.random() < 0.7:
            data = connection_json(
                pid=rng.choice(PIDS),
                command=rng.choice(COMMANDS),
                port=rng.choice([53, 80, 443]),
                time=NOW - timedelta(microseconds=offset_us),
                return_code=rng.choice([0, -111, -110]),
                timestamp=i,
            )
            data["destination"] = rng.choice(DESTINATIONS)
            if rng.random() < 0.5:
                data["outcome"] = rng.choice(["ok", "in_progress", "timeout"])
        else:
            data = drop_json(
                pid=rng.choice(PIDS),
                command=rng.choice(COMMANDS),
                reason=rng.choice(["TCP_DROP", "", "NETFILTER_DROP"]),
                time=NOW - timedelta(microseconds=offset_us),
                timestamp=i,
            )
        evs.append(parse_event(data))
    with EventStore(tmp_path / "events.db", retention_seconds=None) as store:
        for i in range(0, len(evs), 97):
            store.add_events(evs[i : i + 97])
        assert store.row_count() == len(evs)
        for kind in ("connection", "packet_drop"):
            for window in (60, 3600, 86_400, 7 * 86_400):
                for pid, command in ((None, None), (77, None), (None, "curl"), (1, "nginx")):
                    got = store.stats(Scope(kind, pid, command, window), now=NOW)  # type: ignore[arg-type]
                    assert got == aggregate(evs, Scope(kind, pid, command, window), NOW)  # type: ignore[arg-type]
            q = EventQuery(kind=kind, limit=250)  # type: ignore[arg-type]
            page = store.query(q)
            want, total = filter_events(evs, q)
            assert page.events == want and page.total_count == total


@settings(max_examples=300, deadline=None)
@given(
    evs=st.lists(events(), min_size=1, max_size=40),
    kind=st.sampled_from(["connection", "packet_drop"]),
    window=st.sampled_from([1, 60, 3600, 86_400]),
    probe=st.integers(1, 6),
    shift_us=st.sampled_from([0, 1_000_000, -3_000_000]),
)
def test_unfiltered_counts_in_every_counting_strategy(
    evs: list[Any], kind: Any, window: int, probe: int, shift_us: int
) -> None:
    """Direct, total-minus-outside and fallback counting all give aggregate()'s total."""
    now = NOW + timedelta(microseconds=shift_us)
    want = aggregate(evs, Scope(kind, None, None, window), now, 1, 1).total
    with EventStore() as store, count_probe(probe):
        store.add_events(evs)
        assert store.count(Scope(kind, None, None, window), now=now) == want
        q = EventQuery(kind=kind, since=now - timedelta(seconds=window), until=now, limit=1)
        assert store.query(q).total_count == filter_events(evs, q)[1]  # raw events: exact times
        later = store.query(EventQuery(kind=kind, since=now - timedelta(seconds=window), limit=1))
        assert later.total_count == sum(1 for e in evs if e.type == kind and e.time > now - timedelta(seconds=window))


def test_long_windows_read_hours_and_minutes_and_stay_exact(tmp_path: Path) -> None:
    """A day and a week of a reopened file store (memory holds only the last hour): whole hours and
    minutes come from the coarse tables, the edges from seconds; every count equals aggregate's
    (the rate sparkline may place a coarse row's events at its first second)."""
    rng = random.Random(11)
    now = utcnow().replace(microsecond=0)
    evs = []
    for i in range(4000):
        offset_us = rng.choice([0, 1, 59_999_999, 3_600_000_000, 86_400_000_000, rng.randint(0, 8 * 86_400_000_000)])
        data = connection_json(pid=rng.choice(PIDS), command=rng.choice(COMMANDS), port=rng.choice([53, 80, 443]),
                               time=now - timedelta(microseconds=offset_us), return_code=rng.choice([0, -111]),
                               timestamp=i)  # fmt: skip
        data["destination"] = rng.choice(DESTINATIONS)
        evs.append(parse_event(data))
    path = tmp_path / "week.db"
    with EventStore(path, retention_seconds=None) as store:
        for i in range(0, len(evs), 250):
            store.add_events(evs[i : i + 250])
    with EventStore(path, retention_seconds=None) as store:
        for window in (3 * 3600 + 7, 86_400, 7 * 86_400 - 13):
            for pid, command in ((None, None), (77, None), (None, "curl")):
                scope = Scope("connection", pid, command, window)
                got, want = store.stats(scope, now=now), aggregate(evs, scope, now)
                assert got.model_copy(update={"rate_buckets": []}) == want.model_copy(update={"rate_buckets": []})
                assert sum(got.rate_buckets) == want.total == store.count(scope, now=now)


def test_retention_cuts_every_rollup_table_at_the_same_second(tmp_path: Path) -> None:
    """Minutes and hours retention cuts are read from the seconds left: a long window after pruning
    counts exactly the events of the seconds kept, never the pruned part of a coarse row."""
    rng = random.Random(5)
    now = utcnow().replace(microsecond=0)
    evs = [
        parse_event(
            connection_json(
                pid=rng.choice(PIDS),
                command=rng.choice(COMMANDS),
                port=443,
                timestamp=i,
                time=now - timedelta(microseconds=rng.randint(0, 7_200_000_000)),
            )
        )  # fmt: skip
        for i in range(3000)
    ]
    with EventStore(tmp_path / "cut.db", retention_seconds=2 * 3600) as store:
        store.add_events(evs)
        for keep in (5400, 2410, 1801, 95):  # cuts inside hours and minutes, from the old end
            store.retention_seconds = keep
            store.prune(now)
            cutoff = second_of(now) - keep
            kept = [e for e in evs if second_of(e.time) >= cutoff]
            for window in (7 * 86_400, 3 * 3600 + 1):
                for pid in (None, 77):
                    scope = Scope("connection", pid, None, window)
                    want = aggregate(kept, scope, now)
                    assert store.count(scope, now=now) == want.total
                    got = store.stats(scope, now=now)
                    assert got.model_copy(update={"rate_buckets": []}) == want.model_copy(update={"rate_buckets": []})


def test_figures_stay_exact_after_names_are_compacted(tmp_path: Path) -> None:
    """A host that met thousands of destinations an hour ago: the store forgets the names no row in
    memory refers to (every second is rebuilt with new ids and pairs), and every window (whole,
    per pid, per command; in memory and beyond it) still equals aggregate's figures."""
    rng = random.Random(5)
    now = utcnow().replace(microsecond=0)
    evs = []
    for i in range(5200):
        old = i < 4800  # distinct destinations two hours ago; a few hundred in the last 10 minutes
        ago_us = rng.randint(7_000_000_000, 7_100_000_000) if old else rng.randint(0, 600_000_000)
        data = connection_json(pid=rng.choice(PIDS), command=rng.choice(COMMANDS[:4]), port=rng.choice([53, 443]),
                               ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" if old else f"10.9.9.{i % 50}",
                               time=now - timedelta(microseconds=ago_us), return_code=rng.choice([0, -111]),
                               timestamp=i)  # fmt: skip
        evs.append(parse_event(data))
    with EventStore(tmp_path / "c.db", retention_seconds=None) as store:
        for i in range(0, len(evs), 400):
            store.add_events(evs[i : i + 400])
        before = store.names
        store.prune(now)
        assert store.names is not before, "the names were compacted"
        assert len(store.names.values) < len(before.values) - 4000
        for window in (60, 600, 3600, 3 * 3600):
            for pid, command in ((None, None), (77, None), (None, "curl"), (2, "nginx")):
                scope = Scope("connection", pid, command, window)
                got, want = store.stats(scope, now=now), aggregate(evs, scope, now)
                if window > 3600:  # beyond the memory: coarse rows may move a rate bucket's events early
                    got, want = (s.model_copy(update={"rate_buckets": []}) for s in (got, want))
                assert got == want, (window, pid, command)
                assert store.count(scope, now=now) == want.total


def test_long_windows_stay_exact_when_late_rows_land_in_hours_already_summed(tmp_path: Path) -> None:
    """A reopened store sums the day before its memory per hour and keeps the sums; a late event
    (an agent's backlog) into such an hour or minute is counted in the next answer, not lost
    behind the kept sums."""
    rng = random.Random(8)
    now = utcnow().replace(microsecond=0)

    def event(i: int, ago_us: int) -> Any:
        data = connection_json(pid=rng.choice(PIDS), command=rng.choice(COMMANDS[:4]), port=rng.choice([53, 443]),
                               time=now - timedelta(microseconds=ago_us), timestamp=i)  # fmt: skip
        return parse_event(data)

    evs = [event(i, rng.randint(0, 30 * 3_600_000_000)) for i in range(3000)]
    path = tmp_path / "late.db"
    with EventStore(path, retention_seconds=None) as store:
        store.add_events(evs)
    with EventStore(path, retention_seconds=None) as store:
        assert store._loaded.wait(30)
        windows = (86_400 - 60, 86_400, 25 * 3600, 5 * 3600 + 17)
        for _ in range(2):  # the second time from the kept sums
            for window in windows:
                scope = Scope("connection", None, None, window)
                got, want = store.stats(scope, now=now), aggregate(evs, scope, now)
                assert got.model_copy(update={"rate_buckets": []}) == want.model_copy(update={"rate_buckets": []})
                assert sum(got.rate_buckets) == want.total == store.count(scope, now=now)
        late = [
            event(10_000 + i, ago) for i, ago in enumerate((10 * 3_600_000_000, 23 * 3_600_000_000 + 7, 7_300_000_000))
        ]
        store.add_events(late)
        evs += late
        for window in windows:
            scope = Scope("connection", None, None, window)
            assert store.count(scope, now=now) == aggregate(evs, scope, now).total
            assert store.stats(scope, now=now).total == aggregate(evs, scope, now).total


def _coarse_and_seconds(path: Path, folded: int) -> tuple[dict[Any, int], dict[Any, int]]:
    """Per (table, unit, key): the coarse tables' counts, and the per-second rows before ``folded``
    summed the same way."""
    import sqlite3  # noqa: PLC0415

    from netspy_tui.store import spans as S  # noqa: PLC0415

    conn = sqlite3.connect(path)
    try:
        coarse, fine = {}, {}
        for table, unit, size in S.SPANS:
            for row in conn.execute(f"SELECT {unit}, {S.KEY}, sum(n) FROM {table} GROUP BY {unit}, {S.KEY}"):
                if row[-1]:
                    coarse[(table, *row[:-1])] = row[-1]
            sql = f"SELECT second / {size}, {S.KEY}, sum(n) FROM rollup WHERE second < ? GROUP BY 1, {S.KEY}"
            for row in conn.execute(sql, (folded,)):
                if row[-1]:
                    fine[(table, *row[:-1])] = row[-1]
        return coarse, fine
    finally:
        conn.close()


def test_minutes_are_folded_once_over_and_late_rows_still_reach_the_coarse_tables(tmp_path: Path) -> None:
    """The writer folds each minute into the minute and hour tables once the data has moved past it,
    and a row that comes after its minute was folded is added to them at once: at every point the
    coarse tables hold exactly the per-second rows before the boundary, which a reopened store keeps;
    a store without a boundary (written before folding) starts after its newest second."""
    from netspy_tui.store import spans as S  # noqa: PLC0415

    rng = random.Random(3)
    now = utcnow().replace(microsecond=0)
    ordered = sorted(rng.randint(0, 3 * 3_600_000_000) for _ in range(3000))[::-1]  # oldest first
    evs = []
    for i, ago_us in enumerate(ordered):
        if rng.random() < 0.1:  # late: an event of an older minute, written with the newer ones
            ago_us += rng.randint(120_000_000, 1_800_000_000)
        data = connection_json(pid=rng.choice(PIDS), command=rng.choice(COMMANDS[:4]), port=rng.choice([53, 443]),
                               time=now - timedelta(microseconds=ago_us), timestamp=i)  # fmt: skip
        evs.append(parse_event(data))
    path = tmp_path / "fold.db"
    with EventStore(path, retention_seconds=None) as store:
        for i in range(0, len(evs), 150):
            store.add_events(evs[i : i + 150])
            newest = max(second_of(e.time) for e in evs[: i + 150])
            assert store._folded % 60 == 0 and store._folded >= newest - S.GRACE - 60
            coarse, fine = _coarse_and_seconds(path, store._folded)
            assert coarse == fine and coarse
        folded = store._folded
        for window in (3 * 3600 + 1, 2 * 3600 - 7):
            for pid in (None, 77):
                scope = Scope("connection", pid, None, window)
                assert store.count(scope, now=now) == aggregate(evs, scope, now).total
    with EventStore(path, retention_seconds=None) as store:
        assert store._folded == folded
    with EventStore(path, readonly=True) as store:  # (reads the boundary from the file)
        for pid in (None, 77):
            scope = Scope("connection", pid, None, 3 * 3600 + 1)
            assert store.count(scope, now=now) == aggregate(evs, scope, now).total
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (S.FOLDED,))
        newest_row = conn.execute("SELECT max(second) FROM rollup").fetchone()[0]
    conn.close()
    with EventStore(path, retention_seconds=None) as store:
        assert store._folded == newest_row + 1
