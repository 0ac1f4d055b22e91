"""``onnxviz.cam``: class activation maps of any ONNX CNN, without the framework that trained it.

>>> result = onnxviz.cam("resnet50.onnx", ["cat.jpg"], method="gradcam", scale="imagenet")  # doctest: +SKIP
>>> result.predictions[0]           # {'class': 281, 'score': 9.1, 'probability': 0.62}  # doctest: +SKIP
>>> result.overlay(0).save("cam.png")                                                      # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, OnnxvizError
from ..rendering import RGBImage, overlay as overlay_map
from ..run.model import Model, load
from .cams import Context, method as make_method
from .cams.scorecam import DEFAULT_TOP_K
from .resize import resize_maps
from .runner import Runner, tail_inputs
from .target import Score, TargetLayer, concrete_shapes, resolve_layer, resolve_score

__all__ = ["cam", "CamResult", "runner_for", "prepare_input", "class_indices", "grad_program", "DEFAULT_CMAP"]

DEFAULT_CMAP = "inferno"  # perceptually uniform; "jet" on request
_RUNNERS: "weakref.WeakKeyDictionary[Model, Runner]" = weakref.WeakKeyDictionary()


def runner_for(model: Model) -> Runner:
    """The Runner (derived sessions) kept with ``model`` for as long as it lives."""
    runner = _RUNNERS.get(model)
    if runner is None:
        runner = _RUNNERS[model] = Runner(model)
    return runner


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1] (a constant map becomes zeros)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None]
    span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None]
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


@dataclass
class CamResult:
    """Maps, classes and predictions of one ``onnxviz.cam`` call over N images."""

    method: str
    layer: TargetLayer
    score: Score
    maps: np.ndarray  # N×h×w raw maps (after the ReLU) at the layer's resolution
    heatmaps: np.ndarray  # N×H×W, each scaled to [0, 1], at the input's size
    classes: list[int]
    class_scores: list[float]  # the explained class's logit, per image
    predictions: list[dict[str, Any]]  # top class, its logit and (after a softmax/sigmoid) probability
    feeds: dict[str, np.ndarray]
    input_name: str
    input_layout: str
    provider: str
    images: list[Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None  # from a labels file: class index → name

    def class_name(self, index: int) -> str | None:
        return self.class_names[index] if self.class_names is not None and 0 <= index < len(self.class_names) else None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def image(self, index: int = 0) -> np.ndarray:
        """Image ``index`` as fed (H×W×3 uint8): the picture resized to the input, or the fed array min-max scaled."""
        h, w = self.heatmaps.shape[1:]
        if self.images is not None and not isinstance(self.images[index], np.ndarray):
            from PIL import Image

            from ..rendering import open_image

            img = open_image(self.images[index]).convert("RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(img)
        x = np.asarray(self.feeds[self.input_name][index], dtype=np.float32)
        x = np.moveaxis(x, 0, -1) if self.input_layout == "NCHW" else x
        x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
        lo, hi = float(x.min()), float(x.max())
        return np.clip((x - lo) / (hi - lo if hi > lo else 1) * 255 + 0.5, 0, 255).astype(np.uint8)

    def overlay(self, index: int = 0, *, alpha: float = 0.5, cmap: str = DEFAULT_CMAP, image: Any = None) -> RGBImage:
        """Heat map ``index`` over its image (or ``image``), through the shared renderer."""
        return overlay_map(self.heatmaps[index], self.image(index) if image is None else image, alpha=alpha, cmap=cmap)

    def _repr_png_(self) -> bytes:
        return self.overlay(0).png_bytes()

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "layer": self.layer.as_dict(), "score": self.score.as_dict(), "classes": self.classes,
                "class_scores": self.class_scores, "predictions": self.predictions, "provider": self.provider,
                "map_shape": list(self.maps.shape[1:]), "details": self.details}


def _plan(runner: Runner, feeds: dict[str, np.ndarray], input_name: str, layout: str, method: Any, layer: str | None,
          output: str | None) -> tuple[Score, TargetLayer, list[str], int | None]:
    """Score, layer, forward outputs and class count; worked out once per model, input shapes and request."""
    key = ("cam-plan", tuple((k, v.shape) for k, v in sorted(feeds.items())), layer, output, method.on_input, method.needs_tail)
    if key not in runner.memo:
        proto = runner.model.loaded.proto
        score = resolve_score(proto, output)
        shapes = concrete_shapes(proto, feeds)
        if method.on_input:
            target = TargetLayer(name=input_name, tensor=input_name, layout=layout)
        else:
            target = resolve_layer(proto, layer, shapes, score)
        side = tail_inputs(proto, target.tensor, [score.tensor])[1:] if method.needs_tail else []
        tensors = [score.tensor, score.output, *([] if method.on_input else [target.tensor]), *side]
        logits = shapes.get(score.tensor)
        n_classes = logits[score.class_axis] if logits and len(logits) > score.class_axis else None
        runner.memo[key] = (score, target, list(dict.fromkeys(tensors)), n_classes)
    return runner.memo[key]


def prepare_input(model: Model, images: Any, feeds: Mapping[str, np.ndarray] | None, **inputs: Any) -> tuple[dict[str, np.ndarray], str, str]:
    """The feeds, the image input's name and its layout."""
    prepared = model.prepare(images, feeds=feeds, **inputs)
    spec = next((s for s in model.inputs if s.layout), None)
    if spec is None:
        raise InputError("the model has no N×C×H×W (or N×H×W×C) image input to explain")
    if not np.issubdtype(prepared[spec.name].dtype, np.floating):
        raise InputError(f"input '{spec.name}' is {prepared[spec.name].dtype}: gradients and masks need a float input")
    return prepared, spec.name, spec.layout or "NCHW"


