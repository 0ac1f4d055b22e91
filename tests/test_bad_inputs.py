"""Bad input, class by class: each case gets exit 0 with a documented fallback, or exit 2 with one
line on stderr; never a traceback, never an internal error, nothing left behind, inputs unchanged.

Classes: corrupt models and external data, hostile names (terminal, SVG, HTML), numerics (NaN/Inf
weights and outputs, constants), huge graphs, messages. Images and memory have their own files
(test_bad_images.py, test_memory.py); the seeded fuzz test is test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import fuzzing
import models
import onnxviz
from fuzzing import HOSTILE_NAMES, check_outcome, run_case, run_cli


def cli(*args) -> tuple[int, str, str]:
    """``onnxviz.cli.main`` in this process (fds captured): (code, stdout, stderr)."""
    return run_cli([str(a) for a in args])


def cli_process(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point, warnings left at Python's defaults (unlike test_cli.run)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "ONNXVIZ_DEBUG")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, text=True, env=environ, timeout=300)


def assert_clean(code: int, stdout: str, stderr: str, expect: int, pattern: str = "") -> None:
    assert code == expect, (code, stdout, stderr)
    assert not check_outcome(code, stdout, stderr), check_outcome(code, stdout, stderr)
    if expect == 2:
        assert pattern in stderr, stderr


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


# -- corrupt models and external data -------------------------------------------------------
def _serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def _opset(version: int) -> bytes:
    model = models.conv_bn_relu()
    model.opset_import[0].version = version
    return _serialized(model)


CORRUPT_MODELS = {
    "empty file": (lambda: b"", "is empty"),
    "random bytes": (lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "ONNX"),
    "text": (lambda: b"this is not a model\n" * 20, "not an ONNX file"),
    "truncated in half": (lambda: _serialized(models.conv_bn_relu())[:600], "truncated or corrupt"),
    "truncated to 10 bytes": (lambda: _serialized(models.conv_bn_relu())[:10], "ONNX"),
    "a PNG named .onnx": (lambda: Path(__file__).resolve().parents[1].joinpath("onnxviz", "data", "chelsea.png").read_bytes(), "not an ONNX file"),
    "a TensorProto, not a model": (lambda: numpy_helper.from_array(np.ones(8, np.float32), "t").SerializeToString(), "ONNX"),
    "opset newer than onnx knows": (lambda: _opset(99), "opset 99"),
    "no Conv": (lambda: _serialized(models.no_conv()), "Conv"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_MODELS))
def test_corrupt_models_are_one_line_in_every_command(case, tmp_path, image):
    make, pattern = CORRUPT_MODELS[case]
    path = tmp_path / "bad.onnx"
    path.write_bytes(make())
    before = path.read_bytes()
    for argv in (["summary", path], ["maps", path, image, "-o", tmp_path / "o"], ["filters", path, "-o", tmp_path / "o"],
                 ["report", path, image, "-o", tmp_path / "o"], ["graph", path, "-o", tmp_path / "g.svg"],
                 ["expose", path, "-o", tmp_path / "t.onnx"]):
        code, out, err = cli(*argv)
        assert_clean(code, out, err, expect=2, pattern=pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "in.png"]  # nothing written
    assert path.read_bytes() == before

def _with_external(tmp_path: Path, edit=None, data: bytes | None = None) -> Path:
    """conv_bn_relu with c2.w (6×4×3×3 float32, 864 bytes) in ``w.bin``; ``edit`` changes its entries."""
    model = models.conv_bn_relu()
    init = next(i for i in model.graph.initializer if i.name == "c2.w")
    raw = init.raw_data
    (tmp_path / "w.bin").write_bytes(raw if data is None else data)
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    entries = {"location": "w.bin", "offset": "0", "length": str(len(raw))}
    if edit:
        edit(entries)
    for key, value in entries.items():
        if value is not None:
            e = init.external_data.add()
            e.key, e.value = key, value
    path = tmp_path / "ext.onnx"
    onnx.save(model, path)
    return path


EXTERNAL_CASES = {
    "non-numeric offset": (lambda e: e.update(offset="abc"), None, "invalid external data offset 'abc'"),
    "float offset": (lambda e: e.update(offset="1e3"), None, "invalid external data offset '1e3'"),
    "negative offset": (lambda e: e.update(offset="-4"), None, "invalid external data offset '-4'"),
    "negative length": (lambda e: e.update(length="-1"), None, "invalid external data length '-1'"),
    "empty length": (lambda e: e.update(length=""), None, "invalid external data length ''"),
    "length not the dims": (lambda e: e.update(length="100"), None, "needs 864 bytes but its external data length says 100"),
    "file shorter than declared": (None, b"\0" * 500, "shorter than tensor 'c2.w' needs"),
    "offset past the end": (lambda e: e.update(offset="4096"), None, "shorter than tensor 'c2.w' needs"),
    "no location": (lambda e: e.update(location=None), None, "names no data file"),
    "absolute location": (lambda e: e.update(location="/etc/passwd"), None, "points outside the model's folder"),
    "missing file": (lambda e: e.update(location="nope.bin"), None, "is missing from"),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL_CASES))
@pytest.mark.parametrize("command", ["summary", "maps", "filters", "expose"])
def test_external_data_problems_are_one_line_in_every_command(case, command, tmp_path, image):
    edit, data, pattern = EXTERNAL_CASES[case]
    path = _with_external(tmp_path, edit, data)
    argv = {"summary": ["summary", path], "maps": ["maps", path, image, "-o", tmp_path / "out", "--size", "8x8"],
            "filters": ["filters", path, "-o", tmp_path / "out"], "expose": ["expose", path, "-o", tmp_path / "t.onnx"]}[command]
    assert_clean(*cli(*argv), expect=2, pattern=pattern)
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.onnx").exists()


def test_valid_external_data_still_loads(tmp_path, image):
    path = _with_external(tmp_path)
    assert_clean(*cli("filters", path, "-o", tmp_path / "f"), expect=0)
    assert_clean(*cli("maps", path, image, "-o", tmp_path / "m"), expect=0)


def _edit_init(model: onnx.ModelProto, name: str, fn) -> onnx.ModelProto:
    fn(next(i for i in model.graph.initializer if i.name == name))
    return model


INITIALIZER_CASES = {
    "bytes exceed the dims": (lambda i: setattr(i, "raw_data", i.raw_data + b"\0" * 8), "needs 432 bytes but holds 440"),
    "bytes short of the dims": (lambda i: setattr(i, "raw_data", i.raw_data[:100]), "needs 432 bytes but holds 100"),
    "invalid data type": (lambda i: setattr(i, "data_type", 99), "invalid data type (99)"),
    "undefined data type": (lambda i: setattr(i, "data_type", 0), "invalid data type (0)"),
    "negative dim": (lambda i: i.dims.__setitem__(0, -4), "negative dimension"),
    "huge dims": (lambda i: i.dims.__setitem__(0, 1 << 40), "but holds 432"),
}


@pytest.mark.parametrize("case", sorted(INITIALIZER_CASES))
@pytest.mark.parametrize("big", [False, True], ids=["inline", "skeleton"])
def test_initializer_that_does_not_fit_its_dims(case, big, tmp_path):
    fn, pattern = INITIALIZER_CASES[case]
    model = models.conv_bn_relu()
    name = "c1.w"
    if big:  # over the inline limit: the loader reads it through the skeleton (offset/length in the file)
        model.graph.initializer.append(numpy_helper.from_array(np.ones((27, 16), np.float32), "unused_big"))
        name = "unused_big"
        pattern = pattern.replace("432", "1,728").replace("440", "1,736")
    _edit_init(model, name, fn)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    for argv in (["summary", path], ["filters", path, "-o", tmp_path / "f"], ["graph", path, "-o", tmp_path / "g.dot"]):
        assert_clean(*cli(*argv), expect=2, pattern=pattern)


# -- hostile names ------------------------------------------------------------------------
def _hostile_model(names: list[str]) -> onnx.ModelProto:
    """conv_bn_relu with its node names, tensor names and producer replaced by ``names``."""
    model = models.conv_bn_relu()
    for k, node in enumerate(model.graph.node):
        node.name = names[k % len(names)] + f"#{k}"
    renames = {"c1": names[0] + "~t1", "r1": names[-1] + "~t2"}
    for node in model.graph.node:
        node.input[:] = [renames.get(v, v) for v in node.input]
        node.output[:] = [renames.get(v, v) for v in node.output]
    model.producer_name = names[0]
    model.graph.node[0].metadata_props.add(key="onnxviz.layer", value=names[1 % len(names)])
    model.ir_version = 10
    return model


NAME_SETS = {
    "osc52 clipboard": [HOSTILE_NAMES[0], HOSTILE_NAMES[1]],
    "csi colour": [HOSTILE_NAMES[2], "ok"],
    "bidi override": [HOSTILE_NAMES[3], "\u2066isolate\u2069"],
    "nul": [HOSTILE_NAMES[4], "x\x00"],
    "path-like": ["../../etc/passwd", "..\\..\\win"],
    "very long": ["L" * 5000, "M" * 300],
    "newlines": [HOSTILE_NAMES[8], "\u2028sep"],
    "c1 and del": [HOSTILE_NAMES[9], "\x85next"],
}


@pytest.mark.parametrize("case", sorted(NAME_SETS))
def test_hostile_names_never_reach_the_terminal_raw(case, tmp_path, image):
    path = tmp_path / "h.onnx"
    onnx.save(_hostile_model(NAME_SETS[case]), path)
    runs = [
        cli("summary", path), cli("summary", path, "--json"), cli("summary", path, "--layers", "nomatch"),
        cli("maps", path, image, "-o", tmp_path / "m", "--max-memory", "1K"),
        cli("filters", path, "-o", tmp_path / "f"), cli("graph", path, "-o", tmp_path / "g.svg"),
        cli("expose", path, "-o", tmp_path / "t.onnx"),
    ]
    for code, out, err in runs:
        assert not check_outcome(code, out, err), (check_outcome(code, out, err), out[-500:], err)
    code, out, err = runs[2]
    assert code == 2 and "matches no tapped layer" in err
    summary = json.loads(runs[1][1])  # --json stays valid JSON and keeps the names exactly
    assert summary["producer"].startswith(NAME_SETS[case][0][:20]) or NAME_SETS[case][0] == ""
    # the SVG is valid XML, whatever the names
    ET.parse(tmp_path / "g.svg")
    # every file written stays inside the output folders
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["h.onnx", "in.png", "m", "f", "g.svg", "t.onnx"])


@pytest.mark.parametrize("case", ["nul", "osc52 clipboard", "bidi override"])
def test_hostile_names_in_the_report_keep_it_valid(case, tmp_path, image):
    path = tmp_path / "h.onnx"
    onnx.save(_hostile_model(NAME_SETS[case]), path)
    code, out, err = cli("report", path, image, "-o", tmp_path / "r")
    assert_clean(code, out, err, expect=0)
    ET.parse(tmp_path / "r" / "graph.svg")
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert not any(ch in page for ch in "\x00\x1b\x07\u202e"), "control/bidi characters must be shown escaped in the report"


def test_escaping_keeps_ordinary_text():
    from onnxviz.common import printable

    assert printable("layer1.0.conv1 (+bn1) → ×·é 猫") == "layer1.0.conv1 (+bn1) → ×·é 猫"
    assert printable("a\x1b]52;c;x\x07b") == "a\\x1b]52;c;x\\x07b"
    assert printable("r\u202el \ud800") == "r\\u202el\\x20\\ud800".replace("\\x20", " ")
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"


# -- numerics -----------------------------------------------------------------------------
def _nan_weights(path: Path) -> Path:
    model = models.conv_bn_relu()

    def poison(init):
        w = numpy_helper.to_array(init).copy()
        w[0, 0, 0, 0], w[1, 0, 0, 0], w[1, 1, 0, 0] = np.nan, np.inf, -np.inf
        init.CopyFrom(numpy_helper.from_array(w, init.name))

    _edit_init(model, "c1.w", poison)
    onnx.save(model, path)
    return path


def test_nan_and_inf_weights_are_shown_with_counts(tmp_path, image):
    path = _nan_weights(tmp_path / "nan.onnx")
    assert_clean(*cli("filters", path, "-o", tmp_path / "f"), expect=0)
    layer = json.loads((tmp_path / "f" / "manifest.json").read_text())["layers"][0]
    assert layer["nan"] == 1 and layer["inf"] == 2 and layer["count"] == 108
    assert layer["min"] is not None and np.isfinite(layer["std"])
    with Image.open(tmp_path / "f" / layer["png"]) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert ((rgb == (255, 0, 255)).all(axis=-1)).any(), "non-finite weights are drawn magenta"
    assert_clean(*cli("report", path, image, "-o", tmp_path / "r"), expect=0)
    report = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert report["layers"][0]["filters"]["nan"] == 1
    assert "1 NaN, 2 Inf weights" in (tmp_path / "r" / "index.html").read_text(encoding="utf-8")


def test_all_weights_nan(tmp_path):
    model = _edit_init(models.conv_bn_relu(), "c1.w", lambda i: i.CopyFrom(numpy_helper.from_array(np.full((4, 3, 3, 3), np.nan, np.float32), "c1.w")))
    onnx.save(model, tmp_path / "m.onnx")
    assert_clean(*cli("filters", tmp_path / "m.onnx", "-o", tmp_path / "f"), expect=0)
    layer = json.loads((tmp_path / "f" / "manifest.json").read_text())["layers"][0]
    assert layer["min"] is None and layer["nan"] == 108


def test_verify_with_identical_infinities_is_a_difference_of_zero():
    from onnxviz.run.capture import compare_outputs

    a = np.array([1.0, np.inf, -np.inf, np.nan], np.float32)
    assert compare_outputs(["y"], [a], [a.copy()]).max_abs == 0.0
    assert compare_outputs(["y"], [a], [a.copy()]).ok
    b = a.copy()
    b[1] = 3.0
    assert compare_outputs(["y"], [a], [b]).max_abs == np.inf
    b = a.copy()
    b[3] = 3.0
    assert not compare_outputs(["y"], [a], [b]).ok


def test_verify_on_a_model_whose_outputs_are_infinite(tmp_path, image):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Div", ["c", "zero"], ["y"], name="div")]
    inits = [models.init("w", (2, 3, 3, 3)), numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
    onnx.save(models.make(nodes, [models.image_input()], [models.out("y")], inits), tmp_path / "inf.onnx")
    code, out, err = cli("maps", tmp_path / "inf.onnx", image, "-o", tmp_path / "m", "--verify")
    assert_clean(code, out, err, expect=0)
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["verify"]["max_abs_diff"] == 0.0
    code, out, err = cli("expose", tmp_path / "inf.onnx", "-o", tmp_path / "t.onnx", "--verify", "--size", "8x8")
    assert_clean(code, out, err, expect=0)


def _constant_conv() -> onnx.ModelProto:
    """A Conv over a 5×3×6×6 constant (first dimension not the batch) next to the input's Conv."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_x", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["k", "w2"], ["c2"], name="conv_const", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c2"], ["m2"], keepdims=1, axes=[0, 2, 3]),
        helper.make_node("Add", ["c1", "m2"], ["y"], name="add"),
    ]
    k = numpy_helper.from_array(np.random.default_rng(0).random((5, 3, 6, 6)).astype(np.float32), "k")
    return models.make(nodes, [models.image_input()], [models.out("y")], [models.init("w1", (4, 3, 3, 3)), models.init("w2", (4, 3, 3, 3)), k])


