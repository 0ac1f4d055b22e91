"""Grad-CAM++ (Chattopadhyay et al. 2018): positive gradients weighted per pixel by the closed-form
alpha of the paper (with exp of the score approximated as pytorch-grad-cam does)."""

from __future__ import annotations

import numpy as np

from .base import BaseCAM, Context


class GradCAMPlusPlus(BaseCAM):
    name = "gradcam++"
    uses_gradients = True
    description = "channel weights = sum of ReLU(gradient) x alpha, alpha from 2nd/3rd gradient powers"

    def weights(self, ctx: Context, acts: np.ndarray, grads: np.ndarray | None) -> np.ndarray:
        assert grads is not None
        g2 = grads**2
        g3 = g2 * grads
        total = acts.sum(axis=(2, 3))[:, :, None, None]
        alpha = g2 / (2 * g2 + total * g3 + 1e-6)
        alpha = np.where(grads != 0, alpha, 0)
        return (np.maximum(grads, 0) * alpha).sum(axis=(2, 3))
