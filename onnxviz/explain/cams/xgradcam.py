"""XGrad-CAM (Fu et al. 2020): gradients weighted by the normalised activations."""

from __future__ import annotations

import numpy as np

from .base import BaseCAM, Context


class XGradCAM(BaseCAM):
    name = "xgradcam"
    uses_gradients = True
    description = "channel weights = sum of gradient x activation / sum of activation"

    def weights(self, ctx: Context, acts: np.ndarray, grads: np.ndarray | None) -> np.ndarray:
        assert grads is not None
        total = acts.sum(axis=(2, 3))[:, :, None, None]
        return (grads * acts / (total + 1e-7)).sum(axis=(2, 3))
