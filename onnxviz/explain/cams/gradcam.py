"""Grad-CAM (Selvaraju et al. 2017): each channel weighted by its spatially averaged gradient."""

from __future__ import annotations

import numpy as np

from .base import BaseCAM, Context


class GradCAM(BaseCAM):
    name = "gradcam"
    uses_gradients = True
    description = "channel weights = mean gradient of the class score over the map"

    def weights(self, ctx: Context, acts: np.ndarray, grads: np.ndarray | None) -> np.ndarray:
        assert grads is not None
        return grads.mean(axis=(2, 3))
