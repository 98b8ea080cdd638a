"""A session whose terminal hangs up (ssh dropped, tmux killed) ends, whatever holds up its cleanup.

The kernel sends SIGHUP (and SIGCONT) when a terminal goes away; Textual's shutdown can then block
the event loop for good (its writer thread died writing to the dead terminal, and its bounded queue
is full). The stop must not depend on that loop: the signal arms the exit watchdog itself, and the
watchdog exits even though stderr is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from netspy_tui.signals import FORCE_EXIT_AFTER

# a session whose event loop is blocked (as Textual's shutdown blocks it), with stderr a broken pipe
_BLOCKED = """
import asyncio, sys, time
from netspy_tui.signals import stoppable

async def session():
    print("ready", flush=True)
    time.sleep(60)  # the loop is held up: no callback of it runs

asyncio.run(stoppable(session()))
"""


def test_a_hangup_ends_a_session_whose_event_loop_is_blocked_and_whose_stderr_is_gone() -> None:
    r, w = os.pipe()
    os.close(r)  # stderr: a pipe nobody reads any more (writes fail, as to a terminal that hung up)
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED], stdout=subprocess.PIPE, stderr=w, text=True)
    os.close(w)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # the signal only once the session is inside its blocking call: one that arrives between print() and the
        # call is left pending by the interpreter until the call returns (it runs Python handlers only between
        # bytecodes, and a sleep entered with one pending is not interrupted), which is not the case tested here
        _wait_until_asleep(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGCONT)
        code = proc.wait(timeout=FORCE_EXIT_AFTER + 15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGHUP
    assert took < 60  # not when the blocking call happened to end


def _wait_until_asleep(pid: int) -> None:
    """Until ``pid``'s main thread sleeps in the kernel (its wait channel a nanosleep; 230 is x86-64's
    clock_nanosleep where the wait channel is hidden), 10 s at most."""
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{pid}/wchan") as wchan, open(f"/proc/{pid}/syscall") as syscall:
            if "nanosleep" in wchan.read() or syscall.read().split(" ", 1)[0] == "230":
                return
        assert time.monotonic() < deadline, "the session never reached its blocking call"
        time.sleep(0.01)
