"""Write screenshots of the dashboard on the recorded demo data into screenshots/.

Drives the real app with ``run_test`` over a MemorySource replaying tests/data/demo.jsonl with a
fixed clock (the app's clock fixed too), so the pictures are reproducible::

    python scripts/export_screenshots.py            # SVG, plus PNG when cairosvg is installed
    python scripts/export_screenshots.py --no-png

PNG needs ``cairosvg`` (PyPI) and the system cairo library; without them only SVG is written.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspy_tui.tui.widgets.status import StatusBar  # noqa: E402
from tests.tui.scenes import SCENES, SIZE, demo_app  # noqa: E402

# Poll/draw milliseconds vary from run to run; leave them out so screenshots only change with the UI.
StatusBar.SHOW_TIMINGS = False

OUT = ROOT / "screenshots"

#: Shots at other terminal sizes: name -> (scene, (columns, rows)).
SIZED = {"main-80x24": ("main", (80, 24))}
SHOTS = {**{name: (name, SIZE) for name in SCENES}, **SIZED}


def svg_to_png(svg: Path, png: Path, width: int) -> bool:
    """Render ``svg`` to ``png``; False when cairosvg (or cairo) is not available."""
    try:
        import cairosvg  # type: ignore[import-not-found]
    except (ImportError, OSError):
        return False
    text = svg.read_text(encoding="utf-8")
    # The SVG names a web font; render with a local monospace font instead of fetching it.
    text = re.sub(r"@font-face\s*{[^}]*}", "", text)
    text = text.replace('"Fira Code"', '"DejaVu Sans Mono"')
    text = text.replace("Fira Code, monospace", "DejaVu Sans Mono, monospace")
    cairosvg.svg2png(bytestring=text.encode("utf-8"), write_to=str(png), output_width=width)
    return True


async def shoot(name: str, out: Path) -> Path:
    scene, size = SHOTS[name]
    app = demo_app()
    async with app.run_test(size=size) as pilot:
        await SCENES[scene](pilot)
        await pilot.pause()
        return Path(app.save_screenshot(f"{name}.svg", path=str(out)))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-png", action="store_true", help="write SVG only")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory (default: screenshots/)")
    parser.add_argument(
        "scenes", nargs="*", metavar="SCENE", help=f"scenes to shoot: {', '.join(SHOTS)} (default: all)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    png_missing = False
    unknown = [s for s in args.scenes if s not in SHOTS]
    if unknown:
        parser.error(f"unknown scene {unknown[0]!r}; choose from {', '.join(SHOTS)}")
    for name in args.scenes or list(SHOTS):
        svg = await shoot(name, args.out)
        line = f"{svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg}"
        if not args.no_png:
            if svg_to_png(svg, svg.with_suffix(".png"), SHOTS[name][1][0] * 10):
                line += " + .png"
            else:
                png_missing = True
        print(line)
    if png_missing:
        print("PNG skipped: pip install cairosvg (needs the cairo library) to also write PNG files.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
