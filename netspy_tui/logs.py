"""Logging: stderr for the CLI and MCP stdio (stdout is output or protocol), a file for the TUI.

A log file (the dashboard's, or any command's ``--log-file``) is rotated: at :data:`MAX_BYTES` it
moves to ``FILE.1`` (older ones to ``.2``, ``.3``; :data:`BACKUPS` are kept).

Every secret we know of (OPENAI_API_KEY, bearer tokens from the environment, the command line or
the config file, passwords in URLs) is masked in every record — in the message by a filter, and in
the formatted line (tracebacks included) by the formatter — so even ``--verbose`` debug logs of
third-party libraries cannot leak them. :func:`add_secrets` registers secrets learnt after
:func:`setup_logging` ran (e.g. the token from the config file).
"""

from __future__ import annotations

import io
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from netspy_tui import safefs
from netspy_tui.errors import UsageError
from netspy_tui.textsafe import clean, first_line, secret_forms

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
_LOG_HINT = "pass --log-file with a new file or a regular file of yours, in a directory that exists"

_SECRET_ENV = ("OPENAI_API_KEY", "NETSPY_TOKEN")
#: Secrets shorter than this are not masked (masking "ab" would garble every line).
_MIN_SECRET = 4

_secrets: set[str] = set()


def add_secrets(*values: str | None) -> None:
    """Mask these values (and their surrounding-whitespace-stripped form, each also as a JSON string spells it: a
    server's JSON body echoing it) in every log line from now on."""
    for value in values:
        for candidate in (value, value.strip() if value else value):
            if candidate and len(candidate) >= _MIN_SECRET:
                _secrets.update(secret_forms(candidate))


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``****`` (longest first)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "****")
    return text


class SecretMask(logging.Filter):
    """Masks secrets in the record's message (so every handler, not only ours, sees it masked)."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        add_secrets(*(secrets or []))

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as logging does
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class MaskingFormatter(logging.Formatter):
    """Masks secrets in the whole formatted line, tracebacks and stack info included, and makes it inert: a
    message quoting what a server or the kernel sent (a tool's error, a process name) reaches stderr or the log
    file with its control characters and escape sequences as visible escapes (newlines and tabs kept)."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(mask(super().format(record)), None, keep_newlines=True)


class _PrivateLog(RotatingFileHandler):
    """A rotating log opened as every file netspy-tui writes is (:func:`safefs.open_append`): appended to
    without following a link, only a regular file with one name, created ``0600`` — at the start and after each
    rollover. (The standard handler's ``open()`` followed a link planted at the name, and waited on a FIFO.)"""

    _failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self._failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """The file cannot be written (a rollover found a link planted at its name, the disk is full): said once,
        in one line, and the log stops there — not a traceback at every later record (on the dashboard's screen)."""
        if not self._failed:
            self._failed = True
            why = first_line(sys.exc_info()[1] or "unknown error")
            sys.stderr.write(f"netspy-tui: logging to {clean(self.baseFilename, 200)} stopped: {why}\n")

    def _open(self) -> io.TextIOWrapper:
        fd = safefs.open_append(Path(self.baseFilename), "the log file", _LOG_HINT)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)  # noqa: SIM115 (the handler closes it)


def setup_logging(
    verbose: bool = False,
    *,
    log_file: Path | None = None,
    extra_secrets: list[str | None] | None = None,
    make_dirs: bool = False,
) -> str:
    """Configure the root logger once: WARNING (or DEBUG with ``verbose``) to stderr or ``log_file``.

    ``make_dirs``: create the file's missing directories (``0700``; the dashboard's own log under the state
    directory); a ``--log-file`` in a directory that does not exist is refused like ``--db``'s: a typo never
    leaves new directories behind. Raises :class:`UsageError` (one line) when ``log_file`` cannot be opened
    for appending. Returns a note to show ("" when none): with ``make_dirs``, a directory on the way that
    belongs to another user (root keeping a user's ``HOME``: ``sudo -E``) or that others could swap names in
    is refused, nothing is made or written there, and records go nowhere, the note says why."""
    add_secrets(*(os.environ.get(name, "") for name in _SECRET_ENV), *(extra_secrets or []))
    handler: logging.Handler
    note = ""
    if log_file is not None and make_dirs:
        try:
            safefs.make_private_dirs(log_file.parent, "the log file's directory", "")
        except safefs.UnsafePath as exc:
            note = f"no log file: {exc.message}. Pass --log-file FILE to keep one"
            log_file = None
        except OSError as exc:  # (the state directory a file, on a read-only disk: the dashboard runs without)
            note = (f"no log file: cannot make {clean(log_file.parent, 120)} ({exc.strerror or type(exc).__name__}). "
                    "Pass --log-file FILE to keep one")  # fmt: skip
            log_file = None
    if note:
        handler = logging.NullHandler()  # (not stderr: the dashboard owns the terminal)
    elif log_file is not None:
        if not make_dirs and not log_file.parent.is_dir():
            raise UsageError(f"cannot write the log file {clean(log_file, 200)}: directory "
                             f"{clean(log_file.parent, 200)} does not exist", "create it first")  # fmt: skip
        try:
            handler = _PrivateLog(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        except OSError as exc:
            if make_dirs:  # (its own default log: the dashboard runs without one, and says why)
                return _without_log_file(
                    verbose,
                    f"no log file: cannot write {clean(log_file, 120)} "
                    f"({exc.strerror or type(exc).__name__}). Pass --log-file FILE to keep one",
                )
            raise UsageError(
                f"cannot write the log file {clean(log_file, 200)}: {exc.strerror or type(exc).__name__}",
                "pass --log-file with a writable path",
            ) from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    _install(handler, verbose)
    return note


def _without_log_file(verbose: bool, note: str) -> str:
    _install(logging.NullHandler(), verbose)  # (not stderr: the dashboard owns the terminal)
    return note


def _install(handler: logging.Handler, verbose: bool) -> None:
    """``handler`` as the root logger's only one, at WARNING (DEBUG with ``verbose``), secrets masked."""
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Chatty libraries stay at INFO even with --verbose; their DEBUG output includes request internals.
    for name in ("httpcore", "httpcore2", "httpx2", "hpack", "asyncio", "markdown_it"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
