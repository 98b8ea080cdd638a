"""Handing freed C heap back to the system (glibc's ``malloc_trim``).

glibc keeps the pages a long-running process freed (batches of rows, refreshes of thousands of
table cells) unless asked: tens of MB of RSS that no object uses. The store asks once per retention
pass, the dashboard after its first full refresh and then at most once a minute; a call costs a
millisecond or two. Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any


def _load() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load()


def trim_heap() -> None:
    """Give the C heap's free pages back now."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Trimmer:
    """:func:`trim_heap` at most once every ``every`` seconds (the first call always trims)."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: float | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        trim_heap()
        return True
