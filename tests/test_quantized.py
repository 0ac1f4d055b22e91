"""Quantized models made by onnxruntime's own quantizer: QOperator (QLinearConv) and QDQ formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxviz
from onnxviz.demo import demo_image, demo_model

quantization = pytest.importorskip("onnxruntime.quantization")


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._feeds = iter([{"input": rng.random((1, 1, 32, 32), dtype=np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self._feeds, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for fmt in ("QOperator", "QDQ"):
        path = tmp_path_factory.mktemp("q") / f"{fmt}.onnx"
        quantization.quantize_static(
            str(demo_model()), str(path), _Calibration(), quant_format=getattr(quantization.QuantFormat, fmt),
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
        )
        out[fmt] = path
    return out


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
@pytest.mark.parametrize("tap", ["conv", "activation"])
def test_quantized_taps_keep_outputs_and_dequantize(quantized, fmt, tap):
    model = onnxviz.load(quantized[fmt], tap=tap)
    cap = model.capture([demo_image()], verify=True)
    # QDQ: the tap sits on the QuantizeLinear output, so onnxruntime's QDQ → QLinearConv fusion is
    # kept and the model's own outputs stay exactly as they were.
    assert cap.verify.max_abs == 0.0, str(cap.verify)
    assert list(cap) == ["conv1", "conv2", "conv3"]
    reference = onnxviz.load(demo_model(), tap="activation").capture([demo_image()])
    for name, layer in cap.items():
        assert layer.array.dtype == np.uint8 and layer.scale is not None
        if fmt == "QDQ":
            assert layer.through_ops[-1] == "QuantizeLinear"
        real = layer.values()
        expected = reference[name].array
        # the float model's post-ReLU activations, up to quantization noise: same scale (slope ≈ 1),
        # same offset (a wrong zero point shifts the mean), same pattern (correlation)
        r, e = real.ravel().astype(np.float64), expected.ravel().astype(np.float64)
        slope = (r @ e) / (e @ e)
        assert 0.95 <= slope <= 1.05, (name, slope)
        assert abs(r.mean() - e.mean()) <= 0.02 * np.abs(e).max(), name
        assert np.corrcoef(r, e)[0, 1] >= 0.99, name


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_every_layer_of_a_quantized_model(quantized, fmt):
    """--tap layer: a QDQ layer is DequantizeLinear → op → QuantizeLinear, tapped after the
    QuantizeLinear (the model's outputs stay bit-identical); quantized taps carry their scale."""
    model = onnxviz.load(quantized[fmt], tap="layer")
    cap = model.capture([demo_image()], verify=True)
    assert cap.verify.max_abs == 0.0, str(cap.verify)
    kinds = [(name, model.layer_graph[name].kind) for name in cap]
    assert kinds[:5] == [("conv1", "conv"), ("pool", "pool"), ("conv2", "conv"), ("pool_1", "pool"), ("conv3", "conv")]
    assert [k for _, k in kinds[5:]] == ["pool", "reshape", "dense"]
    for name, layer in cap.items():
        if layer.array.dtype == np.uint8:
            assert layer.scale is not None, name  # values() dequantizes
    if fmt == "QDQ":
        producers = {out: node.op_type for node in model.proto.graph.node for out in node.output}
        assert all(producers[layer.tensor] == "QuantizeLinear" for layer in list(cap.values())[:-1])