@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_conv_over_a_constant_is_rendered_once(n_images, tmp_path, image):
    """Its first dimension is not the batch: one image, whatever the number of inputs (was an IndexError)."""
    onnx.save(_constant_conv(), tmp_path / "c.onnx")
    images = [image] * n_images
    assert_clean(*cli("maps", tmp_path / "c.onnx", *images, "-o", tmp_path / "m"), expect=0)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    const = manifest["layers"][1]
    assert const["shape"][0] == 5 and const["pngs"] == ["001_conv_const.png"] and const["per_image"] is False
    assert len(manifest["layers"][0]["pngs"]) == n_images
    with Image.open(tmp_path / "m" / const["png"]) as img:
        assert img.size[0] > 0
    assert_clean(*cli("report", tmp_path / "c.onnx", *images, "-o", tmp_path / "r"), expect=0)
    assert_clean(*cli("filters", tmp_path / "c.onnx", "-o", tmp_path / "f"), expect=0)


def test_conv_over_a_constant_in_a_batch_one_model(tmp_path, image):
    model = _constant_conv()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, tmp_path / "c.onnx")
    assert_clean(*cli("maps", tmp_path / "c.onnx", image, image, "-o", tmp_path / "m"), expect=0)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["layers"][1]["shape"][0] == 5  # run once per image, kept once


