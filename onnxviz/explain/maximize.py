"""``onnxviz.maximize``: activation maximisation — the input a class or a channel responds to most,
found by gradient ascent from noise, gradients by onnxruntime (no framework).

Two ways:

- ``method="seed"`` — seed 002's "kernel visualisation": grey noise, each step adds the gradient
  divided by its root mean square (``x += step · g / (sqrt(mean(g²)) + 1e-5)``) straight onto
  the model input, and the result is shown through the seed's ``deprocess_image`` (centre,
  divide by the std, ×0.1 + 0.5, clip, ×255).
- ``method="lucid"`` (default) — the better-known way (Olah et al., "Feature Visualization",
  Distill 2017): the image is ``sigmoid`` of a 1/f-scaled Fourier spectrum (``param="fourier"``,
  or raw pixels with ``param="pixel"``) with decorrelated colour, every step sees it through a
  random jitter, scale and rotation, total-variation and L2 penalties keep it smooth and grey
  where nothing matters, and Adam takes the steps.

All targets (classes, or channels of one layer) are optimised together: one onnxruntime call per
step computes every target's gradient (in batches of ``batch_size``). A fixed ``seed`` makes the
run deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OnnxvizError
from ..progress import Progress
from ..run.model import Model, load
from .imaging import LucidImage, Preprocess, Warp, l2_loss, tv_loss
from .target import Score, TargetLayer, concrete_shapes, resolve_layer, resolve_score

__all__ = ["maximize", "DreamResult", "DreamTarget", "parse_targets", "deprocess"]

METHODS = ("lucid", "seed")
_SCALES = (1.0, 0.975, 1.025, 0.95, 1.05)


@dataclass(frozen=True)
class DreamTarget:
    """A class (``layer`` None) or one channel of a layer."""

    index: int
    layer: str | None = None

    @property
    def label(self) -> str:
        return f"class {self.index}" if self.layer is None else f"{self.layer}:{self.index}"


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def _indices(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise OnnxvizError(f"bad target index list {text!r}: use N, N,M,… or N-M")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise OnnxvizError(f"bad target range {part.strip()!r}: the end is before the start")
        out.extend(range(lo, hi + 1))
    return out


def parse_targets(spec: str | int | Sequence[Any]) -> list[DreamTarget]:
    """``"281"``, ``"1,5,9"``, ``"0-9"`` (classes) or ``"LAYER:3"``, ``"LAYER:0-15"`` (channels)."""
    if isinstance(spec, DreamTarget):
        return [spec]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return [DreamTarget(int(spec))]
    if isinstance(spec, str):
        layer, sep, idx = spec.rpartition(":")
        if sep and not layer:
            raise OnnxvizError(f"bad target {spec!r}: LAYER:CHANNEL needs a layer name")
        return [DreamTarget(i, layer or None) for i in _indices(idx if sep else spec)]
    targets = [t for item in spec for t in parse_targets(item)]
    if not targets:
        raise OnnxvizError("no target given")
    return targets


def deprocess(x: np.ndarray) -> np.ndarray:
    """Seed 002's ``deprocess_image`` on one H×W×C image: centre, ÷ std, ×0.1 + 0.5, clip → uint8."""
    x = np.asarray(x, np.float64)
    x = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


@dataclass
class DreamResult:
    """What ``maximize`` found: one image per target."""

    images: np.ndarray  # N×H×W×C uint8 (C = the input's channels)
    targets: list[DreamTarget]
    objectives: list[float]  # the target's value on the final image
    start: list[float]  # … on the starting noise
    method: str
    fed: np.ndarray  # the final inputs, as fed to the model
    layer: TargetLayer | None = None
    score: Score | None = None
    provider: str = "cpu"
    history: list[list[float]] = field(default_factory=list)  # objectives every 10 steps
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)

    def grid(self, *, ncols: int | None = None, padding: int = 2, min_tile: int | None = 64) -> Any:
        """All results as one image grid, through the shared renderer."""
        from ..rendering import render, render_rgb

        if self.images.shape[-1] >= 3:
            return render_rgb(self.images[..., :3].astype(np.float32), ncols=ncols, padding=padding, min_tile=min_tile)
        return render(self.images[..., 0].astype(np.float32), cmap="gray", ncols=ncols, padding=padding, min_tile=min_tile)

    def _repr_png_(self) -> bytes:
        return self.grid().png_bytes()

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "targets": [t.label for t in self.targets], "objectives": self.objectives,
                "start": self.start, "provider": self.provider, "settings": self.settings}


