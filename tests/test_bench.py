"""The benchmark script runs end to end (benchmarks/bench.py, on LeNet-5 with few repeats).

Timings are not asserted (benchmarks report ratios, tests check behaviour); this keeps the
script that produces the committed results from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_in_ci

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_writes_json_and_markdown(tmp_path):
    require_in_ci("torch")
    require_in_ci("matplotlib")
    out, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--models", "lenet5", "--batch", "1",
         "--repeats", "2", "--render-sample", "1", "--out", str(out), "--workdir", str(work)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result_json,) = out.glob("*.json")
    result = json.loads(result_json.read_text())
    lenet = result["models"]["lenet5"]
    capture = lenet["capture"]["1"]
    assert capture["taps"] == 3 and capture["plain_s"] > 0 and capture["capture_activation_s"] > 0
    assert lenet["torch_hooks"]["1"] > 0
    assert lenet["render"]["layers"] == 3
    assert lenet["cold"]["cli_maps_s"] > 0 and lenet["cold"]["cold_floor_s"] > 0
    assert lenet["memory"][0]["rss_plain_bytes"] > 0
    markdown = result_json.with_suffix(".md").read_text()
    assert "| lenet5 (3 convs) | 1 |" in markdown and "cold floor" in markdown