def test_render_all_nan_channels_without_warnings():
    import warnings

    maps = np.random.default_rng(0).standard_normal((4, 6, 6)).astype(np.float32)
    maps[1] = np.nan
    maps[2] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for norm in ("channel", "layer", "zscore", "percentile", "signed"):
            img = onnxviz.render(maps, norm=norm)
            assert (img.index[1:7, 8:14] == 254).all()  # NaN tile drawn with the NaN colour


def test_all_nan_layer_with_zscore_on_the_command_line_prints_nothing_foreign(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sqrt", ["c"], ["s"], name="sqrt"),
             helper.make_node("Conv", ["s", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    onnx.save(models.make(nodes, [models.image_input()], [models.out("y")],
                          [numpy_helper.from_array(-np.ones((2, 3, 3, 3), np.float32), "w"), models.init("w2", (2, 2, 3, 3))]),
              tmp_path / "n.onnx")
    img = tmp_path / "i.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(img)
    for norm in ("zscore", "percentile"):
        proc = cli_process("maps", tmp_path / "n.onnx", img, "-o", tmp_path / f"o{norm}", "--norm", norm)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr


# -- huge graphs --------------------------------------------------------------------------
def _long_graph(n: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c0"], name="conv0", pads=[1, 1, 1, 1])]
    prev = "c0"
    for i in range(n):
        nodes.append(helper.make_node("Relu" if i % 2 else "Neg", [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
        if i % (n // 4) == n // 4 - 1:
            nodes.append(helper.make_node("Conv", [prev, "w2"], [f"cc{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
            prev = f"cc{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return models.make(nodes, [models.image_input()], [models.out("y")], [models.init("w", (4, 3, 3, 3)), models.init("w2", (4, 4, 3, 3))])


@pytest.mark.parametrize("nodes", [pytest.param(20000, marks=pytest.mark.slow), 4000])
def test_a_huge_graph_never_loses_the_report(nodes, tmp_path, image):
    """Past 2,500 nodes the drawing shows the tapped layers only (the issue's 20,000-node graph made
    Graphviz hit its time limit and the whole report fail)."""
    pytest.importorskip("shutil").which("dot") or pytest.skip("Graphviz not installed")
    onnx.save(_long_graph(nodes), tmp_path / "big.onnx")
    code, out, err = cli("report", tmp_path / "big.onnx", image, "-o", tmp_path / "r", "--size", "8x8")
    assert_clean(code, out, err, expect=0)
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "tapped layers only" in page
    ET.parse(tmp_path / "r" / "graph.svg")
    code, out, err = cli("graph", tmp_path / "big.onnx", "-o", tmp_path / "g.svg")
    assert_clean(code, out, err, expect=0)
    assert "tapped layers only" in out or "too many to lay out" in out
    assert "tapped layers only" in (tmp_path / "g.svg").read_text()


def test_graphviz_failure_or_timeout_becomes_a_note(tmp_path, image, monkeypatch):
    pytest.importorskip("shutil").which("dot") or pytest.skip("Graphviz not installed")
    from onnxviz.report import html

    onnx.save(models.conv_bn_relu(), tmp_path / "m.onnx")
    monkeypatch.setattr(html, "GRAPH_TIMEOUT", 1e-6)
    assert_clean(*cli("report", tmp_path / "m.onnx", image, "-o", tmp_path / "r"), expect=0)
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "graph not drawn: Graphviz took longer than" in page and not (tmp_path / "r" / "graph.svg").exists()


def test_overview_when_even_the_taps_are_too_many(tmp_path):
    from onnxviz.errors import OnnxvizError
    from onnxviz.graph import overview

    model = onnxviz.load(_long_graph(400))
    with pytest.raises(OnnxvizError, match="too large to draw"):
        overview.overview_dot(model, lambda *a: '"x"', max_nodes=3)
    dot = overview.overview_dot(model, lambda *a: '"x"', max_nodes=100)
    edges = [line.strip(" ;") for line in dot.splitlines() if "->" in line]
    assert edges == ["in0 -> t0", "t0 -> t1", "t1 -> t2", "t2 -> t3", "t3 -> t4", "t4 -> out0"]  # 5 taps in a chain


# -- the fuzz harness's own checks can fail ------------------------------------------------
def test_harness_flags_what_it_must(tmp_path):
    assert check_outcome(1, "", "onnxviz: internal error: boom")
    assert check_outcome(2, "", "warning line\nonnxviz: error: x")
    assert check_outcome(0, "", "/x.py:3: RuntimeWarning: y")
    assert check_outcome(0, "\x1b]0;t\x07", "")
    assert not check_outcome(2, "", "onnxviz: error: fine")
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    outcomes = run_case(tmp_path / "w", "c", models.conv_bn_relu().SerializeToString(), image, ["summary", "maps"])
    assert [o.code for o in outcomes] == [0, 0] and not any(o.problems for o in outcomes)
    assert fuzzing.mutate(models.conv_bn_relu().SerializeToString(), np.random.default_rng(0))[1]


# -- messages a new user meets ---------------------------------------------------------------
def test_factory_returning_something_else_names_what_it_returned(tmp_path, monkeypatch):
    (tmp_path / "fortytwo_factory.py").write_text("def build():\n    return 42\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("convert", "fortytwo_factory:build", "-o", tmp_path / "o.onnx")
    assert_clean(code, out, err, expect=2, pattern="the factory fortytwo_factory:build returned int 42, not a model")
    assert "file not found" not in err


def test_convert_without_torch_says_how_to_install_the_cpu_build(tmp_path):
    (tmp_path / "needs_torch.py").write_text("import torch\n\ndef build():\n    return torch.nn.Conv2d(3, 4, 3)\n")
    (tmp_path / "m.pt2").write_bytes(b"")
    script = "import sys; sys.modules['torch'] = None; from onnxviz.cli import main; raise SystemExit(main(sys.argv[1:]))"
    for args in (["needs_torch:build"], [str(tmp_path / "m.pt2"), "--input-shape", "1,3,8,8"]):
        proc = subprocess.run([sys.executable, "-c", script, "convert", *args, "-o", str(tmp_path / "o.onnx")],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install 'onnxviz[torch]'" in proc.stderr
        assert "No module named" not in proc.stderr


def test_a_scale_preset_that_does_not_fit_the_channels_names_the_preset(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    gray = onnxviz.load(_gray_model())
    with pytest.raises(onnxviz.InputError, match=r"--scale imagenet normalises 3 channels .* the input has 1 channel:"):
        gray.prepare([path], scale="imagenet")
    with pytest.raises(onnxviz.InputError, match=r"--mean has 2 values but the input has 1 channel$"):
        gray.prepare([path], mean=[1, 2])
    with pytest.raises(onnxviz.InputError, match="--std must be finite"):
        gray.prepare([path], std=[float("nan")])


def _gray_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    return models.make(nodes, [models.image_input(shape=("N", 1, "H", "W"))], [models.out("y")], [models.init("w", (2, 1, 3, 3))])


def test_counts_are_plural_only_when_they_should_be(tmp_path, image):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="only_conv", pads=[1, 1, 1, 1])]
    onnx.save(models.make(nodes, [models.image_input()], [models.out("y")], [models.init("w", (2, 3, 3, 3))]), tmp_path / "one.onnx")
    code, out, err = cli("maps", tmp_path / "one.onnx", image, "-o", tmp_path / "m")
    assert code == 0 and "1 layer × 1 image → 1 PNG file in" in out, out
    code, out, err = cli("filters", tmp_path / "one.onnx", "-o", tmp_path / "f")
    assert "filters of 1 layer → 1 PNG file" in out, out
    code, out, err = cli("graph", tmp_path / "one.onnx", "-o", tmp_path / "g.dot")
    assert "(1 tapped layer highlighted)" in out, out
    code, out, err = cli("expose", tmp_path / "one.onnx", "-o", tmp_path / "t.onnx")
    assert "1 model output + 0 taps" in out, out
    code, out, err = cli("summary", tmp_path / "one.onnx")
    assert "1 tapped layer (tap=conv)" in out and "1 node" in out, out
    assert not re.search(r"\b1 (layers|images|nodes|PNG files|taps|tapped layers)\b", out + err)


def test_write_report_as_documented(tmp_path, image):
    from onnxviz.report import write_report

    model = onnxviz.load(models.conv_bn_relu())
    capture = model.capture([image])
    manifest = write_report(model, capture, tmp_path / "report")  # as the README shows it
    assert manifest["model"] == "model" and (tmp_path / "report" / "index.html").is_file()
    assert manifest["inputs"][0]["image"] == str(image)
    from_array = model.capture(np.zeros((2, 3, 8, 8), np.float32))
    manifest = write_report(model, from_array, tmp_path / "report2", model_name="m.onnx")
    assert len(manifest["inputs"]) == 2 and manifest["inputs"][0]["image"].startswith("fed array")
    assert (tmp_path / "report2" / "input_1.png").is_file()
