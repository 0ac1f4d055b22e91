"""The ``onnxviz`` command line.

Exit codes: 0 success; 1 ``--verify`` found the tapped model's outputs differ beyond tolerance,
or an internal error; 2 bad input (one line ``onnxviz: error: ...`` on stderr, no traceback, no
half-written output); 130 / 143 / 129 interrupted by SIGINT (Ctrl-C) / SIGTERM / SIGHUP (one line
``onnxviz: interrupted``; nothing left behind); 141 stdout closed early (``onnxviz summary --json
| head -1``: no message).

Each command lives in the module of its kind (``inspect``: summary, filters, graph, expose;
``capture``: maps, report, demo; ``convert``; ``dataset``: dataset, dataset compare, dataset sample) as an ``add_<command>(sub)`` that declares its
options and sets ``func``; ``options`` holds what commands share. Modules imported before
:func:`main` installs its signal handlers stay light (no numpy, onnx or onnxruntime), so that a
Ctrl-C during the heavy imports is reported like any other (tests/test_signals.py checks).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import interrupts
from ..safefs import remove_scratch
from . import capture, convert, dataset, explain, inspect
from .options import EXIT_USAGE, Parser, UsageError
from .terminal import guarded_output

__all__ = ["main", "build_parser", "EXIT_BROKEN_PIPE"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a producer whose reader went away


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="onnxviz", description="See what a CNN sees and why: feature maps, filters, CAMs, activation maximisation and dataset statistics of any ONNX CNN.")
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
    text is escaped for the terminal, and library warnings stay off stderr. Signals: see
    :mod:`onnxviz.interrupts`; whatever ends the run, onnxviz's scratch folders are removed.
    """
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        interrupts.install()  # first of all: from here on, Ctrl-C / SIGTERM end in one line
        with guarded_output():
            code = _run(argv)
            sys.stdout.flush()  # a reader that went away shows here, not as a message at exit
        interrupts.reraise_if_interrupted()  # a signal that some callback swallowed
    except KeyboardInterrupt as exc:
        code = _interrupted(exc)
    except BrokenPipeError:
        code = _broken_pipe()
    # The result stands: a signal from here on (clean-up, the interpreter's exit) changes nothing.
    interrupts.finish(exiting=argv is None)
    remove_scratch()  # staging and spill folders of an interrupted or failed run
    if argv is not None:
        sys.unraisablehook = hook
    return code


def _unraisable(info: object) -> None:
    """A signal raised inside a callback Python cannot propagate from (weakref, __del__): keep it
    off the terminal; main() sees it through interrupts.received()."""
    if not isinstance(getattr(info, "exc_value", None), KeyboardInterrupt):
        sys.__unraisablehook__(info)  # type: ignore[arg-type]


def _interrupted(exc: BaseException) -> int:
    try:
        print("onnxviz: interrupted", file=sys.stderr)
    except (OSError, ValueError):
        pass
    return interrupts.exit_code(getattr(exc, "signum", None))


def _broken_pipe() -> int:
    try:  # nothing more can reach the reader; keep the interpreter's final flush quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    from ..errors import OnnxvizError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        with interrupts.shielded():
            # C extensions interrupted in their initialisation can abort the interpreter or leave
            # half-imported modules: load them whole, then act on a signal that came meanwhile.
            import numpy  # noqa: F401
            import onnx  # noqa: F401
            import PIL.Image  # noqa: F401
        return args.func(args)
    except UsageError as exc:
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OnnxvizError as exc:
        interrupts.reraise_if_interrupted()  # e.g. a Ctrl-C inside an import, reported as ImportError
        print(f"onnxviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        interrupts.reraise_if_interrupted()
        print("onnxviz: error: out of memory: this input needs more memory than is available "
              "(try a smaller --size, fewer images, or --max-memory)", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except OSError as exc:
        interrupts.reraise_if_interrupted()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"onnxviz: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug: still one line; ONNXVIZ_DEBUG=1 shows the traceback
        interrupts.reraise_if_interrupted()
        if os.environ.get("ONNXVIZ_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"onnxviz: internal error: {type(exc).__name__}: {text} (set ONNXVIZ_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
