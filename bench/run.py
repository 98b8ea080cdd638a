"""Run every benchmark area, print one table, write the results as JSON.

    python -m bench.run                 # everything (about 5-8 minutes on 2 cores)
    python -m bench.run --quick         # a tiny smoke version (seconds)
    python -m bench.run --only store --only mcp --json /tmp/out.json

Areas: store, mcp, startup, dashboard, names, quit, capture, traffic, fleet (capture and traffic need root: they load
the eBPF collector and run bpftrace; they say why when they skip). Every load is bounded in count and time and stays on
loopback.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROBE_LOOP, REPO, Context, Metric, machine_info, metric, python_probe, table, write_json  # noqa: E402

AREAS = ("store", "mcp", "startup", "dashboard", "names", "quit", "capture", "traffic", "fleet")
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke version of every area")
    p.add_argument(
        "--only",
        action="append",
        choices=AREAS,
        metavar="NAME",
        help=f"run only this area (repeatable): {', '.join(AREAS)}",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help=f"results file ({DEFAULT_JSON})")
    ns = p.parse_args(argv)
    areas = [a for a in AREAS if not ns.only or a in ns.only]
    # The product as installed: its modules' bytecode compiled (an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would compile every changed module again at each timed start).
    compileall.compile_dir(str(REPO / "netspy_tui"), quiet=1)
    started = time.monotonic()
    machine = machine_info()  # (before the areas: the commit measured, the load it started on)
    metrics: list[Metric] = []
    area_info: dict[str, dict[str, object]] = {}
    probes: dict[str, float] = {}

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="netspy-bench-") as tmp:
        ctx = Context(quick=ns.quick, tmp=Path(tmp), log=log)
        for name in areas:
            t0 = time.monotonic()
            probes[name] = python_probe()
            log(f"== {name} (Python speed probe {probes[name]:.1f} ms)")
            error = ""
            try:
                module = importlib.import_module(f"bench.{name}")
                got = module.run(ctx)
            except Exception as exc:  # one broken area must not hide the others
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                got = []
            metrics.extend(got)
            area_info[name] = {
                "seconds": round(time.monotonic() - t0, 2),
                "error": error,
                "metrics": [m.to_json() for m in got],
                **ctx.shared.get(f"{name}_extra", {}),
            }
    # how fast the machine ran Python before each area: the hour's speed beside the figures measured in it
    metrics.append(metric("machine", f"Python speed probe: a loop of {PROBE_LOOP:,} additions, before each area",
                          list(probes.values()), "ms"))  # fmt: skip
    machine["python_probe_ms"] = {name: round(ms, 2) for name, ms in probes.items()}
    text = table(metrics)
    print(text)
    failed = [n for n, a in area_info.items() if a["error"]]
    if failed:
        print(f"\nareas that failed: {', '.join(failed)} (see the traceback above)")
    payload = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": ns.quick,
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "areas": area_info,
        "table": text.splitlines(),
    }
    write_json(ns.json, payload)
    print(f"\nwrote {ns.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
