"""SIGTERM and SIGHUP end a CLI session the way Ctrl-C or quitting does: through every cleanup.

Without this, the default action kills the process at once and leaves the scratch store (and its
directory) behind. :func:`stoppable` runs a command's coroutine with the signals turned into a
cancellation of that coroutine: every ``finally`` and ``async with`` on the way runs (the dashboard
restores the terminal, the collector stops, the store closes, the scratch directory is removed),
then the process exits with status 128 + signal and one line saying why. A thread still blocked
reading stdin (the REPL, MCP over stdio) cannot be interrupted, so the exit does not wait for it;
when the cleanup itself is held up by one, the scratch directory is removed and the process exits
:data:`FORCE_EXIT_AFTER` seconds after the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

from netspy_tui import safefs
from netspy_tui.errors import NetspyError

logger = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Seconds the cleanup may take after a signal before the process exits without it (the scratch
#: directory is still removed).
FORCE_EXIT_AFTER = 5.0


class Terminated(NetspyError):
    """The process was asked to stop (SIGTERM, SIGHUP) and cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


@asynccontextmanager
async def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> AsyncIterator[None]:
    """While inside: the signals cancel the current task, which then raises :class:`Terminated`
    after every ``finally`` inside ran. Outside the main thread signals are left as they are, and a
    handler installed meanwhile by someone else (uvicorn's graceful shutdown in ``serve``) keeps its
    signal while it is installed.

    The handler is the interpreter's (it runs in the main thread even while the event loop is held
    up in a blocking call, as Textual's shutdown can be by a terminal that hung up): it arms the
    :func:`_force_exit` watchdog itself and hands the cancellation to the loop."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []
    armed: list[threading.Timer] = []
    previous: dict[int, Any] = {}

    def on_signal(signum: int) -> None:  # (in the loop)
        if not received and task is not None:
            logger.warning("received %s: stopping", signal.Signals(signum).name)
            received.append(signum)
            task.cancel()

    def handler(signum: int, _frame: object) -> None:  # (the interpreter's handler: main thread)
        if task is None:
            return
        if not armed:
            watchdog = threading.Timer(FORCE_EXIT_AFTER, _force_exit, (signum,))
            watchdog.daemon = True
            armed.append(watchdog)
            watchdog.start()
        with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile: the watchdog ends it)
            loop.call_soon_threadsafe(on_signal, signum)

    main = threading.current_thread() is threading.main_thread()
    if main:
        for signum in signals:
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, handler)
    try:
        with _signals_wake(loop) if main else contextlib.nullcontext():
            yield
    except asyncio.CancelledError:
        if received:
            raise Terminated(received[0]) from None
        raise
    finally:
        for signum, before in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, before if before is not None else signal.SIG_DFL)
    if received:  # the cancellation was swallowed on the way (e.g. by a server shutting down)
        raise Terminated(received[0])


@contextlib.contextmanager
def _signals_wake(loop: asyncio.AbstractEventLoop) -> Any:
    """While inside, a signal wakes the event loop, whichever thread the kernel gave it to.

    The kernel hands a process's signal to any thread that does not block it: at the REPL's prompt a Ctrl-C
    can land on the thread reading the terminal. The interpreter's handlers (asyncio's for SIGINT, ours
    for SIGTERM/SIGHUP) run only when the main thread next runs Python code, and the event loop asleep in
    its selector had nothing to wake it: the REPL ignored that Ctrl-C until the next key. With a wakeup
    fd the C-level handler writes to a socket the loop reads, so the loop wakes and the handler runs. A
    wakeup fd someone else set (asyncio's ``add_signal_handler`` does) is left as it is: it wakes a loop."""
    receive, send = socket.socketpair()
    receive.setblocking(False)
    send.setblocking(False)
    try:
        before: int | None = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # (not the main thread)
        before = None
    if before == -1:
        try:
            loop.add_reader(receive.fileno(), _drain, receive)
        except (NotImplementedError, RuntimeError, OSError):  # (a loop without readers)
            signal.set_wakeup_fd(-1)
            before = None
    elif before is not None:
        signal.set_wakeup_fd(before)
    try:
        yield
    finally:
        if before == -1:
            loop.remove_reader(receive.fileno())
            current = signal.set_wakeup_fd(-1)
            if current != send.fileno():  # replaced meanwhile: not ours to clear
                signal.set_wakeup_fd(current)
        receive.close()
        send.close()


def _drain(receive: socket.socket) -> None:
    """Empty the wakeup socket (its bytes are signal numbers; the interpreter's handlers act on the signals)."""
    with contextlib.suppress(OSError):
        while receive.recv(512):
            pass


def _exit_now(exc: Terminated) -> NoReturn:
    """Say why on stderr (when there still is one: a terminal that hung up is not) and exit."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"netspy-tui: {exc}\n")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(exc.exit_code)


def _force_exit(signum: int) -> None:
    """The cleanup did not finish in time (a thread blocked reading stdin holds up the cancellation,
    as MCP over stdio does; Textual's shutdown writing to a terminal that hung up): remove the
    scratch data, then exit anyway."""
    with contextlib.suppress(Exception):
        logger.warning("stopping took more than %g s: exiting without waiting", FORCE_EXIT_AFTER)
    try:
        safefs.remove_all_scratch()
    finally:
        _exit_now(Terminated(signum))


async def stoppable(command: Coroutine[Any, Any, T]) -> T:
    """Run ``command``; on SIGTERM/SIGHUP clean up through it, say so in one line and exit 128 + signal."""
    try:
        async with stop_on_signals():
            return await command
    except Terminated as exc:
        _exit_now(exc)  # every cleanup ran; only threads blocked on stdin may be left, not worth waiting for
