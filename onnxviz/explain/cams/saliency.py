"""Maps over the input itself, from the class score's gradient at the input.

- ``saliency`` (Simonyan et al. 2014): the largest absolute gradient over the colour channels.
- ``smoothgrad`` (Smilkov et al. 2017): the gradient averaged over ``samples`` copies of the input
  with Gaussian noise (standard deviation ``noise`` × the image's value range), then the same
  reduction. The noisy copies run in batches through the one gradient model; a seed makes it
  deterministic.
"""

from __future__ import annotations

import numpy as np

from ...progress import Progress
from .base import BaseCAM, Context


def _reduce(ctx: Context, grads: np.ndarray) -> np.ndarray:
    """N×H×W: max over the channel axis of |gradient|."""
    axis = 1 if ctx.input_layout == "NCHW" else 3
    return np.abs(np.asarray(grads, dtype=np.float32)).max(axis=axis)


class Saliency(BaseCAM):
    name = "saliency"
    uses_gradients = True
    on_input = True
    description = "max over colour channels of |d class score / d input|"

    def cam_image(self, ctx: Context) -> np.ndarray:
        return _reduce(ctx, ctx.grads[ctx.input_name])


class SmoothGrad(BaseCAM):
    name = "smoothgrad"
    uses_gradients = True
    on_input = True
    description = "saliency of the input gradient averaged over noisy copies"

    def cam_image(self, ctx: Context) -> np.ndarray:
        samples = int(ctx.option("samples", 25))
        noise = float(ctx.option("noise", 0.15))
        batch = min(samples, int(ctx.option("batch_size", samples)))
        rng = np.random.default_rng(int(ctx.option("seed", 0)))
        x = ctx.x
        n = x.shape[0]
        rounds = -(-samples // batch)  # every run has the same batch: one compiled gradient model
        out = np.empty((n, *x.shape[1:]), np.float32)
        with Progress(n * rounds, f"SmoothGrad ({samples} noisy copies per image)", enabled=ctx.options.get("progress")) as bar:
            for i in range(n):
                sigma = noise * float(x[i].max() - x[i].min())
                total = np.zeros(x.shape[1:], np.float64)
                for r in range(rounds):
                    noisy = (x[i : i + 1] + rng.normal(0.0, sigma, size=(batch, *x.shape[1:]))).astype(x.dtype)
                    result = ctx.program.run({**{k: np.repeat(v[i : i + 1], batch, axis=0) for k, v in ctx.feeds.items()},
                                              ctx.input_name: noisy}, classes=np.full(batch, ctx.classes[i]))
                    used = min(batch, samples - r * batch)
                    total += result.grads[ctx.input_name][:used].sum(axis=0, dtype=np.float64)
                    bar.update()
                out[i] = total / samples
        ctx.details.update({"samples": samples, "noise": noise, "seed": int(ctx.option("seed", 0))})
        return _reduce(ctx, out)