def class_indices(target: int | Sequence[int] | None, logits: np.ndarray | None, n: int | None = None, k: int | None = None) -> np.ndarray | None:
    """The class explained for each image: ``target`` (one for all, or one each), else the top one
    (None when ``logits`` are not known yet: the gradient run picks the top class itself)."""
    if logits is not None:
        n, k = logits.shape
    if target is None:
        return None if logits is None else logits.argmax(axis=1)
    values = [target] * (n or 1) if isinstance(target, (int, np.integer)) else list(target)
    if n is not None and len(values) != n:
        raise OnnxvizError(f"got {len(values)} target classes for {n} images")
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise OnnxvizError(f"target class must be an integer, got {v!r}")
        if v < 0 or (k is not None and v >= k):
            raise OnnxvizError(f"target class {v} is out of range: the model scores {k} classes (0-{k - 1})" if k else
                               f"target class {v} is out of range")
    return np.asarray(values, dtype=np.int64)


def grad_program(runner: Runner, wrt: str, target: str, outputs: Sequence[str] = (), class_axis: int = 1) -> Any:
    """The :class:`onnxviz.GradientProgram` for d(target)/d(wrt), kept with the model."""
    key = ("grad-program", wrt, target, tuple(outputs), class_axis)
    if key not in runner.memo:
        from .program import GradientProgram

        runner.memo[key] = GradientProgram(runner.model, wrt=wrt, target=target, outputs=list(outputs),
                                           optimization=runner.model.optimization, weak_model=True, class_axis=class_axis)
    return runner.memo[key]


def _gradient_run(runner: Runner, feeds: dict[str, np.ndarray], wrt: str, score: Score, outputs: Sequence[str], target: Any,
                  n_classes: int | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, Any]:
    """Forward tensors, the gradient at ``wrt`` and the classes, from one run of the gradient model."""
    extra = [t for t in outputs if t != score.tensor]
    # Classes along the score's class axis (1, or the last axis of a recogniser's N×T×K logits),
    # scored by their mean over the other axes; the top class is chosen inside the graph.
    program = grad_program(runner, wrt, score.tensor, extra, score.class_axis)
    n = next(iter(feeds.values())).shape[0]
    classes = class_indices(target, None, n, n_classes)
    result = program.run(feeds, classes=classes)
    forward = {**result.outputs, score.tensor: result.target}
    chosen = classes if classes is not None else np.asarray(result.classes, dtype=np.int64)
    return forward, {wrt: result.grads[wrt]}, chosen, program


