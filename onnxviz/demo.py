"""Bundled demo assets: a small trained CNN and a real photograph (see ``data/README.md``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_model", "demo_image", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent / "data"


def demo_model() -> Path:
    """``digits_cnn.onnx``: LeNet-style fully convolutional CNN trained on scikit-learn's digits."""
    return DATA_DIR / "digits_cnn.onnx"


def demo_image() -> Path:
    """``chelsea.png``: Chelsea the cat, 451×300 RGB, CC0 (Stefan van der Walt, via scikit-image)."""
    return DATA_DIR / "chelsea.png"
