"""Table cells from untrusted values: always plain ``Text`` (never markup), cleaned and truncated."""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text

from netspy_tui.textsafe import clean


class Cell(Text):
    """A plain-text cell that also carries the value it sorts by."""

    sort_key: Any = None


def safe(value: object, max_len: int) -> str:
    """``textsafe.clean`` with a fast path for the common case (already printable, short)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= max_len and text.isprintable():
        return text  # isprintable() is False for every category clean() escapes
    return clean(text, max_len)


def cell(value: object, max_len: int = 40, *, style: Style | str = "", justify: str | None = None,
         sort_key: Any = None) -> Cell:
    text = Cell(safe(value, max_len), style=style, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    text.sort_key = sort_key
    return text


def outcome_classes() -> set[str]:
    """Component classes ``outcome--<name>`` that app.tcss colours, one per outcome."""
    from netspy_tui.models import OUTCOMES

    return {f"outcome--{o}" for o in OUTCOMES}


def window_label(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
