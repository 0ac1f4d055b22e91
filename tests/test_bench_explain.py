"""benchmarks/bench_explain.py runs end to end (a narrow ResNet-50 at 64×64, one round; timings not
asserted: benchmarks report ratios, tests check that the script that produces them works)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_in_ci

ROOT = Path(__file__).resolve().parents[1]


def test_bench_explain_runs_and_writes_json_and_markdown(tmp_path):
    require_in_ci("torch")
    out, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_explain.py"), "--width", "8", "--size", "64", "--repeats", "1",
         "--out", str(out), "--workdir", str(work)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result_json,) = out.glob("*.json")
    (run,) = json.loads(result_json.read_text())["runs"]
    for key in ("gradcam", "saliency", "eigencam", "scorecam", "ablationcam"):
        assert run[key]["onnxviz"]["median"] > 0, key
    assert run["dream"]["onnxviz"]["median"] > 0 and run["dream"]["torch"]["median"] > 0
    assert run["ablationcam"]["channels"] == 256 and run["layer"]["default"]
    markdown = result_json.with_suffix(".md").read_text()
    assert "Grad-CAM" in markdown and "Ablation-CAM, all 256 channels" in markdown
