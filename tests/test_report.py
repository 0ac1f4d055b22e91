"""The HTML report (onnxviz/report.py), the summary table and graph, checked in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import models
import onnxviz
from onnxviz.demo import demo_image, demo_model
from test_cli import assert_one_line_error, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _need_browser():
    if CHROMIUM and CHROMEDRIVER:
        try:
            import selenium  # noqa: F401

            return
        except ImportError:
            pass
    if os.environ.get("CI"):
        raise AssertionError("CI must provide chromium, chromium-driver and selenium")
    pytest.skip("headless Chromium not available")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _open_and_check(driver, index: Path, screenshot: Path) -> int:
    """Load the page, bring every (lazy) image into view, check each is decoded; return the count."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(index.as_uri())
    count = driver.execute_script("return document.images.length")
    for k in range(count):
        driver.execute_script("document.images[arguments[0]].scrollIntoView()", k)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    )
    broken = driver.execute_script("return Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    assert broken == []
    severe = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert severe == [], severe
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(height, 8000))
    assert driver.save_screenshot(str(screenshot))
    return count


def test_report_opens_offline_with_every_image_displayed(browser, tmp_path):
    out = tmp_path / "report"
    proc = run("report", demo_model(), demo_image(), "-o", out, "--tap", "activation", "--verify", "--labels")
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    # summary, graph, inputs, and per layer: maps, overlay and filters
    assert 'id="summary"' in page and 'id="graph"' in page and "graph.svg" in page
    for k, layer in enumerate(manifest["layers"]):
        assert f'id="layer-{k}"' in page and layer["png"] in page and layer["overlays"][0] in page and layer["filters"]["png"] in page
    assert "weights include folded BatchNorm scale" in page
    # no network: every src/href is a local file or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(not re.match(r"^[a-z]+:", r) for r in refs), refs
    assert "<script" not in page
    shot = tmp_path / "report.png"
    n_images = _open_and_check(browser, out / "index.html", shot)
    cam_images = sum(len(c["images"]) for c in manifest["cams"])  # the default Eigen-CAM section
    assert cam_images == 1 and 'id="cams"' in page
    assert n_images == 1 + 1 + 3 * len(manifest["layers"]) + cam_images  # graph, input, maps + overlay + filters per layer, CAMs
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size[0] >= 1000 and len(set(img.convert("L").getdata())) > 50  # a real rendering, not a blank page


def test_report_escapes_hostile_names(browser, save, rgb_image, tmp_path):
    path = save(models.hostile_names())
    out = tmp_path / "r"
    proc = run("report", path, rgb_image, "-o", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert all("/" not in p.name and not p.name.startswith(".") for p in out.iterdir() if p.name != ".onnxviz-output")
    _open_and_check(browser, out / "index.html", tmp_path / "hostile.png")  # an alert would fail the page load


def test_report_several_images_and_errors(save, photo, rgb_image, tmp_path):
    out = tmp_path / "r"
    proc = run("report", save(models.conv_bn_relu()), photo, rgb_image, "-o", out, "--no-graph", "--norm", "layer", "--colorbar")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(layer["pngs"]) == 2 and len(layer["overlays"]) == 2 for layer in manifest["layers"])
    assert manifest["capture"]["passes"] == 1 and not manifest["capture"]["streamed_to_disk"]
    assert manifest["optimization"] == "extended"
    assert not (out / "graph.svg").exists()
    assert_one_line_error(run("report", save(models.conv_bn_relu()), photo, "-o", tmp_path / "x", "--alpha", "3"), "--alpha")
    assert_one_line_error(run("report", tmp_path / "missing.onnx", photo, "-o", tmp_path / "y"), "model file not found")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_summary_counts_like_the_seeds_resnet_extractor():
    torch = pytest.importorskip("torch")
    import torch_models
    from onnxviz.converters import convert

    conversion = convert(torch_models.build("resnet_style"), example_inputs=torch.randn(1, 3, 32, 32))
    summary = onnxviz.load(conversion.model).summary()
    c = summary["counts"]
    # x.mean((2, 3)) is global pooling (ReduceMean over H, W); layer1.0 has an identity shortcut, layer1.1 a downsample conv
    assert (c["conv"], c["linear"], c["downsample"], c["pooling"]) == (8, 1, 1, 1)
    assert (c["conv_main"], c["blocks"], c["stages"]) == (7, 2, 1)
    params = sum(p.numel() for p in torch_models.build("resnet_style").parameters())
    bn = sum(m.weight.numel() * 2 for m in torch_models.build("resnet_style").modules() if isinstance(m, torch.nn.BatchNorm2d))
    # BatchNorm folded into the convs: its scale and shift become conv weights/biases
    assert summary["onnx_params"] == params - bn + sum(m.out_channels for n, m in torch_models.build("resnet_style").named_modules()
                                                       if isinstance(m, torch.nn.Conv2d) and m.bias is None)
    table = {row["name"]: row for row in summary["table"]}  # one row per framework layer
    assert table["layer1.0.conv1"]["onnx_params"] == 8 * 8 * 9 + 8 and table["layer1.0.conv1"]["tapped"]
    assert table["layer1.0.conv1"]["kind"] == "conv" and table["fc"]["kind"] == "dense"
    from onnxviz.graph.summary import model_summary

    ops = model_summary(onnxviz.load(conversion.model), ops=True)  # the op-level table
    assert ops["table_level"] == "ops" and {row["name"]: row for row in ops["table"]}["layer1.0.conv1 (+bn1)"]["params"] == 8 * 8 * 9 + 8


def test_summary_text_table(save):
    proc = run("summary", save(models.conv_bn_relu()))
    assert "Total params:" in proc.stdout
    assert "Conv layers: 2 (2 + 0 downsample)   Linear layers: 0   Pooling layers: 1   Residual blocks: 0   Stages: 0" in proc.stdout


def test_graph_command(save, tmp_path):
    path = save(models.hostile_names())
    dot = tmp_path / "g.dot"
    assert run("graph", path, "-o", dot).returncode == 0
    text = dot.read_text()
    assert text.count("->") >= 3 and '\\"' not in text.replace('\\\\"', "")  # quotes escaped
    if shutil.which("dot"):
        svg = tmp_path / "g.svg"
        assert run("graph", path, "-o", svg).returncode == 0
        assert "<svg" in svg.read_text() and "<script>" not in svg.read_text()
        png = tmp_path / "g.png"
        assert run("graph", path, "-o", png).returncode == 0 and png.read_bytes().startswith(b"\x89PNG")
    assert_one_line_error(run("graph", path, "-o", tmp_path / "g.jpg"), "must end in .svg, .png or .dot")


def test_graph_without_graphviz_says_how_to_install(save, tmp_path, monkeypatch):
    from onnxviz.graph import INSTALL_HINT, to_svg

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(onnxviz.OnnxvizError, match="apt-get install graphviz"):
        to_svg(onnxviz.load(models.conv_bn_relu()))
    assert "graphviz" in INSTALL_HINT


def test_progress_bar_only_on_a_terminal():
    from onnxviz.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        with Progress(4, "layers", stream=stream) as bar:
            for _ in range(4):
                bar.update()
    assert "4/4 layers" in tty.getvalue() and tty.getvalue().endswith("\n")
    assert pipe.getvalue() == ""
