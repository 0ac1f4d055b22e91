"""The shared renderer (onnxviz/render.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import onnxviz
from onnxviz.render import LEVELS, NAN_INDEX, PAD_INDEX, as_map_stack, colormap_palette, render


def _maps(c=10, h=5, w=7, seed=0):
    return np.random.default_rng(seed).standard_normal((c, h, w)).astype(np.float32)


def test_near_square_grid_geometry_and_padding():
    img = render(_maps(10, 5, 7), padding=2)
    assert img.grid == (3, 4)  # ceil(sqrt(10)) = 4 columns
    assert (img.height, img.width) == (3 * (5 + 2) + 2, 4 * (7 + 2) + 2)
    assert (img.index[:2] == PAD_INDEX).all() and (img.index[:, :2] == PAD_INDEX).all()
    # the two unused cells of the last row are padding
    assert (img.index[2 * 7 + 2 : 3 * 7, 2 + 2 * 9 :] == PAD_INDEX).all()


def test_tiles_are_the_channels_in_order_min_max_normalised():
    maps = _maps(6, 4, 5)
    img = render(maps, ncols=3, padding=1)
    for c in range(6):
        r, k = divmod(c, 3)
        tile = img.index[1 + r * 5 : 1 + r * 5 + 4, 1 + k * 6 : 1 + k * 6 + 5]
        x = maps[c]
        expected = np.floor((x - x.min()) / (x.max() - x.min()) * (LEVELS - 1) + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(tile, expected)
        assert tile.min() == 0 and tile.max() == LEVELS - 1


def test_ncols_and_channel_cap():
    img = render(_maps(10), ncols=5, max_channels=7, padding=0)
    assert img.grid == (2, 5) and len(img.channels) == 7
    assert render(_maps(3), ncols=8).grid == (1, 3)  # never wider than the channel count


def test_constant_nan_and_inf_maps_never_break_it():
    maps = _maps(5, 4, 4)
    maps[0] = 3.0  # constant
    maps[1] = np.nan  # all NaN
    maps[2, 0, 0] = np.inf
    maps[3, 1, 1] = -np.inf
    maps[4, 2, 2] = np.nan
    with np.errstate(all="raise"):
        img = render(maps, padding=0, ncols=5)
    tiles = img.index.reshape(4, 5, 4).transpose(1, 0, 2)
    assert (tiles[0] == 0).all()  # flat tile
    assert (tiles[1] == NAN_INDEX).all()
    assert tiles[2][0, 0] == NAN_INDEX and tiles[3][1, 1] == NAN_INDEX and tiles[4][2, 2] == NAN_INDEX
    assert tiles[2][tiles[2] != NAN_INDEX].max() == LEVELS - 1 and (tiles[2][1:] < NAN_INDEX).all()
    rgb = img.to_array()
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 20, 3)
    assert tuple(rgb[0, 4]) == (255, 0, 255)  # default NaN colour


def test_tiny_and_huge_ranges():
    maps = np.zeros((2, 3, 3), np.float32)
    maps[0, 0, 0] = 1e-40  # denormal span
    maps[1] = np.linspace(-3e38, 3e38, 9, dtype=np.float32).reshape(3, 3)
    with np.errstate(all="raise"):
        img = render(maps, padding=0, ncols=2)
    assert img.index.max() <= LEVELS - 1
    assert img.index[0, 0] == LEVELS - 1 and img.index[0, 1] == 0  # the denormal map keeps its contrast
    assert img.index[0, 3] == 0 and img.index[2, 5] == LEVELS - 1  # so does the ±3e38 one


def test_integer_and_half_inputs():
    for maps in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), _maps().astype(np.float16)):
        index = render(maps).index
        assert index[index != PAD_INDEX].max() == LEVELS - 1 and index.min() == 0


def test_colormap_lookup_matches_matplotlib():
    import matplotlib

    pal = colormap_palette("magma")
    expected = matplotlib.colormaps["magma"](np.linspace(0, 1, LEVELS), bytes=True)[:, :3]
    np.testing.assert_array_equal(pal[:LEVELS], expected)
    with pytest.raises(onnxviz.OnnxvizError, match="unknown colormap 'nope'"):
        render(_maps(), cmap="nope")


def test_gray_colormap_round_trip_through_png(tmp_path):
    img = render(_maps(4, 6, 6), cmap="gray", padding=1)
    path = img.save(tmp_path / "g.png")
    with Image.open(path) as loaded:
        assert loaded.size == (img.width, img.height) and loaded.mode == "P"
        np.testing.assert_array_equal(np.asarray(loaded.convert("RGB")), img.to_array())
    assert img._repr_png_().startswith(b"\x89PNG")


def test_stack_shapes():
    assert as_map_stack(np.zeros((5, 6))).shape == (1, 5, 6)
    assert as_map_stack(np.zeros((2, 4, 5, 6)), image=1).shape == (4, 5, 6)
    assert as_map_stack(np.zeros((1, 4, 3, 5, 6))).shape == (4, 5, 6)
    with pytest.raises(onnxviz.OnnxvizError, match="expected 2 to 5 dims"):
        as_map_stack(np.zeros(3))
    with pytest.raises(onnxviz.OnnxvizError, match="nothing to render"):
        render(np.zeros((0, 4, 4)))


def test_renders_a_captured_layer_and_shows_in_notebooks():
    import models

    cap = onnxviz.load(models.conv1d()).capture(np.ones((1, 2, 9), np.float32))
    layer = cap["encoder.conv"]
    img = layer.render()
    assert (img.height, img.width) == (5 + 2, 9 + 2)  # 1-D conv: one C×L map
    assert layer._repr_png_().startswith(b"\x89PNG")
    assert "RenderedImage" in repr(img)
