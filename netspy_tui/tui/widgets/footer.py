"""The footer: one line at any width, keeping the keys that matter most (``KeyAction.rank``) when not all fit."""

from __future__ import annotations

from typing import Any

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
    """Textual's Footer, but the keys that do not fit are hidden, least important first, instead of cut off.

    Textual's Footer builds its keys again (removes and mounts every FooterKey, then lays the screen out) each time
    the screen's bindings may have changed: every change of focus, though moving between the tables (a tab switch,
    esc back from an input) leaves the same keys. Here it is built again only when what it shows would differ."""

    _shown: Any = None
    """What the keys on show were built from (see :meth:`_wanted`); None before the first build."""

    def _wanted(self) -> Any:
        """What :meth:`compose` builds the keys from: the shown bindings with their state, the key display each is
        given, the palette key, the compact style."""
        if not self._bindings_ready:
            return None
        app = self.app
        shown = tuple(
            (binding, enabled, tooltip, app.get_key_display(binding))
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )
        palette = self.screen.active_bindings.get(app.COMMAND_PALETTE_BINDING)
        palette_key = palette[1:] if palette is not None and self.show_command_palette else None
        return shown, palette_key, app.ENABLE_COMMAND_PALETTE, self.compact

    async def recompose(self) -> None:
        wanted = self._wanted()
        if wanted is not None and wanted == self._shown:
            return  # the same keys: nothing to build or lay out
        await super().recompose()
        self._shown = wanted
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
