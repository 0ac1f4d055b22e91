"""Dataset mode throughput and memory, measured side by side in one run.

    python benchmarks/bench_dataset.py                          # ResNet-50, batch 32, CPU
    python benchmarks/bench_dataset.py --model lenet5 --images 64 --sizes 32,96 --repeats 1   # a quick check

Throughput: images per second of the dataset loop (onnxviz's decoding on a prefetch thread, the
tapped model, the per-channel reductions, top-k and histogram merges, per-shard partials) against a
plain decode-and-run loop (the same decoding, then the untapped model, one thread), over the same
JPEG photographs, for several layer selections. Runs are interleaved (plain, dataset, plain, …) so
a noisy machine slows both alike; medians and the spread (min–max) are reported. Session creation
and output writing are excluded from both (reported separately for the CLI).

Memory: peak RSS (VmHWM) of the whole ``onnxviz dataset`` command on two dataset sizes, and of
the plain loop, each in a fresh process: streaming must keep it independent of the image count.
Results: JSON and markdown in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}  # as every benchmarked session (see bench.py)
SELECTIONS = {  # name → (tap, layers, where the reductions run)
    "resnet50": [("all 53 convs (default)", "conv", None, "numpy"), ("all 53, --reduce graph", "conv", None, "graph"),
                 ("all 53, --tap activation", "activation", None, "numpy"), ("layer4 (10 convs)", "activation", ["layer4.*"], "numpy"),
                 ("one layer (layer3.5.conv2)", "activation", ["layer3.5.conv2"], "numpy")],
}  # fmt: skip


def make_images(folder: Path, count: int) -> list[str]:
    """``count`` JPEG photographs: crops of the sample set, cycled (names differ, content repeats)."""
    from onnxviz.datasets.sample import write_sample

    source = folder / "sample"
    if not source.exists():
        write_sample(source, max_side=400)
    photos = sorted(source.glob("*.jpg"))
    target = folder / f"set{count}"
    if not target.exists():
        target.mkdir()
        for k in range(count):
            os.link(photos[k % len(photos)], target / f"{k:05d}.jpg")
    return sorted(str(p) for p in target.glob("*.jpg"))


def plain_loop(session: Any, spec: Any, paths: list[str], batch: int, size: tuple[int, int], scale: str) -> None:
    from onnxviz.run.inputs import images_to_array

    for b0 in range(0, len(paths), batch):
        x = images_to_array(spec, paths[b0 : b0 + batch], size=size, scale=scale)
        session.run(None, {spec.name: x})


def bench_throughput(
    model: Path, paths: list[str], batch: int, repeats: int, tap: str, layers: list[str] | None, reduce: str, scale: str
) -> dict[str, Any]:
    import onnxviz
    from onnxviz.datasets.engine import Engine, JobSpec, Part, image_key
    from onnxviz.datasets.local import run_local
    from onnxviz.run.session import create_session

    plain_model = onnxviz.load(model)
    spec_in = plain_model.inputs[0]
    size = (spec_in.hw[0] or 224, spec_in.hw[1] or 224)
    session, _ = create_session(plain_model.proto.SerializeToString(), provider="cpu", external_dir=plain_model.loaded.external_dir,
                                config=SESSION_CONFIG, initializers=plain_model.loaded.weights, optimization="all")  # fmt: skip
    engine = Engine(JobSpec(model=str(model), tap=tap, layers=tuple(layers) if layers else None, size=size, scale=scale,
                            provider="cpu", batch=batch, reduce=reduce))  # fmt: skip
    keys = np.array([image_key(p) for p in paths], np.uint64)

    def dataset_loop() -> None:
        total: list[Part] = []
        run_local(engine, paths, keys, np.arange(len(paths)), 1000, lambda part: total.append(part))

    warm = paths[: batch * 2]
    plain_loop(session, spec_in, warm, batch, size, scale)
    run_local(engine, warm, keys[: len(warm)], np.arange(len(warm)), 1000, lambda part: None)
    plain_times, dataset_times = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        plain_loop(session, spec_in, paths, batch, size, scale)
        plain_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        dataset_loop()
        dataset_times.append(time.perf_counter() - t)
    n = len(paths)
    plain_ips = [n / t for t in plain_times]
    data_ips = [n / t for t in dataset_times]
    ratios = [d / p for d, p in zip(data_ips, plain_ips)]
    return {
        "tap": tap, "layers": layers, "reduce": reduce, "taps": len(engine.taps), "images": n, "batch": batch,
        "plain_ips": statistics.median(plain_ips), "plain_ips_range": [min(plain_ips), max(plain_ips)],
        "dataset_ips": statistics.median(data_ips), "dataset_ips_range": [min(data_ips), max(data_ips)],
        "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
        "timings_s": {k: v / (repeats + 1) for k, v in engine.timings.items()},
    }  # fmt: skip


def run_hwm(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS of ``python -m/-c ...`` in a fresh process (see bench.run_timed)."""
    from bench import run_timed

    return run_timed([sys.executable, *args])


