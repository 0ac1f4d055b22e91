"""onnxviz benchmarks: ratios measured side by side in one run, medians after warm-up.

    python benchmarks/bench.py                       # ResNet-50, VGG-16, MobileNetV2, LeNet-5 on CPU
    python benchmarks/bench.py --models resnet50 --batch 1,8
    python benchmarks/bench.py --onnx some_model.onnx --provider cuda

For each model: plain onnxruntime inference vs onnxviz capture of every Conv (both tap modes),
PyTorch eager + forward hooks on every Conv2d, one pass per layer (the seeds' way), rendering every
layer (64 channels) through ``onnxviz.render`` vs one matplotlib subplot per channel, the whole
``onnxviz maps`` CLI in a cold process vs the cold floor (a fresh python that only imports
onnxruntime, creates the plain session and runs it once), and peak RSS. Timed pairs are
interleaved (A, B, A, B…) so that a noisy, shared machine slows both alike. Results: JSON and a
markdown table in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Every session benchmarked gets the same settings. Intra-op threads must not spin after a run:
# with spinning on, the threads of the session that ran last keep both cores busy while the
# interleaved next session runs, and whichever runs second looks up to 1.8× slower.
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


# -- measuring ---------------------------------------------------------------------------------
def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of every call of each function, after ``warmup`` rounds; calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return times


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin."""
    return {k: statistics.median(v) for k, v in interleaved_times(fns, repeats, warmup).items()}


def write_results(out_dir: str | Path, stem: str, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> Path:
    """``STEM.json`` and ``STEM.md`` in ``out_dir`` (created); prints the markdown; returns ``out_dir/STEM``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(text)
    print(text)
    return out / stem


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``python -m …`` / ``python -c …`` in a fresh process.

    ``cmd`` is ``[python, "-m" | "-c", target, args…]``; it runs under ``_hwm.py``, which reports
    VmHWM (ru_maxrss would include the RSS this big process had when it forked the child).
    """
    wrapped = [cmd[0], str(HERE / "_hwm.py"), *cmd[1:]]
    t = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1:4]} failed: {proc.stderr[-400:]}")
    hwm = [line for line in proc.stderr.splitlines() if line.startswith("HWM ")]
    return elapsed, int(hwm[-1].split()[1]) if hwm else 0


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        gpu = out.stdout.strip() or None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(), "platform": platform.platform(),
    }


# -- models ------------------------------------------------------------------------------------
def export(name: str, workdir: Path) -> tuple[Path, tuple[int, ...]]:
    import torch

    import models
    from onnxviz.converters import convert

    factory, shape = models.MODELS[name]
    path = workdir / f"{name}.onnx"
    if not path.exists():
        convert(factory(), path, example_inputs=torch.randn(*shape))
    return path, shape


def torch_hooks_time(name: str, batch: int, repeats: int) -> float:
    import torch

    import models

    factory, shape = models.MODELS[name]
    net = factory()
    x = torch.randn(batch, *shape[1:])
    store: dict[str, torch.Tensor] = {}
    for mod_name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, o, n=mod_name: store.__setitem__(n, o.detach()))

    def run() -> None:
        with torch.no_grad():
            net(x)
            for v in store.values():
                v.numpy()

    return interleaved({"hooks": run}, repeats)["hooks"]


# -- the benchmark -----------------------------------------------------------------------------
def bench_capture(path: Path, x: np.ndarray, provider: str, repeats: int) -> dict[str, Any]:
    import onnxviz
    from onnxviz.run.session import create_session

    with open(path, "rb") as f:
        plain, used = create_session(f.read(), provider=provider, config=SESSION_CONFIG)
    feed_name = plain.get_inputs()[0].name
    conv = onnxviz.load(path, tap="conv", provider=provider, session_config=SESSION_CONFIG)
    act = onnxviz.load(path, tap="activation", provider=provider, session_config=SESSION_CONFIG)
    runs = {
        "plain": lambda: plain.run(None, {feed_name: x}),
        "capture_conv": lambda: conv.capture(x),
        "capture_activation": lambda: act.capture(x),
    }
    # Where the cost of tapping lies: a tap on a tensor that feeds a residual Add stops
    # onnxruntime fusing that Add (and the ReLU after it) into the conv. Time the taps that keep
    # every fusion on their own.
    residual = _feeds_add(act)
    keep = [tap.name for tap in act.taps if tap.tensor not in residual]
    if residual and keep:
        fused = onnxviz.load(path, tap="activation", layers=[f"re:^{re.escape(n)}$" for n in keep],
                             provider=provider, session_config=SESSION_CONFIG)
        runs["capture_keep_fusion"] = lambda: fused.capture(x)
    for fn in runs.values():
        fn()
    t = interleaved(runs, repeats)
    act_bytes = sum(layer.array.nbytes for layer in act.capture(x).values())
    return {"provider": used, "taps": len(act.taps), "activation_bytes": act_bytes,
            "taps_feeding_add": len(act.taps) - len(keep), **{f"{k}_s": v for k, v in t.items()}}


