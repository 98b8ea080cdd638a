"""Snapshot tests of the main views on the demo recording (pytest-textual-snapshot; sync tests only).

Update after reading the report: ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from netspy_tui.tui.widgets.status import StatusBar
from tests.tui.scenes import SCENES, SIZE, demo_app

pytestmark = pytest.mark.quiet


@pytest.fixture(autouse=True)
def _no_wall_clock_figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(StatusBar, "SHOW_TIMINGS", False)  # poll/draw milliseconds vary run to run
    yield


@pytest.mark.parametrize("scene", ["main", "focused-process", "filter", "command-result", "help", "ai-pane"])
def test_view(scene: str, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=SCENES[scene])


@pytest.mark.parametrize("size", [(80, 24), (120, 35), (200, 55)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scene", ["main", "focused-process", "drops"])
def test_view_at_terminal_sizes(scene: str, size: tuple[int, int], snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(demo_app(), terminal_size=size, run_before=SCENES[scene])
