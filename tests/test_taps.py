"""Tap planning and rewriting (onnxviz/taps.py), checked against onnx's ReferenceEvaluator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import models
from onnxviz.errors import LayerSelectionError, OnnxvizError
from onnxviz.graph.loading import load_model
from onnxviz.graph.taps import apply_plan, plan_taps


def _plan(model, **kw):
    return plan_taps(load_model(model).proto, **kw)


def test_conv_taps_raw_outputs_with_torch_names():
    plan = _plan(models.conv_bn_relu())
    assert [t.name for t in plan.taps] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert [t.tensor for t in plan.taps] == ["c1", "c2"]
    assert all(t.through == () for t in plan.taps)
    assert plan.taps[0].shape[:2] == ("N", 4) and len(plan.taps[0].shape) == 4


def test_activation_follows_bn_and_relu():
    plan = _plan(models.conv_bn_relu(), tap="activation")
    first, second = plan.taps
    assert first.tensor == "r1"
    assert first.through_ops == ("BatchNormalization", "Relu")
    assert first.through == ("/layer1/layer1.0/bn1/BatchNormalization", "/layer1/layer1.0/relu/Relu")
    assert second.tensor == "r2" and second.through_ops == ("Relu",)


def test_activation_follows_silu_gate_and_hardswish_with_scalar_rescale():
    plan = _plan(models.silu_chain(), tap="activation")
    a, b = plan.taps
    # x * sigmoid(x); the per-channel gain after the activation belongs to the next layer
    assert a.tensor == "m1"
    assert a.through_ops == ("Sigmoid", "Mul")
    # Add(+3) → Clip → Mul(x, ·) → Div(6): HardSwish written out; y is a graph output
    assert b.tensor == "y" and b.through_ops == ("Add", "Clip", "Mul", "Div")
    assert b.reused_output


def test_activation_passes_identity_and_dropout():
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="Conv.0", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "b"], ["a"], name="bias"),
        helper.make_node("Identity", ["a"], ["i"], name="id"),
        helper.make_node("Dropout", ["i"], ["d"], name="drop"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    import numpy as np
    from onnx import numpy_helper

    inits = [models.init("w", (4, 3, 3, 3)), numpy_helper.from_array(np.ones((4, 1, 1), np.float32), "b")]
    plan = _plan(models.make(nodes, [models.image_input()], [models.out("y")], inits), tap="activation")
    assert plan.taps[0].through_ops == ("Add", "Identity", "Dropout", "Relu") and plan.taps[0].tensor == "y"


def test_existing_output_is_reused_not_duplicated_and_outputs_stay_first():
    model = models.conv_kinds()
    plan = _plan(model)
    assert [t.op for t in plan.taps] == ["Conv", "Conv", "Conv", "ConvTranspose"]
    depthwise = plan.taps[2]
    assert depthwise.tensor == "c3" and depthwise.reused_output
    tapped = apply_plan(load_model(model).proto, plan)
    names = [o.name for o in tapped.graph.output]
    assert names[:2] == ["y", "c3"]  # the model's own outputs first, in order, unrenamed
    assert names.count("c3") == 1
    assert names[2:] == ["c1", "c2", "c4"]
    assert plan.output_names == names


def test_activation_stops_at_graph_output():
    # ConvTranspose → Relu → y(graph output): the activation tap is y itself, reused.
    plan = _plan(models.conv_kinds(), tap="activation")
    assert plan.taps[-1].tensor == "y" and plan.taps[-1].reused_output


def test_subgraph_conv_is_listed_as_skipped_with_reason():
    plan = _plan(models.conv_in_if())
    assert [t.node for t in plan.taps] == ["main_conv"]
    (skipped,) = plan.skipped
    assert skipped.node == "branch_conv" and "If 'gate'" in skipped.reason and "subgraph" in skipped.reason


def test_activation_does_not_walk_into_tensor_used_by_subgraph():
    plan = _plan(models.conv_in_if(), tap="activation")
    assert plan.taps[0].tensor == "c1"


def test_no_conv_is_an_error():
    with pytest.raises(OnnxvizError, match="no Conv-family node"):
        _plan(models.no_conv())


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("layer1.0.conv1", ["layer1.0.conv1"]),
        ("*conv2", ["layer1.0.conv2"]),
        ("re:conv[12]$", ["layer1.0.conv1", "layer1.0.conv2"]),
        (["*conv1", "*conv1", "re:conv1"], ["layer1.0.conv1"]),  # deduped
        ("c2", ["layer1.0.conv2"]),  # tensor names match too
    ],
)
def test_layer_selection(pattern, expected):
    assert [t.name for t in _plan(models.conv_bn_relu(), layers=pattern).taps] == expected


def test_unknown_layer_pattern_names_the_layers():
    with pytest.raises(LayerSelectionError, match=r"'nope' matches no tapped layer; layers are: layer1.0.conv1, layer1.0.conv2"):
        _plan(models.conv_bn_relu(), layers="nope")
    with pytest.raises(LayerSelectionError, match="bad layer regex"):
        _plan(models.conv_bn_relu(), layers="re:(")


def test_unknown_tap_mode():
    with pytest.raises(OnnxvizError, match="unknown tap mode"):
        _plan(models.conv_bn_relu(), tap="relu")


@pytest.mark.parametrize("builder", [models.conv_bn_relu, models.silu_chain, models.conv_kinds, models.conv1d, models.conv_in_if])
@pytest.mark.parametrize("mode", ["conv", "activation"])
def test_tapped_model_matches_reference_evaluator(builder, mode):
    """Every tap equals the reference evaluator's intermediate tensor; own outputs unchanged."""
    model = builder()
    loaded = load_model(model)
    plan = plan_taps(loaded.proto, tap=mode)
    tapped = apply_plan(loaded.with_weights(), plan)  # the loaded proto keeps large weights outside
    onnx.checker.check_model(tapped)
    x_shape = (2, 2, 9) if builder is models.conv1d else (2, 3, 10, 12)
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    ref = ReferenceEvaluator(model)
    want = ref.run([t.tensor for t in plan.taps] + list(plan.model_outputs), {"x": x})
    got = ReferenceEvaluator(tapped).run(None, {"x": x})
    by_name = dict(zip(plan.output_names, got))
    for tap, expected in zip(plan.taps, want):
        np.testing.assert_allclose(by_name[tap.tensor], expected, rtol=1e-6, atol=1e-6)
    for name, expected in zip(plan.model_outputs, want[len(plan.taps):]):
        np.testing.assert_array_equal(by_name[name], expected)


def test_batchnorm_after_the_activation_belongs_to_the_next_layer():
    """Keras's Conv → ReLU → BN (exported as Mul/Add): the activation tap stops after the ReLU."""
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "s"], ["m"], name="bn/mul"),
        helper.make_node("Add", ["m", "b"], ["y"], name="bn/add"),
    ]
    import numpy as np
    from onnx import numpy_helper

    inits = [
        models.init("w", (4, 3, 3, 3)),
        numpy_helper.from_array(np.ones((4, 1, 1), np.float32), "s"),
        numpy_helper.from_array(np.ones((4, 1, 1), np.float32), "b"),
    ]
    plan = _plan(models.make(nodes, [models.image_input()], [models.out("y")], inits), tap="activation")
    assert plan.taps[0].tensor == "r" and plan.taps[0].through_ops == ("Relu",)
