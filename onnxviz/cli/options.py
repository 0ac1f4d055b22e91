"""Shared pieces of the command line: argument types, option groups, the one-line usage error,
exit codes, and what several commands report the same way."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = [
    "EXIT_OK", "EXIT_VERIFY", "EXIT_USAGE", "UsageError", "Parser", "size_arg", "floats_arg", "shape_arg", "positive_arg",
    "indices_arg", "add_plan_options", "plan_args", "tap_arg", "add_input_options", "add_render_options", "render_options", "add_capture_command",
    "inputs_manifest", "report_verify", "ONE_SHOT",
]

EXIT_OK, EXIT_VERIFY, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(message)


def size_arg(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 224x224), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def floats_arg(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def shape_arg(text: str) -> list[int]:
    try:
        dims = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated integers (e.g. 1,3,224,224), got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"shape must be positive integers, got {text!r}")
    return dims


def positive_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def tap_arg(text: str) -> str:
    from ..graph.taps import parse_tap
    from ..errors import OnnxvizError

    try:
        parse_tap(text)
    except OnnxvizError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tap", action="append", type=tap_arg, metavar="KIND[,KIND]",
                   help="what to tap: conv (default: each conv layer's output, bias included), activation (the end of "
                        "each conv's BN/activation chain), pool, dense, merge, layer (every layer); comma-separated or repeated")
    p.add_argument("--tensor", action="append", metavar="NAME", help="also tap this tensor by name; repeatable")
    p.add_argument("--layers", action="append", metavar="PATTERN",
                   help="select layers by glob, or regex with a 're:' prefix; repeatable")


def plan_args(args: argparse.Namespace) -> dict[str, Any]:
    """``tap``/``tensors``/``layers`` for load(): --tap defaults to conv unless only --tensor is given."""
    from ..graph.taps import parse_tap

    tensors = getattr(args, "tensor", None)
    tap = args.tap if args.tap else (None if tensors else "conv")
    parse_tap(tap)  # combinations fail here, before any work
    return {"tap": tap, "tensors": tensors, "layers": args.layers}


def add_input_options(p: argparse.ArgumentParser, *, max_memory: bool = True) -> None:
    p.add_argument("--size", type=size_arg, metavar="HxW", help="input size for models with dynamic height/width")
    p.add_argument("--scale", choices=("unit", "raw", "imagenet"), default=None,
                   help="pixel scaling: unit 0-1 (default; raw for integer inputs), raw 0-255, imagenet mean/std")
    p.add_argument("--mean", type=floats_arg, metavar="M[,M,M]", help="subtract per-channel mean after --scale")
    p.add_argument("--std", type=floats_arg, metavar="S[,S,S]", help="divide by per-channel std after --scale")
    p.add_argument("--bgr", action="store_true", help="feed channels in BGR order (OpenCV/Caffe-trained models)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                   help="execution provider (default: auto = CUDA when really active, else CPU)")
    p.add_argument("--optimization", choices=("basic", "extended", "all"), default="extended",
                   help="onnxruntime graph optimization (default: extended; 'all' adds layout rewrites that "
                        "take longer to build than one run gains)")
    if not max_memory:  # commands that do not capture every layer (cam, dream)
        return
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory bound for the run (e.g. 500M, 2G; default: 75%% of the memory available): runs estimated "
                        "above it are refused; layers beyond it are captured in passes over layer groups, streamed to disk")


def add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-channels", type=positive_arg, metavar="N", help="render only N channels of a layer (see --select)")
    p.add_argument("--select", choices=("first", "mean", "max", "absmean"), default="first",
                   help="which channels --max-channels keeps: the first N, or the top N by mean / max / mean |a|")
    p.add_argument("--channels", type=indices_arg, metavar="I,J,...", help="render exactly these channel indices")
    p.add_argument("--cmap", metavar="NAME", help="matplotlib colormap (default: viridis; RdBu_r for --norm signed)")
    p.add_argument("--norm", choices=("channel", "layer", "zscore", "percentile", "signed"), default="channel",
                   help="per-channel min-max (default), one range per layer, (x-mean)/std*64+128, percentile clip, or signed around 0")
    p.add_argument("--percentiles", type=floats_arg, metavar="LO,HI", default=[1.0, 99.0], help="for --norm percentile (default: 1,99)")
    p.add_argument("--ncols", type=positive_arg, metavar="N", help="tiles per row (default: near-square grid)")
    p.add_argument("--padding", type=int, default=1, metavar="PX", help="pixels between tiles (default: 1)")
    p.add_argument("--min-tile", type=positive_arg, default=32, metavar="PX", help="upscale smaller maps to at least PX pixels (default: 32)")
    p.add_argument("--labels", action="store_true", help="write each tile's channel index on it")
    p.add_argument("--colorbar", action="store_true", help="add a colorbar (with --norm layer or signed)")


def render_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..errors import OnnxvizError

    if len(args.percentiles) != 2:
        raise OnnxvizError("--percentiles takes two numbers: LO,HI")
    if args.padding < 0:
        raise OnnxvizError("--padding must be >= 0")
    return {
        "cmap": args.cmap, "norm": args.norm, "percentiles": tuple(args.percentiles), "max_channels": args.max_channels,
        "select": args.select, "channels": args.channels, "ncols": args.ncols, "padding": args.padding,
        "min_tile": args.min_tile, "labels": args.labels, "colorbar": args.colorbar,
    }


def indices_arg(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel indices, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative channel indices, got {text!r}")
    return values


def add_capture_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that captures MODEL on IMAGE... into -o DIR (maps, report)."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    add_plan_options(p)
    add_input_options(p)
    add_render_options(p)
    p.add_argument("--verify", action="store_true",
                   help="also run the untapped model and report the largest difference of the model's outputs")
    p.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance for --verify (default: 1e-5)")
    p.add_argument("--title", action="store_true", help="write the layer name above each image")
    p.add_argument("--labels-file", metavar="FILE",
                   help="class names, one per line, for the top-5 of the model's output (and of vector layers of that length)")
    return p




def inputs_manifest(model: Any, images: Sequence[str], args: argparse.Namespace, fed: dict[str, Any]) -> list[dict[str, Any]]:
    from ..run.inputs import resolve_scale

    spec = model.inputs[0]
    arr = fed[spec.name]
    return [
        {
            "image": str(image),
            "index": i,
            "input": spec.name,
            "fed_shape": [1, *arr.shape[1:]],
            "layout": spec.layout,
            "scale": resolve_scale(args.scale, spec),
            "mean": args.mean,
            "std": args.std,
            "bgr": args.bgr,
        }
        for i, image in enumerate(images)
    ]


def report_verify(report: Any) -> int:
    print(str(report))
    if not report.ok:
        print(f"onnxviz: verify: tapped model's outputs differ by {report.max_rel:.3g} (relative), above {report.tolerance:g}", file=sys.stderr)
        return EXIT_VERIFY
    return EXIT_OK


ONE_SHOT = {"session.intra_op.allow_spinning": "0"}
