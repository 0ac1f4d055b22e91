"""``onnxviz convert``: a Keras or PyTorch model to ONNX, with the framework's layer names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common import plural
from .options import EXIT_OK, positive_arg, shape_arg

__all__ = ["add_convert"]


def add_convert(sub: Any) -> None:
    p = sub.add_parser("convert", help="export a Keras or PyTorch model to ONNX, keeping its layer names")
    p.add_argument("source", metavar="SOURCE",
                   help=".pt2/.pt (torch.export or TorchScript), .keras/.h5 or a SavedModel folder, or package.module:factory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--input-shape", type=shape_arg, metavar="N,C,H,W", help="example input shape (torch: N,C,H,W; Keras: N,H,W,C)")
    p.add_argument("--framework", choices=("torch", "keras"), help="default: from the file type or the factory's result")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch exporter (default: dynamo, falling back to torchscript)")
    p.add_argument("--opset", type=positive_arg, help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic-size", action="store_true", help="torch: keep height/width dynamic too (fully convolutional nets)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..converters import convert

    out = Path(args.output)
    source = Path(args.source)
    if source.exists() and out.resolve() == source.resolve():
        from ..errors import OnnxvizError

        raise OnnxvizError(f"refusing to overwrite the source model {source}; choose another -o")
    conversion = convert(
        args.source, out, input_shape=args.input_shape, framework=args.framework, exporter=args.exporter, opset=args.opset,
        dynamic_size=args.dynamic_size,
    )
    print(f"onnxviz: wrote {out}: {conversion.summary()}")
    for note in conversion.notes:
        print(f"onnxviz: note: {note}")
    if conversion.unmatched:
        print(f"onnxviz: note: no framework name found for {plural(len(conversion.unmatched), 'Conv node')}: "
              f"{', '.join(conversion.unmatched[:5])}; they keep their node names")
    return EXIT_OK
