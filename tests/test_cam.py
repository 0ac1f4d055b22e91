"""CAMs on ONNX models: maps equal references written against torch (hooks, autograd) or computed
directly (one channel at a time), outputs and errors of ``onnxviz cam``, the report's CAM section."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from test_cli import assert_one_line_error, run  # noqa: E402

import onnxviz  # noqa: E402
from onnxviz.explain.cam import cam  # noqa: E402
from onnxviz.explain.cams.eigencam import principal_projection  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny(tiny_resnet_onnx):
    """The torch ResNet miniature (ending in a Softmax), its ONNX export and one fed input."""
    net, path = tiny_resnet_onnx
    x = np.random.default_rng(0).random((2, 3, *SIZE), dtype=np.float32)
    return net, path, x


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1])


def torch_layer_output(net, x: np.ndarray):
    """layer2[-1]'s output (pytorch-grad-cam's usual target) and the logits, by a forward hook."""
    grabbed = {}
    handle = net.layer2[-1].register_forward_hook(lambda m, i, o: grabbed.setdefault("a", o))
    net.softmax = False
    try:
        logits = net(torch.from_numpy(x))
    finally:
        net.softmax = True
        handle.remove()
    return grabbed["a"], logits


def test_default_layer_is_the_block_output_before_pooling(tiny):
    net, path, x = tiny
    result = cam(path, x, method="eigencam")
    assert result.layer.default and result.layer.through == ("Add", "Relu")
    assert result.layer.name.startswith("layer2.1.conv3")
    acts, logits = torch_layer_output(net, x)
    assert result.maps.shape == (2, *acts.shape[2:])
    assert result.score.squash == "Softmax"  # the logits before the final softmax are scored
    np.testing.assert_allclose(result.class_scores, logits.detach().numpy().max(axis=1), rtol=1e-4, atol=1e-5)
    assert result.classes == logits.argmax(1).tolist()
    assert result.heatmaps.shape == (2, *SIZE) and 0 <= result.heatmaps.min() and result.heatmaps.max() <= 1


def test_layer_by_module_path_framework_layer_or_tensor(tiny):
    _, path, x = tiny
    default = cam(path, x[:1], method="eigencam")
    block = cam(path, x[:1], method="eigencam", layer="layer2.1")  # the block, as model.layer2[-1]
    assert block.layer.tensor == default.layer.tensor and block.layer.name.startswith("layer2.1.relu")
    added = cam(path, x[:1], method="eigencam", layer="layer2.1.add")  # a framework layer (the residual +)
    assert added.layer.tensor != default.layer.tensor and added.layer.name == "layer2.1.add"
    by_tensor = cam(path, x[:1], method="eigencam", layer=default.layer.tensor)
    np.testing.assert_array_equal(by_tensor.maps, default.maps)


def test_eigencam_equals_torch_reference(tiny):
    net, path, x = tiny
    acts, _ = torch_layer_output(net, x)
    a = acts.detach().numpy()
    ref = []
    for img in a:  # pytorch-grad-cam's get_2d_projection, sign fixed towards the channel sum
        m = img.reshape(img.shape[0], -1).T
        m = m - m.mean(axis=0)
        vt = torch.linalg.svd(torch.from_numpy(m), full_matrices=False).Vh.numpy()
        p = m @ vt[0]
        s = img.sum(axis=0).ravel()
        ref.append(np.maximum((p if p @ (s - s.mean()) >= 0 else -p).reshape(img.shape[1:]), 0))
    result = cam(path, x, method="eigencam")
    for k in range(2):
        assert corr(result.maps[k], ref[k]) >= 0.99
        np.testing.assert_allclose(result.maps[k], ref[k], rtol=1e-3, atol=1e-4)


def test_principal_projection_sign_is_stable():
    rng = np.random.default_rng(1)
    acts = np.maximum(rng.normal(size=(1, 6, 5, 5)), 0).astype(np.float32)
    acts[0, :, 2, 2] += 5  # one strongly active place
    p = principal_projection(acts)[0]
    assert p[2, 2] == p.max()
    assert np.allclose(principal_projection(acts * 3)[0], 3 * p, rtol=1e-4, atol=1e-5)


def _plain_scores(path, feeds: np.ndarray, logits_name: str) -> np.ndarray:
    """The logits of the unmodified model, one input at a time (the slow, direct way)."""
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(logits_name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([logits_name], {"x": f[None]})[0] for f in feeds])


def test_scorecam_equals_direct_reference(tiny):
    _, path, x = tiny
    result = cam(path, x[:1], method="scorecam", top_k=None, batch_size=5)
    layer, score = result.layer, result.score
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(layer.tensor))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    acts = sess.run([layer.tensor], {"x": x[:1]})[0][0]
    c = result.classes[0]
    masked = []
    for k in range(acts.shape[0]):  # torch's UpsamplingBilinear2d (corners aligned), min-max, times the input
        up = torch.nn.functional.interpolate(torch.from_numpy(acts[k][None, None]), size=SIZE, mode="bilinear", align_corners=True)[0, 0].numpy()
        mask = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else np.zeros_like(up)
        masked.append(x[0] * mask)
    scores = _plain_scores(path, np.stack(masked), score.tensor)[:, c]
    w = np.exp(scores - scores.max())
    w /= w.sum()
    ref = np.maximum(np.einsum("c,chw->hw", w, acts), 0)
    np.testing.assert_allclose(result.maps[0], ref, rtol=1e-4, atol=1e-6)
    assert result.details["channels_scored"] == [acts.shape[0]]


def test_scorecam_top_k_scores_only_the_most_active_channels(tiny):
    _, path, x = tiny
    full = cam(path, x[:1], method="scorecam", top_k=None)
    top = cam(path, x[:1], method="scorecam", top_k=8)
    assert top.details["channels_scored"] == [8] and top.details["top_k"] == 8
    assert corr(top.maps[0], full.maps[0]) > 0.5


def _ablated_model(path, tensor: str) -> onnx.ModelProto:
    """The whole model with ``tensor`` multiplied by a per-channel mask input (the direct way)."""
    model = onnx.load(path)
    g = model.graph
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = tensor + "_masked"
    for i, out in enumerate(g.output):
        if out.name == tensor:
            g.output[i].name = tensor + "_masked"
    g.node.append(onnx.helper.make_node("Mul", [tensor, "channel_mask"], [tensor + "_masked"]))
    g.input.append(onnx.helper.make_tensor_value_info("channel_mask", onnx.TensorProto.FLOAT, [1, None, 1, 1]))
    return model


@pytest.mark.parametrize("layer", [None, "layer2.1.conv1"])  # the second needs the residual branch fed to the tail
def test_ablationcam_equals_direct_reference(tiny, layer):
    _, path, x = tiny
    result = cam(path, x[:1], method="ablationcam", layer=layer, batch_size=5)  # batches of 5, the last one shorter
    tensor, score, c = result.layer.tensor, result.score, result.classes[0]
    if layer is not None:
        assert len(result.details["tail_inputs"]) == 2  # the layer and the block's identity branch
    model = _ablated_model(path, tensor)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(score.tensor))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    acts = sess.run([tensor], {"x": x[:1], "channel_mask": np.ones((1, 1, 1, 1), np.float32)})[0][0]
    base = sess.run([score.tensor], {"x": x[:1], "channel_mask": np.ones((1, 1, 1, 1), np.float32)})[0][0, c]
    weights = []
    for k in range(acts.shape[0]):
        mask = np.ones((1, acts.shape[0], 1, 1), np.float32)
        mask[0, k] = 0
        weights.append((base - sess.run([score.tensor], {"x": x[:1], "channel_mask": mask})[0][0, c]) / base)
    ref = np.maximum(np.einsum("c,chw->hw", np.asarray(weights), acts), 0)
    np.testing.assert_allclose(result.maps[0], ref, rtol=1e-3, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    assert result.details["channels_ablated"] == acts.shape[0]


def test_cli_writes_overlays_maps_and_manifest(tiny, photo, tmp_path):
    _, path, _ = tiny
    out = tmp_path / "out"
    proc = run("cam", path, photo, photo, "-o", out, "--method", "eigencam", "--size", "64x64", "--cmap", "jet", "--target", "3")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "eigencam" and manifest["cmap"] == "jet" and manifest["layer"]["default"]
    assert "eigencam (the same for every class)" in proc.stdout and "of class" not in proc.stdout  # --target changes nothing
    assert len(manifest["images"]) == 2 and manifest["inputs"][0]["fed_shape"] == [1, 3, 64, 64]
    for entry in manifest["images"]:
        assert entry["class"] == 3 and entry["prediction"]["probability"] is not None
        assert np.load(out / entry["map"]).shape == tuple(entry["map_shape"])
        assert np.load(out / entry["map_input"]).shape == SIZE
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["files"] + ["manifest.json", ".onnxviz-output"])
    assert "predicted class" in proc.stdout
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {k}" for k in range(10)) + "\n")
    proc = run("cam", path, photo, "-o", out, "--method", "gradcam", "--size", "64x64", "--target", "3", "--labels-file", labels)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((out / "manifest.json").read_text())["images"][0]
    assert entry["class_name"] == "thing 3" and entry["prediction"]["name"] == f"thing {entry['prediction']['class']}"
    assert "(thing 3)" in proc.stdout
    labels.write_text("a\nb\n")
    assert_one_line_error(run("cam", path, photo, "-o", tmp_path / "o2", "--method", "eigencam", "--size", "64x64", "--labels-file", labels),
                          "the labels file has 2 class names, but the model scores 10 classes")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "no_such_layer"], "unknown layer 'no_such_layer'"),
        (["--layer", "linear"], "has no spatial output"),
        (["--target", "10"], "target class 10 is out of range: the model scores 10 classes (0-9)"),
        (["--target", "cat"], "expected a class index"),
        (["--method", "nope"], "invalid choice"),
        (["--cmap", "no-such-cmap"], "colormap"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tiny, photo, tmp_path, args, message):
    _, path, _ = tiny
    out = tmp_path / "o"
    proc = run("cam", path, photo, "-o", out, "--method", "eigencam", "--size", "64x64", *args) if "--method" not in args else \
        run("cam", path, photo, "-o", out, "--size", "64x64", *args)
    assert_one_line_error(proc, message)
    assert not out.exists()


def test_report_has_one_eigencam_by_default_and_none_on_request(tiny, photo, tmp_path):
    _, path, _ = tiny
    out = tmp_path / "rep"
    proc = run("report", path, photo, "-o", out, "--size", "64x64", "--no-graph", "--layers", "layer2.*")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["cams"]
    assert entry["method"] == "eigencam" and entry["images"][0]["overlay"] in (out / "index.html").read_text()
    assert all((out / f).is_file() for f in manifest["files"])
    proc = run("report", path, photo, "-o", out, "--size", "64x64", "--no-graph", "--layers", "layer2.*", "--cam", "none")
    assert proc.returncode == 0, proc.stderr
    assert "cams" not in json.loads((out / "manifest.json").read_text()) and 'id="cams"' not in (out / "index.html").read_text()


def test_api_accepts_a_loaded_model_and_reuses_its_sessions(tiny, photo):
    _, path, _ = tiny
    model = onnxviz.load(path)
    first = cam(model, [photo], method="eigencam", size=SIZE)
    again = cam(model, [photo], method="eigencam", size=SIZE)
    np.testing.assert_array_equal(first.maps, again.maps)
    assert first.overlay(0).to_array().shape == (*SIZE, 3)


def test_ablationcam_tail_with_a_batch_fixed_at_one(tmp_path):
    """A Reshape to a constant [1, -1] after the pooling: the tail runs one ablated copy at a time."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4, 5)).astype(np.float32), "f"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "s")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Reshape", ["g", "s"], ["flat"]),
             helper.make_node("MatMul", ["flat", "f"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    result = cam(path, x, method="ablationcam")
    sess = ort.InferenceSession(_ablated_model(path, "r").SerializeToString(), providers=["CPUExecutionProvider"])
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info("r"))
    acts = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["r"], {"x": x})[0][0]
    c = result.classes[0]
    base = sess.run(["y"], {"x": x, "channel_mask": np.ones((1, 4, 1, 1), np.float32)})[0][0, c]
    weights = []
    for k in range(4):
        mask = np.ones((1, 4, 1, 1), np.float32)
        mask[0, k] = 0
        weights.append((base - sess.run(["y"], {"x": x, "channel_mask": mask})[0][0, c]) / base)
    np.testing.assert_allclose(result.maps[0], np.maximum(np.einsum("c,chw->hw", np.asarray(weights), acts), 0), rtol=1e-4, atol=1e-5)
