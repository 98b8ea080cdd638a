"""bench/soak.py --quick: the soak harness itself works (10 seconds). Not a measurement: CI never runs the soak.

Structure and accounting only — timing figures (rate, slopes) depend on the machine and are not compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.hardening.conftest import REPO, product_env


def test_quick_soak_counts_exactly_accounts_for_every_raw_record_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--quick", "--json", str(out), "--dir", str(tmp_path)],
        cwd=REPO,
        env=product_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].split()[:2] == ["metric", "value"]
    data = json.loads(out.read_text())
    result = data["result"]
    assert data["quick"] is True and data["arguments"]["rate"] == 1000.0
    generated = result["generated"]
    assert generated > 0 and result["rate_achieved"] > 0
    # counts exact: the store's rollups (held + deleted by retention) count every event made
    assert result["counts_exact"] is True and result["counted"] == generated
    assert sum(result["counted_held"].values()) + result["counted_pruned_by_retention"] == generated
    # raw balance: every raw record is kept, shed (and counted) or pruned by retention
    assert result["balance_holds"] is True and result["unaccounted"] == 0
    assert result["kept"] + result["shed"] + result["pruned_by_retention"] == generated
    assert result["shed_written"] == result["shed"] and result["other_losses"] == {}
    assert result["kept"] > 0 and result["pruned_by_retention"] > 0  # 3 s retention over 10 s: pruning ran
    assert result["dashboard_polls"] >= 1 and result["dashboard_rows_at_end"] > 0
    assert 0 < result["dashboard_polls_per_interval"] <= 1.5 and result["dashboard_polls_expected"] > 0
    assert result["db_mb_end"] > 0 and result["steady_state_reached"] is False
    samples = result["samples"]
    assert len(samples) >= 3 and all(s["rss_mb"] > 0 and s["rss_anon_mb"] > 0 for s in samples)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert samples[-1]["generated"] == generated and samples[-1]["kept"] == result["kept"]
    names = {m["name"] for m in data["metrics"]}
    assert names >= {
        "counts: |counted - generated|",
        "raw: |generated - (kept + shed + pruned)|",
        "raw records shed by the store's writer",
        "RSS slope after warm-up (anon: heap)",
        "RSS slope after warm-up (total)",
        "DB size slope after warm-up",
        "dashboard polls per interval (polls / expected)",
    }
    assert not list(tmp_path.glob("netspy-soak-*"))  # the store's temporary directory is gone


def test_soak_sees_the_store_shed_raw_records_and_still_counts_every_event(tmp_path: Path) -> None:
    """With room for one queued record the writer sheds every raw record: the soak reports them as
    shed (the collector never waits), the balance still holds and the counts stay exact."""
    out = tmp_path / "soak.json"
    argv = [
        sys.executable,
        "bench/soak.py",
        "--minutes",
        "0.1",
        "--rate",
        "1000",
        "--retention",
        "3",
        "--sample",
        "1",
        "--max-queued",
        "1",
        "--json",
        str(out),
        "--dir",
        str(tmp_path),
    ]
    done = subprocess.run(argv, cwd=REPO, env=product_env(tmp_path), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())["result"]
    generated = result["generated"]
    assert generated > 0 and result["max_queued"] == 1
    assert result["shed"] == generated and result["shed_written"] == generated
    assert result["kept"] == 0 and result["pruned_by_retention"] == 0 and result["balance_holds"] is True
    assert result["counts_exact"] is True and result["counted"] == generated
