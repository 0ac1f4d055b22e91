"""Real signals and a full filesystem (issue 9): SIGINT/SIGTERM/SIGHUP while a staging folder, a
spill folder or a temporary model exists leave nothing behind; after SIGKILL the next run cleans
up; Ctrl-C during the imports is exit 130 and one line; a closed stdout is exit 141, silently; a
full filesystem is exit 2, one line, nothing left and the earlier output intact.

The moment a signal is sent is made deterministic with the test hook ``ONNXVIZ_TEST_HOLD``
(``onnxviz/interrupts.py``): the run sleeps at a named point, the test waits until the scratch
folder is there, then signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import helper

import models
from onnxviz import safefs
from test_outputs import scratch_left, tree

INTERRUPTED = "onnxviz: interrupted\n"


def _files(root: Path) -> dict[str, tuple]:
    return tree(root)


def _temp_empty(tmp_path: Path) -> bool:
    # Nothing at all: onnxruntime's own telemetry file (.ses) included, which onnxviz turns off.
    return not any((tmp_path / "tmp").iterdir())


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(temp), **extra}
    env.pop("ONNXVIZ_DEBUG", None)
    return env


def _terminal_signals() -> None:
    """In the child: SIGINT, SIGTERM and SIGHUP as a terminal session has them (the default), even
    when the test run itself was started under nohup or as a background job, which ignore them."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _start(args, env, *, ignore: tuple[int, ...] = ()) -> subprocess.Popen:
    def setup() -> None:
        _terminal_signals()
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "onnxviz", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=setup)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the point was reached: {proc.returncode} {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never reached the point")
        time.sleep(0.01)


def _found(folder: Path, pattern: str, inside: str):
    return lambda: any(any(p.glob(inside)) for p in folder.glob(pattern) if p.is_dir())


SIGNAL_CASES = [
    # id, command, hold point, signal, exit code
    ("maps-stage-SIGINT", "maps", "stage", signal.SIGINT, 130),
    ("maps-stage-SIGTERM", "maps", "stage", signal.SIGTERM, 143),
    ("maps-replace-SIGTERM", "maps-replace", "stage", signal.SIGTERM, 143),
    ("maps-spill-SIGINT", "maps-spill", "spill", signal.SIGINT, 130),
    ("maps-spill-SIGTERM", "maps-spill", "spill", signal.SIGTERM, 143),
    ("report-stage-SIGHUP", "report", "stage", signal.SIGHUP, 129),
    ("expose-model-SIGTERM", "expose", "model", signal.SIGTERM, 143),
]


def _command(command: str, path: Path, image: Path, tmp_path: Path) -> tuple[list, callable]:
    out = tmp_path / "out"
    if command == "expose":
        return ["expose", path, "-o", tmp_path / "t.onnx"], _found(tmp_path, ".t.onnx.onnxviz-tmp-*", "t.onnx")
    if command == "maps-spill":
        return (["maps", path, image, "-o", out, "--max-memory", "1K"],
                _found(tmp_path / "tmp", "onnxviz-spill-*", "*.npy"))
    name = "report" if command == "report" else "maps"
    extra = ["--no-graph"] if name == "report" else []
    return [name, path, image, "-o", out, *extra], _found(tmp_path, ".out.onnxviz-stage-*", "manifest.json")


@pytest.mark.parametrize("command, point, sig, code", [c[1:] for c in SIGNAL_CASES], ids=[c[0] for c in SIGNAL_CASES])
def test_a_signal_leaves_nothing_behind(command, point, sig, code, save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    args, ready = _command(command, path, rgb_image, tmp_path)
    if command == "maps-replace":
        assert subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, env=_env(tmp_path)).returncode == 0
    env = _env(tmp_path, ONNXVIZ_TEST_HOLD=point)
    before = _files(tmp_path)
    proc = _start(args, env)
    try:
        _wait_for(proc, ready)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, stderr) == (code, INTERRUPTED)
    assert not scratch_left(tmp_path)
    assert _files(tmp_path) == before  # no output, the earlier one intact, the temp folder empty


def test_a_signal_ignored_by_the_caller_stays_ignored(save, rgb_image, tmp_path):
    """nohup (SIGHUP) and background jobs of a script (SIGINT) ignore signals: onnxviz keeps it so."""
    path = save(models.conv_bn_relu())
    args, ready = _command("maps", path, rgb_image, tmp_path)
    proc = _start(args, _env(tmp_path, ONNXVIZ_TEST_HOLD="stage", ONNXVIZ_TEST_HOLD_SECONDS="2"), ignore=(signal.SIGHUP,))
    try:
        _wait_for(proc, ready)
        proc.send_signal(signal.SIGHUP)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, stderr) == (0, "") and "PNG files" in stdout
    assert (tmp_path / "out" / "manifest.json").is_file() and not scratch_left(tmp_path)


