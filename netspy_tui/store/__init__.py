"""The event store of the embedded collector (SQLite)."""

from netspy_tui.store.sqlite import EventStore, StoreError

__all__ = ["EventStore", "StoreError"]
