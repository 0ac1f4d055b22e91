"""benchmarks/bench_dataset.py runs end to end (LeNet-5, a few images, one repeat; timings not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_in_ci

ROOT = Path(__file__).resolve().parents[1]


def test_bench_dataset_runs_and_writes_json_and_markdown(tmp_path):
    require_in_ci("torch")
    require_in_ci("skimage")
    out, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_dataset.py"), "--model", "lenet5", "--images", "40", "--batch", "8",
         "--sizes", "16,48", "--repeats", "1", "--out", str(out), "--workdir", str(work)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result_json,) = out.glob("*.json")
    result = json.loads(result_json.read_text())
    (row,) = result["throughput"].values()
    assert row["taps"] == 3 and row["plain_ips"] > 0 and row["dataset_ips"] > 0 and row["ratio"] > 0
    assert set(result["memory"]) == {"16", "48"} and all(r["cli_rss_bytes"] > 0 and r["plain_rss_bytes"] > 0 for r in result["memory"].values())
    assert "dataset ÷ plain" in result_json.with_suffix(".md").read_text()