def cam(
    model: Any,
    images: Any = None,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: int | Sequence[int] | None = None,
    output: str | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    size: tuple[int, int] | None = None,
    scale: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    provider: str = "auto",
    top_k: int | None = DEFAULT_TOP_K,
    batch_size: int | None = None,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    progress: bool | None = False,
    optimization: str = "all",
    class_names: Sequence[str] | None = None,
) -> CamResult:
    """Class activation maps of ``images`` (paths, PIL images, or one array; or ``feeds``).

    ``model``: a path, bytes, ``onnx.ModelProto`` or a loaded :class:`onnxviz.Model` (its
    sessions are reused across calls). ``method``: gradcam | gradcam++ | layercam | xgradcam |
    eigencam | scorecam | ablationcam | saliency | smoothgrad. ``layer``: a Conv layer name (as
    ``maps --tap activation`` names it) or a tensor name; default: the last Conv layer with a
    spatial output, followed through a residual Add/activation to the tensor that feeds pooling.
    ``target``: the class (one for all images, or one per image); default: each image's top class.
    ``output``: which model output is scored (default: the first; the logits before a final
    Softmax/Sigmoid are used). Score-CAM: ``top_k`` channels by mean activation (None: all),
    ``batch_size`` masked inputs (or ablated copies, or noisy copies) per run. SmoothGrad:
    ``samples`` noisy copies with Gaussian noise of ``noise`` × the image's value range, seeded by
    ``seed``. Gradient methods read activations, logits and gradients in one onnxruntime run of
    a backward graph built for the part after the layer only. ``class_names``: one name per class
    (a labels file), added to predictions and manifests.
    """
    runner_method = make_method(method)
    if isinstance(model, Model):
        m = model
    else:
        m = load(model, provider=provider, session_config={"session.intra_op.allow_spinning": "0"}, optimization=optimization)
    runner = runner_for(m)
    if top_k is not None and top_k < 1:
        raise OnnxvizError(f"top_k must be at least 1, got {top_k}")
    prepared, input_name, layout = prepare_input(m, images, feeds, size=size, scale=scale, mean=mean, std=std, bgr=bgr)
    score, target_layer, outputs, n_classes = _plan(runner, prepared, input_name, layout, runner_method, layer, output)
    grads: dict[str, np.ndarray] = {}
    program = None
    if runner_method.uses_gradients:
        forward, grads, classes, program = _gradient_run(runner, prepared, target_layer.tensor, score, outputs, target, n_classes)
    else:
        forward = runner.forward(prepared, outputs)
        classes = None
    forward.update(prepared)
    if not runner_method.on_input:
        shape = np.shape(forward[target_layer.tensor])
        if len(shape) != 4 or int(np.prod(shape[1:4])) // (shape[target_layer.channel_axis]) <= 1:
            raise OnnxvizError(f"layer {target_layer.name!r} has no spatial output (shape {'x'.join(map(str, shape))}): "
                               "a CAM needs an N×C×H×W layer with H·W > 1")
        fed = np.shape(prepared[input_name])[0] if np.ndim(prepared[input_name]) else 1
        if shape[0] != fed:  # e.g. a Conv over a constant: its maps do not depend on the input
            raise OnnxvizError(f"layer {target_layer.name!r} has {shape[0]} maps per run for {fed} input(s): "
                               "it does not follow the input's batch; name another layer")
    logits = score.classes(forward[score.tensor])
    if classes is None:
        classes = class_indices(target, logits)
    assert classes is not None
    ctx = Context(
        runner=runner, input_name=input_name, input_layout=layout, feeds=prepared, layer=target_layer, score=score,
        activations=forward[target_layer.tensor], logits=logits, classes=classes, forward=forward, grads=grads, program=program,
        options={"top_k": top_k, "batch_size": batch_size, "progress": progress, "forward_outputs": outputs,
                 "samples": samples, "noise": noise, "seed": seed},
    )
    raw = runner_method(ctx)
    heat = resize_maps(normalise(raw), ctx.input_hw) if raw.shape[1:] != ctx.input_hw else normalise(raw)
    probs = score.classes(forward[score.output]) if score.squash in ("Softmax", "Sigmoid") else None
    top = logits.argmax(axis=1)
    if class_names is not None and len(class_names) != logits.shape[1]:
        raise InputError(f"the labels file has {len(class_names)} class names, but the model scores {logits.shape[1]} classes")
    predictions = [
        {"class": int(t), "score": float(logits[i, t]), "probability": None if probs is None else float(probs[i, t]),
         **({"name": class_names[int(t)]} if class_names is not None else {})}
        for i, t in enumerate(top)
    ]
    return CamResult(
        method=runner_method.name, layer=target_layer, score=score, maps=raw, heatmaps=np.clip(heat, 0, 1), classes=[int(c) for c in classes],
        class_scores=[float(logits[i, c]) for i, c in enumerate(classes)], predictions=predictions, feeds=prepared,
        input_name=input_name, input_layout=layout, provider=runner.provider or "cpu",
        images=None if images is None or isinstance(images, np.ndarray) else (list(images) if isinstance(images, (list, tuple)) else [images]),
        details=ctx.details, class_names=None if class_names is None else list(class_names),
    )

