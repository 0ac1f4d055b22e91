"""Peak memory of the runs issue 9 found, measured side by side, and the estimate against what a run takes.

    python benchmarks/bench_memory_guard.py [--compare OLD_CHECKOUT] [--quick]

Each case runs ``onnxviz`` in a fresh process and reports its peak RSS (VmHWM, through
``benchmarks/_hwm.py``), wall time and exit code: the issue's 12000² photo on a model with dynamic
size under ``--max-memory 500M`` (refused before decoding, and the same photo at a ``--size`` that
fits), a declared 1×3×20000×20000 input, and a Conv with ``pads=1048576``. ``--compare PATH`` runs
the same commands with the onnxviz package found at PATH first (e.g. an export of an earlier
commit: ``git archive c7171c5 onnxviz | tar -x -C /tmp/old``), for before/after numbers.

Then the estimate is checked against measured peaks: PaddleOCR's text detector (rapidocr's wheel)
at several input sizes, each capture in its own process — estimated total vs measured peak RSS
above the process's RSS before the capture. Results are printed as markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))


def _run(args: list[str], pythonpath: str | None, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["TMPDIR"] = str(tmp)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "_hwm.py"), "-m", "onnxviz", *args], capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    hwm = int(lines[-1].split()[1]) if lines and lines[-1].startswith("HWM ") else 0
    message = next((line for line in lines if line.startswith("onnxviz: error")), "")
    return {"code": proc.returncode, "peak_rss_mib": hwm / 2**20, "seconds": wall, "error": message[:160]}


def _cases(work: Path, quick: bool) -> list[tuple[str, list[str]]]:
    import onnx
    from PIL import Image

    import models

    dynamic = work / "dynamic.onnx"
    onnx.save(models.conv_bn_relu(), dynamic)
    big_input = models.conv_bn_relu()
    for d, v in zip(big_input.graph.input[0].type.tensor_type.shape.dim, (1, 3, 20000, 20000)):
        d.Clear()
        d.dim_value = v
    onnx.save(big_input, work / "input20k.onnx")
    pads = models.conv_bn_relu()
    for a in pads.graph.node[0].attribute:
        if a.name == "pads":
            a.ints[:] = [1048576] * 4
    onnx.save(pads, work / "pads.onnx")
    side = 4000 if quick else 12000
    photo = work / f"photo{side}.jpg"
    small = (np.random.default_rng(0).random((side // 16, side // 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR).save(photo, quality=85)
    img = work / "small.png"
    Image.fromarray(small[:32, :32]).save(img)
    fit = "1000x1000" if quick else "3000x3000"
    out = str(work / "out")
    return [
        (f"{side}² JPEG, dynamic model, --max-memory 500M", ["maps", str(dynamic), str(photo), "-o", out, "--max-memory", "500M"]),
        (f"{side}² JPEG, dynamic model, --max-memory 500M --size {fit}", ["maps", str(dynamic), str(photo), "-o", out, "--max-memory", "500M", "--size", fit]),
        ("declared input 1×3×20000×20000", ["maps", str(work / "input20k.onnx"), str(img), "-o", out]),
        ("Conv with pads=1048576", ["maps", str(work / "pads.onnx"), str(img), "-o", out]),
    ]


_ESTIMATE = r"""
import json, sys, numpy as np, onnxviz
from onnxviz.run import memory
path, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
m = onnxviz.load(path, tap="activation", session_config={"session.intra_op.allow_spinning": "0"}, optimization="extended")
x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
est = memory.check_run(m, {m.inputs[0].name: x.shape}, max_memory="64G")
m._ensure_session()
base = rss()
cap = m.capture(x)
for layer in cap.values():
    onnxviz.render(layer)
peak = max(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"estimate": est.total(None) - est.input, "measured": peak - base}))
"""


def _estimates(quick: bool) -> list[dict]:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return []
    det = Path(list(spec.submodule_search_locations)[0]) / "models" / "PP-OCRv6_det_small.onnx"
    rows = []
    for side in ((320, 640) if quick else (320, 640, 960, 1280)):
        proc = subprocess.run([sys.executable, "-c", _ESTIMATE, str(det), str(side), str(side)], capture_output=True, text=True, timeout=1200)
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"model": "PP-OCRv6 det", "input": f"1×3×{side}×{side}", **data})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", metavar="PATH", help="also run with the onnxviz package found at PATH (an earlier checkout)")
    parser.add_argument("--quick", action="store_true", help="a 4000² photo and two detector sizes (for tests)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxviz-bench-memory-") as tmp:
        work = Path(tmp)
        (work / "tmp").mkdir()
        print("| case | run | exit | peak RSS | wall | error |\n|---|---|---|---|---|---|")
        for name, argv in _cases(work, args.quick):
            for label, path in [("this checkout", None)] + ([("compare", args.compare)] if args.compare else []):
                subprocess.run(["rm", "-rf", str(work / "out")], check=False)
                r = _run(argv, path, work / "tmp")
                print(f"| {name} | {label} | {r['code']} | {r['peak_rss_mib']:.0f} MiB | {r['seconds']:.1f} s | {r['error'][:100]} |", flush=True)
    rows = _estimates(args.quick)
    if rows:
        print("\n| model | input | estimated (activations, rendering) | measured peak above the loaded model | measured ÷ estimated |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['input']} | {r['estimate'] / 2**20:.0f} MiB | {r['measured'] / 2**20:.0f} MiB | {r['measured'] / max(r['estimate'], 1):.2f} |")


if __name__ == "__main__":
    main()
