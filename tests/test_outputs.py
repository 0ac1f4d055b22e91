"""Output paths under attack (issue 9): ownership of -o folders, symlinks, missing parents, umask,
expose writing over its own input, and a model file replaced after load()."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import models
import onnxviz
from onnxviz.errors import ModelLoadError, OnnxvizError
from onnxviz.report.output import OWNER_MARKER, staged_dir


def run(*args, cwd=None, umask=None, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("ONNXVIZ_DEBUG", None)
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "onnxviz", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=300, preexec_fn=preexec)


def one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxviz: error: ") and pattern in lines[0], proc.stderr
    return lines[0]


def tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root``: files with content and mode, folders, links with their target."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes(), st.st_mtime_ns)
    return found


def scratch_left(root: Path) -> list[str]:
    """onnxviz's scratch folders (staging, replaced outputs, temporary files, spills) under ``root``."""
    found = set()
    for path in tree(root):
        parts = path.split("/")
        for k, part in enumerate(parts):
            if re.search(r"onnxviz-(stage|old|tmp|spill)-\d+-[0-9a-f]{16}$", part):
                found.add("/".join(parts[: k + 1]))
                break
    return sorted(found)


def write_output(target: Path, files: dict[str, bytes]) -> None:
    with staged_dir(target) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)


FIRST = {"000_conv.png": b"png-1", "manifest.json": b'{"onnxviz_version": "0.1.0", "files": ["000_conv.png"]}'}
SECOND = {"000_other.png": b"png-2", "manifest.json": b'{"onnxviz_version": "0.1.0", "files": ["000_other.png"]}'}


def _edit_marker(out: Path, change) -> None:
    marker = json.loads((out / OWNER_MARKER).read_text())
    change(marker)
    (out / OWNER_MARKER).write_text(json.dumps(marker))


def _prepare(case: str, root: Path) -> Path:
    """Set up ``case``; return the -o path to write to."""
    out = root / "out"
    if case not in ("missing", "empty", "file", "missing_parent", "parent_is_file", "user_folder_with_copied_manifest"):
        write_output(out, FIRST)
    if case == "empty":
        out.mkdir()
    elif case == "file":
        out.write_text("a user's file")
    elif case == "missing_parent":
        return root / "typo" / "out"
    elif case == "parent_is_file":
        (root / "f").write_text("x")
        return root / "f" / "out"
    elif case == "foreign_file":
        (out / "notes.txt").write_text("mine")
    elif case == "many_foreign":
        for k in range(8):
            (out / f"mine{k}.txt").write_text("mine")
    elif case == "user_folder_with_copied_manifest":  # a user's folder with an onnxviz manifest copied in
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
        (out / "manifest.json").write_text(json.dumps({"onnxviz_version": "0.1.0", "files": ["thesis.tex"]}))
    elif case == "copied_marker_and_manifest":  # both copied into a folder of the user's files
        other = root / "mine"
        other.mkdir()
        (other / "thesis.tex").write_text("years of work")
        shutil.copy2(out / OWNER_MARKER, other / OWNER_MARKER)
        shutil.copy2(out / "manifest.json", other / "manifest.json")
        return other
    elif case == "hand_edited_manifest":  # the manifest claims a user's file
        (out / "data.csv").write_text("1,2,3")
        (out / "manifest.json").write_text(json.dumps({"onnxviz_version": "0.1.0", "files": ["000_conv.png", "data.csv"]}))
    elif case == "hand_edited_marker":  # the marker claims a user's file, without its exact size and mtime
        (out / "data.csv").write_text("1,2,3")
        _edit_marker(out, lambda m: m["files"].update({"data.csv": [5, 0]}))
    elif case == "marker_bad_token":
        _edit_marker(out, lambda m: m.update(token="not a token"))
    elif case == "edited_png":  # same size, written again by the user
        (out / "000_conv.png").write_bytes(b"PNG-1")
        os.utime(out / "000_conv.png", ns=(0, 10**18))
    elif case == "user_subfolder":
        (out / "sub").mkdir()
        (out / "sub" / "keep.txt").write_text("mine")
    elif case == "folder_under_listed_name":  # a user folder where onnxviz had a file
        (out / "000_conv.png").unlink()
        (out / "000_conv.png").mkdir()
        (out / "000_conv.png" / "keep.txt").write_text("mine")
    elif case == "symlink_inside":  # a link named like onnxviz's file, pointing at a user's file
        (root / "precious.txt").write_text("mine")
        (out / "000_conv.png").unlink()
        (out / "000_conv.png").symlink_to(root / "precious.txt")
    elif case == "legacy_no_marker":  # written before onnxviz had the marker (or by someone else)
        (out / OWNER_MARKER).unlink()
    elif case in ("link_to_own", "link_to_foreign"):
        if case == "link_to_foreign":
            (out / "notes.txt").write_text("mine")
        (root / "link").symlink_to(out)
        return root / "link"
    elif case == "dangling_link":
        shutil.rmtree(out)
        (root / "link").symlink_to(root / "out")
        return root / "link"
    return out