@pytest.mark.parametrize("command", ["maps", "maps-spill"])
def test_after_sigkill_the_next_run_cleans_up(command, save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    args, ready = _command(command, path, rgb_image, tmp_path)
    proc = _start(args, _env(tmp_path, ONNXVIZ_TEST_HOLD="stage" if command == "maps" else "spill"))
    try:
        _wait_for(proc, ready)
        proc.send_signal(signal.SIGKILL)  # cannot be handled: the scratch folder stays
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    (left,) = scratch_left(tmp_path)
    old = time.time() - safefs.STALE_AFTER - 60
    os.utime(tmp_path / left, (old, old))  # as if killed a while ago
    proc = subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, text=True, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not scratch_left(tmp_path) and _temp_empty(tmp_path)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


STALE_CASES = [
    # id, removed?
    ("dead_marked_old", True),
    ("dead_marked_fresh", False),  # maybe a run that was killed a moment ago on a clock-skewed share: wait
    ("alive", False),
    ("wrong_token", False),
    ("no_marker", False),  # a user's folder that happens to look like a scratch name
    ("other_host", False),
    ("symlink", False),
    ("old_kind_owned_output", True),  # an interrupted replacement: the earlier output, moved aside
    ("old_kind_foreign", False),
    ("dead_marked_ray", True),  # any kind of scratch folder (a local Ray cluster's, a Keras export's…)
    ("dead_marked_keras", True),
]


@pytest.mark.parametrize("case, removed", STALE_CASES, ids=[c[0] for c in STALE_CASES])
def test_clean_stale_removes_only_dead_runs_scratch(case, removed, tmp_path):
    from onnxviz.report.output import _owned, staged_dir

    pid = os.getppid() if case == "alive" else _dead_pid()
    token = "0123456789abcdef"
    kind = "old" if case.startswith("old_kind") else {"dead_marked_ray": "ray", "dead_marked_keras": "keras"}.get(case, "stage")
    path = tmp_path / f".out.onnxviz-{kind}-{pid}-{token}"
    if kind == "old":
        with staged_dir(path) as tmp:
            (tmp / "a.png").write_bytes(b"png")
        if case == "old_kind_foreign":
            (path / "notes.txt").write_text("mine")
    elif case == "symlink":
        (tmp_path / "elsewhere").mkdir()
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.mkdir()
        (path / "000_x.png").write_bytes(b"png")
        if case != "no_marker":
            marker = {"pid": pid, "host": socket.gethostname(), "token": token, "kind": kind}
            if case == "wrong_token":
                marker["token"] = "fedcba9876543210"
            if case == "other_host":
                marker["host"] = "some-other-machine"
            (path / safefs.SCRATCH_MARKER).write_text(json.dumps(marker))
    if case != "dead_marked_fresh":
        old = time.time() - safefs.STALE_AFTER - 60
        os.utime(path, (old, old), follow_symlinks=False)
    gone = safefs.clean_stale(tmp_path, owned=_owned)
    assert (gone == [path]) is removed and os.path.lexists(path) is not removed


def _handlers_installed(pid: int) -> bool:
    """Whether onnxviz's main() installed its SIGTERM handler yet (Linux: /proc's caught-signal mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see when main() started")
def test_a_signal_at_any_moment_is_one_line_or_a_normal_run(save, rgb_image, tmp_path):
    """From the first instant (the imports of numpy, onnx, onnxruntime, Pillow) to the exit."""
    path = save(models.conv_bn_relu())
    seen = []
    for k, delay in enumerate([0.0, 0.0, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5]):
        sig = signal.SIGINT if k % 2 == 0 else signal.SIGTERM
        proc = _start(["maps", path, rgb_image, "-o", tmp_path / f"o{k}"], _env(tmp_path))
        try:
            _wait_for(proc, lambda: _handlers_installed(proc.pid))
            time.sleep(delay)
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
        seen.append((delay, sig, proc.returncode, stdout, stderr))
    for delay, sig, code, stdout, stderr in seen:
        if code == 0:  # finished before the signal, or the signal came while it was exiting
            assert stderr == "" and "PNG files" in stdout, seen
        else:
            assert (code, stderr) == (128 + sig, INTERRUPTED), seen
    assert sum(code != 0 for _, _, code, _, _ in seen) >= 4, seen
    assert not scratch_left(tmp_path) and _temp_empty(tmp_path)


def test_an_interrupt_disguised_as_import_error_is_still_an_interrupt(save, rgb_image, tmp_path):
    """onnxruntime's import can turn a KeyboardInterrupt into ImportError ('onnxruntime is not installed')."""
    path = save(models.conv_bn_relu())
    code = (
        "import signal, sys\n"
        "sys.modules['onnxruntime'] = None  # its import fails with ImportError\n"
        "import onnxviz.interrupts as I\n"
        "real = I.install\n"
        "def install():\n"
        "    real()\n"
        "    I._State.received = signal.SIGINT  # as if Ctrl-C arrived during that import\n"
        "I.install = install\n"
        "from onnxviz.cli import main\n"
        f"sys.exit(main(['maps', {str(path)!r}, {str(rgb_image)!r}, '-o', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert (proc.returncode, proc.stderr) == (130, INTERRUPTED)


def test_the_cli_imports_nothing_heavy_before_its_handlers():
    code = "import sys, onnxviz.cli; print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'PIL') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_a_closed_stdout_is_exit_141_without_a_message(tmp_path):
    n = 300  # a summary of ~160 KB: more than a pipe holds
    nodes = [helper.make_node("Conv", ["x" if i == 0 else f"c{i - 1}", f"w{i}"], [f"c{i}"], name=f"block{i}.conv") for i in range(n)]
    nodes.append(helper.make_node("Identity", [f"c{n - 1}"], ["y"]))
    import numpy as np

    inits = [onnx.numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), f"w{i}") for i in range(n)]
    path = tmp_path / "many.onnx"
    onnx.save_model(models.make(nodes, [models.image_input()], [models.out("y")], inits), path)
    proc = _start(["summary", "--json", path], _env(tmp_path))  # `onnxviz summary --json | head -1`
    assert proc.stdout.readline().strip() == "{"
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert (proc.wait(timeout=60), stderr) == (141, "")


