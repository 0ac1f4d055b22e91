"""Layer-CAM (Jiang et al. 2021): every activation weighted by its own positive gradient."""

from __future__ import annotations

import numpy as np

from .base import BaseCAM, Context


class LayerCAM(BaseCAM):
    name = "layercam"
    uses_gradients = True
    description = "map = sum over channels of ReLU(gradient) x activation, pixel by pixel"

    def cam_image(self, ctx: Context) -> np.ndarray:
        return (np.maximum(ctx.gradients(), 0) * ctx.acts).sum(axis=1)
