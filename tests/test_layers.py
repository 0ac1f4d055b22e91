"""Layer grouping (onnxviz/graph/layers.py) and tap kinds (pool, dense, merge, layer, tensors) on
graphs written the way real exporters write them; every tap checked against onnx's ReferenceEvaluator."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import layer_models
from onnxviz.errors import LayerSelectionError, OnnxvizError
from onnxviz.graph.layers import CONV_KEY, KIND_KEY, LAYERS_KEY, PARAMS_KEY, group_layers, kind_of_class
from onnxviz.graph.loading import load_model
from onnxviz.graph.naming import FRAMEWORK_KEY, LAYER_KEY
from onnxviz.graph.taps import apply_plan, parse_tap, plan_taps


def _layers(model):
    return [(layer.name, layer.kind) for layer in group_layers(load_model(model).proto)]


def test_torchscript_names_modules_and_function_calls():
    assert _layers(layer_models.torchscript_net()) == [
        ("conv1", "conv"), ("relu", "activation"), ("layer1.0.conv1", "conv"), ("layer1.0.relu", "activation"),
        ("layer1.0.conv2", "conv"), ("layer1.0.add", "merge"), ("layer1.0.relu_1", "activation"), ("pool", "pool"),
        ("flatten", "reshape"), ("fc", "dense"),
    ]  # fmt: skip


def test_dynamo_scopes_a_module_called_twice_and_global_mean_pooling():
    graph = group_layers(load_model(layer_models.dynamo_net()).proto)
    assert [(layer.name, layer.kind) for layer in graph] == [
        ("conv1", "conv"), ("relu", "activation"), ("layer1.0.conv1", "conv"), ("layer1.0.relu", "activation"),
        ("layer1.0.conv2", "conv"), ("layer1.0.add", "merge"), ("layer1.0.relu:2", "activation"), ("reducemean", "pool"),
        ("fc", "dense"),
    ]  # fmt: skip
    assert graph["layer1.0.add"].functional and not graph["layer1.0.relu:2"].functional
    assert graph["layer1.0.add"].inputs == ("conv2d_2", "relu")
    # the conv whose BatchNorm the exporter folded in is named by its weight, not the BN's scope
    assert graph["layer1.0.conv1"].nodes == ("node_Conv_3",)
    assert graph["fc"].params == 25 and graph.onnx_params == 4 * 27 + 4 + 2 * 144 + 25


def test_tf2onnx_scopes_bias_add_renamed_conv_and_flatten_plumbing():
    graph = group_layers(load_model(layer_models.tf2onnx_net()).proto)
    assert [(layer.name, layer.kind) for layer in graph] == [
        ("conv2d", "conv"), ("leaky_re_lu", "activation"), ("max_pooling2d", "pool"), ("conv2d_1", "conv"),
        ("flatten", "reshape"), ("dense", "dense"), ("dense_1", "dense"), ("activation", "activation"),
    ]  # fmt: skip
    conv = graph["conv2d"]
    assert conv.ops == ("Conv", "Add") and conv.conv_output == conv.output == "m_1/conv2d_1/BiasAdd:0" and conv.params == 112
    assert graph["conv2d_1"].nodes == ("Conv__12",)  # renamed by tf2onnx: found through its weights' scope
    assert graph["flatten"].ops == ("Transpose", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape")
    assert graph["flatten"].inputs == ("Conv__12:0",) and graph["flatten"].output == "m_1/flatten_1/Reshape:0"
    assert graph["dense"].ops == ("MatMul", "Add", "Relu") and graph["dense"].output == "m_1/dense_1/Relu:0"
    assert graph.layer_of_node("Shape__21") is graph["flatten"]
    assert all(layer.source == "scopes" for layer in graph)


def test_structure_groups_conv_bias_activation_and_constant_weights():
    graph = group_layers(load_model(layer_models.paddle_net()).proto)
    assert [(layer.name, layer.kind) for layer in graph] == [
        ("Conv.0", "conv"), ("MaxPool.0", "pool"), ("Conv.1", "conv"), ("Add.1", "merge"), ("ReduceMean.0", "pool"),
        ("MatMul.0", "dense"),
    ]  # fmt: skip
    conv = graph["Conv.0"]
    assert [op for op in conv.ops if op != "Constant"] == ["Conv", "Reshape", "Add", "Identity", "Relu"]
    assert conv.conv_output == "add.0" and conv.output == "relu.0"
    assert conv.params == 4 * 27 + 4  # Constant-node weights, the bias through its Reshape
    assert graph["MaxPool.0"].output == "pool.0.id"  # the Identity behind it joins the pool
    assert graph["MatMul.0"].ops[-2:] == ("MatMul", "Add") and graph["MatMul.0"].params == 25
    assert all(layer.name and layer.source == "structure" for layer in graph)


def test_converter_records_win_and_vanished_layers_are_listed():
    model = layer_models.torchscript_net()
    graph = group_layers(model)
    for node in model.graph.node:
        layer = graph.layer_of_node(node.name)
        for key, value in ((LAYER_KEY, layer.name.replace("relu_1", "relu:2")), (KIND_KEY, layer.kind)):
            prop = node.metadata_props.add()
            prop.key, prop.value = key, value
    records = [{"name": "conv1", "class": "torch.nn.modules.conv.Conv2d", "kind": "conv", "params": 112},
               {"name": "bn1", "class": "torch.nn.modules.batchnorm.BatchNorm2d", "kind": "norm", "params": 8, "note": "folded into conv1"},
               {"name": "relu", "class": "torch.nn.modules.activation.ReLU", "kind": "activation", "params": 0},
               {"name": "drop", "class": "torch.nn.modules.dropout.Dropout", "kind": "dropout", "params": 0},
               {"name": "zeropad", "class": "ZeroPadding2D", "params": 0}]  # fmt: skip
    for key, value in ((LAYERS_KEY, json.dumps(records)), (PARAMS_KEY, "1234"), (FRAMEWORK_KEY, "torch")):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    graph = group_layers(model)
    names = [layer.name for layer in graph]
    assert names[:5] == ["conv1", "bn1", "relu", "drop", "zeropad"] and "layer1.0.relu:2" in names
    assert graph["bn1"].vanished and graph["bn1"].output is None and graph["bn1"].note == "folded into conv1"
    assert graph["drop"].note.startswith("identity at inference") and graph["zeropad"].kind == "padding"
    assert graph["conv1"].framework_params == 112 and graph["conv1"].framework_class.endswith("Conv2d")
    assert graph["bn1"].shown_params == 8 and graph["fc"].shown_params == graph["fc"].params
    assert graph.framework == "torch" and graph.framework_params == 1234
    assert {layer.source for layer in graph} == {"converter", "framework"}
    assert [t.name for t in plan_taps(model, "layer").taps][:3] == ["conv1", "relu", "layer1.0.conv1"]


@pytest.mark.parametrize("cls, kind", [
    ("Conv2D", "conv"), ("SeparableConv2D", "conv"), ("torch.nn.modules.conv.ConvTranspose2d", "conv"), ("MaxPooling2D", "pool"),
    ("GlobalAveragePooling2D", "pool"), ("torch.nn.modules.pooling.AdaptiveAvgPool2d", "pool"), ("Dense", "dense"),
    ("torch.nn.modules.linear.Linear", "dense"), ("Add", "merge"), ("Concatenate", "merge"), ("BatchNormalization", "norm"),
    ("torch.nn.modules.batchnorm.BatchNorm2d", "norm"), ("Dropout", "dropout"), ("ZeroPadding2D", "padding"),
    ("Flatten", "reshape"), ("LeakyReLU", "activation"), ("Activation", "activation"), ("torch.nn.modules.activation.Hardswish", "activation"),
    ("UpSampling2D", "resize"), ("Lambda", "other"), ("torch.nn.modules.linear.Identity", "other"),
])  # fmt: skip
def test_kind_of_class(cls, kind):
    assert kind_of_class(cls) == kind


@pytest.mark.parametrize("builder", list(layer_models.ALL.values()), ids=list(layer_models.ALL))
def test_every_layer_tap_equals_the_reference_and_outputs_stay(builder):
    """--tap layer exposes every layer's output; each equals the reference evaluator's tensor."""
    model = builder()
    loaded = load_model(model)
    graph = group_layers(loaded.proto)
    plan = plan_taps(loaded.proto, "layer", layer_graph=graph)
    assert [t.name for t in plan.taps] == [layer.name for layer in graph if not layer.vanished]
    assert all(t.kind == graph[t.name].kind and t.layer == t.name for t in plan.taps)
    tapped = apply_plan(loaded.with_weights(), plan)
    onnx.checker.check_model(tapped)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = ReferenceEvaluator(model).run([t.tensor for t in plan.taps] + list(plan.model_outputs), {"x": x})
    got = dict(zip(plan.output_names, ReferenceEvaluator(tapped).run(None, {"x": x})))
    for tap, expected in zip(plan.taps, want):
        np.testing.assert_allclose(got[tap.tensor], expected, rtol=1e-6, atol=1e-6)
    for name, expected in zip(plan.model_outputs, want[len(plan.taps):]):
        np.testing.assert_array_equal(got[name], expected)


def test_tap_kinds_combine_in_graph_order():
    proto = load_model(layer_models.tf2onnx_net()).proto
    plan = plan_taps(proto, ("conv", "pool"))
    assert [(t.name, t.kind) for t in plan.taps] == [("conv2d", "conv"), ("max_pooling2d", "pool"), ("conv2d_1", "conv")]
    assert plan.mode == "conv,pool" and plan.kinds == ("conv", "pool")
    assert plan_taps(proto, "pool,dense").mode == "pool,dense"
    dense = plan_taps(proto, "dense").taps
    assert [(t.name, t.op, t.through_ops, t.shape) for t in dense] == [
        ("dense", "MatMul", ("Add", "Relu"), (None, 6) if dense[0].shape[0] is None else dense[0].shape), ("dense_1", "MatMul", (), dense[1].shape)]
    assert dense[0].tensor == "m_1/dense_1/Relu:0" and len(dense[0].shape) == 2


def test_conv_tap_includes_a_separate_bias_and_keeps_the_layer_name():
    plan = plan_taps(load_model(layer_models.tf2onnx_net()).proto, "conv")
    first, second = plan.taps
    assert first.tensor == "m_1/conv2d_1/BiasAdd:0" and first.through_ops == ("Add",) and first.conv_output == "m_1/conv2d_1/convolution:0"
    assert second.name == "conv2d_1" and second.node == "Conv__12"  # not "Conv__12": the Keras name
    paddle = plan_taps(load_model(layer_models.paddle_net()).proto, "conv")
    assert [t.tensor for t in paddle.taps] == ["add.0", "conv.1"]


def test_conv_tap_name_recorded_for_two_convs_in_one_layer():
    model = layer_models.torchscript_net()
    for node in model.graph.node:
        prop = node.metadata_props.add()
        prop.key, prop.value = LAYER_KEY, "block"
        if node.op_type == "Conv":
            prop = node.metadata_props.add()
            prop.key, prop.value = CONV_KEY, f"block.{node.name.split('/')[-2]}"
    assert [t.name for t in plan_taps(model).taps] == ["block.conv1", "block.conv1_2", "block.conv2"]
    assert [t.layer for t in plan_taps(model).taps] == ["block"] * 3


def test_tensors_by_name_and_layer_patterns_on_framework_names():
    proto = load_model(layer_models.dynamo_net()).proto
    plan = plan_taps(proto, "merge", tensors=["relu_1", "relu"])
    assert [(t.name, t.kind, t.layer) for t in plan.taps] == [("relu", "tensor", "relu"), ("relu_1", "tensor", "layer1.0.relu"), ("layer1.0.add", "merge", "layer1.0.add")]
    only = plan_taps(proto, None, tensors="add")
    assert only.mode == "tensor" and [t.name for t in only.taps] == ["add"]
    assert [t.name for t in plan_taps(proto, "layer", layers="layer1.0.*").taps] == [
        "layer1.0.conv1", "layer1.0.relu", "layer1.0.conv2", "layer1.0.add", "layer1.0.relu:2"]
    assert [t.name for t in plan_taps(proto, "conv", tensors=["conv2d"]).taps] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]  # tapped once
    with pytest.raises(LayerSelectionError, match="'nope' is not an output of any node"):
        plan_taps(proto, "conv", tensors=["nope"])
    with pytest.raises(LayerSelectionError, match="'x' is an input of the model"):
        plan_taps(proto, None, tensors=["x"])


@pytest.mark.parametrize("tap, message", [
    ("conv,activation", "conv and activation cannot be combined"),
    (["layer", "conv"], "conv and layer cannot be combined"),
    ("pooling", "unknown tap mode 'pooling'"),
    ("", "nothing to tap"),
])  # fmt: skip
def test_bad_tap_kinds(tap, message):
    with pytest.raises(OnnxvizError, match=message):
        plan_taps(load_model(layer_models.dynamo_net()).proto, tap)


def test_parse_tap():
    assert parse_tap("conv, pool") == ("conv", "pool") and parse_tap(["dense", "pool", "dense"]) == ("dense", "pool")


def test_no_layer_of_a_kind_is_an_error():
    import models

    with pytest.raises(OnnxvizError, match="model has no pooling layer to tap"):
        plan_taps(load_model(models.conv_kinds()).proto, "pool")
    with pytest.raises(OnnxvizError, match=r"model has no dense \(Gemm / MatMul with a constant weight\) layer to tap"):
        plan_taps(load_model(models.conv_kinds()).proto, "dense")
    with pytest.raises(LayerSelectionError, match="matches no tapped layer; layers are: pool"):
        plan_taps(load_model(layer_models.torchscript_net()).proto, "pool", layers="nope")


def test_cli_commands_take_tap_kinds_and_tensors(tmp_path, photo, save):
    from test_cli import assert_one_line_error, run

    path = save(layer_models.tf2onnx_net())
    out = tmp_path / "maps"
    proc = run("maps", path, photo, "-o", out, "--tap", "conv,pool", "--tap", "dense", "--tensor", "Transpose__20:0", "--verify")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tap"] == "conv,pool,dense" and manifest["verify"]["ok"]
    assert [(layer["name"], layer["kind"]) for layer in manifest["layers"]] == [
        ("conv2d", "conv"), ("max_pooling2d", "pool"), ("conv2d_1", "conv"), ("Transpose__20:0", "tensor"), ("dense", "dense"), ("dense_1", "dense")]
    assert manifest["layers"][4]["shape"] == [1, 6] and (out / manifest["layers"][4]["png"]).is_file()  # a 1-D output renders
    report = tmp_path / "report"
    proc = run("report", path, photo, "-o", report, "--tap", "layer", "--no-graph")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((report / "manifest.json").read_text())["layers"]) == 8
    proc = run("expose", path, "-o", tmp_path / "t.onnx", "--tap", "layer", "--verify")
    assert proc.returncode == 0 and "+ 7 taps" in proc.stdout, proc.stdout + proc.stderr  # the softmax output is reused
    summary = json.loads(run("summary", path, "--tap", "pool", "--tensor", "Shape__21:0", "--json").stdout)
    assert [(t["name"], t["kind"], t["layer"]) for t in summary["layers"]] == [("max_pooling2d", "pool", "max_pooling2d"), ("Shape__21:0", "tensor", "flatten")]
    proc = run("graph", path, "-o", tmp_path / "g.dot", "--tap", "dense")
    assert proc.returncode == 0 and "2 tapped layers" in proc.stdout
    bad = tmp_path / "bad"
    assert_one_line_error(run("maps", path, photo, "-o", bad, "--tap", "conv", "--tap", "activation"), "cannot be combined")
    assert_one_line_error(run("maps", path, photo, "-o", bad, "--tensor", "nope"), "'nope' is not an output of any node")
    assert not bad.exists()


@pytest.mark.parametrize(
    "name, size, conv_layers",
    [("PP-OCRv6_det_small.onnx", (320, 480), 85), ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", None, 53), ("PP-OCRv6_rec_small.onnx", None, 57)],
)
def test_third_party_models_get_named_layers_and_every_tap_keeps_the_outputs(name, size, conv_layers, photo):
    """PaddleOCR's models (no onnxviz metadata): every layer named, conv layers = Conv nodes, and
    tapping every layer's output leaves the model's own outputs as they were (rounding)."""
    from test_third_party import _models_dir

    import onnxviz

    model = onnxviz.load(_models_dir() / name, tap="layer", optimization="extended")
    graph = model.layer_graph
    names = [layer.name for layer in graph]
    assert all(names) and len(set(names)) == len(names) and graph.source == "structure"
    assert len(graph.of_kind("conv")) == conv_layers and len(graph.of_kind("pool")) > 0
    assert len(model.taps) == len(graph)  # every layer tapped
    cap = model.capture([photo], size=size, verify=True)
    assert cap.verify.ok and cap.verify.max_rel <= 1e-5, str(cap.verify)
    assert [t.tensor for t in onnxviz.load(_models_dir() / name).taps] == [layer.conv_output for layer in graph.of_kind("conv")]


def test_a_pattern_naming_another_kind_says_which_tap_to_use():
    proto = load_model(layer_models.tf2onnx_net()).proto
    with pytest.raises(LayerSelectionError, match=r"'max_pooling2d\*' matches no tapped layer \(it names pool layers: use --tap pool\)"):
        plan_taps(proto, "conv", layers="max_pooling2d*")
    with pytest.raises(LayerSelectionError, match=r"\(it names activation layers: use --tap layer\)"):
        plan_taps(proto, "dense", layers="leaky*")


def test_a_renamed_conv_without_scoped_weights_joins_the_layer_it_feeds():
    model = layer_models.tf2onnx_net()
    for node in model.graph.node:
        if node.name == "Conv__12":  # tf2onnx folded its weights too: no scope left on the node
            node.input[1] = "const_fold_opt__3"
            node.input[2] = "const_fold_opt__4"
    for init in model.graph.initializer:
        init.name = {"m_1/conv2d_1_2/convolution/ReadVariableOp:0": "const_fold_opt__3", "m_1/conv2d_1_2/Squeeze:0": "const_fold_opt__4"}.get(init.name, init.name)
    relu = onnx.helper.make_node("Relu", ["Conv__12:0"], ["m_1/conv2d_1_2/Relu:0"], name="m_1/conv2d_1_2/Relu")
    nodes = list(model.graph.node)
    at = [n.name for n in nodes].index("Conv__12") + 1
    for node in nodes[at:]:
        for k, name in enumerate(node.input):
            if name == "Conv__12:0":
                node.input[k] = "m_1/conv2d_1_2/Relu:0"
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + [relu] + nodes[at:])
    graph = group_layers(load_model(model).proto)
    assert graph["conv2d_1"].ops == ("Conv", "Relu") and [t.name for t in plan_taps(model).taps] == ["conv2d", "conv2d_1"]


def test_a_module_constant_stays_with_its_module():
    """TorchScript names a module's constants after it (/flatten/Constant): not a second call."""
    model = layer_models.torchscript_net()
    nodes = list(model.graph.node)
    at = [n.op_type for n in nodes].index("Flatten")
    shape = onnx.helper.make_node("Constant", [], ["/flatten/Constant_output_0"], name="/flatten/Constant",
                                  value=onnx.numpy_helper.from_array(np.array([0, -1], np.int64)))
    reshape = onnx.helper.make_node("Reshape", ["p", "/flatten/Constant_output_0"], ["f"], name="/flatten/Reshape")
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + [shape, reshape] + nodes[at + 1:])
    graph = group_layers(load_model(model).proto)
    assert graph["flatten"].ops == ("Constant", "Reshape") and graph["flatten"].kind == "reshape"
    assert "flatten:2" not in [layer.name for layer in graph]