class _Adam:
    def __init__(self, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Minimise: params -= lr · m̂ / (sqrt(v̂) + eps)."""
        if self.m is None or self.v is None:
            self.m, self.v = np.zeros_like(grad), np.zeros_like(grad)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        mh = self.m / (1 - self.b1**self.t)
        vh = self.v / (1 - self.b2**self.t)
        params -= (self.lr * mh / (np.sqrt(vh) + self.eps)).astype(params.dtype)


def _objective_setup(model: Model, targets: list[DreamTarget], shapes: dict[str, Any]) -> tuple[str, TargetLayer | None, Score | None]:
    """The tensor whose entries are maximised, and its layer or score."""
    layers = {t.layer for t in targets}
    if len(layers) > 1:
        raise OnnxvizError("all targets of one run must be classes, or channels of one layer")
    proto = model.loaded.proto
    (name,) = layers
    if name is None:
        score = resolve_score(proto)
        return score.tensor, None, score
    layer = resolve_layer(proto, name, shapes)
    return layer.tensor, layer, None


def _seed_tensor(shape: tuple[int, ...], targets: list[DreamTarget], layer: TargetLayer | None, score: Score | None) -> np.ndarray:
    if score is not None:
        return score.seed(shape, [t.index for t in targets])
    assert layer is not None
    seed = np.zeros(shape, np.float32)
    moved = np.moveaxis(seed, layer.channel_axis, 1)
    spatial = int(np.prod(moved.shape[2:]))
    for i, t in enumerate(targets):
        moved[i, t.index] = 1.0 / spatial
    return seed


def _values(value: np.ndarray, targets: list[DreamTarget], layer: TargetLayer | None, score: Score | None) -> np.ndarray:
    if score is not None:
        classes = score.classes(value)
        return classes[np.arange(len(targets)), [t.index for t in targets]]
    assert layer is not None
    moved = np.moveaxis(np.asarray(value, np.float32), layer.channel_axis, 1)
    return np.asarray([moved[i, t.index].mean() for i, t in enumerate(targets)], np.float32)


def maximize(
    model: Any,
    targets: str | int | Sequence[Any],
    *,
    method: str = "lucid",
    steps: int | None = None,
    size: tuple[int, int] | None = None,
    scale: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bgr: bool = False,
    provider: str = "auto",
    lr: float | None = None,
    param: str = "fourier",
    decorrelated: bool = True,
    jitter: float = 8.0,
    scales: Sequence[float] = _SCALES,
    degrees: float = 5.0,
    tv: float = 0.0,
    l2: float = 0.0,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool | None = False,
) -> DreamResult:
    """Gradient ascent from noise to the input that maximises each target.

    ``targets``: classes (``281``, ``"1,5,9"``, ``"0-9"``, a list) or channels of one layer
    (``"layer4.2.conv3:0-15"``; the mean of the channel's map is maximised). ``method``:
    ``"lucid"`` (default; ``steps`` 256, Adam ``lr`` 0.05, ``param`` ``"fourier"``/``"pixel"``,
    ``decorrelated`` colour, ``jitter`` pixels, random ``scales``, rotation within ±``degrees``,
    ``tv``/``l2`` penalty weights) or ``"seed"`` (``steps`` 200, normalised steps of ``lr`` 1.0).
    ``size``/``scale``/``mean``/``std``/``bgr``: the model's input as for ``capture``; the result
    images are in the picture's RGB order and [0, 255].
    """
    from .cam import grad_program, runner_for

    if method not in METHODS:
        raise OnnxvizError(f"unknown maximisation method {method!r}: use {' or '.join(METHODS)}")
    if param not in ("fourier", "pixel"):
        raise OnnxvizError(f"unknown parameterisation {param!r}: use fourier or pixel")
    steps = (256 if method == "lucid" else 200) if steps is None else int(steps)
    if steps < 0 or batch_size < 1:
        raise OnnxvizError("steps must be >= 0 and batch_size >= 1")
    lr = (0.05 if method == "lucid" else 1.0) if lr is None else float(lr)
    wanted = parse_targets(targets)
    m = model if isinstance(model, Model) else load(model, provider=provider, session_config={"session.intra_op.allow_spinning": "0"})
    spec = next((s for s in m.inputs if s.layout), None)
    if spec is None or len(m.inputs) != 1:
        raise OnnxvizError("activation maximisation needs a model with one N×C×H×W (or N×H×W×C) image input")
    h, w = spec.hw
    if size is not None:
        if (h and h != size[0]) or (w and w != size[1]):
            raise OnnxvizError(f"input {spec.describe()} has a fixed size; size {size[0]}x{size[1]} conflicts with it")
        h, w = size
    if not h or not w:
        raise OnnxvizError(f"input {spec.describe()} has a dynamic size: pass size=(h, w) / --size HxW")
    channels = spec.channels or 3
    from ..run.inputs import resolve_scale

    scale = resolve_scale(scale, spec)  # the CLI passes None: unit, or raw for integer inputs
    pre = Preprocess.for_input(channels, spec.layout or "NCHW", spec.dtype, scale, mean, std, bgr)
    probe = pre.forward(np.full((1, channels, h, w), 0.5, np.float32))
    shapes = concrete_shapes(m.loaded.proto, {spec.name: probe})
    tensor, layer, score = _objective_setup(m, wanted, shapes)
    runner = runner_for(m)
    target_shape = tuple(np.shape(runner.forward({spec.name: probe}, [tensor])[tensor])[1:])
    axis = (score.class_axis if score is not None else layer.channel_axis if layer is not None else 1) - 1
    count = target_shape[axis] if 0 <= axis < len(target_shape) else 0
    for t in wanted:
        if not 0 <= t.index < count:
            what = "class" if t.layer is None else f"channel of {t.layer}"
            raise OnnxvizError(f"target {what} {t.index} is out of range: there are {count} (0-{count - 1})")
    rng = np.random.default_rng(seed)
    n = len(wanted)
    decor = decorrelated and channels == 3
    settings: dict[str, Any] = {"steps": steps, "lr": lr, "seed": seed, "batch_size": batch_size}
    if method == "lucid":
        settings.update({"param": param, "decorrelated": decor, "jitter": jitter, "scales": list(scales), "degrees": degrees, "tv": tv, "l2": l2})
    lucid = LucidImage((n, channels, h, w), rng, param, decor) if method == "lucid" else None
    x_fed = pre.forward(((255 - rng.integers(0, 255, (n, channels, h, w))) / 255.0).astype(np.float32)) if method == "seed" else None
    adam = _Adam(lr)

    program = grad_program(runner, spec.name, tensor)
    chunk = min(batch_size, n)  # every run has this batch (the last one padded): one compiled gradient model

    def objective_grad(fed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.empty(n, np.float32)
        grads = np.empty(fed.shape, np.float32)
        for start in range(0, n, chunk):
            part = wanted[start : start + chunk]
            used = len(part)
            batch = fed[start : start + chunk]
            if used < chunk:  # pad with copies of the last target
                part = part + [part[-1]] * (chunk - used)
                batch = np.concatenate([batch, np.repeat(batch[-1:], chunk - used, axis=0)])
            result = program.run({spec.name: batch}, seed=_seed_tensor((chunk, *target_shape), part, layer, score))
            values[start : start + used] = _values(result.target, part, layer, score)[:used]
            grads[start : start + used] = result.grads[spec.name][:used]
        return values, grads

    history: list[list[float]] = []
    start_values: np.ndarray | None = None
    with Progress(steps, f"dream ({n} target{'s' if n > 1 else ''})", enabled=progress) as bar:
        for step in range(steps):
            if method == "seed":
                assert x_fed is not None
                values, g = objective_grad(x_fed)
                axes = tuple(range(1, g.ndim))
                rms = np.sqrt((g.astype(np.float64) ** 2).mean(axis=axes, keepdims=True)) + 1e-5
                x_fed = (x_fed + lr * g / rms).astype(x_fed.dtype)
            else:
                assert lucid is not None
                img = lucid.image()
                warp = Warp(n, (h, w), rng, jitter, scales, degrees)
                values, g = objective_grad(pre.forward(warp.forward(img)))
                d_img = -warp.backward(pre.backward(g))  # Adam minimises: the loss is -objective + penalties
                if tv:
                    d_img += tv * tv_loss(img)[1]
                if l2:
                    d_img += l2 * l2_loss(img)[1]
                adam.step(lucid.params, lucid.backward(d_img))
            if start_values is None:
                start_values = values
            if step % 10 == 0:
                history.append([float(v) for v in values])
            bar.update()
    if method == "seed":
        assert x_fed is not None
        final_fed = x_fed
        images = np.stack([deprocess(pre.inverse(x_fed[i : i + 1])[0].transpose(1, 2, 0)) for i in range(n)])
    else:
        assert lucid is not None
        img = lucid.image()
        final_fed = pre.forward(img)
        images = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    final, _ = objective_grad(final_fed)
    if start_values is None:
        start_values = final
    history.append([float(v) for v in final])
    return DreamResult(
        images=images, targets=wanted, objectives=[float(v) for v in final], start=[float(v) for v in start_values], method=method,
        fed=final_fed, layer=layer, score=score, provider=runner.provider or "cpu", history=history, settings=settings,
    )
