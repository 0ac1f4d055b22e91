"""Explanation benchmarks: onnxviz (onnxruntime) side by side with torch eager (+ autograd) on the
same ResNet-50 (benchmarks/models.py, random weights, 1×3×224×224), same number of threads.

    python benchmarks/bench_explain.py                 # everything, ResNet-50
    python benchmarks/bench_explain.py --model lenet5 --repeats 3 --skip scorecam

What runs (each pair interleaved in rounds, A B A B …, so a noisy shared machine slows both alike;
medians with the min–max spread over the rounds):

- ``forward``: one plain onnxruntime inference (the unit the targets are stated in);
- ``gradcam``: ``onnxviz.cam(method="gradcam")`` (one run of the gradient model: forward, top class,
  backward through the tail after ``layer4[-1]`` only) vs one forward pass, and vs torch eager forward
  + autograd backward to ``layer4[-1]`` (a hook with ``retain_grad``) and the same CAM arithmetic;
- ``saliency``: ``onnxviz.cam(method="saliency")`` (gradient at the input) vs one forward, and vs torch
  eager forward + backward to the input;
- ``eigencam``: ``onnxviz.cam(method="eigencam")`` (one forward with the layer exposed, one SVD);
- ``scorecam``: Score-CAM on the top-64 channels, 16 masked inputs per run, vs the same algorithm in
  torch eager (``torch.no_grad``, same batches);
- ``dream``: activation maximisation of 4 classes together, 10 steps of the Lucid way (Fourier
  image, decorrelated colour, jitter/scale/rotation, Adam) vs the same loop in torch eager (torch.fft,
  ``affine_grid``/``grid_sample``, ``torch.optim.Adam``), per step;
- ``ablationcam``: Ablation-CAM on all channels of ``layer4[-1]`` (2048 on ResNet-50): onnxviz runs
  the graph tail (average pool + classifier) on batches of ablated copies; torch eager does the same
  tail; pytorch-grad-cam's way (a full forward per ablated copy) is timed on 32 copies and scaled.

onnxruntime sessions: graph optimization ``all``, intra-op spinning off (see bench.py). torch:
``torch.set_num_threads`` = onnxruntime's thread count (the machine's cores), and its OpenMP
threads do not spin-wait either (``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it): on
this shared 2-core machine under load, spinning OpenMP threads made torch's ResNet-50 forward 6×
slower (2.2 s against 0.35 s), which would flatter onnxviz. Results go to
``benchmarks/results/explain-<cores>cores-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see the module doc)
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import SESSION_CONFIG, interleaved_times, machine, write_results  # noqa: E402  (bench sets up sys.path for models)

TOP_K, SCORE_BATCH = 64, 16


def rounds(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Per function: median, min and max seconds per call over ``repeats`` interleaved rounds."""
    times = interleaved_times(fns, repeats, warmup)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} for k, v in times.items()}


def _model(width: int, size: int, workdir: Path) -> tuple[Any, Any, Path, tuple[int, ...], float]:
    """torch, the torch ResNet-50 (``width`` 64 is torchvision's), its ONNX export at ``size`` —
    the same weights (seeded construction; the export is redone when its logits differ) — and
    the largest relative difference of their logits."""
    import torch

    import models
    from onnxviz.converters import convert
    from onnxviz.run.session import create_session

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    net, shape = models.resnet50(width=width), (1, 3, size, size)
    path = workdir / f"resnet50_w{width}_{size}_seed0.onnx"
    x = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))
    with torch.no_grad():
        want = net(x).numpy()
    for attempt in range(2):
        if attempt or not path.exists():
            convert(net, path, example_inputs=torch.randn(*shape))
        session, _ = create_session(path.read_bytes(), provider="cpu", external_dir=path.parent)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        diff = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
        if diff < 1e-3:
            break
    return torch, net, path, shape, diff


def _last_block(net: Any) -> Any:
    """The module whose output onnxviz's default CAM layer is: layer4[-1] on ResNet-50."""
    if not hasattr(net, "layer4"):
        raise SystemExit("bench_explain compares with torch on ResNet-50 (--model resnet50)")
    return net.layer4[-1]


