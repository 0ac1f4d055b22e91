"""Memory: a run's needs are estimated from the inferred shapes before anything is allocated and
refused in one line (exit 2) above the bound; --max-memory bounds what onnxviz holds (input,
decoding, captured layers, rendering); rendering makes no full-size float copies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import models
import onnxviz
from fuzzing import check_outcome, run_cli
from onnxviz.run import memory


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has ``available`` bytes free (deterministic bounds)."""

    def set_available(available: int) -> None:
        monkeypatch.setattr(memory, "available_memory", lambda: available)

    set_available(8 << 30)
    return set_available


def _with_input_dims(dims) -> onnx.ModelProto:
    model = models.conv_bn_relu()
    d = model.graph.input[0].type.tensor_type.shape.dim
    for k, v in enumerate(dims):
        d[k].Clear()
        d[k].dim_value = v
    return model


def _pads(value: int) -> onnx.ModelProto:
    model = models.conv_bn_relu()
    for a in model.graph.node[0].attribute:
        if a.name == "pads":
            a.ints[:] = [value] * 4
    return model


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


CASES = {
    "declared 1x3x100000x100000": (lambda: _with_input_dims((1, 3, 100000, 100000)), "input 111.8 GiB"),
    "declared 1x3x20000x20000": (lambda: _with_input_dims((1, 3, 20000, 20000)), "input 4.5 GiB"),
    "pads=1048576": (lambda: _pads(1048576), "TiB of memory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["maps", "report", "expose-verify"])
def test_runs_that_cannot_fit_are_refused_before_allocating(case, command, machine, tmp_path, image):
    build, pattern = CASES[case]
    onnx.save(build(), tmp_path / "m.onnx")
    argv = {"maps": ["maps", tmp_path / "m.onnx", image, "-o", tmp_path / "o"],
            "report": ["report", tmp_path / "m.onnx", image, "-o", tmp_path / "o"],
            "expose-verify": ["expose", tmp_path / "m.onnx", "-o", tmp_path / "t.onnx", "--verify"]}[command]
    code, out, err = run_cli([str(a) for a in argv])
    assert code == 2 and not check_outcome(code, out, err), (code, err)
    assert "this run needs about" in err and pattern in err and "more than what this machine can spare" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "t.onnx").exists()


def test_models_that_are_not_run_still_work(machine, tmp_path):
    onnx.save(_pads(1048576), tmp_path / "m.onnx")
    for argv in (["summary", tmp_path / "m.onnx"], ["filters", tmp_path / "m.onnx", "-o", tmp_path / "f"],
                 ["graph", tmp_path / "m.onnx", "-o", tmp_path / "g.dot"], ["expose", tmp_path / "m.onnx", "-o", tmp_path / "t.onnx"]):
        code, out, err = run_cli([str(a) for a in argv])
        assert code == 0, err


def test_a_refused_run_stays_small(tmp_path, image):
    """The real process (no monkeypatching): a 1×3×100000×100000 input is refused with a peak RSS of
    what the interpreter and libraries take, not a MemoryError after trying."""
    onnx.save(_with_input_dims((1, 3, 100000, 100000)), tmp_path / "m.onnx")
    code = (
        "import resource, subprocess, sys;"
        f"p = subprocess.run([sys.executable, '-m', 'onnxviz', 'maps', {str(tmp_path / 'm.onnx')!r}, {str(image)!r}, '-o', {str(tmp_path / 'o')!r}],"
        " capture_output=True, text=True);"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, repr(p.stderr))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split(" ", 2)
    assert out[0] == "2", out
    assert int(out[1]) < 400_000, f"peak RSS {int(out[1]) // 1024} MiB"  # KiB
    assert "this run needs about" in out[2] and out[2].count("\\n") == 1


def _big_jpeg(path: Path, w: int, h: int) -> Path:
    small = (np.random.default_rng(0).random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(path, quality=85)
    return path


def test_max_memory_bounds_input_preparation_and_suggests_a_size(machine, tmp_path):
    """A big photo on a model with dynamic size (the issue's 12000² case, scaled down)."""
    photo = _big_jpeg(tmp_path / "big.jpg", 4000, 3000)
    onnx.save(models.conv_bn_relu(), tmp_path / "m.onnx")
    code, out, err = run_cli(["maps", str(tmp_path / "m.onnx"), str(photo), "-o", str(tmp_path / "o"), "--max-memory", "20M"])
    assert code == 2 and not check_outcome(code, out, err), err
    assert "more than --max-memory 20.0 MiB" in err and "input 137.3 MiB" in err
    size = re.search(r"--size (\d+x\d+) fits", err).group(1)
    code, out, err = run_cli(["maps", str(tmp_path / "m.onnx"), str(photo), "-o", str(tmp_path / "o"), "--max-memory", "20M", "--size", size])
    assert code == 0, err
    fed = json.loads((tmp_path / "o" / "manifest.json").read_text())["inputs"][0]["fed_shape"]
    assert fed[2:] == [int(v) for v in size.split("x")]


def test_default_bound_suggests_streaming_when_that_fits(machine, tmp_path):
    model = onnxviz.load(models.conv_kinds())
    x = np.zeros((4, 3, 256, 256), np.float32)
    estimate = memory.check_run(model, {"x": x.shape}, max_memory="64G")
    machine(int(estimate.total(None) / memory.DEFAULT_FRACTION) - (1 << 20))  # one pass no longer fits, streaming does
    assert estimate.total(estimate.largest_tap) < estimate.total(None)
    with pytest.raises(onnxviz.InputError, match="pass --max-memory SIZE .* stream layers to disk"):
        model.capture(x)
    capped = model.capture(x, max_memory=estimate.largest_tap)
    assert capped.plan.passes > 1


def test_max_memory_above_the_machine_raises_the_bound(machine):
    model = onnxviz.load(models.conv_bn_relu())
    machine(64 << 10)  # 64 KiB free: nothing runs by default
    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(onnxviz.InputError, match="more than what this machine can spare"):
        model.capture(x)
    assert model.capture(x, max_memory="1G").plan.passes == 1


def test_estimate_follows_shapes_and_liveness():
    model = onnxviz.load(models.conv_bn_relu(), tap="activation")
    small = memory.check_run(model, {"x": (1, 3, 32, 32)}, max_memory="1G")
    big = memory.check_run(model, {"x": (2, 3, 64, 64)}, max_memory="1G")
    assert big.input == 8 * small.input == 2 * 3 * 64 * 64 * 4
    # r1: 4×64×64 per image; r2 (3×3 stride 2, no padding): 6×31×31
    assert big.taps == 2 * 4 * (4 * 64 * 64 + 6 * 31 * 31) and small.taps == 4 * (4 * 32 * 32 + 6 * 15 * 15)
    assert big.largest_tap == 2 * 4 * 64 * 64 * 4
    assert big.peak_none <= big.peak_all and big.peak_all >= big.taps
    assert big.unknown == 0


def test_rendering_a_large_layer_makes_no_full_size_float_copy():
    maps = np.random.default_rng(0).standard_normal((1, 8, 2000, 2000)).astype(np.float32)  # 128 MB
    maps[0, 3, :10, :10] = np.nan
    for norm in ("channel", "layer", "signed"):
        tracemalloc.start()
        onnxviz.render(maps, norm=norm)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # uint8 levels (32 MB) + the grid (32 MB) + one float block (32 MB), not a float32 copy of
        # the whole layer (128 MB) on top
        assert peak < maps.nbytes, (norm, peak / 2**20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_memory_is_read_from_the_system():
    available = memory.available_memory()
    assert available is not None and 0 < available <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