def _feeds_add(model: Any) -> set[str]:
    """Tapped tensors that an Add or Sum consumes (residual branches)."""
    consumed = {name for node in model.proto.graph.node if node.op_type in ("Add", "Sum") for name in node.input}
    return {tap.tensor for tap in model.taps if tap.tensor in consumed}


def bench_per_layer(path: Path, x: np.ndarray, provider: str, repeats: int) -> dict[str, Any]:
    """The seeds' way: one model (and session) per layer, each run on its own."""
    import onnxviz
    from onnxviz.graph.taps import TapPlan, apply_plan

    model = onnxviz.load(path, tap="conv", provider=provider, session_config=SESSION_CONFIG)
    sessions = []
    t0 = time.perf_counter()
    for tap in model.taps:
        plan = TapPlan(mode="conv", taps=(tap,), skipped=(), model_outputs=())
        one = apply_plan(model.proto, plan)
        del one.graph.output[:-1]  # only this layer's output: onnxruntime runs just its prefix
        sessions.append(model._make_session(one)[0])  # the weightless model + its in-memory weights
    build = time.perf_counter() - t0
    feed = {model.inputs[0].name: x}
    run_all = lambda: [s.run(None, feed) for s in sessions]  # noqa: E731
    t = interleaved({"per_layer": run_all, "capture": lambda: model.capture(x)}, max(3, repeats // 4), warmup=1)
    return {"per_layer_build_s": build, "per_layer_run_s": t["per_layer"], "capture_s": t["capture"]}


def bench_render(path: Path, x: np.ndarray, sample: int, outdir: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import onnxviz

    model = onnxviz.load(path, tap="conv")
    cap = model.capture(x[:1])
    layers = list(cap.values())
    outdir.mkdir(parents=True, exist_ok=True)

    def ours() -> None:
        for k, layer in enumerate(layers):
            onnxviz.render(layer, max_channels=64).save(outdir / f"ov_{k}.png")

    def seeds_way(layer: Any, k: int) -> None:
        maps = layer.array[0, :64]
        fig = plt.figure(figsize=(30, 30))
        for i, fmap in enumerate(maps):
            plt.subplot(8, 8, i + 1)
            plt.imshow(fmap, cmap="gray")
            plt.axis("off")
        fig.savefig(outdir / f"mpl_{k}.png")
        plt.close(fig)

    ours()  # warm-up
    t_ours = statistics.median(_timeit(ours) for _ in range(5))
    picks = np.linspace(0, len(layers) - 1, min(sample, len(layers))).round().astype(int)
    t_mpl = [_timeit(lambda k=k: seeds_way(layers[k], k)) for k in picks]
    per_layer_mpl = statistics.median(t_mpl)
    return {
        "layers": len(layers),
        "onnxviz_all_layers_s": t_ours,
        "onnxviz_per_layer_s": t_ours / len(layers),
        "matplotlib_per_layer_s": per_layer_mpl,
        "matplotlib_layers_sampled": len(picks),
        "matplotlib_all_layers_est_s": per_layer_mpl * len(layers),
    }


def _timeit(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_cold(path: Path, image: Path, provider: str, repeats: int, workdir: Path) -> dict[str, Any]:
    floor_code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CUDAExecutionProvider', 'CPUExecutionProvider'] if sys.argv[3] == 'cuda' else ['CPUExecutionProvider'])\n"
        "i = s.get_inputs()[0]\n"
        "shape = [d if isinstance(d, int) else (1 if k == 0 else 224) for k, d in enumerate(i.shape)]\n"
        "s.run(None, {i.name: np.zeros(shape, np.float32)})\n"
    )
    # Timed as an installed package runs: with its bytecode cached (pip compiles it at install
    # time; a source checkout under PYTHONDONTWRITEBYTECODE=1 would recompile onnxviz on every
    # start). One untimed run writes the cache.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    maps = [sys.executable, "-m", "onnxviz", "maps", str(path), str(image), "--provider", provider, "-o"]
    run_timed([*maps, str(workdir / "cold_warmup")], env=env)
    shutil.rmtree(workdir / "cold_warmup", ignore_errors=True)
    floor, cli, rss_floor, rss_cli = [], [], [], []
    for k in range(repeats):
        out = workdir / f"cold_{k}"
        t, rss = run_timed([sys.executable, "-c", floor_code, str(path), "", provider], env=env)
        floor.append(t)
        rss_floor.append(rss)
        t, rss = run_timed([*maps, str(out)], env=env)
        cli.append(t)
        rss_cli.append(rss)
        shutil.rmtree(out, ignore_errors=True)
    return {
        "cold_floor_s": statistics.median(floor),
        "cli_maps_s": statistics.median(cli),
        "rss_floor_bytes": int(statistics.median(rss_floor)),
        "rss_cli_maps_bytes": int(statistics.median(rss_cli)),
    }


def bench_memory(path: Path, batch: int, shape: tuple[int, ...], provider: str) -> dict[str, Any]:
    """Peak RSS of plain inference vs onnxviz capture, each in a fresh process."""
    common = (
        "import sys, numpy as np\n"
        f"x = np.random.default_rng(0).standard_normal(({batch}, {', '.join(map(str, shape[1:]))})).astype(np.float32)\n"
    )
    plain = common + (
        "import onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "s.run(None, {s.get_inputs()[0].name: x})\n"
    )
    capture = common + (
        "import onnxviz\n"
        f"m = onnxviz.load(sys.argv[1], tap='activation', provider={provider!r})\n"
        "c = m.capture(x)\n"
        "print(sum(l.array.nbytes for l in c.values()))\n"
    )
    import onnxviz

    act = sum(layer.array.nbytes for layer in onnxviz.load(path, tap="activation").capture(
        np.zeros((batch, *shape[1:]), np.float32)).values())
    cap = max(act // 4, 1)
    capped = capture.replace("c = m.capture(x)", f"c = m.capture(x, max_memory={cap})")
    _, rss_plain = run_timed([sys.executable, "-c", plain, str(path)])
    _, rss_capture = run_timed([sys.executable, "-c", capture, str(path)])
    _, rss_capped = run_timed([sys.executable, "-c", capped, str(path)])
    return {
        "batch": batch,
        "rss_plain_bytes": rss_plain,
        "rss_capture_bytes": rss_capture,
        "activation_bytes": act,
        "rss_budget_bytes": int(rss_plain + 1.3 * act),
        "within_budget": rss_capture <= rss_plain + 1.3 * act,
        "max_memory_bytes": cap,
        "rss_capped_bytes": rss_capped,
        "capped_within": rss_capped <= rss_plain + 1.3 * cap,
    }


# -- reporting ---------------------------------------------------------------------------------
def _ms(s: float) -> str:
    return f"{s * 1e3:.1f} ms"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# onnxviz benchmark, {result['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, provider {result['provider']}. Medians of {result['repeats']} interleaved runs.",
        "",
        "| model | batch | plain | capture (conv) | ratio | capture (activation) | ratio | torch hooks | hooks ÷ capture |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["models"].items():
        for b in r["capture"]:
            c = r["capture"][b]
            hooks = r.get("torch_hooks", {}).get(b)
            speedup = f"{hooks / c['capture_activation_s']:.2f}×" if hooks else "–"
            lines.append(
                f"| {name} ({c['taps']} convs) | {b} | {_ms(c['plain_s'])} | {_ms(c['capture_conv_s'])} | "
                f"{c['capture_conv_s'] / c['plain_s']:.3f}× | {_ms(c['capture_activation_s'])} | "
                f"{c['capture_activation_s'] / c['plain_s']:.3f}× | {_ms(hooks) if hooks else '–'} | "
                f"{speedup} |"
            )
    split = [(name, b, r["capture"][b]) for name, r in result["models"].items() for b in r["capture"]
             if "capture_keep_fusion_s" in r["capture"][b]]
    if split:
        lines += ["", "Where tapping costs (activation taps): the taps on tensors that feed a residual Add stop "
                  "onnxruntime's Conv+Add+ReLU fusion; the other taps alone:", "",
                  "| model | batch | taps feeding an Add | all taps ÷ plain | taps keeping every fusion ÷ plain |", "|---|---|---|---|---|"]
        for name, b, c in split:
            lines.append(f"| {name} | {b} | {c['taps_feeding_add']} of {c['taps']} | {c['capture_activation_s'] / c['plain_s']:.3f}× | "
                         f"{c['capture_keep_fusion_s'] / c['plain_s']:.3f}× |")
    lines += ["", "| model | per-layer passes (seeds' way) | capture | per-layer ÷ capture | session builds |", "|---|---|---|---|---|"]
    for name, r in result["models"].items():
        p = r.get("per_layer")
        if p:
            lines.append(f"| {name} | {_ms(p['per_layer_run_s'])} | {_ms(p['capture_s'])} | {p['per_layer_run_s'] / p['capture_s']:.1f}× | {p['per_layer_build_s']:.1f} s |")
    lines += ["", "| model | layers | onnxviz render+PNG, all layers | matplotlib per layer (sampled) | matplotlib ÷ onnxviz (per layer) |", "|---|---|---|---|---|"]
    for name, r in result["models"].items():
        q = r.get("render")
        if q:
            lines.append(
                f"| {name} | {q['layers']} | {_ms(q['onnxviz_all_layers_s'])} | {q['matplotlib_per_layer_s']:.2f} s ({q['matplotlib_layers_sampled']}) | "
                f"{q['matplotlib_per_layer_s'] / q['onnxviz_per_layer_s']:.0f}× |"
            )
    lines += ["", "| model | cold floor | `onnxviz maps` cold | ratio | RSS floor | RSS maps |", "|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        c = r.get("cold")
        if c:
            lines.append(
                f"| {name} | {c['cold_floor_s']:.2f} s | {c['cli_maps_s']:.2f} s | {c['cli_maps_s'] / c['cold_floor_s']:.2f}× | "
                f"{c['rss_floor_bytes'] / 2**20:.0f} MiB | {c['rss_cli_maps_bytes'] / 2**20:.0f} MiB |"
            )
    lines += ["", "| model | batch | RSS plain | RSS capture | activations | budget (plain + 1.3 × activations) | within | --max-memory | RSS capped | within plain + 1.3 × cap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        for mem in r.get("memory", []):
            lines.append(
                f"| {name} | {mem['batch']} | {mem['rss_plain_bytes'] / 2**20:.0f} MiB | {mem['rss_capture_bytes'] / 2**20:.0f} MiB | "
                f"{mem['activation_bytes'] / 2**20:.0f} MiB | {mem['rss_budget_bytes'] / 2**20:.0f} MiB | {'yes' if mem['within_budget'] else 'NO'} | "
                f"{mem['max_memory_bytes'] / 2**20:.0f} MiB | {mem['rss_capped_bytes'] / 2**20:.0f} MiB | {'yes' if mem['capped_within'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,vgg16,mobilenet,lenet5")
    parser.add_argument("--onnx", nargs="*", default=[], help="extra ONNX files (input 1×3×224×224 unless fixed)")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--render-sample", type=int, default=3, help="layers rendered the matplotlib way (slow)")
    parser.add_argument("--skip", default="", help="comma list of: hooks, per_layer, render, cold, memory")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batch.split(",")]
    from onnxviz.demo import demo_image

    result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "provider": args.provider,
                              "repeats": args.repeats, "models": {}}
    targets: list[tuple[str, Path, tuple[int, ...], bool]] = []
    for name in filter(None, args.models.split(",")):
        path, shape = export(name, workdir)
        targets.append((name, path, shape, True))
    for extra in args.onnx:
        import onnxviz

        spec = onnxviz.load(extra).inputs[0]
        shape = tuple(d if isinstance(d, int) else (1 if k == 0 else 224) for k, d in enumerate(spec.shape))
        targets.append((Path(extra).stem, Path(extra), shape, False))
    for name, path, shape, has_torch in targets:
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        r: dict[str, Any] = {"capture": {}}
        for b in batches:
            x = np.random.default_rng(0).standard_normal((b, *shape[1:])).astype(np.float32)
            reps = args.repeats if b == 1 else max(5, args.repeats // 3)
            r["capture"][b] = bench_capture(path, x, args.provider, reps)
            if has_torch and "hooks" not in skip:
                r.setdefault("torch_hooks", {})[b] = torch_hooks_time(name, b, reps)
        x1 = np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)
        if "per_layer" not in skip:
            r["per_layer"] = bench_per_layer(path, x1, args.provider, args.repeats)
        if "render" not in skip and shape[1] in (1, 3):
            with tempfile.TemporaryDirectory() as tmp:
                r["render"] = bench_render(path, x1, args.render_sample, Path(tmp))
        if "cold" not in skip:
            with tempfile.TemporaryDirectory() as tmp:
                r["cold"] = bench_cold(path, demo_image(), args.provider, 5, Path(tmp))
        if "memory" not in skip:
            r["memory"] = [bench_memory(path, b, shape, args.provider) for b in batches]
        result["models"][name] = r
        print(markdown({**result, "models": {name: r}}), file=sys.stderr, flush=True)
    written = write_results(args.out, f"{args.provider}-{result['machine']['cores']}cores-{result['date'][:10]}", result, markdown)
    print(f"[bench] wrote {written}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
