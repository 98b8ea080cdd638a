"""Handing freed C heap back to the system (glibc's ``malloc_trim`` and ``mallopt``).

glibc keeps the pages a long-running process freed (batches of rows, refreshes of thousands of
table cells) unless asked: tens of MB of RSS that no object uses. The store asks once per retention
pass, the dashboard after its first full refresh and then at most once a minute; a call costs a
millisecond or two.

glibc also raises its mmap threshold each time a large block it mapped is freed (up to 32 MB), so
after the first big numpy batch every array of the writer and the tables comes from the heap, where
it fragments what can be trimmed. :func:`fix_mmap_threshold` fixes the threshold (which turns that
adjustment off): blocks of :data:`MMAP_THRESHOLD` and more are mapped and unmapped on free. The
store and the dashboard call it when they start (a dashboard with 1,000,000 events stored: 13 MB
less; ``python -m bench.run --only dashboard``). Elsewhere (musl, macOS) both do nothing.
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
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 256 * 1024
_fixed = False


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process (once); False where
    there is no glibc ``mallopt``."""
    global _fixed
    if _fixed:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _fixed = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _fixed


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
