"""Commands that read a model without feeding it images: summary, filters, graph, expose."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..common import plural
from .options import EXIT_OK, add_plan_options, indices_arg, plan_args, positive_arg, report_verify, size_arg

__all__ = ["add_summary", "add_filters", "add_graph", "add_expose"]


def add_summary(sub: Any) -> None:
    p = sub.add_parser("summary", help="the model's layers (like Keras's model.summary()), parameters, counts and tap plan")
    p.add_argument("model")
    add_plan_options(p)
    p.add_argument("--json", action="store_true", help="print JSON for pipelines")
    p.add_argument("--ops", action="store_true", help="one row per ONNX op instead of per framework layer")
    p.set_defaults(func=_cmd_summary)


def add_filters(sub: Any) -> None:
    p = sub.add_parser("filters", help="render every Conv layer's filters (weights from the initializers) to PNG files")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--layers", action="append", metavar="PATTERN", help="select layers (glob, or re: regex); repeatable")
    p.add_argument("--mode", choices=("auto", "rgb", "all", "mean"), default="auto",
                   help="rgb tiles, every input-channel kernel, or their mean per filter (default: auto)")
    p.add_argument("--cmap", default="gray", metavar="NAME", help="matplotlib colormap (default: gray)")
    p.add_argument("--max-filters", type=positive_arg, default=64, metavar="N", help="first N filters per layer (default: 64)")
    p.add_argument("--min-tile", type=positive_arg, default=24, metavar="PX", help="upscale kernels to at least PX pixels (default: 24)")
    p.add_argument("--norm", choices=("filter", "layer"), default="filter",
                   help="one colour range per filter (default), or one per layer so filters compare")
    p.add_argument("--input-channels", type=indices_arg, metavar="I,J,...",
                   help="only these input channels of each filter (0: each filter's first-channel kernel, one tile per filter)")
    p.add_argument("--title", action="store_true", help="write the layer name above each image")
    p.set_defaults(func=_cmd_filters)


def add_graph(sub: Any) -> None:
    p = sub.add_parser("graph", help="draw the graph with the tapped tensors highlighted (SVG or PNG via Graphviz, or DOT)")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|OUT.png|OUT.dot")
    add_plan_options(p)
    p.add_argument("--ops", action="store_true", help="one box per ONNX op instead of per framework layer")
    p.set_defaults(func=_cmd_graph)


def add_expose(sub: Any) -> None:
    p = sub.add_parser("expose", help="write the model with every tap added as a graph output")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    add_plan_options(p)
    p.add_argument("--verify", action="store_true",
                   help="run both models on the same (random or --verify-image) input and report the largest difference")
    p.add_argument("--verify-image", metavar="IMAGE", help="input for --verify (default: deterministic random input)")
    p.add_argument("--size", type=size_arg, metavar="HxW", help="input size for --verify on dynamic models")
    p.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance for --verify (default: 1e-5)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=_cmd_expose)


def _cmd_summary(args: argparse.Namespace) -> int:
    from ..run.model import load
    from ..graph.summary import format_summary, model_summary

    from .terminal import escape_json, escape_terminal

    model = load(args.model, **plan_args(args))
    summary = model_summary(model, ops=args.ops)
    if args.json:
        print(escape_json(json.dumps(summary, indent=2)))
    else:  # names escaped one by one, so that a newline in a name cannot start a line of its own
        print(format_summary(_escaped(summary, escape_terminal)))
    return EXIT_OK


def _escaped(value: Any, escape: Any) -> Any:
    """``value`` with every string in it (dict keys too) escaped."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {_escaped(k, escape): _escaped(v, escape) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_escaped(v, escape) for v in value)
    return value


def _cmd_filters(args: argparse.Namespace) -> int:
    from ..run.model import load
    from ..report.output import check_output_dir
    from ..rendering import colormap_palette
    from ..report.writers import write_filters

    out = Path(args.output)
    check_output_dir(out)
    colormap_palette(args.cmap)
    model = load(args.model, layers=args.layers)
    manifest = write_filters(model, out, model_name=str(args.model), mode=args.mode, cmap=args.cmap,
                             max_filters=args.max_filters, min_tile=args.min_tile, norm=args.norm, title=args.title, inputs=args.input_channels)
    skipped = [layer for layer in manifest["layers"] if not layer["viewable"]]
    print(f"onnxviz: filters of {plural(len(manifest['layers']) - len(skipped), 'layer')} → "
          f"{plural(len(manifest['files']), 'PNG file')} in {out}/")
    for layer in skipped:
        print(f"onnxviz: note: {layer['name']}: not viewable: {layer['reason']}")
    return EXIT_OK


def _cmd_graph(args: argparse.Namespace) -> int:
    from ..run.model import load
    from ..errors import OnnxvizError
    from ..graph.draw import INSTALL_HINT, MAX_DRAWN_NODES, dot_available, drawable_dot, drawn_count, run_dot, to_dot
    from ..graph.save import write_file_atomic
    from ..safefs import real_output

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".svg", ".png", ".dot", ".gv"):
        raise OnnxvizError(f"graph output must end in .svg, .png or .dot, got {out.name}")
    real = real_output(out)  # fail before any work: missing folder, a folder in the way
    if real.is_dir():
        raise OnnxvizError(f"output path exists and is not a file: {out}")
    if suffix in (".svg", ".png") and not dot_available():
        raise OnnxvizError(INSTALL_HINT)  # before loading the model
    model = load(args.model, **plan_args(args))
    drawn = suffix in (".svg", ".png")
    dot, simplified = drawable_dot(model, ops=args.ops) if drawn else (to_dot(model, args.ops), False)
    data = run_dot(dot, suffix[1:]) if drawn else dot.encode("utf-8")
    write_file_atomic(out, data)
    print(f"onnxviz: wrote {out} ({plural(len(model.taps), 'tapped layer')} highlighted)")
    if simplified:
        what = "node" if args.ops else "layer"
        print(f"onnxviz: note: {plural(drawn_count(model, args.ops), what)} are too many to lay out in reasonable time "
              f"(more than {MAX_DRAWN_NODES:,}): the drawing shows the tapped layers only; -o {out.with_suffix('.dot').name} "
              "writes the whole graph")
    return EXIT_OK


def _cmd_expose(args: argparse.Namespace) -> int:
    from ..run.model import load
    from ..safefs import real_output

    real_output(Path(args.output), what="output model")  # fail before any work
    model = load(args.model, provider=args.provider, **plan_args(args))
    feeds = None
    if args.verify:
        # Prepare the input before writing anything, so a bad image leaves no file behind.
        feeds = model.prepare([args.verify_image], size=args.size) if args.verify_image else model.random_feeds(size=args.size)
    # Verify before writing: a model onnxruntime cannot run leaves no file behind.
    report = model.verify(feeds, tolerance=args.tolerance) if feeds is not None else None
    path = model.expose(args.output)
    added = sum(1 for t in model.taps if not t.reused_output)
    print(f"onnxviz: wrote {path} with {plural(len(model.plan.model_outputs), 'model output')} + {plural(added, 'tap')}")
    if report is not None:
        return report_verify(report)
    return EXIT_OK
