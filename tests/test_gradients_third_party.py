"""Gradients on real third-party CNNs (PaddleOCR's Paddle → ONNX exports, opset 11, from rapidocr's
wheel) against finite differences of onnxruntime's own forward pass.

Ops on these paths: Conv with SAME-padded 2×2 stride-1 MaxPool, HardSigmoid/HardSwish written
out, GELU written out with Erf, squeeze-excitation (GlobalAveragePool, ReduceMean, Mul), nearest
Resize, ConvTranspose, Concat, BatchNormalization, Clip, Reshape/Slice/Transpose, LayerNorm
written out (Sub, Pow, Sqrt, Div), attention MatMul and Softmax. The objective is a random seed
over a patch of the logits (det), the two class logits (cls) or one time step (rec); the check is
the directional derivative along the gradient and along random directions, the error measured
relative to the gradient's norm (float32 finite differences: ≤ 3e-3).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from test_third_party import _models_dir

import onnxviz

CASES = {
    "PP-OCRv6_det_small.onnx": (1, 3, 160, 224),
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx": (2, 3, 48, 192),
    "PP-OCRv6_rec_small.onnx": (1, 3, 48, 160),
}


@pytest.mark.parametrize("name", list(CASES))
def test_paddle_gradients_match_finite_differences(name):
    import onnxruntime as ort

    path = _models_dir() / name
    shape = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    program = onnxviz.GradientProgram(path, wrt="input")
    t_shape = program.run(x, seed=np.zeros(1, np.float32)).target.shape
    assert program.target.described.startswith("logits")  # the input of the final Sigmoid/Softmax
    seed = np.zeros(t_shape, np.float32)
    if len(t_shape) == 4:
        seed[:, :, 50:58, 100:108] = rng.standard_normal((t_shape[0], t_shape[1], 8, 8))
    elif len(t_shape) == 3:
        seed[:, 5, :] = rng.standard_normal((t_shape[0], t_shape[2]))
    else:
        seed[:] = rng.standard_normal(t_shape)
    result = program.run(x, seed=seed)
    g = result.grads["input"].astype(np.float64)
    assert np.isfinite(g).all() and np.abs(g).max() > 0

    plain = onnx.load(path)
    plain.graph.output.append(onnx.helper.make_empty_tensor_value_info(result.target_name))
    session = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def objective(v: np.ndarray) -> float:
        (t,) = session.run([result.target_name], {feed: v.astype(np.float32)})
        return float((t.astype(np.float64) * seed).sum())

    directions = [g] + [rng.standard_normal(shape) for _ in range(2)]
    for v in directions:
        v = v / np.linalg.norm(v)
        eps = 1e-2
        fd = (objective(x + eps * v) - objective(x - eps * v)) / (2 * eps)
        err = abs(fd - float((g * v).sum())) / np.linalg.norm(g)
        assert err <= 3e-3, (name, err)
