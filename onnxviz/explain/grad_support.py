"""What a gradient run returns, and the small pieces around it: seeds from classes, per-sample
scores, per-sample runs stacked, and loading any ONNX model (with or without Conv layers) for
gradients, cached per file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import GradientError, InputError
from ..graph.loading import load_model
from ..graph.taps import CONV_OPS, TapPlan, plan_taps
from ..run.model import Model

__all__ = [
    "GradResult", "load_for_gradients", "model_opset", "with_output", "batch_size", "pick_classes", "pick_seed", "make_seed",
    "sample_scores", "stack_results",
]


@dataclass
class GradResult:
    """Gradients and forward values of one run."""

    grads: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    target: np.ndarray
    target_name: str
    classes: np.ndarray | None
    scores: np.ndarray
    feeds: dict[str, np.ndarray] = field(repr=False)
    provider: str = "cpu"


def model_opset(model: onnx.ModelProto) -> int:
    return next((int(e.version) for e in model.opset_import if e.domain in ("", "ai.onnx")), 1)


def with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    if name not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model


def batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    return max((v.shape[0] for v in feeds.values() if v.ndim), default=1)


def pick_classes(classes: Any, i: int) -> Any:
    if classes is None or np.isscalar(classes):
        return classes
    return np.asarray(classes).ravel()[i : i + 1]


def pick_seed(seed: np.ndarray, i: int) -> np.ndarray:
    seed = np.asarray(seed)
    return seed[i : i + 1] if seed.ndim and seed.shape[0] > 1 else seed


def make_seed(
    shape: tuple[int, ...], dtype: np.dtype, classes: Any, seed: np.ndarray | None, n: int, target: str, class_axis: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """The seed dL/dtarget fed to the model, and the classes it encodes (None for a given seed)."""
    if seed is not None:
        try:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(seed, dtype=dtype), shape)), None
        except ValueError:
            raise InputError(f"seed of shape {list(np.shape(seed))} does not broadcast to the target '{target}' {list(shape)}") from None
    if len(shape) < 2:
        raise GradientError(f"target '{target}' of shape {list(shape)} has no class axis: pass a seed instead of classes")
    axis = class_axis % len(shape)
    chosen = np.full(n, int(classes), dtype=np.int64) if np.isscalar(classes) else np.asarray(classes, dtype=np.int64).ravel()
    if chosen.size != n:
        raise InputError(f"{chosen.size} classes for {n} samples: pass one class, or one per sample")
    bad = chosen[(chosen < 0) | (chosen >= shape[axis])]
    if bad.size:
        raise InputError(f"class/channel {int(bad[0])} is out of range for target '{target}' with {shape[axis]} along axis {axis}")
    out = np.zeros(shape, dtype=dtype)
    moved = np.moveaxis(out, axis, 1)  # a view: [N, K, rest…]
    moved[np.arange(n), chosen] = 1.0 / (float(np.prod(shape[1:])) / shape[axis])
    return out, chosen


def sample_scores(target: np.ndarray, chosen: np.ndarray | None, seed: np.ndarray | None, n: int, class_axis: int = 1) -> np.ndarray:
    """The objective per sample: the class's score (its mean over the other axes), or Σ seed·target."""
    if chosen is not None and target.ndim >= 2:
        picked = np.moveaxis(target, class_axis % target.ndim, 1)[np.arange(n), chosen]
        return picked.reshape(n, -1).mean(axis=1) if picked.ndim > 1 else picked
    weighted = target.astype(np.float64) * (1.0 if seed is None else seed)
    return weighted.reshape(n, -1).sum(axis=1) if target.ndim else np.asarray([float(weighted)])


def stack_results(parts: list[GradResult], feeds: dict[str, np.ndarray]) -> GradResult:
    first = parts[0]
    cat = lambda arrays: np.concatenate(arrays, axis=0)  # noqa: E731
    return GradResult(
        grads={k: cat([p.grads[k] for p in parts]) for k in first.grads},
        outputs={k: cat([p.outputs[k] for p in parts]) for k in first.outputs},
        target=cat([p.target for p in parts]), target_name=first.target_name,
        classes=None if first.classes is None else cat([p.classes for p in parts]),  # type: ignore[misc]
        scores=cat([p.scores for p in parts]), feeds=feeds, provider=first.provider,
    )  # fmt: skip


_MODELS: dict[tuple[str, int, int, str], Model] = {}


def load_any(source: Any, provider: str) -> Model:
    """``onnxviz.load``, but a model without Conv layers is fine here (it has no layer names)."""
    loaded = load_model(source)
    has_conv = any((n.domain if n.domain != "ai.onnx" else "", n.op_type) in CONV_OPS for n in loaded.proto.graph.node)
    if has_conv:
        plan = plan_taps(loaded.proto, "conv")
    else:
        plan = TapPlan(mode="conv", taps=(), skipped=(), model_outputs=tuple(o.name for o in loaded.proto.graph.output))
    if provider not in ("auto", "cpu", "cuda"):
        raise GradientError(f"unknown provider {provider!r}: use auto, cpu or cuda")
    return Model(loaded, plan, provider)


def load_for_gradients(source: Any, provider: str) -> Model:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stat = path.resolve().stat()
        except OSError:
            return load_any(source, provider)  # load_model() words the error
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, provider)
        if key not in _MODELS:
            if len(_MODELS) >= 4:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[key] = load_any(source, provider)
        return _MODELS[key]
    return load_any(source, provider)


