"""The one base class every CAM method derives from (pytorch-grad-cam's pattern), and the
context it works in.

A method sees a :class:`Context`: the fed input, the target layer's activations (N×C×h×w) and
the logits — read in one forward pass, or, for gradient methods, in the one run of the gradient
model (:class:`onnxviz.GradientProgram`) that also returns the class score's gradient at the
layer — the classes explained, and a :class:`~onnxviz.explain.runner.Runner` for the extra runs
some methods need (masked inputs, ablated activations). It returns one raw map per image at the layer's resolution;
:func:`onnxviz.cam` normalises it and brings it to the input size.

Subclasses set ``name`` and override :meth:`BaseCAM.weights` (one weight per channel: the map is
``ReLU(Σ_k w_k · A_k)``) or :meth:`BaseCAM.cam_image` (any other rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..runner import Runner
from ..target import Score, TargetLayer

__all__ = ["BaseCAM", "Context", "weighted_sum"]


def weighted_sum(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """N×h×w: ``Σ_c weights[n, c] · acts[n, c]`` (a batched matrix product)."""
    n, c, h, w = acts.shape
    return (np.asarray(weights, np.float32)[:, None, :] @ acts.reshape(n, c, h * w)).reshape(n, h, w)


@dataclass
class Context:
    """Everything a CAM method needs about one batch of inputs."""

    runner: Runner
    input_name: str
    input_layout: str  # "NCHW" or "NHWC"
    feeds: dict[str, np.ndarray]
    layer: TargetLayer
    score: Score
    activations: np.ndarray  # the layer's output in its own layout
    logits: np.ndarray  # N×K class scores (Score.classes of the scored tensor)
    classes: np.ndarray  # N class indices explained
    forward: dict[str, np.ndarray]  # every tensor the forward pass returned
    options: dict[str, Any] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # tensor → d(class score)/d(tensor)
    program: Any = None  # the GradientProgram that computed ``grads``, for methods that run it again
    details: dict[str, Any] = field(default_factory=dict)  # what a method reports (channels used…)

    @property
    def x(self) -> np.ndarray:
        return self.feeds[self.input_name]

    @property
    def acts(self) -> np.ndarray:
        """The activations as N×C×h×w float32."""
        return self.layer.to_nchw(np.asarray(self.activations, dtype=np.float32))

    @property
    def input_hw(self) -> tuple[int, int]:
        x = self.x
        return (x.shape[2], x.shape[3]) if self.input_layout == "NCHW" else (x.shape[1], x.shape[2])

    def option(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key)
        return default if value is None else value

    def gradients(self) -> np.ndarray:
        """d(score of each image's class)/d(layer), as N×C×h×w float32."""
        return self.layer.to_nchw(np.asarray(self.grads[self.layer.tensor], dtype=np.float32))


class BaseCAM:
    """A CAM method: ``ReLU(Σ_k w_k · A_k)`` with the weights of :meth:`weights`, or its own map."""

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = False
    needs_tail: ClassVar[bool] = False  # runs the graph after the layer (Ablation-CAM)
    on_input: ClassVar[bool] = False  # a map over the input itself (saliency), not over a layer
    class_specific: ClassVar[bool] = True  # False: the map is the same whatever class is asked (Eigen-CAM)
    description: ClassVar[str] = ""

    def weights(self, ctx: Context, acts: np.ndarray, grads: np.ndarray | None) -> np.ndarray:
        """N×C channel weights."""
        raise NotImplementedError(f"{type(self).__name__} must define weights() or cam_image()")

    def cam_image(self, ctx: Context) -> np.ndarray:
        """N×h×w map before the ReLU."""
        acts = ctx.acts
        grads = ctx.gradients() if self.uses_gradients else None
        w = np.asarray(self.weights(ctx, acts, grads), dtype=np.float32)
        return weighted_sum(w, acts)

    def __call__(self, ctx: Context) -> np.ndarray:
        cam = np.nan_to_num(np.asarray(self.cam_image(ctx), dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return np.maximum(cam, 0)
