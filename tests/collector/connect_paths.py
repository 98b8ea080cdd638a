"""The two ways the eBPF collector follows connect(), for the tests that run on both.

At its exit alone (the default, where the kernel loads a program reading a task's saved registers), or at its
entry and exit (everywhere else; forced here by the variable the tests and benchmarks use)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from netspy_tui.collector.ebpf import EbpfCollector
from netspy_tui.collector.ebpf.collector import CONNECT_ENTRY_ENV

CONNECT_PATHS = ("exit_alone", "entry_and_exit")
#: how a collector's note begins where it follows connect() at its entry and exit (not its exit alone)
ENTRY_NOTE = "connect() is followed at its entry and exit (sys_enter_connect too), not its exit alone: "
REQUIRE = os.environ.get("NETSPY_REQUIRE_EBPF") == "1"


@contextlib.contextmanager
def on_connect_path(path: str) -> Iterator[None]:
    """Collectors started in the block follow connect() on ``path`` (see :data:`CONNECT_PATHS`)."""
    assert path in CONNECT_PATHS, path
    with pytest.MonkeyPatch.context() as mp:
        if path == "entry_and_exit":
            mp.setenv(CONNECT_ENTRY_ENV, "1")
        else:
            mp.delenv(CONNECT_ENTRY_ENV, raising=False)
        yield


def entry_too(collector: EbpfCollector) -> bool:
    """Whether the started ``collector`` follows connect() at its entry and exit (a note says so and why, and
    ``connect_enter`` is in its program list), or at its exit alone (neither)."""
    noted = any(note.startswith(ENTRY_NOTE) for note in collector.notes)
    assert noted == ("connect_enter" in {name for name, _, _, _ in collector.programs()}), collector.notes
    return noted


def check_connect_path(collector: EbpfCollector, path: str) -> None:
    """The started ``collector`` follows connect() on ``path``: skipped where this kernel cannot follow it at its
    exit alone (the collector's note says why)."""
    entry = entry_too(collector)
    if path == "exit_alone" and entry:
        why = next(note for note in collector.notes if note.startswith(ENTRY_NOTE))
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but {why}")
        pytest.skip(why)
    assert entry == (path == "entry_and_exit")
    if entry:
        assert f"{ENTRY_NOTE}{CONNECT_ENTRY_ENV}=1" in collector.notes, collector.notes