def bench_memory(model: Path, sets: dict[int, list[str]], batch: int, scale: str, size: tuple[int, int], work: Path) -> dict[str, Any]:
    rows = {}
    for count, paths in sets.items():
        folder = Path(paths[0]).parent
        out = work / f"out{count}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, rss = run_hwm(["-m", "onnxviz", "dataset", str(model), str(folder), "-o", str(out), "--batch", str(batch), "--scale", scale])
        manifest = json.loads((out / "dataset.json").read_text())
        plain_code = (
            "import sys, glob, onnxviz\n"
            "from onnxviz.run.session import create_session\n"
            "from onnxviz.run.inputs import images_to_array\n"
            f"m = onnxviz.load({str(model)!r}); spec = m.inputs[0]\n"
            f"s, _ = create_session(m.proto.SerializeToString(), provider='cpu', external_dir=m.loaded.external_dir, initializers=m.loaded.weights, config={SESSION_CONFIG!r})\n"
            f"paths = sorted(glob.glob({str(folder / '*.jpg')!r}))\n"
            f"for b in range(0, len(paths), {batch}):\n"
            f"    s.run(None, {{spec.name: images_to_array(spec, paths[b:b + {batch}], size={size!r}, scale={scale!r})}})\n"
        )  # fmt: skip
        plain_seconds, plain_rss = run_hwm(["-c", plain_code])
        rows[count] = {
            "cli_seconds": seconds, "cli_rss_bytes": rss, "loop_seconds": manifest["run"]["seconds"],
            "loop_ips": manifest["run"]["images_per_second"], "plain_seconds": plain_seconds, "plain_rss_bytes": plain_rss,
        }  # fmt: skip
        print(f"[bench_dataset] memory {count} images: CLI {seconds:.1f} s, {rss / 2**20:.0f} MiB; plain {plain_rss / 2**20:.0f} MiB", file=sys.stderr)
    return rows