def bench(name: str, repeats: int, skip: set[str], workdir: Path, width: int = 64, size: int = 224) -> dict[str, Any]:
    import onnxviz
    from onnxviz.explain.cam import cam

    torch, net, path, shape, same = _model(width, size, workdir)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    model = onnxviz.load(path, session_config=SESSION_CONFIG, optimization="all")
    plain = model._make_session(model.loaded.proto)[0]
    in_name = model.inputs[0].name
    out: dict[str, Any] = {"model": name if width == 64 else f"{name} (width {width})", "input": list(shape), "threads": os.cpu_count(),
                           "logits_max_rel_diff_onnx_vs_torch": same}
    tx = torch.from_numpy(x)

    def forward() -> None:
        plain.run(None, {in_name: x})

    def torch_forward() -> None:
        with torch.no_grad():
            net(tx)

    out["forward"] = rounds({"onnxruntime": forward, "torch": torch_forward}, repeats * 2)
    first = cam(model, x, method="eigencam")
    layer = first.layer
    out["layer"] = layer.as_dict()
    block = _last_block(net)
    if "gradcam" not in skip:
        store: dict[str, Any] = {}

        def keep(_m, _i, o):
            o.retain_grad()
            store["a"] = o

        handle = block.register_forward_hook(keep)

        def torch_gradcam() -> None:
            net.zero_grad(set_to_none=True)
            logits = net(tx)
            logits[0, int(logits.argmax())].backward()
            a, g = store["a"].detach(), store["a"].grad
            torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).numpy()

        cam(model, x, method="gradcam")  # builds the backward graph (timed apart below)
        out["gradcam"] = rounds({"onnxviz": lambda: cam(model, x, method="gradcam"), "forward": forward, "torch": torch_gradcam}, repeats)
        handle.remove()
    if "saliency" not in skip:
        def torch_saliency() -> None:
            xt = tx.clone().requires_grad_(True)
            logits = net(xt)
            logits[0, int(logits.argmax())].backward()
            xt.grad.abs().amax(1).numpy()

        cam(model, x, method="saliency")
        out["saliency"] = rounds({"onnxviz": lambda: cam(model, x, method="saliency"), "forward": forward, "torch": torch_saliency}, repeats)
    if "dream" not in skip:
        out["dream"] = bench_dream(model, net, torch, max(2, repeats // 3), size)
    if "eigencam" not in skip:
        out["eigencam"] = rounds({"onnxviz": lambda: cam(model, x, method="eigencam"), "forward": forward}, repeats)
    grabbed: dict[str, Any] = {}
    block.register_forward_hook(lambda _m, _i, o: grabbed.__setitem__("a", o))
    if "scorecam" not in skip:
        def torch_scorecam() -> None:
            with torch.no_grad():
                logits = net(tx)
                c = int(logits.argmax())
                acts = grabbed["a"][0]
                top = torch.argsort(acts.mean((1, 2)), descending=True)[:TOP_K].sort().values
                up = torch.nn.functional.interpolate(acts[top][None], size=tx.shape[-2:], mode="bilinear", align_corners=True)[0]
                flat = up.reshape(len(top), -1)
                lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
                masks = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(up))
                scores = torch.cat([net(tx * masks[i : i + SCORE_BATCH, None])[:, c] for i in range(0, len(top), SCORE_BATCH)])
                w = torch.softmax(scores, 0)
                torch.relu((w[:, None, None] * acts[top]).sum(0)).numpy()

        out["scorecam"] = rounds({"onnxviz": lambda: cam(model, x, method="scorecam", top_k=TOP_K, batch_size=SCORE_BATCH),
                                  "torch": torch_scorecam}, max(3, repeats // 3))
    if "ablationcam" not in skip:
        with torch.no_grad():
            logits = net(tx)
        acts = grabbed["a"].detach()
        c = int(logits.argmax())
        channels = acts.shape[1]
        tail = [m for n, m in net.named_children() if n in ("avgpool", "fc")]

        def torch_tail(batch: int = 256) -> None:
            with torch.no_grad():
                base = logits[0, c]
                weights = []
                for start in range(0, channels, batch):
                    k = min(batch, channels - start)
                    copies = acts.repeat(k, 1, 1, 1)
                    copies[torch.arange(k), start + torch.arange(k)] = 0
                    y = copies
                    for m in tail:
                        y = m(y)
                        if isinstance(m, torch.nn.AdaptiveAvgPool2d):
                            y = torch.flatten(y, 1)
                    weights.append((base - y[:, c]) / base)
                w = torch.cat(weights)
                torch.relu((w[:, None, None] * acts[0]).sum(0)).numpy()

        entry = rounds({"onnxviz": lambda: cam(model, x, method="ablationcam"), "forward": forward}, repeats)
        if tail:
            entry.update(rounds({"torch_tail": torch_tail}, repeats))
        # pytorch-grad-cam's AblationCAM: the whole model on every ablated copy (here 32, scaled)
        sample = 32
        ablate = {"k": 0}

        def ablation_hook(_m, _i, o):
            o = o.clone()
            o[torch.arange(o.shape[0]), ablate["k"] + torch.arange(o.shape[0])] = 0
            return o

        handle = block.register_forward_hook(ablation_hook)

        def full_forward_copies() -> None:
            with torch.no_grad():
                net(tx.repeat(sample, 1, 1, 1))[:, c].numpy()

        per_batch = rounds({"torch_full_forward_32": full_forward_copies}, max(2, repeats // 4), warmup=1)["torch_full_forward_32"]
        handle.remove()
        entry["torch_full_forward_per_channel_extrapolated"] = {k: v * channels / sample for k, v in per_batch.items() if k != "n"}
        entry["channels"] = int(channels)
        out["ablationcam"] = entry
    return out


DREAM_TARGETS, DREAM_STEPS = [1, 2, 3, 4], 10


def bench_dream(model: Any, net: Any, torch: Any, repeats: int, size: int = 224) -> dict[str, Any]:
    """Seconds per step of 4-class Lucid-style maximisation: onnxviz vs the same loop in torch eager."""
    import math

    from onnxviz.explain.imaging import _COLOR, LucidImage
    from onnxviz.explain.maximize import maximize

    h, w = size, size
    n = len(DREAM_TARGETS)
    maximize(model, DREAM_TARGETS, steps=1, scale="imagenet")  # builds the backward graph

    def onnxviz_run() -> None:
        maximize(model, DREAM_TARGETS, steps=DREAM_STEPS, scale="imagenet")

    probe = LucidImage((n, 3, h, w), __import__("numpy").random.default_rng(0))
    scale = torch.from_numpy(probe.fourier.scale)
    color = torch.from_numpy(_COLOR)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    targets = torch.tensor(DREAM_TARGETS)

    def torch_run() -> None:
        gen = torch.Generator().manual_seed(0)
        params = (torch.randn((2, n, 3, h, w // 2 + 1), generator=gen) * 0.01).requires_grad_(True)
        opt = torch.optim.Adam([params], lr=0.05)
        for _ in range(DREAM_STEPS):
            opt.zero_grad(set_to_none=True)
            t = torch.fft.irfft2(torch.complex(params[0], params[1]) * scale, s=(h, w)) / 4.0
            img = torch.sigmoid(torch.einsum("ij,njhw->nihw", color, t))
            s = torch.tensor([1.0, 0.975, 1.025, 0.95, 1.05])[torch.randint(0, 5, (n,), generator=gen)]
            a = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(5)
            shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 8 * 2 / h
            theta = torch.stack([torch.stack([a.cos() / s, -a.sin() / s, shift[:, 0]], 1),
                                 torch.stack([a.sin() / s, a.cos() / s, shift[:, 1]], 1)], 1)
            grid = torch.nn.functional.affine_grid(theta, (n, 3, h, w), align_corners=False)
            warped = torch.nn.functional.grid_sample(img - 0.5, grid, align_corners=False) + 0.5
            logits = net((warped - mean) / std)
            (-logits[torch.arange(n), targets].sum()).backward()
            opt.step()

    times = rounds({"onnxviz": onnxviz_run, "torch": torch_run}, repeats)
    return {k: {q: v / DREAM_STEPS for q, v in e.items() if q != "n"} | {"n": e["n"]} for k, e in times.items()} | {
        "targets": n, "steps": DREAM_STEPS}


def _fmt(entry: dict[str, float]) -> str:
    return f"{entry['median'] * 1e3:.1f} ms ({entry['min'] * 1e3:.1f}–{entry['max'] * 1e3:.1f})"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# onnxviz explanation benchmarks, {result['date']}", "",
             f"{m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, torch {result.get('torch')} "
             f"(OMP_WAIT_POLICY={result.get('omp_wait_policy')}); load average {result['load_before'][0]:.1f} before, "
             f"{result['load_after'][0]:.1f} after; {result['note']}. torch and onnxruntime run the same weights "
             f"(logits differ by ≤ {max(r['logits_max_rel_diff_onnx_vs_torch'] for r in result['runs']):.1e} relative).", "",
             "| model | what | onnxviz | reference | ratio |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        name = r["model"]
        f = r["forward"]
        lines.append(f"| {name} | one forward pass | {_fmt(f['onnxruntime'])} | torch eager {_fmt(f['torch'])} | "
                     f"{f['torch']['median'] / f['onnxruntime']['median']:.2f}× torch/ort |")
        if "gradcam" in r:
            g = r["gradcam"]
            lines.append(f"| {name} | Grad-CAM (layer4[-1], top class) | {_fmt(g['onnxviz'])} | forward {_fmt(g['forward'])} | "
                         f"{g['onnxviz']['median'] / g['forward']['median']:.3f}× a forward |")
            lines.append(f"| {name} | … torch eager forward + autograd | | {_fmt(g['torch'])} | "
                         f"{g['torch']['median'] / g['onnxviz']['median']:.2f}× onnxviz |")
        if "saliency" in r:
            g = r["saliency"]
            lines.append(f"| {name} | saliency (input gradient) | {_fmt(g['onnxviz'])} | forward {_fmt(g['forward'])} | "
                         f"{g['onnxviz']['median'] / g['forward']['median']:.2f}× a forward |")
            lines.append(f"| {name} | … torch eager forward + backward to the input | | {_fmt(g['torch'])} | "
                         f"{g['torch']['median'] / g['onnxviz']['median']:.2f}× onnxviz |")
        if "dream" in r:
            d = r["dream"]
            lines.append(f"| {name} | activation maximisation, {d['targets']} classes, per step (Lucid way) | {_fmt(d['onnxviz'])} | "
                         f"torch eager {_fmt(d['torch'])} | {d['torch']['median'] / d['onnxviz']['median']:.2f}× onnxviz |")
        if "eigencam" in r:
            e = r["eigencam"]
            lines.append(f"| {name} | Eigen-CAM | {_fmt(e['onnxviz'])} | forward {_fmt(e['forward'])} | "
                         f"{e['onnxviz']['median'] / e['forward']['median']:.2f}× a forward |")
        if "scorecam" in r:
            s = r["scorecam"]
            lines.append(f"| {name} | Score-CAM, top {TOP_K} channels, batches of {SCORE_BATCH} | {_fmt(s['onnxviz'])} | torch eager "
                         f"{_fmt(s['torch'])} | {s['torch']['median'] / s['onnxviz']['median']:.2f}× faster |")
        if "ablationcam" in r:
            a = r["ablationcam"]
            extra = f"{a['onnxviz']['median'] / a['forward']['median']:.2f}× a forward"
            lines.append(f"| {name} | Ablation-CAM, all {a['channels']} channels (tail only) | {_fmt(a['onnxviz'])} | forward "
                         f"{_fmt(a['forward'])} | {extra} |")
            if "torch_tail" in a:
                lines.append(f"| {name} | … torch eager, same tail | | {_fmt(a['torch_tail'])} | "
                             f"{a['torch_tail']['median'] / a['onnxviz']['median']:.2f}× onnxviz |")
            t = a["torch_full_forward_per_channel_extrapolated"]
            lines.append(f"| {name} | … pytorch-grad-cam's way (full forward per copy, from 32) | | "
                         f"{t['median']:.1f} s | {t['median'] / a['onnxviz']['median']:.0f}× onnxviz |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=("resnet50",))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--width", type=int, default=64, help="ResNet-50 channel width (64 = torchvision's; smaller for a quick run)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--skip", default="", help="comma list of: gradcam, saliency, dream, eigencam, scorecam, ablationcam")
    parser.add_argument("--note", default="the machine is shared with other jobs: spreads are min–max over interleaved rounds")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--workdir", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "torch": torch.__version__,
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_before": os.getloadavg(),
                              "note": args.note, "runs": []}
    for name in args.model.split(","):
        print(f"[bench_explain] {name}", file=sys.stderr, flush=True)
        result["runs"].append(bench(name, args.repeats, set(filter(None, args.skip.split(","))), workdir, args.width, args.size))
    result["load_after"] = os.getloadavg()
    write_results(args.out, f"explain-{result['machine']['cores']}cores-{result['date'][:10]}", result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
