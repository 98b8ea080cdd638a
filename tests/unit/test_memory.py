"""The heap trimmer the dashboard calls after refreshes: the first call trims, then at most once per interval."""

from __future__ import annotations

import pytest

from netspy_tui import memory


def test_trims_first_then_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    clock = [100.0]
    monkeypatch.setattr(memory, "_MALLOC_TRIM", lambda pad: calls.append(pad))
    monkeypatch.setattr(memory.time, "monotonic", lambda: clock[0])
    trim = memory.Trimmer(60.0)
    assert trim() and calls == [0]
    clock[0] += 59.9
    assert not trim() and calls == [0]
    clock[0] += 0.2
    assert trim() and calls == [0, 0]
