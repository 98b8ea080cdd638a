"""DIAGNOSIS (not a bench): which thread of a forwarding agent spends what forwarding costs.

Runs ``python -m bench.fleet --forward-cost 1`` (two agents side by side, one with ``--forward``: the bench's
forwarding row) and, ``--after`` seconds after both agents are up, reads each of their threads' CPU (user + system,
``/proc/PID/task/TID/stat``) over ``--seconds``: a row per thread, the two agents side by side, busiest first. The
threads are named when ``py-spy`` is installed (``py-spy dump``: Python's thread names); else by their ids. Run as
the bench can (root for nothing: the agents are synthetic).

    python scripts/diag_forward_threads.py --seconds 12

CPU is counted in clock ticks (10 ms here): over 12 s, a tenth of a percent of a core is a tick.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
AGENT = r"--agent [\d.]+ --port \d+"


def agents() -> tuple[int | None, int | None]:
    """The forwarding agent's pid and the other's (None: not up yet)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    forwarding = [int(line.split()[0]) for line in out.splitlines() if re.search(AGENT + " --forward", line)]
    alone = [int(line.split()[0]) for line in out.splitlines() if re.search(AGENT + r"\s*$", line)]
    return (forwarding[0] if forwarding else None), (alone[0] if alone else None)


def names(pid: int) -> dict[str, str]:
    """Thread id -> Python thread name, by ``py-spy dump`` (empty without py-spy)."""
    if shutil.which("py-spy") is None:
        return {}
    out = subprocess.run(["py-spy", "dump", "-p", str(pid)], capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', out)}


def cpu(pid: int, named: dict[str, str]) -> dict[str, float]:
    """Each thread's CPU seconds so far, by name (or id)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # (ended meanwhile)
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        name = named.get(tid, f"thread {tid}")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=12.0, help="the window the threads' CPU is read over")
    p.add_argument("--after", type=float, default=5.0, help="seconds after both agents are up the window starts")
    a = p.parse_args()
    bench = subprocess.Popen([sys.executable, "-m", "bench.fleet", "--forward-cost", "1"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        forwarding, alone = agents()
        while forwarding is None or alone is None:
            if time.monotonic() > deadline or bench.poll() is not None:
                print("diag_forward_threads: the bench's agents did not start", file=sys.stderr)
                return 1
            time.sleep(0.3)
            forwarding, alone = agents()
        time.sleep(a.after)
        fw_names, alone_names = names(forwarding), names(alone)
        before = cpu(forwarding, fw_names), cpu(alone, alone_names)
        t0 = time.monotonic()
        time.sleep(a.seconds)
        after = cpu(forwarding, fw_names), cpu(alone, alone_names)
        wall = time.monotonic() - t0
    finally:
        out, _ = bench.communicate(timeout=600)
    pct = [{k: (after[i][k] - before[i].get(k, 0.0)) / wall * 100 for k in after[i]} for i in (0, 1)]
    rows = sorted(set(pct[0]) | set(pct[1]), key=lambda k: -max(pct[0].get(k, 0.0), pct[1].get(k, 0.0)))
    print(f"{'thread':32s} {'--forward':>10s} {'without':>10s}   (% of a core over {wall:.1f} s)")
    for k in rows:
        print(f"{k:32s} {pct[0].get(k, 0.0):10.2f} {pct[1].get(k, 0.0):10.2f}")
    print(f"{'all':32s} {sum(pct[0].values()):10.2f} {sum(pct[1].values()):10.2f}")
    ratios = re.search(r'"ratios": \[([^\]]*)\]', out)
    print(f"the bench's ratio for its round (agent CPU with / without): {ratios.group(1) if ratios else '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