_FULL_FS = r"""
import json, os, subprocess, sys
root, model, ext_model, image = sys.argv[1:5]
fs = os.path.join(root, "fs")
os.mkdir(fs)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", fs]).returncode:
    print(json.dumps({"skip": "cannot mount a tmpfs"})); sys.exit()

def onnxviz(*args, **env):
    p = subprocess.run([sys.executable, "-m", "onnxviz", *args], capture_output=True, text=True, env={**os.environ, **env})
    return [p.returncode, p.stderr]

def snapshot():
    found = {}
    for d, dirs, files in os.walk(fs):
        for f in dirs + files:
            p = os.path.join(d, f)
            found[os.path.relpath(p, fs)] = None if os.path.isdir(p) else open(p, "rb").read().hex()
    return found

def fill(free):  # leave `free` bytes
    with open(os.path.join(fs, "fill"), "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    size = os.path.getsize(os.path.join(fs, "fill"))
    os.truncate(os.path.join(fs, "fill"), max(size - free, 0))

results = {"first_maps": onnxviz("maps", model, image, "-o", os.path.join(fs, "out")),
           "first_graph": onnxviz("graph", model, "-o", os.path.join(fs, "g.dot"))}
os.mkdir(os.path.join(fs, "tmp"))
for free in (0, 4096, 16384):
    fill(free)
    runs = {"maps": ["maps", model, image, "-o", os.path.join(fs, "out")],
            "graph": ["graph", model, "-o", os.path.join(fs, "g.dot")],
            "expose": ["expose", ext_model, "-o", os.path.join(fs, "t.onnx")],
            "spill": ["maps", model, image, "-o", os.path.join(root, f"spilled{free}"), "--max-memory", "1K"]}
    for name, args in runs.items():
        if name == "spill" and not free:
            continue  # Python's tempfile needs a little room to accept TMPDIR at all
        before = snapshot()
        env = {"TMPDIR": os.path.join(fs, "tmp")} if name == "spill" else {}
        results[f"{name}{free}"] = onnxviz(*args, **env) + [snapshot() == before, os.path.exists(args[-1] if name != "spill" else args[-3])]
    os.unlink(os.path.join(fs, "fill"))
print(json.dumps(results))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("mount") is None, reason="needs unshare(1) and mount(8)")
def test_a_full_filesystem_is_exit_2_one_line_nothing_left_and_the_earlier_output_intact(save, rgb_image, tmp_path):
    model = save(models.conv_bn_relu())
    ext = tmp_path / "ext.onnx"
    onnx.save_model(models.conv_bn_relu(), ext, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    # A private mount namespace (as root, or as a user with user namespaces): the tmpfs vanishes with it.
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    proc = subprocess.run([*prefix, sys.executable, "-c", _FULL_FS, str(tmp_path), str(model), str(ext), str(rgb_image)],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()[:200]}")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in results:
        pytest.skip(results["skip"])
    assert results.pop("first_maps")[0] == 0 and results.pop("first_graph")[0] == 0
    assert len(results) == 11
    for name, (code, stderr, unchanged, exists) in results.items():
        if code == 0 and name.endswith("16384"):  # 16 KiB were enough for this one: a complete output
            assert stderr == "" and exists, name
            continue
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "no space left on device" in lines[0], (name, code, stderr)
        assert unchanged, name  # nothing left behind, the earlier out/ and g.dot as they were
    assert not scratch_left(tmp_path) and _temp_empty(tmp_path)
