"""Gradient benchmark: onnxviz's backward graph in onnxruntime vs one forward pass and vs torch eager.

    python benchmarks/bench_gradients.py                      # ResNet-50, batch 1, CPU
    python benchmarks/bench_gradients.py --models resnet50,lenet5 --batch 1,8 --threads 2

For each model, on the same input, in one process:

- ``forward``: plain onnxruntime inference of the exported model (the same session settings as
  every onnxviz session here);
- ``input_grad``: the gradient of the top logit with respect to the input (saliency, activation
  maximisation): one session run of the forward + backward graph;
- ``layer_grad``: the gradient at the last conv block's output (what Grad-CAM reads), together
  with that block's activations: only the tail after it is differentiated;
- torch eager on the same network, with the same thread count: forward alone, forward +
  backward to the input, and forward + backward to the last block (parameters frozen, so torch
  computes no weight gradients either — its strongest setting); OpenMP threads passive, as
  onnxruntime's do not spin.

onnxruntime runs are interleaved (forward, input_grad, layer_grad, forward, …) and torch runs
likewise, in alternating blocks, so a noisy machine slows all alike; each figure is the median
over all rounds, with the spread (min–max of the per-block medians). Results: JSON and markdown
in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# torch's OpenMP threads must not spin-wait either (onnxruntime's sessions run with intra-op spinning
# off): on a shared machine spinning made torch's ResNet-50 forward 7× slower (2.8 s against 0.39 s
# under the same load). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import SESSION_CONFIG, export, interleaved_times, machine, write_results  # noqa: E402


def last_block(proto: Any) -> str:
    """The tensor the global pooling reads: the last conv block's output (Grad-CAM's layer)."""
    for node in reversed(proto.graph.node):
        if node.op_type in ("GlobalAveragePool", "ReduceMean", "AveragePool", "Flatten"):
            return node.input[0]
    raise SystemExit("no global pooling found: pass a model with a pooled head")


def onnx_runs(path: Path, x: np.ndarray, provider: str, threads: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    import onnxviz
    from onnxviz.run.session import create_session

    plain, used = create_session(path.read_bytes(), provider=provider, config=SESSION_CONFIG, threads=threads)
    feed = {plain.get_inputs()[0].name: x}
    model = onnxviz.load(path, provider=provider, session_config=SESSION_CONFIG)
    layer = last_block(model.proto)
    t0 = time.perf_counter()
    saliency = onnxviz.GradientProgram(model, wrt="input", threads=threads)
    saliency.run(x)
    build_input = time.perf_counter() - t0
    t0 = time.perf_counter()
    gradcam = onnxviz.GradientProgram(model, wrt=layer, outputs=[layer], threads=threads)
    gradcam.run(x)
    build_layer = time.perf_counter() - t0
    info = {
        "provider": used, "layer": layer, "build_input_grad_s": build_input, "build_layer_grad_s": build_layer,
        "backward_nodes_input": next(iter(saliency._compiled.values())).graph.n_backward_nodes,
        "backward_nodes_layer": next(iter(gradcam._compiled.values())).graph.n_backward_nodes,
    }
    runs = {
        "forward": lambda: plain.run(None, feed),
        "input_grad": lambda: saliency.run(x),
        "layer_grad": lambda: gradcam.run(x),
    }
    return runs, info


def torch_runs(name: str, x: np.ndarray, threads: int) -> dict[str, Callable[[], Any]]:
    import torch

    import models

    torch.set_num_threads(threads)
    net = models.MODELS[name][0]().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    xt = torch.from_numpy(x)
    kept: dict[str, Any] = {}

    def keep(_m: Any, _i: Any, output: Any) -> Any:
        if kept.get("on"):
            output = output.detach().requires_grad_(True)  # backward stops here: only the tail runs
            kept["a"] = output
            return output
        return None

    modules = dict(net.named_modules())
    if "layer4" in modules:
        modules["layer4"].register_forward_hook(keep)

    def forward() -> None:
        with torch.no_grad():
            net(xt)

    def input_grad() -> None:
        xi = xt.clone().requires_grad_(True)
        out = net(xi)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
        xi.grad.numpy()

    def layer_grad() -> None:
        kept["on"] = True
        out = net(xt)
        kept["on"] = False
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
        kept["a"].grad.numpy()

    runs = {"forward": forward, "input_grad": input_grad}
    if "layer4" in modules:
        runs["layer_grad"] = layer_grad
    return runs


def summarize(samples: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for key, blocks in samples.items():
        flat = [t for block in blocks for t in block]
        medians = [statistics.median(b) for b in blocks]
        out[key] = {"median_s": statistics.median(flat), "spread_lo_s": min(medians), "spread_hi_s": max(medians), "n": len(flat)}
    return out


def bench(name: str, path: Path, shape: tuple[int, ...], batch: int, provider: str, threads: int, rounds: int, repeats: int) -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    ort_fns, info = onnx_runs(path, x, provider, threads)
    torch_fns = torch_runs(name, x, threads)
    for fn in list(ort_fns.values()) + list(torch_fns.values()):  # warm-up
        fn()
        fn()
    ort_samples: dict[str, list[list[float]]] = {k: [] for k in ort_fns}
    torch_samples: dict[str, list[list[float]]] = {k: [] for k in torch_fns}
    for _ in range(rounds):  # alternating blocks: onnxruntime's and torch's thread pools never share the cores
        for k, v in interleaved_times(ort_fns, repeats, warmup=0).items():
            ort_samples[k].append(v)
        for k, v in interleaved_times(torch_fns, repeats, warmup=0).items():
            torch_samples[k].append(v)
    ort, tch = summarize(ort_samples), summarize(torch_samples)
    fwd = ort["forward"]["median_s"]
    ratios = {
        "input_grad_over_forward": ort["input_grad"]["median_s"] / fwd,
        "layer_grad_over_forward": ort["layer_grad"]["median_s"] / fwd,
        "torch_input_grad_over_onnxviz": tch["input_grad"]["median_s"] / ort["input_grad"]["median_s"],
        "torch_forward_over_onnx_forward": tch["forward"]["median_s"] / fwd,
    }
    if "layer_grad" in tch:
        ratios["torch_layer_grad_over_onnxviz"] = tch["layer_grad"]["median_s"] / ort["layer_grad"]["median_s"]
    return {"batch": batch, "threads": threads, **info, "onnxruntime": ort, "torch": tch, "ratios": ratios}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# onnxviz gradients — {result['date']}",
        "",
        f"{m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, torch {result.get('torch_version')}, "
        f"{result['rounds']} rounds × {result['repeats']} interleaved repeats; median (spread of per-round medians). "
        f"Load average {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after (a shared machine).",
        "",
        "| model | batch | threads | forward | input grad | ÷ forward | Grad-CAM layer grad | ÷ forward | torch fwd | torch fwd+bwd (input) | torch ÷ onnxviz | torch fwd+bwd (layer) | torch ÷ onnxviz |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(d: dict[str, float]) -> str:
        return f"{d['median_s'] * 1e3:.1f} ms ({d['spread_lo_s'] * 1e3:.1f}–{d['spread_hi_s'] * 1e3:.1f})"

    for name, runs in result["models"].items():
        for r in runs:
            o, t, q = r["onnxruntime"], r["torch"], r["ratios"]
            layer_t = ms(t["layer_grad"]) if "layer_grad" in t else "–"
            layer_q = f"{q['torch_layer_grad_over_onnxviz']:.2f}×" if "torch_layer_grad_over_onnxviz" in q else "–"
            lines.append(
                f"| {name} | {r['batch']} | {r['threads']} | {ms(o['forward'])} | {ms(o['input_grad'])} | {q['input_grad_over_forward']:.2f}× | "
                f"{ms(o['layer_grad'])} | {q['layer_grad_over_forward']:.3f}× | {ms(t['forward'])} | {ms(t['input_grad'])} | "
                f"{q['torch_input_grad_over_onnxviz']:.2f}× | {layer_t} | {layer_q} |"
            )
    lines += ["", "Grad-CAM layer: the tensor the global pooling reads (the last block's output). One-off build times "
              "(probe run, backward graph, session): " + ", ".join(
                  f"{name} b{r['batch']}: input {r['build_input_grad_s']:.2f} s, layer {r['build_layer_grad_s']:.2f} s"
                  for name, runs in result["models"].items() for r in runs), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--batch", default="1")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    import torch

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                              "torch_version": torch.__version__, "provider": args.provider, "rounds": args.rounds,
                              "repeats": args.repeats, "load_before": os.getloadavg(), "models": {}}  # fmt: skip
    for name in filter(None, args.models.split(",")):
        path, shape = export(name, workdir)
        runs = []
        for b in (int(v) for v in args.batch.split(",")):
            print(f"[bench_gradients] {name} batch {b}", file=sys.stderr, flush=True)
            runs.append(bench(name, path, shape, b, args.provider, args.threads, args.rounds, args.repeats))
        result["models"][name] = runs
    result["load_after"] = os.getloadavg()
    stem = f"gradients-{args.provider}-{result['machine']['cores']}cores-{result['date'][:10]}"
    written = write_results(args.out, stem, result, markdown)
    print(f"[bench_gradients] wrote {written}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
