"""CAM methods, one small module each over :class:`~onnxviz.explain.cams.base.BaseCAM`."""

from __future__ import annotations

from .ablationcam import AblationCAM
from .base import BaseCAM, Context
from .eigencam import EigenCAM
from .gradcam import GradCAM
from .gradcam_pp import GradCAMPlusPlus
from .layercam import LayerCAM
from .saliency import Saliency, SmoothGrad
from .scorecam import ScoreCAM
from .xgradcam import XGradCAM

__all__ = ["METHODS", "BaseCAM", "Context", "method"]

METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls
    for cls in (GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM, EigenCAM, ScoreCAM, AblationCAM, Saliency, SmoothGrad)
}


def method(name: str) -> BaseCAM:
    """An instance of the method called ``name``."""
    from ...errors import OnnxvizError

    cls = METHODS.get(name.lower())
    if cls is None:
        raise OnnxvizError(f"unknown CAM method {name!r}: use {', '.join(METHODS)}")
    return cls()