OUTPUT_CASES = [
    # case, refusal pattern (None: replaced/written), named foreign entries
    ("missing", None, []),
    ("empty", None, []),
    ("own_output", None, []),
    ("link_to_own", None, []),
    ("dangling_link", None, []),
    ("file", "exists and is not a directory", []),
    ("missing_parent", "folder", ["does not exist", "only the last component"]),
    ("parent_is_file", "is not a folder", []),
    ("foreign_file", "not written by onnxviz", ["notes.txt"]),
    ("many_foreign", "not written by onnxviz", ["mine0.txt", "mine4.txt", "and 3 more"]),
    ("user_folder_with_copied_manifest", "not written by onnxviz", ["thesis.tex", "manifest.json"]),
    ("copied_marker_and_manifest", "not written by onnxviz", ["thesis.tex"]),
    ("hand_edited_manifest", "not written by onnxviz", ["data.csv", "manifest.json"]),
    ("hand_edited_marker", "not written by onnxviz", ["data.csv"]),
    ("marker_bad_token", "not written by onnxviz", ["000_conv.png", "manifest.json"]),
    ("edited_png", "not written by onnxviz", ["000_conv.png"]),
    ("user_subfolder", "not written by onnxviz", ["sub/"]),
    ("folder_under_listed_name", "not written by onnxviz", ["000_conv.png/"]),
    ("symlink_inside", "not written by onnxviz", ["000_conv.png (symlink)"]),
    ("legacy_no_marker", "not written by onnxviz", ["000_conv.png", "manifest.json"]),
    ("link_to_foreign", "not written by onnxviz", ["notes.txt"]),
]


