"""The heap trimmer the dashboard calls after refreshes (the first call trims, then at most once per
interval), and the fixed mmap threshold the store and the dashboard set when they start."""

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


_MAPPED_AFTER_A_BIG_FREE = """
import ctypes, sys
from netspy_tui.memory import fix_mmap_threshold

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
libc.free(libc.malloc(16 << 20))  # glibc raises its threshold to 16 MB here, unless it is fixed
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def test_a_fixed_mmap_threshold_keeps_big_blocks_off_the_heap() -> None:
    import ctypes
    import subprocess
    import sys

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("no glibc >= 2.33 (mallinfo2) here")
    mapped = {}
    for mode in ("fixed", "default"):
        out = subprocess.run([sys.executable, "-c", _MAPPED_AFTER_A_BIG_FREE, mode], capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
        mapped[mode] = int(out.stdout.strip())
    # glibc's default: a 1 MB block after a freed 16 MB one comes from the heap; fixed: mapped
    assert mapped == {"fixed": 1, "default": 0}
