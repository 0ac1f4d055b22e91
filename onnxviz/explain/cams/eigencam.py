"""Eigen-CAM (Muhammad & Yeasin 2020): the activations projected on their first principal
component. Needs no gradient and no extra run.

As in pytorch-grad-cam, the h·w × C activation matrix is centred per channel before the SVD (the
first principal component comes from the smaller of its two Gram matrices). Its sign is arbitrary; onnxviz fixes it so that the projection correlates positively with
the channel sum of the activations, so the map highlights what the layer responds to, not its
complement.
"""

from __future__ import annotations

import numpy as np

from .base import BaseCAM, Context


def principal_projection(acts: np.ndarray) -> np.ndarray:
    """N×C×h×w → N×h×w: each image's activations on their first principal component."""
    out = np.empty((acts.shape[0], *acts.shape[2:]), np.float32)
    for n, a in enumerate(np.nan_to_num(acts)):
        m = a.reshape(a.shape[0], -1).T.astype(np.float64)  # h·w × C
        m = m - m.mean(axis=0)
        # m @ (first right singular vector) = u₁·s₁, from the top eigenvector of the smaller Gram
        # matrix: a 49×49 eigenproblem for ResNet-50's 7×7×2048 instead of an SVD of the whole matrix.
        if m.shape[0] <= m.shape[1]:
            w, u = np.linalg.eigh(m @ m.T)
            p = u[:, -1] * np.sqrt(max(float(w[-1]), 0.0))
        else:
            _, v = np.linalg.eigh(m.T @ m)
            p = m @ v[:, -1]
        total = a.reshape(a.shape[0], -1).sum(axis=0)
        if np.dot(p, total - total.mean()) < 0:
            p = -p
        out[n] = p.reshape(a.shape[1:]).astype(np.float32)
    return out


class EigenCAM(BaseCAM):
    name = "eigencam"
    class_specific = False
    description = "first principal component of the activations (no gradients, no extra run)"

    def cam_image(self, ctx: Context) -> np.ndarray:
        return principal_projection(ctx.acts)
