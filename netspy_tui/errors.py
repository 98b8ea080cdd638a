"""User-facing errors: one sentence saying what went wrong, one saying what to do.

Every error a person can see (CLI stderr, MCP ``isError`` text, dashboard status) is a
:class:`NetspyError`. Its ``str()`` is a single line, safe to print.
"""

from __future__ import annotations


class NetspyError(Exception):
    """Base class: ``message`` says what happened, ``hint`` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            return f"{text}. {hint[:1].upper()}{hint[1:]}."
        return f"{text}."


class UsageError(NetspyError):
    """Bad flags, arguments or values supplied by the user (exit code 2)."""

    exit_code = 2


class ServerUnavailable(NetspyError):
    """The eBPF server could not be reached (refused, timed out, DNS)."""


class ServerError(NetspyError):
    """The server answered, but with an error status or a body we cannot use."""


class ContractError(ServerError):
    """The server's JSON does not match the eBPF server contract."""


class NoData(NetspyError):
    """There is no telemetry source with history to answer from."""


class CollectorError(NetspyError):
    """The embedded collector could not start or stopped working."""


class CollectorSettingError(CollectorError):
    """A collector setting (an environment variable) has a value it cannot take: refused even where another
    collector could run instead (a mistyped setting must not quietly change what is collected)."""


class AIError(NetspyError):
    """The AI backend is not configured or failed."""


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside (possibly nested) exception groups, else ``exc`` itself.

    anyio task groups (the MCP SDK's sessions run in them) wrap whatever their body raises in an
    ``ExceptionGroup``, even a lone :class:`NetspyError`; this gets the error back out.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def user_error(exc: BaseException) -> NetspyError | None:
    """The :class:`NetspyError` an exception (or a group of one) carries, if any."""
    inner = sole_exception(exc)
    return inner if isinstance(inner, NetspyError) else None
