"""Line-mode interactive shell with the Go netspy's commands (``netspy-tui repl``).

On a terminal, lines are read with ``readline``: line editing, history (kept across sessions in
the state directory) and tab completion of command names and flags — the same completion as the
dashboard's command bar (:func:`netspy_tui.commands.complete_word`). From a pipe or a file, lines
are read plainly and no prompt is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from netspy_tui import safefs
from netspy_tui.ai.types import PARTIAL_MARK
from netspy_tui.commands import CommandResult, CommandRunner, complete_word
from netspy_tui.mcp_tools.gateway import Gateway
from netspy_tui.models import SourceInfo
from netspy_tui.textsafe import clean

PROMPT = "netspy> "
HISTORY_LENGTH = 1000
#: the most of a history file read back (HISTORY_LENGTH lines of commands are far less)
MAX_HISTORY_BYTES = 1 << 20

logger = logging.getLogger(__name__)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def history_file() -> Path:
    from netspy_tui.config import state_dir

    return state_dir() / "repl_history"


class _History:
    """The REPL's history file, read and written without being redirected (netspy-tui runs as root, and
    ``sudo`` may keep a user's ``HOME``): kept only in a directory no other user can write, read only when it
    is a regular file of ours with one name, never through a link, and written as a new file (exclusive,
    0600) put in place by rename. ``readline`` reads and writes a private scratch copy, in its own format."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _directory_problem(self) -> str | None:
        directory = self.path.parent
        if not directory.exists():  # (the one it would be made in, checked as it would be)
            directory = next((d for d in directory.parents if d.exists()), directory)
        try:
            safefs.check_directory(directory, "the REPL history's directory", "")
        except safefs.UnsafePath as exc:
            return exc.message
        return None

    def load(self, readline: Any) -> None:
        problem = self._directory_problem()
        if problem:
            logger.warning("no REPL history: %s", problem)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # (none yet; a link: not followed, and replaced on save)
            return
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                logger.warning("REPL history %s not read: it is not a file of ours", safefs.shown(self.path))
                return
            data = fh.read(MAX_HISTORY_BYTES)
        self._through_scratch(lambda copy: (copy.write_bytes(data), readline.read_history_file(str(copy))))

    def save(self, readline: Any) -> None:
        directory = self.path.parent
        existing = next((d for d in (directory, *directory.parents) if d.exists()), None)
        if existing is None or safefs.unsafe_directory(existing):
            return  # (another user's directory: nothing made in it, not even ours; said when loading)
        safefs.make_private_dirs(directory)
        problem = self._directory_problem()
        if problem:
            return  # (said when loading)
        data = self._through_scratch(lambda copy: (readline.write_history_file(str(copy)), copy.read_bytes())[1])
        if data is None:
            return
        tmp, fd = safefs.create_unique(directory, ".repl_history", ".new")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)  # (a name planted there, link or not, is replaced, never followed)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _through_scratch(work: Any) -> Any:
        try:
            scratch = safefs.scratch_dir()
        except safefs.UnsafePath as exc:  # (readline writes the copy by name: only in a directory nobody can swap)
            logger.warning("REPL history not kept: %s", exc)
            return None
        try:
            return work(scratch / "history")
        finally:
            safefs.remove_tree(scratch)


class LineReader:
    """Reads one line at a time: ``readline`` with a prompt on a terminal, plain reads from a pipe."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self._readline: Any = None
        self._terminal: Any = None
        if not self.interactive:
            return
        import readline
        import termios

        with contextlib.suppress(termios.error):
            self._terminal = termios.tcgetattr(sys.stdin.fileno())  # restored on close, whatever happened
        self._readline = readline
        readline.set_completer_delims(" \t\n\"'")
        readline.set_completer(self._complete)
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(HISTORY_LENGTH)
        self._history = _History(history_file())
        with contextlib.suppress(OSError):
            self._history.load(readline)

    def _complete(self, text: str, state: int) -> str | None:
        line = self._readline.get_line_buffer()[: self._readline.get_endidx()]
        options = complete_word(line)
        return options[state] + " " if state < len(options) else None

    def read(self) -> str | None:
        """The next line, or None at the end of input (blocking)."""
        if self.interactive:
            try:
                return input(PROMPT)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return line if line else None

    async def read_async(self) -> str | None:
        """:meth:`read` on a daemon thread: the event loop (collector, MCP session) keeps running while the
        user types, and an interrupt never waits for the read to finish."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()

        def settle(value: str | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(value)

        def work() -> None:
            try:
                value, error = self.read(), None
            except Exception as exc:  # handed to the awaiting task
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=work, name="repl-input", daemon=True).start()
        return await done

    def close(self) -> None:
        if self._readline is not None:
            with contextlib.suppress(OSError):
                self._history.save(self._readline)
        if self._terminal is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._terminal)


async def run_repl(gateway: Gateway, info: SourceInfo) -> int:
    """Read commands until ``quit`` or end of input; every error is one line on stderr and the loop goes on.
    The exit status is 1 when any command failed, else 0 (a script can tell)."""
    reader = LineReader()
    try:
        return await _loop(gateway, info, reader)
    finally:
        reader.close()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _source_text(label: str, detail: str) -> str:
    """The source as the banner names it: its label, then its detail, or the detail in the label's place when it
    begins as the label does ("replay of X as fast as possible (embedded)", not "replay of X (embedded) (replay of X
    as fast as possible)")."""
    base, _, kind = label.partition(" (")
    if detail and detail.startswith(base):
        return f"{detail} ({kind}" if kind else detail
    return f"{label} ({detail})" if detail else label


async def _loop(gateway: Gateway, info: SourceInfo, reader: LineReader) -> int:
    if reader.interactive:  # (from a pipe or a file: no banner, only the results on stdout)
        source = _source_text(clean(info.label, 120), clean(info.detail or "", 160))
        _out(f"netspy-tui interactive mode. Source: {source}")
    if info.sampled:
        (_out if reader.interactive else _err)("Note: procfs sampling; short-lived connections can be missed.")
    if reader.interactive:
        _out("Type 'help' for commands, 'quit' to leave (tab completes, ↑/↓ history).")
    runner = CommandRunner(  # (help fits the terminal it is typed in; from a pipe, the one layout)
        lambda: gateway, width=(lambda: shutil.get_terminal_size().columns) if reader.interactive else None
    )
    failed = False
    while True:
        line = await reader.read_async()
        if line is None:
            if reader.interactive:
                _out("")  # end the prompt's line
            break
        if not line.strip():
            continue
        cmd = runner.parse(line)
        if isinstance(cmd, CommandResult):
            _err(f"error: {cmd.text}")
            failed = True
            continue
        if cmd.action == "quit":
            break
        result = await runner.run(cmd, line)
        if result.is_error:
            error, _, partial = result.text.partition(PARTIAL_MARK)  # (an AI answer that broke off: kept, on stdout)
            if partial:  # (model output: plain text only, as every other answer)
                _out(clean(partial, None, keep_newlines=True))
            _err(f"error: {clean(error, 1000)}")  # (a server's text may be in it)
            failed = True
        else:
            _out(clean(result.text, None, keep_newlines=True))  # (tools escape what they quote; AI answers too here)
    return 1 if failed else 0
