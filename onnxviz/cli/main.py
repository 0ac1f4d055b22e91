"""The ``onnxviz`` command line.

Exit codes: 0 success; 1 ``--verify`` found the tapped model's outputs differ beyond tolerance,
or an internal error; 2 bad input (one line ``onnxviz: error: ...`` on stderr, no traceback, no
half-written output).

Each command lives in the module of its kind (``inspect``: summary, filters, graph, expose;
``capture``: maps, report, demo; ``convert``; ``dataset``: dataset, dataset compare, dataset sample) as an ``add_<command>(sub)`` that declares its
options and sets ``func``; ``options`` holds what commands share.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import capture, convert, dataset, explain, inspect
from .options import EXIT_USAGE, Parser, UsageError
from .terminal import guarded_output

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="onnxviz", description="See what a CNN sees: every Conv feature map of an ONNX model.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"onnxviz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (inspect.add_summary, capture.add_maps, inspect.add_filters, capture.add_report, inspect.add_graph,
                inspect.add_expose, convert.add_convert, capture.add_demo, explain.add_cam, explain.add_dream,
                dataset.add_dataset):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnxviz`` console script; returns the exit code.

    Everything the command prints goes through :func:`terminal.guarded_output`: model-supplied
    text is escaped for the terminal, and library warnings stay off stderr.
    """
    with guarded_output():
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    from ..errors import OnnxvizError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OnnxvizError as exc:
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("onnxviz: error: out of memory: this input needs more memory than is available "
              "(try a smaller --size, fewer images, or --max-memory)", file=sys.stderr)
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
