"""benchmarks/bench_gradients.py runs end to end (LeNet-5, one round): no timings asserted, the
script that produces the committed results must not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_in_ci

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gradients_runs_and_writes_json_and_markdown(tmp_path):
    require_in_ci("torch")
    out, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gradients.py"), "--models", "lenet5", "--rounds", "1",
         "--repeats", "1", "--out", str(out), "--workdir", str(work)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result_json,) = out.glob("gradients-*.json")
    (run,) = json.loads(result_json.read_text())["models"]["lenet5"]
    assert run["onnxruntime"]["input_grad"]["median_s"] > 0 and run["torch"]["input_grad"]["median_s"] > 0
    assert run["ratios"]["input_grad_over_forward"] > 0 and run["backward_nodes_input"] > run["backward_nodes_layer"]
    assert "| lenet5 | 1 |" in result_json.with_suffix(".md").read_text()
