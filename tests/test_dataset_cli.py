"""`onnxviz dataset` on the command line: the output folder, its HTML in headless Chromium,
resuming after an interruption, `dataset compare`, `dataset sample`, and bad input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import models
from onnxviz.cli import main
from onnxviz.datasets import DatasetStats
from onnxviz.demo import demo_model
from test_cli import assert_one_line_error, run


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ds") / "out"
    proc = run("dataset", demo_model(), photos, "-o", out, "--size", "40x40", "--batch", "8", "--top-k", "4", "--max-channels", "6")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_output_folder_manifest_and_files(folder_run, photos):
    out, proc = folder_run
    assert "40 images × 3 layers" in proc.stdout and "images/s" in proc.stdout
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["kind"] == "onnxviz-dataset" and manifest["images"] == {"count": 40, "processed": 40, "skipped": 0, "list": "images.txt"}
    assert manifest["run"]["runner"] == "local" and manifest["run"]["reduce"] == "numpy" and manifest["run"]["images_per_second"] > 0
    assert set(manifest["merge"]) == {"moments", "extrema_counts", "histogram", "top_k"} and manifest["histogram"]["bins"] == 262
    assert manifest["input"]["size"] == [40, 40] and manifest["settings"]["top_k"] == 4
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name not in ("dataset.json", ".onnxviz-output"))
    assert len((out / "images.txt").read_text().splitlines()) == 40
    for entry in manifest["layers"]:
        assert entry["receptive_field"]["exact"] and entry["channels_shown"] == list(range(min(6, entry["channels"])))
        with np.load(out / entry["stats"]) as z:
            assert z["hist"].shape == (entry["channels"], 262) and z["top_image"].shape == (entry["channels"], 4)
            assert z["top_location"].shape == (entry["channels"], 4, 2) and z["dead"].dtype == bool
        with Image.open(out / entry["topk_png"]) as img:
            assert img.width >= 4 * 64 and img.height >= len(entry["channels_shown"]) * 64
    stats = DatasetStats.load(out)
    assert stats.count == 40 and stats.top("conv3", 0)[0]["path"].startswith(str(photos))


def _need_browser():
    from test_report import _need_browser as need

    need()


def test_html_opens_offline_and_sorts(folder_run, tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from test_report import CHROMEDRIVER, CHROMIUM, _open_and_check

    out, _ = folder_run
    page = (out / "index.html").read_text()
    assert page.count("<section id=\"layer-") == 3 and "dead</b>" in page and "000_conv1.topk.png" in page
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        assert _open_and_check(driver, out / "index.html", tmp_path / "index.png") == 3
        _open_and_check(driver, out / "001_conv2.html", tmp_path / "layer.png")
        column = 4  # max
        values = lambda: driver.execute_script(  # noqa: E731
            "return Array.from(document.querySelectorAll('table.sortable tbody tr')).map(r => parseFloat(r.cells[arguments[0]].dataset.v))", column)
        assert values() != sorted(values(), reverse=True)  # in channel order before any click
        driver.execute_script("document.querySelectorAll('table.sortable th')[arguments[0]].click()", column)
        assert values() == sorted(values(), reverse=True)
        driver.execute_script("document.querySelectorAll('table.sortable th')[arguments[0]].click()", column)
        assert values() == sorted(values())
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
        # the same section inside `onnxviz report --dataset DIR`
        report = tmp_path / "report"
        proc = run("report", demo_model(), photo_of(out), "-o", report, "--size", "40x40", "--no-graph", "--dataset", out)
        assert proc.returncode == 0, proc.stderr
        manifest = json.loads((report / "manifest.json").read_text())
        assert manifest["sections"] == ["dataset"] and "dataset_000_conv1.topk.png" in manifest["files"]
        page = (report / "index.html").read_text()
        assert 'id="dataset"' in page and 'href="#dataset"' in page and page.count("<details><summary>channel table") == 3
        assert _open_and_check(driver, report / "index.html", tmp_path / "report.png") >= 3 + 3
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    finally:
        driver.quit()


def photo_of(out: Path) -> str:
    return (out / "images.txt").read_text().splitlines()[0]


def test_report_dataset_section_errors(folder_run, save, tmp_path):
    out, _ = folder_run
    image = photo_of(out)
    assert_one_line_error(run("report", demo_model(), image, "-o", tmp_path / "r", "--dataset", tmp_path), "no dataset.json")
    other = save(models.conv_bn_relu())
    assert_one_line_error(run("report", other, image, "-o", tmp_path / "r", "--dataset", out), "none of the report's layers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_hostile_names_are_escaped(save, photos, tmp_path):
    out = tmp_path / "h"
    proc = run("dataset", save(models.hostile_names()), photos, "-o", out, "--size", "16x16", "--max-channels", "2")
    assert proc.returncode == 0, proc.stderr
    pages = "".join(p.read_text() for p in out.glob("*.html"))
    assert "<script>alert" not in pages and "&lt;script&gt;alert(1)" in pages
    assert all("/" not in p.name and not p.name.startswith(".") for p in out.iterdir() if p.name != ".onnxviz-output")


def test_interrupted_run_resumes_from_its_checkpoint(photos, tmp_path, monkeypatch):
    from onnxviz.datasets import engine as engine_module

    out = tmp_path / "r"
    args = ["dataset", str(demo_model()), str(photos), "-o", str(out), "--size", "32x32", "--batch", "4", "--shard-size", "8"]
    real_run, calls = engine_module.Engine.run, []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 7:  # inside the fourth shard
            raise KeyboardInterrupt
        return real_run(self, *a, **k)

    monkeypatch.setattr(engine_module.Engine, "run", interrupted)
    assert main(args) == 130
    checkpoint = tmp_path / "r.onnxviz-resume"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["job.json", "part-000000.npz", "part-000001.npz", "part-000002.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in checkpoint.iterdir())  # the user's umask, not 0600
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r.onnxviz-resume"]
    monkeypatch.setattr(engine_module.Engine, "run", real_run)
    # another job's settings: refused, the checkpoint left alone
    assert_one_line_error(run(*args[:-4], "--batch", "4", "--top-k", "3"), "--restart")
    assert main(args) == 0
    resumed = DatasetStats.load(out)
    assert resumed.run["resumed_parts"] == 3 and resumed.run["images_processed"] == 40 - 24 and resumed.count == 40
    assert not checkpoint.exists()
    clean = DatasetStats.load(_fresh(tmp_path, photos))
    for name in clean:
        for field in ("top_image", "hist", "count", "positive", "max"):
            assert np.array_equal(getattr(clean[name], field), getattr(resumed[name], field))
        np.testing.assert_allclose(clean[name].std, resumed[name].std, rtol=1e-12)


def _fresh(tmp_path: Path, photos: Path) -> Path:
    out = tmp_path / "clean"
    assert main(["dataset", str(demo_model()), str(photos), "-o", str(out), "--size", "32x32"]) == 0
    return out


def test_restart_discards_a_checkpoint_and_foreign_folders_are_refused(photos, tmp_path):
    checkpoint = tmp_path / "o.onnxviz-resume"
    checkpoint.mkdir()
    (checkpoint / "notes.txt").write_text("mine")
    args = ("dataset", demo_model(), photos, "-o", tmp_path / "o", "--size", "24x24")
    assert_one_line_error(run(*args), "not an onnxviz checkpoint")
    assert (checkpoint / "notes.txt").read_text() == "mine"
    (checkpoint / "notes.txt").unlink()
    checkpoint.rmdir()
    checkpoint.mkdir()
    (checkpoint / "job.json").write_text(json.dumps({"onnxviz_dataset_checkpoint": 1, "job": {"other": 1}}))
    assert_one_line_error(run(*args), "--restart")
    assert run(*args, "--restart").returncode == 0 and not checkpoint.exists()


def test_unreadable_images_are_skipped_and_listed_or_stop_a_strict_run(photos, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(photos.glob("*.jpg"))[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "list.txt").write_text("broken.png\nmissing.jpg\n# a comment\n" + "".join(f"{p.name}\n" for p in folder.glob("*.jpg")))
    out = tmp_path / "o"
    proc = run("dataset", demo_model(), folder / "list.txt", "-o", out, "--size", "24x24")
    assert proc.returncode == 0, proc.stderr
    assert "2 image(s) skipped" in proc.stderr and "broken.png" in proc.stderr
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["images"]["processed"] == 5 and [s["image"].rsplit("/", 1)[-1] for s in manifest["skipped"]] == ["broken.png", "missing.jpg"]
    assert_one_line_error(run("dataset", demo_model(), folder, "-o", tmp_path / "s", "--size", "24x24", "--strict"), "broken.png")
    assert not (tmp_path / "s").exists()


def test_bad_input_is_one_line_exit_2(save, photos, tmp_path):
    model = demo_model()
    assert_one_line_error(run("dataset", model, photos, "-o", tmp_path / "a"), "dynamic size: pass --size")
    assert_one_line_error(run("dataset", model, photos), "-o DIR")
    assert_one_line_error(run("dataset", model, "-o", tmp_path / "a"), "needs a model and images")
    assert_one_line_error(run("dataset", model, tmp_path / "nothing*.png", "-o", tmp_path / "a", "--size", "8x8"), "no image files match")
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    assert_one_line_error(run("dataset", model, tmp_path / "empty.txt", "-o", tmp_path / "a", "--size", "8x8"), "empty.txt lists no images")
    assert_one_line_error(run("dataset", tmp_path / "missing.onnx", photos, "-o", tmp_path / "a", "--size", "8x8"), "model file not found")
    assert_one_line_error(run("dataset", save(models.two_inputs()), photos, "-o", tmp_path / "a", "--size", "8x8"), "one image input")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert_one_line_error(run("dataset", model, photos, "-o", foreign, "--size", "8x8"), "not written by onnxviz")
    assert_one_line_error(run("dataset", "compare", photos, photos), "no dataset.json")
    assert_one_line_error(run("dataset", model, photos, "-o", tmp_path / "a", "--size", "8x8", "--workers", "2"), "use it with --ray")
    assert_one_line_error(run("dataset", model, photos, "-o", tmp_path / "a", "--size", "8x8", "--ray", "x", "--workers", "0"), "positive integer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "foreign", "model.onnx"]  # nothing left behind


def test_compare_reports_per_channel_shifts(folder_run, photos, tmp_path):
    out, _ = folder_run
    flipped = tmp_path / "full"
    proc = run("dataset", demo_model(), photos / "*_full.jpg", "-o", flipped, "--size", "40x40")
    assert proc.returncode == 0, proc.stderr
    text = run("dataset", "compare", out, flipped, "--top", "3")
    assert text.returncode == 0, text.stderr
    assert "conv1" in text.stdout and "channels that moved most" in text.stdout
    data = json.loads(run("dataset", "compare", out, flipped, "--json").stdout)
    assert [layer["layer"] for layer in data["layers"]] == ["conv1", "conv2", "conv3"] and len(data["top_channels"]) == 10
    same = json.loads(run("dataset", "compare", out, out, "--json").stdout)
    assert all(layer["mean_abs_shift"] == 0 and layer["mean_hist_distance"] == 0 for layer in same["layers"])


def test_sample_writes_real_photographs(tmp_path):
    proc = run("dataset", "sample", "-o", tmp_path / "s", "--count", "5")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "s").glob("*.jpg"))
    assert len(names) == 5 and all(n.endswith(".jpg") for n in names)
    with Image.open(tmp_path / "s" / names[0]) as img:
        assert img.mode == "RGB" and max(img.size) <= 320
    assert os.path.exists(tmp_path / "s" / "manifest.json")
