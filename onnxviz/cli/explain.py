"""Commands that explain a model: ``cam`` (class activation maps, saliency) and ``dream``
(activation maximisation)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import EXIT_OK, ONE_SHOT, add_input_options, floats_arg, inputs_manifest, positive_arg

__all__ = ["add_cam", "add_dream", "add_report_cam_options", "report_cams", "CAM_METHODS"]

CAM_METHODS = ("gradcam", "gradcam++", "layercam", "xgradcam", "eigencam", "scorecam", "ablationcam", "saliency", "smoothgrad")


def _class_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index (an integer), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"class index must be >= 0, got {text!r}")
    return value


def add_cam(sub: Any) -> None:
    p = sub.add_parser("cam", help="class activation maps (Grad-CAM, Score-CAM, Eigen-CAM, ...) and saliency over the input images")
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--method", choices=CAM_METHODS, default="gradcam", help="CAM method (default: gradcam)")
    p.add_argument("--layer", metavar="NAME",
                   help="Conv layer name (as 'maps --tap activation' names it) or tensor name; default: the last Conv "
                        "layer with a spatial output, through a residual Add/activation to the tensor before pooling")
    p.add_argument("--target", type=_class_arg, metavar="CLASS", help="class to explain (default: each image's top prediction)")
    p.add_argument("--model-output", metavar="NAME", help="model output to score (default: the first; logits before a final softmax)")
    p.add_argument("--labels-file", metavar="FILE", help="class names, one per line, for the predictions and the manifest")
    add_input_options(p, max_memory=False)
    p.add_argument("--cmap", default=None, metavar="NAME", help="colormap of the heat map (default: inferno, perceptual; e.g. jet)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map over the image (default: 0.5)")
    p.add_argument("--top-k", type=positive_arg, default=None, metavar="K",
                   help="scorecam: score the K channels with the highest mean activation (default: 64)")
    p.add_argument("--all-channels", action="store_true", help="scorecam: score every channel (slow; progress bar)")
    p.add_argument("--batch-size", type=positive_arg, metavar="N", help="scorecam/ablationcam/smoothgrad: inputs per run")
    p.add_argument("--samples", type=positive_arg, default=25, metavar="N", help="smoothgrad: noisy copies (default: 25)")
    p.add_argument("--noise", type=float, default=0.15, help="smoothgrad: noise std as a fraction of the input's range (default: 0.15)")
    p.add_argument("--seed", type=int, default=0, help="smoothgrad: random seed (default: 0)")
    p.set_defaults(func=_cmd_cam)


def _cmd_cam(args: argparse.Namespace) -> int:
    from ..errors import OnnxvizError
    from ..explain.cam import DEFAULT_CMAP, cam
    from ..explain.cams import METHODS
    from ..explain.cams.scorecam import DEFAULT_TOP_K
    from ..rendering import colormap_palette
    from ..report.cams import write_cam
    from ..report.output import check_output_dir
    from ..run.model import load

    out = Path(args.output)
    if not 0.0 <= args.alpha <= 1.0:
        raise OnnxvizError(f"--alpha must be within 0..1, got {args.alpha}")
    if not 0.0 <= args.noise:
        raise OnnxvizError(f"--noise must be >= 0, got {args.noise}")
    if args.all_channels and args.top_k:
        raise OnnxvizError("--top-k and --all-channels exclude each other")
    cmap = args.cmap or DEFAULT_CMAP
    colormap_palette(cmap)  # unknown colormap: fail before any work
    check_output_dir(out)
    from ..run.labels import read_labels

    class_names = read_labels(args.labels_file) if args.labels_file else None
    model = load(args.model, provider=args.provider, session_config=ONE_SHOT, optimization=args.optimization)
    result = cam(
        model, list(args.images), method=args.method, layer=args.layer, target=args.target, output=args.model_output,
        size=args.size, scale=args.scale, mean=args.mean, std=args.std, bgr=args.bgr,
        top_k=None if args.all_channels else (args.top_k or DEFAULT_TOP_K), batch_size=args.batch_size,
        samples=args.samples, noise=args.noise, seed=args.seed, progress=None, class_names=class_names,
    )
    manifest = write_cam(result, out, model_name=str(args.model), inputs=inputs_manifest(model, args.images, args, result.feeds),
                         alpha=args.alpha, cmap=cmap)
    for entry in manifest["images"]:
        pred = entry["prediction"]
        prob = "" if pred["probability"] is None else f", probability {pred['probability']:.3g}"
        named = f" ({pred['name']})" if pred.get("name") else ""
        target = f" ({entry['class_name']})" if entry.get("class_name") else ""
        score = "nan" if pred["score"] is None else f"{pred['score']:.4g}"
        what = f"of class {entry['class']}{target}" if METHODS[result.method].class_specific else "(the same for every class)"
        print(f"onnxviz: image {entry['index']}: predicted class {pred['class']}{named} (score {score}{prob}); "
              f"{result.method} {what} at {result.layer.name} → {out / entry['overlay']}")
    print(f"onnxviz: {result.method} on {len(result)} image(s) in {out}/ (provider: {result.provider}; manifest: {out / 'manifest.json'})")
    return EXIT_OK


def _methods_arg(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if names == ["none"]:
        return []
    unknown = [m for m in names if m not in CAM_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown CAM method(s) {', '.join(unknown) or text!r}: use {', '.join(CAM_METHODS)} or none")
    return list(dict.fromkeys(names))


def add_report_cam_options(p: argparse.ArgumentParser) -> None:
    """``report``'s CAM section: one Eigen-CAM by default (no gradients, no extra run over the
    layer), the methods named by ``--cam``, or none."""
    p.add_argument("--cam", type=_methods_arg, default=None, metavar="METHOD[,METHOD]",
                   help="CAM section: these methods (default: eigencam; 'none' leaves the section out)")
    p.add_argument("--cam-layer", metavar="NAME", help="layer of the CAM section (default: as for 'cam')")
    p.add_argument("--cam-target", type=_class_arg, metavar="CLASS", help="class of the CAM section (default: the top prediction)")
    p.add_argument("--cam-cmap", default="inferno", metavar="NAME", help="colormap of the CAM heat maps (default: inferno)")


def report_cams(model: Any, args: argparse.Namespace, class_names: list[str] | None = None) -> tuple[list[Any], list[tuple[str, str]]]:
    """The CAM results for ``report``. With the default Eigen-CAM, a model it does not apply to
    (no spatial Conv layer, say) gets a note in the section instead; methods asked for with
    ``--cam`` fail the command as ``cam`` would."""
    from ..errors import OnnxvizError
    from ..explain.cam import cam
    from ..rendering import colormap_palette

    explicit = args.cam is not None
    methods = args.cam if explicit else ["eigencam"]
    if not methods:
        return [], []
    colormap_palette(args.cam_cmap)
    results, errors = [], []
    for name in methods:
        try:
            results.append(cam(model, list(args.images), method=name, layer=args.cam_layer, target=args.cam_target,
                               size=args.size, scale=args.scale, mean=args.mean, std=args.std, bgr=args.bgr, class_names=class_names))
        except OnnxvizError as exc:
            if explicit or args.cam_layer or args.cam_target is not None:
                raise
            errors.append((name, str(exc)))
    return results, errors


def add_dream(sub: Any) -> None:
    p = sub.add_parser("dream", help="activation maximisation: the input a class or channel responds to most (gradient ascent from noise)")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--target", required=True, metavar="CLASS|LAYER:CHANNEL",
                   help="classes (281, 1,5,9 or 0-9) or channels of one layer (layer4.2.conv3:0-15)")
    p.add_argument("--method", choices=("lucid", "seed"), default="lucid",
                   help="lucid: Fourier/decorrelated image, jitter/scale/rotate, Adam (default); seed: seed 002's normalised steps")
    p.add_argument("--steps", type=positive_arg, metavar="N", help="gradient steps (default: 256 lucid, 200 seed)")
    p.add_argument("--lr", type=float, metavar="F", help="Adam learning rate (lucid, default 0.05) or step size (seed, default 1.0)")
    p.add_argument("--param", choices=("fourier", "pixel"), default="fourier", help="lucid: image parameterisation (default: fourier)")
    p.add_argument("--no-decorrelate", action="store_true", help="lucid: optimise RGB directly, not decorrelated colour")
    p.add_argument("--jitter", type=float, default=8.0, metavar="PX", help="lucid: random shift per step (default: 8)")
    p.add_argument("--scales", type=floats_arg, default=[1.0, 0.975, 1.025, 0.95, 1.05], metavar="S,S,...",
                   help="lucid: random scale per step, one of these (default: 1,0.975,1.025,0.95,1.05)")
    p.add_argument("--rotate", type=float, default=5.0, metavar="DEG", help="lucid: random rotation within ±DEG (default: 5)")
    p.add_argument("--tv", type=float, default=0.0, help="lucid: total-variation penalty weight (default: 0)")
    p.add_argument("--l2", type=float, default=0.0, help="lucid: L2 penalty weight (distance from grey; default: 0)")
    p.add_argument("--batch-size", type=positive_arg, default=16, metavar="N", help="targets per session run (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--ncols", type=positive_arg, metavar="N", help="tiles per row of grid.png")
    add_input_options(p, max_memory=False)
    p.set_defaults(func=_cmd_dream)


def _cmd_dream(args: argparse.Namespace) -> int:
    from ..errors import OnnxvizError
    from ..explain.maximize import maximize, parse_targets
    from ..report.dream import write_dream
    from ..report.output import check_output_dir
    from ..run.model import load

    out = Path(args.output)
    for name, value in (("--tv", args.tv), ("--l2", args.l2), ("--jitter", args.jitter), ("--rotate", args.rotate)):
        if value < 0:
            raise OnnxvizError(f"{name} must be >= 0, got {value}")
    if not args.scales or min(args.scales) <= 0:
        raise OnnxvizError("--scales must be positive numbers")
    parse_targets(args.target)  # a bad target: fail before loading anything
    check_output_dir(out)
    model = load(args.model, provider=args.provider, session_config=ONE_SHOT, optimization=args.optimization)
    result = maximize(
        model, args.target, method=args.method, steps=args.steps, size=args.size, scale=args.scale, mean=args.mean, std=args.std,
        bgr=args.bgr, lr=args.lr, param=args.param, decorrelated=not args.no_decorrelate, jitter=args.jitter, scales=args.scales,
        degrees=args.rotate, tv=args.tv, l2=args.l2, batch_size=args.batch_size, seed=args.seed, progress=None,
    )
    manifest = write_dream(result, out, model_name=str(args.model), ncols=args.ncols)
    for entry in manifest["targets"]:
        start, end = (("nan" if v is None else f"{v:.4g}") for v in (entry["objective_start"], entry["objective"]))
        print(f"onnxviz: {entry['target']}: objective {start} → {end}")
    print(f"onnxviz: {result.method} maximisation of {len(result)} target(s) in {out}/ (grid: {out / 'grid.png'}; provider: {result.provider})")
    return EXIT_OK
