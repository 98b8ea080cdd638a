"""The dashboard's client-side filter: the list a refresh shows is what the per-event test passes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspy_tui.models import Scope
from netspy_tui.tui.filtering import EventFilter, tab_label
from tests.factories import connection, drop

pytestmark = pytest.mark.quiet

COMMANDS = ["curl", "nginx", "Curl", "sshd"]
HELD = [connection(pid=100 + i % 5, command=COMMANDS[i % 4], port=8000 + i) for i in range(40)]
DROPS = [drop(pid=100 + i % 5, command=COMMANDS[i % 3]) for i in range(20)]

focuses = st.one_of(
    st.none(),
    st.builds(lambda c: Scope(command=c), st.sampled_from([*COMMANDS, "absent"])),
    st.builds(lambda p: Scope(pid=p), st.integers(98, 106)),
)


@settings(max_examples=200, deadline=None)
@given(text=st.sampled_from(["", "curl", "10", "80", "nginx", " ", "zz"]), focus=focuses)
def test_the_events_shown_are_those_the_filter_passes_in_order(text: str, focus: Scope | None) -> None:
    flt = EventFilter(text, focus)
    for events in (HELD, DROPS):
        shown = flt.events(events)
        assert list(shown) == [e for e in events if flt.event(e)]
        if not flt.active:
            assert shown is events  # (nothing narrows: the list itself, not a copy)


def test_a_tab_says_latest_only_of_rows_without_a_gap_among_them() -> None:
    assert tab_label("Connections", 1003, None) == "Connections (1,003)"
    assert tab_label("Connections", 2000, 14946) == "Connections (latest 2,000 of 14,946)"
    assert tab_label("Connections", 3, None, 2000) == "Connections (3 in the latest 2,000)"
    # a burst's unfetched middle (or events the source shed) below some rows held: not the latest, and said
    assert tab_label("Connections", 2000, 14946, gapped=True) == "Connections (2,000 of 14,946, gaps)"
    assert tab_label("Connections", 3, None, 2000, gapped=True) == "Connections (3 in the 2,000, gaps)"
    assert tab_label("Packet drops", 1005, None, gapped=True) == "Packet drops (1,005, gaps)"
