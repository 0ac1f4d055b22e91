"""Run ``python -m MODULE ARGS…`` or ``python -c CODE ARGS…`` and report this process's peak RSS.

Peak RSS is ``VmHWM`` from /proc/self/status, which exec resets (unlike ``ru_maxrss``, which a
child forked from a big benchmark process inherits). The last stderr line is ``HWM <bytes>``.
"""

from __future__ import annotations

import runpy
import sys


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    kind, target, *rest = sys.argv[1:]
    code = 0
    try:
        if kind == "-m":
            sys.argv = [target, *rest]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *rest]
            exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    print(f"HWM {_hwm()}", file=sys.stderr, flush=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
