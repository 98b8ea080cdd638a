"""Callbacks a store calls after a write (``on_change``, ``on_rows``): registered with a call that stops them,
called on the writing thread, and never allowed to fail the write."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Listeners:
    """Listeners of one kind of write; ``what`` names them in the log when one fails."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._listeners: dict[object, Callable[..., None]] = {}

    def add(self, listener: Callable[..., None]) -> Callable[[], None]:
        """Call ``listener`` from now on; returns the call that stops it."""
        token = object()
        self._listeners[token] = listener

        def stop() -> None:
            self._listeners.pop(token, None)

        return stop

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def __call__(self, *args: Any) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(*args)
            except Exception:  # a listener must not fail a write the store kept
                log.exception("%s listener failed", self.what)
