"""bench/soak.py --quick: the soak harness itself works (10 seconds). Not a measurement: CI never runs the soak.

Structure and accounting only — timing figures (rate, slopes) depend on the machine and are not compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.hardening.conftest import REPO, product_env


def test_quick_soak_accounts_for_every_event_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "bench/soak.py", "--quick", "--json", str(out), "--dir", str(tmp_path)],
                          cwd=REPO, env=product_env(tmp_path), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].split()[:2] == ["metric", "value"]
    data = json.loads(out.read_text())
    result = data["result"]
    assert data["quick"] is True and data["arguments"]["rate"] == 1000.0
    assert result["generated"] > 0 and result["generated"] == result["stored"] + result["pruned_by_retention"]
    assert result["lost_unaccounted"] == 0 and result["lost_reported"] == 0
    assert result["dashboard_polls"] >= 1 and result["dashboard_rows_at_end"] > 0
    samples = result["samples"]
    assert len(samples) >= 3 and all(s["rss_mb"] > 0 and s["rss_anon_mb"] > 0 for s in samples)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert samples[-1]["generated"] == result["generated"]
    names = {m["name"] for m in data["metrics"]}
    assert names >= {"lost (generated - stored - pruned)", "RSS slope after warm-up (anon: heap)"}
    assert not list(tmp_path.glob("netspy-soak-*"))  # the store's temporary directory is gone
