"""Commands that capture a model's layers on images: maps, report, and the demo."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..common import plural
from .options import (
    EXIT_OK, ONE_SHOT, add_capture_command, inputs_manifest, plan_args, render_options, report_verify,
)

__all__ = ["add_maps", "add_report", "add_demo"]


def add_maps(sub: Any) -> None:
    p = add_capture_command(sub, "maps", "render every tapped Conv layer's feature maps to PNG files")
    p.add_argument("--sum", action="store_true", help="also write the sum of each layer's maps at the input's size (NNN_<layer>.sum.png)")
    p.set_defaults(func=_cmd_maps)


def add_report(sub: Any) -> None:
    p = add_capture_command(sub, "report", "a self-contained HTML report: summary, graph, maps, overlays, filters, statistics")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the sum-map overlay (default: 0.5)")
    p.add_argument("--overlay-cmap", default="jet", metavar="NAME", help="colormap of the overlay (default: jet)")
    p.add_argument("--filters-mode", choices=("auto", "rgb", "all", "mean"), default="auto", help="filter layout (default: auto)")
    p.add_argument("--no-graph", action="store_true", help="leave the Graphviz drawing out")
    p.add_argument("--dataset", metavar="DIR", help="add a dataset section from an onnxviz dataset run of this model: "
                   "per layer its channel statistics, dead and saturated channels, top-k images")
    from .explain import add_report_cam_options

    add_report_cam_options(p)
    p.set_defaults(func=_cmd_report)


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run maps on the bundled small CNN and photo")
    p.add_argument("-o", "--output", default="onnxviz-demo", metavar="DIR")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=_cmd_demo)


def _capture(model_path: str, images: Sequence[str], args: argparse.Namespace, out: Path) -> tuple[Any, Any, Any]:
    """Checks that need no model first (output folder, colormaps, labels file), then load and capture.

    Returns the model, the capture and the class names (None without ``--labels-file``)."""
    from ..run.model import load
    from ..report.output import check_output_dir
    from ..report.views import check_labels
    from ..rendering import colormap_palette
    from ..run.labels import read_labels

    plan = plan_args(args)
    check_output_dir(out)  # fail before any work
    for cmap in (args.cmap, getattr(args, "overlay_cmap", None)):
        if cmap:
            colormap_palette(cmap)  # unknown colormap: fail before any work
    class_names = read_labels(args.labels_file) if getattr(args, "labels_file", None) else None
    # One run, then CPU-bound rendering: onnxruntime's worker threads must not spin-wait after it.
    model = load(model_path, provider=args.provider, session_config=ONE_SHOT, optimization=args.optimization, **plan)
    capture = model.capture(
        list(images), size=args.size, scale=args.scale, mean=args.mean, std=args.std, bgr=args.bgr,
        verify=args.verify, tolerance=args.tolerance, max_memory=args.max_memory,
    )
    if args.max_memory is not None:
        print(f"onnxviz: capture: {capture.plan.describe()}")
    check_labels(capture, class_names)
    return model, capture, class_names


def _input_size(model: Any, capture: Any) -> tuple[int, int] | None:
    """(H, W) of the first input as fed, when it is an image."""
    spec = model.inputs[0] if model.inputs else None
    fed = capture.feeds.get(spec.name) if spec is not None else None
    if spec is None or fed is None or spec.layout not in ("NCHW", "NHWC"):
        return None
    return (int(fed.shape[2]), int(fed.shape[3])) if spec.layout == "NCHW" else (int(fed.shape[1]), int(fed.shape[2]))


def _print_predictions(manifest: dict[str, Any], images: Sequence[str]) -> None:
    from ..rendering import safe_text

    for pred in manifest.get("predictions", []):
        where = safe_text(Path(str(images[pred["image"]])).name if pred["image"] < len(images) else pred["image"], 60)
        tops = ", ".join(
            f"{safe_text(t['label'], 40) if t['label'] is not None else t['index']} {t['probability']:.3f}" for t in pred["top"]
        )
        print(f"onnxviz: top-{len(pred['top'])} of {safe_text(pred['output'], 60)} for {where}: {tops}")


def _run_maps(model_path: str, images: Sequence[str], args: argparse.Namespace) -> int:
    from ..report.views import vanished_layers
    from ..report.writers import write_maps

    out = Path(args.output)
    options = render_options(args)
    model, capture, class_names = _capture(model_path, images, args, out)
    manifest = write_maps(
        capture, out, model_name=str(model_path), inputs=inputs_manifest(model, images, args, capture.feeds),
        render_options=options, title=args.title, sums=args.sum, sum_size=_input_size(model, capture), class_names=class_names,
        extra={"tap": model.plan.mode, "optimization": model.optimization, "skipped": [{"node": s.node, "op": s.op, "reason": s.reason} for s in model.plan.skipped],
               "capture": capture.plan.as_dict(), "vanished": vanished_layers(model)},
    )
    n_png = len(manifest["files"])
    print(f"onnxviz: {plural(len(manifest['layers']), 'layer')} × {plural(len(images), 'image')} → {plural(n_png, 'PNG file')} in {out}/ "
          f"(provider: {capture.provider}; manifest: {out / 'manifest.json'})")
    _print_predictions(manifest, images)
    return report_verify(capture.verify) if capture.verify is not None else EXIT_OK


def _cmd_maps(args: argparse.Namespace) -> int:
    return _run_maps(args.model, args.images, args)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..errors import OnnxvizError
    from ..report.html import write_report

    if not 0.0 <= args.alpha <= 1.0:
        raise OnnxvizError(f"--alpha must be within 0..1, got {args.alpha}")
    out = Path(args.output)
    options = render_options(args)
    from .explain import report_cams

    extra = []
    if args.dataset:
        from ..datasets.html import report_section
        from ..datasets.result import DatasetStats

        stats = DatasetStats.load(args.dataset)  # a bad folder fails before any work
    model, capture, class_names = _capture(args.model, args.images, args, out)
    if args.dataset:
        extra.append(lambda folder: report_section(stats, Path(args.dataset), folder, list(capture)))
    cams, cam_errors = report_cams(model, args, class_names)
    manifest = write_report(
        model, capture, out, model_name=str(args.model), images=list(args.images),
        inputs=inputs_manifest(model, args.images, args, capture.feeds), render_options=options,
        title=args.title, class_names=class_names,
        alpha=args.alpha, overlay_cmap=args.overlay_cmap, filters_mode=args.filters_mode, graph=not args.no_graph,
        cams=cams, cam_errors=cam_errors, cam_cmap=args.cam_cmap, extra_sections=extra,
    )
    print(f"onnxviz: report with {plural(len(manifest['layers']), 'layer')} × {plural(len(args.images), 'image')}: {out / 'index.html'} "
          f"(provider: {capture.provider})")
    _print_predictions(manifest, args.images)
    return report_verify(capture.verify) if capture.verify is not None else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import demo_image, demo_model

    ns = argparse.Namespace(
        output=args.output, tap=["activation"], tensor=None, layers=None, size=None, scale=None, mean=None, std=None, bgr=False,
        provider=args.provider, optimization="extended", max_memory=None, max_channels=None, select="first", channels=None, cmap=None, norm="channel",
        percentiles=[1.0, 99.0], ncols=None, padding=1, min_tile=32, labels=False, colorbar=False, verify=True, tolerance=1e-5,
        title=False, sum=False, labels_file=None,
    )
    code = _run_maps(str(demo_model()), [str(demo_image())], ns)
    print(f"onnxviz: demo done: open {Path(args.output).resolve()}/ (one PNG per Conv layer)")
    return code
