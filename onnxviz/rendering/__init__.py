"""Rendering: the one shared renderer that turns any stack of maps (activations, filters, CAMs,
dataset grids) into images.

``levels`` normalises values to palette levels, ``palette`` turns matplotlib colormaps into
palettes (with a padding colour that contrasts with each), ``grid`` tiles the maps into one image,
``vectors`` draws what has no 2-D maps (dense outputs: bar chart or strip of cells, top-k),
``text`` makes untrusted strings safe to draw and adds titles and captions, ``overlay`` reduces a
layer to one map (its sum at the input's size) and lays a heat map over a photo,
``images`` holds the image objects (PNG, array, Figure, notebook) and decodes picture files, and
``filters`` reads Conv weights from the initializers and lays them out for the renderer.
"""

from __future__ import annotations

from .grid import render, render_rgb, with_caption
from .images import RenderedImage, RGBImage, open_image
from .levels import NORMS, SELECTS, as_map_stack, select_channels
from .overlay import overlay, reduce_maps, render_sum
from .palette import (
    DEFAULT_NAN_COLOR, DEFAULT_PAD_COLOR, LABEL_INDEX, LEVELS, NAN_INDEX, PAD_INDEX, SHADOW_INDEX, colormap_palette, default_cmap,
    pad_color_for,
)
from .text import safe_text, with_title
from .vectors import as_vector, render_vector, top_k

__all__ = [
    "RenderedImage", "RGBImage", "render", "render_rgb", "with_caption", "reduce_maps", "overlay", "select_channels",
    "colormap_palette", "default_cmap", "as_map_stack", "open_image", "NORMS", "SELECTS", "LEVELS", "LABEL_INDEX",
    "SHADOW_INDEX", "NAN_INDEX", "PAD_INDEX", "DEFAULT_NAN_COLOR", "DEFAULT_PAD_COLOR", "pad_color_for", "render_sum",
    "safe_text", "with_title", "as_vector", "render_vector", "top_k",
]
