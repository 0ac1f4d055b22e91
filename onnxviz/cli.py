"""The ``onnxviz`` command line.

Exit codes: 0 success; 1 ``--verify`` found the tapped model's outputs differ beyond tolerance,
or an internal error; 2 bad input (one line ``onnxviz: error: ...`` on stderr, no traceback, no
half-written output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_VERIFY, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise _UsageError(message)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 224x224), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> list[int]:
    try:
        dims = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated integers (e.g. 1,3,224,224), got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"shape must be positive integers, got {text!r}")
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", choices=("conv", "activation"), default="conv",
                   help="tap raw Conv outputs, or the end of each Conv's BN/activation chain (default: conv)")
    p.add_argument("--layers", action="append", metavar="PATTERN",
                   help="select layers by glob, or regex with a 're:' prefix; repeatable")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_size, metavar="HxW", help="input size for models with dynamic height/width")
    p.add_argument("--scale", choices=("unit", "raw", "imagenet"), default="unit",
                   help="pixel scaling: unit 0-1 (default), raw 0-255, imagenet mean/std")
    p.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="subtract per-channel mean after --scale")
    p.add_argument("--std", type=_floats, metavar="S[,S,S]", help="divide by per-channel std after --scale")
    p.add_argument("--bgr", action="store_true", help="feed channels in BGR order (OpenCV/Caffe-trained models)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                   help="execution provider (default: auto = CUDA when really active, else CPU)")
    p.add_argument("--optimization", choices=("basic", "extended", "all"), default="extended",
                   help="onnxruntime graph optimization (default: extended; 'all' adds layout rewrites that "
                        "take longer to build than one run gains)")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="cap the activations held at once (e.g. 500M, 2G): capture in passes over layer groups, streamed to disk")


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-channels", type=_positive, metavar="N", help="render only N channels of a layer (see --select)")
    p.add_argument("--select", choices=("first", "mean", "max", "absmean"), default="first",
                   help="which channels --max-channels keeps: the first N, or the top N by mean / max / mean |a|")
    p.add_argument("--channels", type=_indices, metavar="I,J,...", help="render exactly these channel indices")
    p.add_argument("--cmap", metavar="NAME", help="matplotlib colormap (default: viridis; RdBu_r for --norm signed)")
    p.add_argument("--norm", choices=("channel", "layer", "zscore", "percentile", "signed"), default="channel",
                   help="per-channel min-max (default), one range per layer, (x-mean)/std*64+128, percentile clip, or signed around 0")
    p.add_argument("--percentiles", type=_floats, metavar="LO,HI", default=[1.0, 99.0], help="for --norm percentile (default: 1,99)")
    p.add_argument("--ncols", type=_positive, metavar="N", help="tiles per row (default: near-square grid)")
    p.add_argument("--padding", type=int, default=1, metavar="PX", help="pixels between tiles (default: 1)")
    p.add_argument("--min-tile", type=_positive, default=32, metavar="PX", help="upscale smaller maps to at least PX pixels (default: 32)")
    p.add_argument("--labels", action="store_true", help="write each tile's channel index on it")
    p.add_argument("--colorbar", action="store_true", help="add a colorbar (with --norm layer or signed)")


def _render_options(args: argparse.Namespace) -> dict[str, Any]:
    from .errors import OnnxvizError

    if len(args.percentiles) != 2:
        raise OnnxvizError("--percentiles takes two numbers: LO,HI")
    if args.padding < 0:
        raise OnnxvizError("--padding must be >= 0")
    return {
        "cmap": args.cmap, "norm": args.norm, "percentiles": tuple(args.percentiles), "max_channels": args.max_channels,
        "select": args.select, "channels": args.channels, "ncols": args.ncols, "padding": args.padding,
        "min_tile": args.min_tile, "labels": args.labels, "colorbar": args.colorbar,
    }


def _indices(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel indices, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative channel indices, got {text!r}")
    return values


def _add_capture_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that captures MODEL on IMAGE... into -o DIR (maps, report)."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    _add_plan_options(p)
    _add_input_options(p)
    _add_render_options(p)
    p.add_argument("--verify", action="store_true",
                   help="also run the untapped model and report the largest difference of the model's outputs")
    p.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance for --verify (default: 1e-5)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxviz", description="See what a CNN sees: every Conv feature map of an ONNX model.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"onnxviz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="inputs, outputs and the tap plan of a model")
    p.add_argument("model")
    _add_plan_options(p)
    p.add_argument("--json", action="store_true", help="print JSON for pipelines")

    _add_capture_command(sub, "maps", "render every tapped Conv layer's feature maps to PNG files")

    p = sub.add_parser("filters", help="render every Conv layer's filters (weights from the initializers) to PNG files")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--layers", action="append", metavar="PATTERN", help="select layers (glob, or re: regex); repeatable")
    p.add_argument("--mode", choices=("auto", "rgb", "all", "mean"), default="auto",
                   help="rgb tiles, every input-channel kernel, or their mean per filter (default: auto)")
    p.add_argument("--cmap", default="gray", metavar="NAME", help="matplotlib colormap (default: gray)")
    p.add_argument("--max-filters", type=_positive, default=64, metavar="N", help="first N filters per layer (default: 64)")
    p.add_argument("--min-tile", type=_positive, default=24, metavar="PX", help="upscale kernels to at least PX pixels (default: 24)")

    p = _add_capture_command(sub, "report", "a self-contained HTML report: summary, graph, maps, overlays, filters, statistics")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the sum-map overlay (default: 0.5)")
    p.add_argument("--overlay-cmap", default="jet", metavar="NAME", help="colormap of the overlay (default: jet)")
    p.add_argument("--filters-mode", choices=("auto", "rgb", "all", "mean"), default="auto", help="filter layout (default: auto)")
    p.add_argument("--no-graph", action="store_true", help="leave the Graphviz drawing out")

    p = sub.add_parser("graph", help="draw the graph with the tapped tensors highlighted (SVG via Graphviz, or DOT)")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|OUT.dot")
    _add_plan_options(p)

    p = sub.add_parser("expose", help="write the model with every tap added as a graph output")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    _add_plan_options(p)
    p.add_argument("--verify", action="store_true",
                   help="run both models on the same (random or --verify-image) input and report the largest difference")
    p.add_argument("--verify-image", metavar="IMAGE", help="input for --verify (default: deterministic random input)")
    p.add_argument("--size", type=_size, metavar="HxW", help="input size for --verify on dynamic models")
    p.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance for --verify (default: 1e-5)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")

    p = sub.add_parser("convert", help="export a Keras or PyTorch model to ONNX, keeping its layer names")
    p.add_argument("source", metavar="SOURCE",
                   help=".pt2/.pt (torch.export or TorchScript), .keras/.h5 or a SavedModel folder, or package.module:factory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--input-shape", type=_shape, metavar="N,C,H,W", help="example input shape (torch: N,C,H,W; Keras: N,H,W,C)")
    p.add_argument("--framework", choices=("torch", "keras"), help="default: from the file type or the factory's result")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch exporter (default: dynamo, falling back to torchscript)")
    p.add_argument("--opset", type=_positive, help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic-size", action="store_true", help="torch: keep height/width dynamic too (fully convolutional nets)")

    p = sub.add_parser("demo", help="run maps on the bundled small CNN and photo")
    p.add_argument("-o", "--output", default="onnxviz-demo", metavar="DIR")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def _inputs_manifest(model: Any, images: Sequence[str], args: argparse.Namespace, fed: dict[str, Any]) -> list[dict[str, Any]]:
    spec = model.inputs[0]
    arr = fed[spec.name]
    return [
        {
            "image": str(image),
            "index": i,
            "input": spec.name,
            "fed_shape": [1, *arr.shape[1:]],
            "layout": spec.layout,
            "scale": args.scale,
            "mean": args.mean,
            "std": args.std,
            "bgr": args.bgr,
        }
        for i, image in enumerate(images)
    ]


def _cmd_summary(args: argparse.Namespace) -> int:
    from .capture import load
    from .summary import format_summary

    model = load(args.model, tap=args.tap, layers=args.layers)
    summary = model.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return EXIT_OK


def _report_verify(report: Any) -> int:
    print(str(report))
    if not report.ok:
        print(f"onnxviz: verify: tapped model's outputs differ by {report.max_rel:.3g} (relative), above {report.tolerance:g}", file=sys.stderr)
        return EXIT_VERIFY
    return EXIT_OK


_ONE_SHOT = {"session.intra_op.allow_spinning": "0"}


def _capture(model_path: str, images: Sequence[str], args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """Checks that need no model first (output folder, colormaps), then load and capture."""
    from .capture import load
    from .output import check_output_dir
    from .render import colormap_palette

    check_output_dir(out)  # fail before any work
    for cmap in (args.cmap, getattr(args, "overlay_cmap", None)):
        if cmap:
            colormap_palette(cmap)  # unknown colormap: fail before any work
    # One run, then CPU-bound rendering: onnxruntime's worker threads must not spin-wait after it.
    model = load(model_path, tap=args.tap, layers=args.layers, provider=args.provider, session_config=_ONE_SHOT,
                 optimization=args.optimization)
    capture = model.capture(
        list(images), size=args.size, scale=args.scale, mean=args.mean, std=args.std, bgr=args.bgr,
        verify=args.verify, tolerance=args.tolerance, max_memory=args.max_memory,
    )
    if args.max_memory is not None:
        print(f"onnxviz: capture: {capture.plan.describe()}")
    return model, capture


def _run_maps(model_path: str, images: Sequence[str], args: argparse.Namespace) -> int:
    from .writers import write_maps

    out = Path(args.output)
    options = _render_options(args)
    model, capture = _capture(model_path, images, args, out)
    manifest = write_maps(
        capture, out, model_name=str(model_path), inputs=_inputs_manifest(model, images, args, capture.feeds),
        render_options=options,
        extra={"tap": model.plan.mode, "optimization": model.optimization, "skipped": [{"node": s.node, "op": s.op, "reason": s.reason} for s in model.plan.skipped],
               "capture": capture.plan.as_dict()},
    )
    n_png = len(manifest["files"])
    print(f"onnxviz: {len(manifest['layers'])} layers × {len(images)} image(s) → {n_png} PNG files in {out}/ "
          f"(provider: {capture.provider}; manifest: {out / 'manifest.json'})")
    return _report_verify(capture.verify) if capture.verify is not None else EXIT_OK


def _cmd_maps(args: argparse.Namespace) -> int:
    return _run_maps(args.model, args.images, args)


def _cmd_report(args: argparse.Namespace) -> int:
    from .errors import OnnxvizError
    from .report import write_report

    if not 0.0 <= args.alpha <= 1.0:
        raise OnnxvizError(f"--alpha must be within 0..1, got {args.alpha}")
    out = Path(args.output)
    options = _render_options(args)
    model, capture = _capture(args.model, args.images, args, out)
    manifest = write_report(
        model, capture, out, model_name=str(args.model), images=list(args.images),
        inputs=_inputs_manifest(model, args.images, args, capture.feeds), render_options=options,
        alpha=args.alpha, overlay_cmap=args.overlay_cmap, filters_mode=args.filters_mode, graph=not args.no_graph,
    )
    print(f"onnxviz: report with {len(manifest['layers'])} layers × {len(args.images)} image(s): {out / 'index.html'} "
          f"(provider: {capture.provider})")
    return _report_verify(capture.verify) if capture.verify is not None else EXIT_OK


def _cmd_expose(args: argparse.Namespace) -> int:
    from .capture import load

    model = load(args.model, tap=args.tap, layers=args.layers, provider=args.provider)
    feeds = None
    if args.verify:
        # Prepare the input before writing anything, so a bad image leaves no file behind.
        feeds = model.prepare([args.verify_image], size=args.size) if args.verify_image else model.random_feeds(size=args.size)
    path = model.expose(args.output)
    added = sum(1 for t in model.taps if not t.reused_output)
    print(f"onnxviz: wrote {path} with {len(model.plan.model_outputs)} model outputs + {added} taps")
    if feeds is not None:
        return _report_verify(model.verify(feeds, tolerance=args.tolerance))
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from converters import convert

    out = Path(args.output)
    source = Path(args.source)
    if source.exists() and out.resolve() == source.resolve():
        from .errors import OnnxvizError

        raise OnnxvizError(f"refusing to overwrite the source model {source}; choose another -o")
    conversion = convert(
        args.source, out, input_shape=args.input_shape, framework=args.framework, exporter=args.exporter, opset=args.opset,
        dynamic_size=args.dynamic_size,
    )
    print(f"onnxviz: wrote {out}: {conversion.summary()}")
    for note in conversion.notes:
        print(f"onnxviz: note: {note}")
    if conversion.unmatched:
        print(f"onnxviz: note: no framework name found for {len(conversion.unmatched)} Conv node(s): "
              f"{', '.join(conversion.unmatched[:5])}; they keep their node names")
    return EXIT_OK


def _cmd_filters(args: argparse.Namespace) -> int:
    from .capture import load
    from .output import check_output_dir
    from .render import colormap_palette
    from .writers import write_filters

    out = Path(args.output)
    check_output_dir(out)
    colormap_palette(args.cmap)
    model = load(args.model, layers=args.layers)
    manifest = write_filters(model, out, model_name=str(args.model), mode=args.mode, cmap=args.cmap,
                             max_filters=args.max_filters, min_tile=args.min_tile)
    skipped = [layer for layer in manifest["layers"] if not layer["viewable"]]
    print(f"onnxviz: filters of {len(manifest['layers']) - len(skipped)} layers → {len(manifest['files'])} PNG files in {out}/")
    for layer in skipped:
        print(f"onnxviz: note: {layer['name']}: not viewable: {layer['reason']}")
    return EXIT_OK


def _cmd_graph(args: argparse.Namespace) -> int:
    import tempfile

    from .capture import load
    from .errors import OnnxvizError
    from .graph import to_dot, to_svg

    out = Path(args.output)
    if out.suffix.lower() not in (".svg", ".dot", ".gv"):
        raise OnnxvizError(f"graph output must end in .svg or .dot, got {out.name}")
    if not out.resolve().parent.is_dir():
        raise OnnxvizError(f"output folder does not exist: {out.resolve().parent}")
    model = load(args.model, tap=args.tap, layers=args.layers)
    text = to_dot(model) if out.suffix.lower() in (".dot", ".gv") else to_svg(model)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=out.resolve().parent, prefix=".onnxviz-", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, out)
    print(f"onnxviz: wrote {out} ({len(model.taps)} tapped layers highlighted)")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_image, demo_model

    ns = argparse.Namespace(
        output=args.output, tap="activation", layers=None, size=None, scale="unit", mean=None, std=None, bgr=False,
        provider=args.provider, optimization="extended", max_memory=None, max_channels=None, select="first", channels=None, cmap=None, norm="channel",
        percentiles=[1.0, 99.0], ncols=None, padding=1, min_tile=32, labels=False, colorbar=False, verify=True, tolerance=1e-5,
    )
    code = _run_maps(str(demo_model()), [str(demo_image())], ns)
    print(f"onnxviz: demo done: open {Path(args.output).resolve()}/ (one PNG per Conv layer)")
    return code


_COMMANDS = {"summary": _cmd_summary, "maps": _cmd_maps, "expose": _cmd_expose, "filters": _cmd_filters, "report": _cmd_report, "graph": _cmd_graph, "convert": _cmd_convert, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnxviz`` console script; returns the exit code."""
    from .errors import OnnxvizError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return _COMMANDS[args.command](args)
    except _UsageError as exc:
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OnnxvizError as exc:
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"onnxviz: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnxviz: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line; ONNXVIZ_DEBUG=1 shows the traceback
        if os.environ.get("ONNXVIZ_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"onnxviz: internal error: {type(exc).__name__}: {text} (set ONNXVIZ_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
