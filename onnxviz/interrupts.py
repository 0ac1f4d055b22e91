"""Signals: Ctrl-C, SIGTERM and SIGHUP end a command-line run the same way, cleanly.

The CLI calls :func:`install` before anything heavy is imported. Its handler raises
:class:`Interrupted` (a ``KeyboardInterrupt``), so every cleanup path that runs for Ctrl-C —
staging folders, spilled activations, temporary model files — runs for SIGTERM and SIGHUP too,
and ``onnxviz.cli.main`` prints the one line ``onnxviz: interrupted`` and exits with
128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP). A signal the shell set to be
ignored (``nohup``, background jobs) stays ignored.

Once a signal arrived, :func:`received` says so: an error that follows it is reported as the
interruption, since libraries can turn a ``KeyboardInterrupt`` raised inside their imports into
an ``ImportError`` or another exception. :func:`shielded` defers signals over the few steps that
must not be cut in half (moving a finished output into place, removing scratch folders); the
deferred signal is raised when the step is done. :func:`finish` ends it: once the result is known,
signals are only recorded (the program ignores them while it exits; ``main()`` called from Python
gives the previous handlers back). A signal that arrives within two seconds of the
one being handled is only recorded, so that pressing Ctrl-C repeatedly cannot cut the cleanup
short; one that comes later raises again (a run that does not stop can still be interrupted).

:func:`hold` is a test hook: with ``ONNXVIZ_TEST_HOLD=<point>`` in the environment a run sleeps at
that point (``ONNXVIZ_TEST_HOLD_SECONDS``, default 60), so that tests can send real signals at a
known moment. Points: ``stage`` (an output folder fully written under its staging name, before
it is moved into place), ``spill`` (a ``--max-memory`` capture after its first group's activations
were written to the spill folder), ``model`` (``expose``'s model written under its temporary name).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "install", "finish", "received", "exit_code", "reraise_if_interrupted", "shielded", "hold"]

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
_REPEAT = 2.0  # seconds after a raise during which further signals are only recorded


class Interrupted(KeyboardInterrupt):
    """Raised by the CLI's signal handler: a ``KeyboardInterrupt`` that knows its signal."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


class _State:
    installed = False
    received: int | None = None  # the first signal that arrived
    depth = 0  # shielded() nesting
    pending: int | None = None  # a signal deferred by shielded()
    raised_at: float | None = None
    quiet = False  # record signals only (the run is over, only clean-up is left)
    previous: dict[int, Any] = {}


def _handler(signum: int, frame: Any) -> None:
    if _State.received is None:
        _State.received = signum
    if _State.depth or _State.quiet:
        _State.pending = signum
        return
    now = time.monotonic()
    if _State.raised_at is not None and now - _State.raised_at < _REPEAT:
        return  # Ctrl-C pressed again while the first one is being handled: let cleanup finish
    _State.raised_at = now
    raise Interrupted(signum)


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP by raising :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _State.received = _State.pending = _State.raised_at = None
    _State.quiet = False
    _State.installed = True
    for name in _NAMES:
        sig = getattr(signal, name, None)
        if sig is None or signal.getsignal(sig) == signal.SIG_IGN:
            continue
        _State.previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _handler)


def finish(*, exiting: bool) -> None:
    """The run is over: from now on signals are only recorded (clean-up cannot be cut short).

    ``exiting``: the process exits next, so they are ignored from here on; otherwise (``main()``
    called from Python) the handlers that were there before :func:`install` come back.
    """
    if not _State.installed or threading.current_thread() is not threading.main_thread():
        return
    _State.quiet = True
    for sig, before in _State.previous.items():
        if signal.getsignal(sig) is _handler:
            signal.signal(sig, signal.SIG_IGN if exiting else before)
    _State.previous.clear()
    _State.installed = False
    _State.received = _State.pending = None  # Python code that runs on (main() called in-process) starts afresh


def received() -> int | None:
    """The first signal that arrived since :func:`install`, or None."""
    return _State.received


def exit_code(signum: int | None = None) -> int:
    """128 + the signal number (130 for Ctrl-C)."""
    sig = signum or _State.received or signal.SIGINT
    return 128 + int(sig)


def reraise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived (call where an exception may be its disguise)."""
    if _State.received is not None:
        raise Interrupted(_State.received)


@contextmanager
def shielded() -> Iterator[None]:
    """Defer the CLI's signals over a step that must finish; raise the deferred one afterwards."""
    if not _State.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    except BaseException:
        _State.depth -= 1
        if _State.depth == 0:
            _State.pending = None  # already leaving with an exception; received() remembers it
        raise
    _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


def hold(point: str) -> None:
    """Test hook: sleep at ``point`` when ``ONNXVIZ_TEST_HOLD`` names it (see the module docstring)."""
    if os.environ.get("ONNXVIZ_TEST_HOLD") == point:
        time.sleep(float(os.environ.get("ONNXVIZ_TEST_HOLD_SECONDS", "60")))
