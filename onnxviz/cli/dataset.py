"""``onnxviz dataset``: channel statistics and top-k images over a set of images (locally or on
Ray), ``onnxviz dataset compare A B`` (per-channel shifts between two runs) and
``onnxviz dataset sample -o DIR`` (a small real image set from pictures that ship in packages).

``compare`` and ``sample`` are taken as sub-commands when they are the first word; a model file
with one of those names is written ``./compare``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .options import EXIT_OK, UsageError, add_plan_options, floats_arg, indices_arg, plan_args, positive_arg, size_arg

__all__ = ["add_dataset"]

USAGE = "onnxviz dataset MODEL IMAGES... -o DIR | onnxviz dataset compare A B | onnxviz dataset sample -o DIR"


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_dataset(sub: Any) -> None:
    p = sub.add_parser(
        "dataset", usage=USAGE,
        help="which images make each channel fire: per-channel statistics, histograms and top-k images over a folder of images",
    )  # fmt: skip
    p.add_argument("words", nargs="+", metavar="MODEL IMAGES...", help="the model, then folders (recursive), globs or text files of paths")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (statistics, top-k PNGs, HTML, dataset.json)")
    add_plan_options(p)
    p.add_argument("--top-k", type=positive_arg, default=9, metavar="K", help="images kept per channel (default: 9)")
    p.add_argument("--batch", type=positive_arg, default=32, metavar="N", help="images per onnxruntime run (default: 32)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'auto' (a running cluster, else a new local one), 'local', or an address")
    p.add_argument("--workers", type=positive_arg, metavar="N", help="Ray actors (default: the cluster's CPUs - 1, or its GPUs with --provider cuda)")
    p.add_argument("--size", type=size_arg, metavar="HxW", help="input size (required for models with a dynamic size)")
    p.add_argument("--scale", choices=("unit", "raw", "imagenet"), default="unit", help="pixel scaling (default: unit 0-1)")
    p.add_argument("--mean", type=floats_arg, metavar="M[,M,M]", help="subtract per-channel mean after --scale")
    p.add_argument("--std", type=floats_arg, metavar="S[,S,S]", help="divide by per-channel std after --scale")
    p.add_argument("--bgr", action="store_true", help="feed channels in BGR order")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto", help="execution provider (default: auto)")
    p.add_argument("--optimization", choices=("basic", "extended", "all"), default="all",
                   help="onnxruntime graph optimization (default: all, which pays off over many batches)")
    p.add_argument("--threads", type=_nonnegative, default=0, metavar="N", help="onnxruntime threads per session (default: all cores; per Ray actor: its share)")
    p.add_argument("--reduce", choices=("auto", "numpy", "graph"), default="auto",
                   help="where per-channel reductions run: in numpy, in the ONNX graph, or auto (graph on CUDA, numpy on CPU)")
    p.add_argument("--hist-grid", type=_nonnegative, default=4, metavar="G",
                   help="histogram of a GxG subgrid of positions per map (default: 4; 0: every position, slower)")
    p.add_argument("--shard-size", type=positive_arg, default=1000, metavar="N", help="images per checkpointed shard / Ray partial (default: 1000)")
    p.add_argument("--max-channels", type=_nonnegative, default=16, metavar="N", help="channels per top-k PNG (default: 16; 0: all)")
    p.add_argument("--channels", type=indices_arg, metavar="I,J,...", help="show exactly these channels in the top-k PNGs")
    p.add_argument("--tile", type=positive_arg, default=64, metavar="PX", help="pixels per top-k patch (default: 64)")
    p.add_argument("--saturation", type=_fraction, default=0.5, metavar="F",
                   help="flag a channel saturated when at least F of its sampled values sit in its maximum's bin (default: 0.5)")
    p.add_argument("--restart", action="store_true", help="discard the checkpoint of an earlier interrupted run of this -o")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping and listing it")
    p.add_argument("--top", type=positive_arg, default=10, metavar="N", help="compare: channels listed that moved most (default: 10)")
    p.add_argument("--json", action="store_true", help="compare: print JSON")
    p.add_argument("--count", type=positive_arg, metavar="N", help="sample: how many images (default: every crop of every photo)")
    p.set_defaults(func=_cmd_dataset)


def _cmd_dataset(args: argparse.Namespace) -> int:
    words = args.words
    if words[0] == "compare":
        return _compare(words[1:], args)
    if words[0] == "sample":
        return _sample(words[1:], args)
    if len(words) < 2:
        raise UsageError(f"dataset needs a model and images (folders, globs or text files of paths); usage: {USAGE}")
    if not args.output:
        raise UsageError("dataset needs -o DIR")
    return _run(words[0], words[1:], args)


def _run(model: str, images: list[str], args: argparse.Namespace) -> int:
    from ..datasets import dataset
    from ..datasets.checkpoint import checkpoint_dir

    out = Path(args.output)
    plan = plan_args(args)
    try:
        stats = dataset(
            model, images, output=out, tap=plan["tap"], layers=plan["layers"], tensors=plan["tensors"], top_k=args.top_k, batch=args.batch, size=args.size,
            scale=args.scale, mean=args.mean, std=args.std, bgr=args.bgr, provider=args.provider, optimization=args.optimization,
            threads=args.threads, reduce=args.reduce, hist_grid=args.hist_grid, shard_size=args.shard_size, ray=args.ray,
            workers=args.workers, restart=args.restart, strict=args.strict, saturation=args.saturation,
            channels=args.channels, max_channels=args.max_channels or None, tile=args.tile,
        )  # fmt: skip
    except KeyboardInterrupt:
        folder = checkpoint_dir(out)
        if folder.is_dir():
            print(f"onnxviz: interrupted; finished shards are kept in {folder}/: rerun the same command to resume",
                  file=sys.stderr)  # fmt: skip
            return 130
        raise
    run = stats.run
    speed = run.get("images_per_second")
    dead = sum(len(stats.dead(name)) for name in stats)
    saturated = sum(len(stats.saturated(name)) for name in stats)
    channels = sum(stats[name].channels for name in stats)
    where = "Ray" if run.get("runner") == "ray" else run.get("provider", "cpu")
    resumed = f", {run['resumed_parts']} shard(s) resumed" if run.get("resumed_parts") else ""
    print(
        f"onnxviz: {stats.count} images × {len(stats)} layers ({channels} channels: {dead} dead, {saturated} saturated) → "
        f"{out}/ ({f'{speed:.1f} images/s, ' if speed else ''}{where}{resumed}; report: {out / 'index.html'})"
    )
    if stats.skipped:
        first = "; ".join(f"{stats.images[i]}: {reason}" for i, reason in stats.skipped[:3])
        print(f"onnxviz: warning: {len(stats.skipped)} image(s) skipped (listed in dataset.json): {first}", file=sys.stderr)
    return EXIT_OK


def _compare(words: list[str], args: argparse.Namespace) -> int:
    from ..datasets.compare import compare, format_comparison
    from ..datasets.result import DatasetStats
    from .terminal import escape_json

    if len(words) != 2:
        raise UsageError("usage: onnxviz dataset compare A B (two output folders of onnxviz dataset)")
    result = compare(DatasetStats.load(words[0]), DatasetStats.load(words[1]), top=args.top)
    if args.json:
        print(escape_json(json.dumps(result, indent=1, allow_nan=False)))
    else:
        print(format_comparison(result))
    return EXIT_OK


def _sample(words: list[str], args: argparse.Namespace) -> int:
    from ..datasets.sample import write_sample

    if words or not args.output:
        raise UsageError("usage: onnxviz dataset sample -o DIR [--count N]")
    files = write_sample(args.output, count=args.count)
    print(f"onnxviz: {len(files)} images (crops and mirror images of photographs shipped in packages) → {args.output}/")
    return EXIT_OK
