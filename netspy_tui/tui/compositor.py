"""Textual's compositor, drawing a frame without the widgets it would throw away.

A frame's update draws the lines that changed: for each such line Textual asks every widget across it for its line
and cuts it at the screen's cuts (where one widget meets the next), front to back, the first piece at each cut
winning. The widgets behind (the screen, the containers holding the tables and panels) are asked and cut on every
changed line though every piece of theirs loses to a widget in front: at 100 events/s the tables, the pattern panel
and the header change every second, so a frame cut ~10 widgets on ~40 lines, most of them to be thrown away.
:class:`FrontFirstCompositor` asks a widget only for the changed lines where one of its cuts is still open, and cuts
only those: the same pieces land at the same cuts (tests/tui/test_compositor.py compares the frames with Textual's).
And a changed line is written to the terminal only where it changed (the spans of the regions refreshed), yet Textual
asks every widget across it for its line: the panels beside a table whose every line changed (the AI pane, the tab
bar's other tabs, the labels) were drawn and cut at every frame for pieces never written. A widget is asked only for
the pieces that will be written.

It overrides a private method, so it is used only with the Textual it was written against (:func:`compositor`); any
other Textual draws with its own compositor: the same frames, at its own cost.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

from textual._compositor import ChopsUpdate, Compositor
from textual.cache import FIFOCache
from textual.geometry import Region
from textual.strip import Strip

_NOTHING = Strip([], 0)
"""A piece of a line that a partial update writes as no cells (see :meth:`FrontFirstCompositor._render_chops`)."""
_SKIPPED = Strip([], 0)
"""A piece a partial update does not write, while its frame is drawn (None, skipped, once it is drawn)."""


class FrontFirstCompositor(Compositor):
    """:class:`~textual._compositor.Compositor` whose ``_render_chops`` skips the pieces that would lose, and those
    a partial update does not write."""

    _spans: dict[int, list[tuple[int, int]]] | None = None
    """While a partial update draws: each changed line's spans (x1, x2) to be written (None: every piece)."""

    def render_partial_update(self) -> ChopsUpdate | None:
        # Textual's, with the spans handed to _render_chops: a piece no span writes is left out (None, as Textual's
        # ChopsUpdate skips it). The spans and chops are Textual's, so the update writes the same sequences.
        update_regions = self._dirty_regions.copy()
        self._dirty_regions.clear()
        if not update_regions:
            return None
        crop = Region.from_union(update_regions).intersection(self.size.region)
        spans = list(self._regions_to_spans(update_regions))
        lines: dict[int, list[tuple[int, int]]] = {}
        for y, x1, x2 in spans:
            lines.setdefault(y, []).append((x1, x2))
        self._spans = lines
        try:
            chops = self._render_chops(crop, lines.__contains__)
        finally:
            self._spans = None
        return ChopsUpdate(chops, spans, [cut_set[1:] for cut_set in self.cuts])

    def _render_chops(self, crop: Region, is_rendered_line: Callable[[int], bool]) -> Sequence[Mapping[int, Strip]]:
        # Textual's _render_chops and _get_renders in one loop (same order: front to back), asking a widget for its
        # lines only when one of its cuts on a line to be drawn is still open (and written).
        cuts = self.cuts
        chops: list[dict[int, Strip | None]] = [dict.fromkeys(cut_set[:-1]) for cut_set in cuts]
        spans = self._spans
        if spans is not None:
            # a piece [cut, next cut) is written unless ChopsUpdate skips it (``x > x2 or end <= x1`` for every span of
            # its line): the others are marked filled (_SKIPPED), so no widget is asked for them, and are put back to
            # None (skipped) at the end. A piece that starts where a span ends is not skipped but cropped to nothing
            # (a cursor move and no cells): an empty strip writes the same.
            for y, line_spans in spans.items():
                line_cuts = cuts[y]
                chops_line = chops[y]
                for cut, end in zip(line_cuts, line_cuts[1:], strict=False):
                    if all(cut >= x2 or end <= x1 for x1, x2 in line_spans):
                        skipped = all(cut > x2 or end <= x1 for x1, x2 in line_spans)
                        chops_line[cut] = _SKIPPED if skipped else _NOTHING
        crop_overlaps = crop.overlaps
        intersection = Region.intersection
        for widget, (region, clip) in self.visible_widgets.items():
            if not crop_overlaps(clip):
                continue
            render_region = intersection(region, clip)
            render_x, render_y, width, height = render_region
            if not (width and height):
                continue
            first_cut, last_cut = render_region.column_span
            open_lines: list[tuple[int, list[int]]] = []
            for y in render_region.line_range:
                if not is_rendered_line(y):
                    continue
                line_cuts = cuts[y]  # (sorted: the widget's cuts are a slice, found by bisection)
                final_cuts = line_cuts[bisect_left(line_cuts, first_cut) : bisect_right(line_cuts, last_cut)]
                # (a piece goes to each cut but the last: the widget's right edge, or the clip's)
                get = chops[y].get
                if any(get(cut) is None for cut in final_cuts[:-1]):
                    open_lines.append((y, final_cuts))
            if not open_lines:
                continue
            if Region.contains_region(clip, region):
                strips = widget.render_lines(Region(0, 0, region.width, region.height))
            else:
                strips = widget.render_lines(Region(render_x - region.x, render_y - region.y, width, height))
            for y, final_cuts in open_lines:
                index = y - render_y
                if index >= len(strips):
                    break
                chops_line = chops[y]
                get = chops_line.get
                pieces = strips[index].divide([cut - render_x for cut in final_cuts[1:]])
                for cut, piece in zip(final_cuts, pieces, strict=False):
                    if get(cut) is None:
                        chops_line[cut] = piece
        if spans is not None:
            for y in spans:
                chops_line = chops[y]
                for cut, drawn in chops_line.items():
                    if drawn is _SKIPPED:
                        chops_line[cut] = None
        return chops  # type: ignore[return-value]  # (every cut written filled: Textual returns the same lists)