@pytest.mark.parametrize("case, refusal, named", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_output_folder_is_replaced_only_when_onnxviz_owns_all_of_it(case, refusal, named, tmp_path):
    target = _prepare(case, tmp_path)
    before = tree(tmp_path)
    if refusal is None:
        write_output(target, SECOND)
        real = Path(os.path.realpath(target))
        assert sorted(p.name for p in real.iterdir()) == sorted([*SECOND, OWNER_MARKER])
        assert all((real / k).read_bytes() == v for k, v in SECOND.items())
        if target.name == "link":
            assert target.is_symlink()  # written through: the link stays, its target got the output
        assert not scratch_left(tmp_path)
        write_output(target, FIRST)  # and what it wrote is its own to replace again
        return
    with pytest.raises(OnnxvizError) as info:
        write_output(target, SECOND)
    message = str(info.value)
    assert "\n" not in message and refusal in message, message
    for name in named:
        assert name in message, message
    assert tree(tmp_path) == before  # nothing deleted, changed or left behind


def test_output_refusal_through_the_cli_names_the_files(save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    out = tmp_path / "o"
    assert run("maps", path, rgb_image, "-o", out).returncode == 0
    (out / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    line = one_line_error(run("filters", path, "-o", out), "not written by onnxviz")
    assert "notes.txt" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["maps", "filters", "report", "graph", "expose"])
def test_a_missing_parent_folder_is_an_error_for_every_command(command, save, rgb_image, tmp_path):
    path = save(models.conv_bn_relu())
    out = tmp_path / "typo" / {"graph": "g.dot", "expose": "t.onnx"}.get(command, "out")
    args = {"maps": [rgb_image], "report": [rgb_image, "--no-graph"]}.get(command, [])
    before = tree(tmp_path)
    one_line_error(run(command, path, *args, "-o", out), "does not exist")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command, name", [("graph", "g.dot"), ("expose", "t.onnx")])
def test_file_outputs_write_through_symlinks(command, name, save, tmp_path):
    path = save(models.conv_bn_relu())
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / name
    target.write_text("old")
    link = tmp_path / name
    link.symlink_to(target)
    proc = run(command, path, "-o", link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() != b"old"
    if command == "expose":
        assert [o.name for o in onnx.load(link).graph.output] == ["y", "c1", "c2"]


def test_graph_failure_leaves_no_temporary_file(save, tmp_path):
    path = save(models.conv_bn_relu())
    (tmp_path / "g.dot").mkdir()  # a folder in the way
    before = tree(tmp_path)
    one_line_error(run("graph", path, "-o", tmp_path / "g.dot"), "exists and is not a file")
    assert tree(tmp_path) == before


def test_everything_written_follows_the_umask(save, rgb_image, tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(models.conv_bn_relu(), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    runs = [
        ("maps", path, rgb_image, "-o", tmp_path / "maps"),
        ("filters", path, "-o", tmp_path / "filters"),
        ("graph", path, "-o", tmp_path / "g.dot"),
        ("expose", path, "-o", tmp_path / "t.onnx"),
    ]
    for args in runs:
        proc = run(*args, umask=0o027)
        assert proc.returncode == 0, proc.stderr
    written = [tmp_path / "maps", tmp_path / "filters", tmp_path / "g.dot", tmp_path / "t.onnx", tmp_path / "t.onnx.data"]
    written += [p for folder in written[:2] for p in folder.iterdir()]
    assert OWNER_MARKER in {p.name for p in written}
    for p in written:
        want = 0o750 if p.is_dir() else 0o640
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


# -- expose never writes over its input ----------------------------------------------------------


def _external_model(folder: Path, name: str = "m.onnx", data: str = "m.onnx.data") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    onnx.save_model(models.conv_bn_relu(), path, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=0)
    return path


EXPOSE_CASES = [
    # case, refused (pattern) or None
    ("same_path", "the input model "),
    ("output_is_the_data_file", "the input model's data file"),
    ("output_data_is_the_data_file", "the input model's data file"),  # -o out.onnx where the model reads out.onnx.data
    ("output_data_is_the_model", "the input model "),  # model named x.onnx.data, -o x.onnx
    ("symlink_to_model", "the input model "),
    ("hard_link_to_model", "the input model "),
    ("symlink_data_beside_output", "the input model's data file"),
    ("input_through_symlink", "the input model "),
    ("other_folder_same_name", None),  # A/m.onnx → B/m.onnx: fine
    ("unrelated_data_in_cwd", None),  # a stray m.onnx.data in the current folder must not matter
]


@pytest.mark.parametrize("case, refused", EXPOSE_CASES, ids=[c[0] for c in EXPOSE_CASES])
def test_expose_never_overwrites_its_input(case, refused, tmp_path, monkeypatch):
    a, b = tmp_path / "A", tmp_path / "B"
    b.mkdir()
    model = _external_model(a)
    out = b / "t.onnx"
    if case == "same_path":
        out = model
    elif case == "output_is_the_data_file":
        out = a / "m.onnx.data"
    elif case == "output_data_is_the_data_file":
        model = _external_model(a, "n.onnx", "out.onnx.data")
        out = a / "out.onnx"
    elif case == "output_data_is_the_model":
        model = _external_model(a, "x.onnx.data", "weights.bin")
        out = a / "x.onnx"
    elif case == "symlink_to_model":
        out = b / "l.onnx"
        out.symlink_to(model)
    elif case == "hard_link_to_model":
        out = b / "h.onnx"
        os.link(model, out)
    elif case == "symlink_data_beside_output":
        (b / "t.onnx.data").symlink_to(a / "m.onnx.data")
    elif case == "input_through_symlink":
        (b / "l.onnx").symlink_to(model)
        model, out = b / "l.onnx", a / "m.onnx"
    elif case == "other_folder_same_name":
        out = b / "m.onnx"
    elif case == "unrelated_data_in_cwd":
        (b / "m.onnx.data").write_text("a user's unrelated file")
        monkeypatch.chdir(b)
        out = tmp_path / "C" / "m.onnx"
        out.parent.mkdir()
    before_a = tree(a)
    loaded = onnxviz.load(model)
    if refused:
        with pytest.raises(OnnxvizError, match=refused):
            loaded.expose(out)
        assert tree(a) == before_a
        assert not scratch_left(tmp_path)
        return
    written = loaded.expose(out)
    assert tree(a) == before_a
    tapped = onnxviz.load(written)
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(tapped.capture(x).outputs["y"], loaded.capture(x).outputs["y"], rtol=1e-5, atol=1e-6)
    if case == "unrelated_data_in_cwd":
        assert (b / "m.onnx.data").read_text() == "a user's unrelated file"


# -- the model file replaced after load() ----------------------------------------------------------


def _big_model(seed: int) -> onnx.ModelProto:
    """Weights over 1 KiB, so that onnxviz reads them from the file later (not kept in memory)."""
    rng = np.random.default_rng(seed)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["y"], name="flatten")]
    return models.make(nodes, [models.image_input()], [models.out("y", 2)], [w1, w2])


def _replace(path: Path, how: str, seed: int) -> None:
    if how == "renamed_over":  # another model's file moved into place (new inode)
        tmp = path.with_name("new.tmp")
        if path.suffix == ".data":
            tmp.write_bytes(np.random.default_rng(seed).bytes(path.stat().st_size))  # same size, other weights
        else:
            onnx.save_model(_big_model(seed), tmp)
        os.replace(tmp, path)
    elif how == "rewritten_in_place":  # same inode, same size, new bytes
        time.sleep(0.03)  # file times tick at the kernel's clock resolution (a few ms): let it tick once
        data = bytearray(path.read_bytes())
        data[-200:] = bytes(255 - v for v in data[-200:])
        with open(path, "r+b") as fh:
            fh.write(bytes(data))
    elif how == "deleted":
        path.unlink()


@pytest.mark.parametrize("storage", ["in_model_file", "external_data"])
@pytest.mark.parametrize("how", ["renamed_over", "rewritten_in_place", "deleted"])
@pytest.mark.parametrize("step", ["capture", "filter_banks", "expose", "gradients", "cam"])
def test_a_model_file_changed_after_load_is_an_error_not_wrong_weights(storage, how, step, tmp_path):
    path = tmp_path / "m.onnx"
    if storage == "in_model_file":
        onnx.save_model(_big_model(1), path)
        changed = path
    else:
        onnx.save_model(_big_model(1), path, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
        changed = tmp_path / "m.onnx.data"
    model = onnxviz.load(path)
    assert model.loaded.weights_in_source or model.loaded.has_external_data
    _replace(changed, how, seed=2)
    x = np.ones((1, 3, 8, 8), np.float32)
    action = {"capture": lambda: model.capture(x), "filter_banks": lambda: onnxviz.filter_banks(model),
              "expose": lambda: model.expose(tmp_path / "t.onnx"), "gradients": lambda: onnxviz.gradients(model, x),
              "cam": lambda: onnxviz.cam(model, x, method="gradcam")}[step]
    with pytest.raises(ModelLoadError, match=f"{changed.name} .*changed on disk since it was loaded; load .*again"):
        action()
    assert not (tmp_path / "t.onnx").exists()


def test_an_unchanged_model_file_keeps_working_and_a_fresh_load_sees_the_new_one(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_big_model(1), path)
    model = onnxviz.load(path)
    x = np.ones((1, 3, 8, 8), np.float32)
    first = model.capture(x).outputs["y"].copy()
    os.utime(path.parent)  # unrelated changes around the file do not matter
    np.testing.assert_array_equal(model.capture(x).outputs["y"], first)
    _replace(path, "renamed_over", seed=2)
    fresh = onnxviz.load(path).capture(x).outputs["y"]
    assert np.isfinite(fresh).all() and not np.allclose(fresh, first)


def test_the_cli_reports_a_model_replaced_mid_run(tmp_path):
    """The check is also in the CLI's path: the replaced file is named in one line (exit 2)."""
    path = tmp_path / "m.onnx"
    onnx.save_model(_big_model(1), path)
    code = (
        "import os, sys, onnx, onnxviz.graph.loading as L\n"
        "real = L.load_model\n"
        "def load_then_replace(source):\n"
        "    loaded = real(source)\n"
        f"    os.replace({str(tmp_path / 'other.onnx')!r}, {str(path)!r})\n"
        "    return loaded\n"
        "import onnxviz.run.model as M\n"
        "M.load_model = load_then_replace\n"
        "from onnxviz.cli import main\n"
        f"sys.exit(main(['filters', {str(path)!r}, '-o', {str(tmp_path / 'f')!r}]))\n"
    )
    onnx.save_model(_big_model(3), tmp_path / "other.onnx")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = one_line_error(proc, "changed on disk since it was loaded")
    assert str(path) in line and not (tmp_path / "f").exists()