def bench_ray(count: int, images: Path, work: Path) -> dict[str, Any]:
    """The bundled digits CNN over ``count`` photographs (the sample set cycled: many exact ties),
    locally and on a local Ray cluster with two actors: identical results, and how long each took."""
    from onnxviz.datasets import DatasetStats
    from onnxviz.demo import demo_model

    folder = Path(make_images(images, count)[0]).parent
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray", "local", "--workers", "2"])):
        out = work / f"ray-compare-{name}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, rss = run_hwm(["-m", "onnxviz", "dataset", str(demo_model()), str(folder), "-o", str(out), "--size", "64x64",
                                "--tap", "activation", *extra])  # fmt: skip
        runs[name] = (DatasetStats.load(out), seconds, rss)
    (a, ta, ra), (b, tb, rb) = runs["local"], runs["ray"]
    layers = {}
    for name in a:
        same = all(np.array_equal(getattr(a[name], f), getattr(b[name], f)) for f in
                   ("top_image", "top_pos", "top_score", "hist", "count", "positive", "min", "max", "nonfinite"))  # fmt: skip
        layers[name] = {
            "identical_topk_hist_counts_extrema": same,
            "max_mean_diff_over_std": float(np.max(np.abs(a[name].mean - b[name].mean) / np.maximum(a[name].std, 1e-30))),
            "max_std_rel_diff": float(np.max(np.abs(a[name].std - b[name].std) / np.maximum(a[name].std, 1e-30))),
        }
    ties = sum(int((np.diff(a[name].top_score, axis=1) == 0).sum()) for name in a)
    return {"images": count, "layers": layers, "tied_neighbours_in_topk": ties, "local_cli_seconds": ta, "ray_cli_seconds": tb,
            "local_rss_bytes": ra, "ray_driver_rss_bytes": rb, "ray_partials": b.run.get("partials"), "ray_workers": b.run.get("workers")}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# onnxviz dataset benchmark ({result['date']})", "",
        f"{m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, {result['model']}, batch {result['batch']}, "
        f"{result['images']} JPEG photographs for throughput, {result['repeats']} interleaved repeats; machine shared: {result['note']} "
        f"(1-minute load average {result['load_average']['start'][0]:.1f} at the start, {result['load_average'].get('end', [0])[0]:.1f} at the end)", "",
    ]  # fmt: skip
    if result["throughput"]:
        lines += ["| layers | taps | plain loop | dataset | dataset ÷ plain (median) | spread | model / reductions / decode per run |",
                  "|---|---|---|---|---|---|---|"]
    for name, r in result["throughput"].items():
        t = r["timings_s"]
        lines.append(
            f"| {name} | {r['taps']} | {r['plain_ips']:.1f} img/s | {r['dataset_ips']:.1f} img/s | {r['ratio']:.2f}× | "
            f"{r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f}× | {t['model']:.1f} / {t['reduce']:.1f} / {t['decode']:.1f} s |"
        )
    if result["memory"]:
        lines += ["", "| images | `onnxviz dataset` peak RSS | plain loop peak RSS | CLI wall time | loop images/s |", "|---|---|---|---|---|"]
    for count, r in result["memory"].items():
        lines.append(
            f"| {count} | {r['cli_rss_bytes'] / 2**20:.0f} MiB | {r['plain_rss_bytes'] / 2**20:.0f} MiB | {r['cli_seconds']:.1f} s | {r['loop_ips']:.1f} |"
        )
    if result.get("ray"):
        r = result["ray"]
        lines += ["", f"Local vs Ray (digits CNN, {r['images']} images, {r['tied_neighbours_in_topk']} exact ties between neighbouring "
                  f"top-k scores; Ray: local cluster, {r['ray_workers']} actors, {r['ray_partials']} partials): local CLI {r['local_cli_seconds']:.1f} s, "
                  f"Ray CLI {r['ray_cli_seconds']:.1f} s (with the cluster's start)", "",
                  "| layer | top-k, histograms, counts, extrema identical | max mean difference / std | max std relative difference |", "|---|---|---|---|"]
        for name, row in r["layers"].items():
            lines.append(f"| {name} | {'yes' if row['identical_topk_hist_counts_extrema'] else 'NO'} | {row['max_mean_diff_over_std']:.1e} | {row['max_std_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=128, help="images per throughput run")
    parser.add_argument("--sizes", default="256,1024", help="dataset sizes for the memory comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list of: throughput, memory")
    parser.add_argument("--ray-images", type=int, default=0, help="also compare local and Ray runs over this many images (needs ray)")
    parser.add_argument("--only", default="", help="run only the layer selections whose name contains this")
    parser.add_argument("--note", default="yes, other engineers' jobs were running", help="what the machine was doing")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    from bench import export, machine, write_results

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model, shape = export(args.model, work)
    scale = "imagenet" if shape[1] == 3 else "unit"
    skip = set(filter(None, args.skip.split(",")))
    images = work / "dataset-images"
    images.mkdir(exist_ok=True)
    result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "model": args.model,
                              "batch": args.batch, "images": args.images, "repeats": args.repeats, "note": args.note,
                              "throughput": {}, "memory": {}, "load_average": {"start": list(os.getloadavg())}}  # fmt: skip
    if "throughput" not in skip:
        paths = make_images(images, args.images)
        for name, tap, layers, reduce in SELECTIONS.get(args.model, [("all convs (default)", "conv", None, "numpy")]):
            if args.only and args.only not in name:
                continue
            print(f"[bench_dataset] throughput: {name}", file=sys.stderr, flush=True)
            result["throughput"][name] = r = bench_throughput(model, paths, args.batch, args.repeats, tap, layers, reduce, scale)
            print(f"  plain {r['plain_ips']:.1f} img/s, dataset {r['dataset_ips']:.1f} img/s, ratio {r['ratio']:.2f}", file=sys.stderr)
    if "memory" not in skip:
        sizes = [int(s) for s in args.sizes.split(",")]
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            size = (shape[2], shape[3])
            result["memory"] = bench_memory(model, {n: make_images(images, n) for n in sizes}, args.batch, scale, size, Path(tmp))
    if args.ray_images:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            result["ray"] = bench_ray(args.ray_images, images, Path(tmp))
    result["load_average"]["end"] = list(os.getloadavg())
    what = "ray" if {"throughput", "memory"} <= skip else args.model
    write_results(args.out, f"dataset-{what}-cpu-{result['machine']['cores']}cores-{result['date'][:10]}", result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