#: Textual releases (major, minor) whose ``Compositor._render_chops`` :class:`FrontFirstCompositor` replaces
WRITTEN_FOR = ((8, 2),)


TEXTUAL_STRIP_INIT = Strip.__init__
"""Textual's own ``Strip.__init__`` (for the tests that compare the strips)."""
#: Strip's caches (attribute, size), as Textual's ``Strip.__init__`` makes them
_STRIP_CACHES = {
    "_divide_cache": 4,
    "_crop_cache": 16,
    "_style_cache": 16,
    "_filter_cache": 4,
    "_line_length_cache": 4,
    "_crop_extend_cache": 4,
    "_offsets_cache": 4,
}


#: the rest of a strip's attributes (a Textual whose strips have others keeps its own ``__init__``)
_STRIP_OTHERS = ("_segments", "_cell_length", "_render_cache", "_link_ids", "_cell_count")


def _strip_init(self: Strip, segments: Any, cell_length: int | None = None) -> None:
    # Textual's Strip.__init__ without its seven caches: each is made when first used (_strip_cache)
    self._segments = list(segments)
    self._cell_length = cell_length
    self._render_cache = None
    self._link_ids = None
    self._cell_count = None


def _strip_cache(self: Strip, name: str) -> FIFOCache[Any, Any]:
    # (called only for an attribute not set: a cache this strip has not used yet)
    size = _STRIP_CACHES.get(name)
    if size is None:
        raise AttributeError(f"'Strip' object has no attribute '{name}'")
    cache: FIFOCache[Any, Any] = FIFOCache(size)
    setattr(self, name, cache)
    return cache


def lazy_strip_caches() -> None:
    """Textual's strips make their caches when first used, not each of the seven when the strip is made: a frame
    makes ~300 strips, most of which use one cache or none, and each cache is an object the cyclic collector's
    young passes walked while its strip lived (a tenth of what a pass found at 100 events/s). Strips behave as
    before (tests/tui/test_compositor.py). Only with the Textual in :data:`WRITTEN_FOR` (see :func:`compositor`)."""
    if Strip.__init__ is not _strip_init and set(Strip.__slots__) == {*_STRIP_CACHES, *_STRIP_OTHERS}:
        Strip.__init__ = _strip_init  # type: ignore[method-assign]
        Strip.__getattr__ = _strip_cache  # type: ignore[attr-defined]


def compositor(textual_version: str | None = None) -> Compositor:
    """The compositor a screen draws with: :class:`FrontFirstCompositor` with a Textual in :data:`WRITTEN_FOR` (whose
    strips then make their caches when used: :func:`lazy_strip_caches`), else Textual's own."""
    release = textual_version or version("textual")
    try:
        major_minor = tuple(int(part) for part in release.split(".")[:2])
    except ValueError:
        return Compositor()
    if major_minor not in WRITTEN_FOR:
        return Compositor()
    lazy_strip_caches()
    return FrontFirstCompositor()
