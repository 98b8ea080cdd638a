"""The footer: one line at any width, keeping the keys that matter most (``KeyAction.rank``) when not all fit."""

from __future__ import annotations

from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from netspy_tui.tui import keys

_PALETTE_RANK = 50
_OTHER_RANK = 100


def _rank(key: FooterKey) -> int:
    if key.has_class("-command-palette"):
        return _PALETTE_RANK
    action = keys.BY_ACTION.get(key.action)
    return action.rank if action is not None else _OTHER_RANK


def _cells(key: FooterKey) -> int:
    """Cells a non-compact FooterKey takes: padded key, description, its right padding (palette: a border)."""
    return len(key.key_display) + len(key.description) + 3 + (2 if key.has_class("-command-palette") else 0)


class KeyFooter(Footer):
    """Textual's Footer, but the keys that do not fit are hidden, least important first, instead of cut off."""

    async def recompose(self) -> None:
        await super().recompose()
        self.fit()

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Show the most important keys that fit in the footer's width (all of them before it has one)."""
        width = self.size.width or 10_000
        used = 0
        for key in sorted(self.query_children(FooterKey), key=_rank):
            key.display = used + _cells(key) <= width
            used += _cells(key) if key.display else 0
