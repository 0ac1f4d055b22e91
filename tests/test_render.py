"""The shared renderer (onnxviz/render.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import onnxviz
from onnxviz.rendering import LEVELS, NAN_INDEX, PAD_INDEX, as_map_stack, colormap_palette, render


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


# -- renderer options (issue 3/4) ---------------------------------------------------------------
from onnxviz.rendering import LABEL_INDEX, NORMS, overlay, reduce_maps, select_channels  # noqa: E402


def _tiles(img, c, h, w, cols, padding=0):
    rows = -(-c // cols)
    grid = img.index[: rows * (h + padding) + padding, : cols * (w + padding) + padding]
    out = []
    for k in range(c):
        r, q = divmod(k, cols)
        out.append(grid[padding + r * (h + padding) : padding + r * (h + padding) + h, padding + q * (w + padding) : padding + q * (w + padding) + w])
    return out


def test_layer_norm_shares_one_range():
    maps = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 3.0), np.linspace(1, 3, 9).reshape(3, 3)]).astype(np.float32)
    img = render(maps, norm="layer", padding=0, ncols=3)
    a, b, c = _tiles(img, 3, 3, 3, 3)
    assert (a == 0).all() and (b == LEVELS - 1).all()  # constant maps keep their place in the shared range
    assert c.min() == 0 and c.max() == LEVELS - 1
    assert img.value_range == (1.0, 3.0)


def test_zscore_norm_matches_the_keras_recipe():
    x = np.random.default_rng(3).standard_normal((1, 8, 8)).astype(np.float32) * 5 + 2
    img = render(x, norm="zscore", padding=0)
    keras_way = np.clip((x[0] - x[0].mean()) / x[0].std() * 64 + 128, 0, 255)
    expected = np.clip(np.floor(keras_way / 255 * (LEVELS - 1) * (255 / 255) + 0.5), 0, LEVELS - 1)
    # same ordering and saturation as the recipe, up to the 8-bit → LEVELS rescale
    assert np.abs(img.index.astype(int) - expected.astype(int)).max() <= 2


def test_percentile_norm_clips_outliers():
    x = np.zeros((1, 40, 40), np.float32)
    x[0, :, :] = np.linspace(0, 1, 1600).reshape(40, 40)
    x[0, 0, 0] = 1e6  # one outlier
    plain = render(x, padding=0).index
    clipped = render(x, norm="percentile", percentiles=(1, 99), padding=0).index
    assert np.median(plain) == 0  # min-max: the outlier crushes everything else
    assert 100 < np.median(clipped) < 150 and clipped[0, 0] == LEVELS - 1
    with pytest.raises(onnxviz.OnnxvizError, match="percentiles"):
        render(x, norm="percentile", percentiles=(50, 10))


def test_signed_norm_puts_zero_at_the_centre():
    x = np.array([[[-2.0, 0.0, 1.0]]], np.float32)
    img = render(x, norm="signed", padding=0)
    assert img.index[0, 1] in (LEVELS // 2 - 1, LEVELS // 2)
    assert img.index[0, 0] == 0 and img.value_range == (-2.0, 2.0)
    assert img.index[0, 2] < LEVELS - 1
    import matplotlib

    assert tuple(img.palette[0]) == tuple(matplotlib.colormaps["RdBu_r"](0.0, bytes=True)[:3])  # diverging default


def test_channel_selection():
    x = np.stack([np.full((2, 2), v, np.float32) for v in (1, -9, 5, 3)])
    assert list(select_channels(x, max_channels=2)) == [0, 1]
    assert list(select_channels(x, max_channels=2, select="mean")) == [2, 3]
    assert list(select_channels(x, max_channels=2, select="absmean")) == [1, 2]
    assert list(select_channels(x, select="max")) == [2, 3, 0, 1]
    assert list(select_channels(x, channels=[3, 1])) == [3, 1]
    with pytest.raises(onnxviz.OnnxvizError, match="channel 7 out of range"):
        select_channels(x, channels=[7])
    with pytest.raises(onnxviz.OnnxvizError, match="unknown channel selection"):
        select_channels(x, select="median")
    assert render(x, channels=[3, 1]).channels == (3, 1)


def test_min_tile_upscales_tiny_maps_nearest_neighbour():
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    img = render(x, min_tile=8, padding=0, ncols=2)
    assert (img.height, img.width) == (8, 16)
    assert (img.index[:4, :4] == img.index[0, 0]).all()  # each source pixel became a 4×4 block


def test_labels_and_colorbar():
    x = np.random.default_rng(0).random((4, 20, 20), dtype=np.float32)
    labelled = render(x, labels=True, padding=1)
    assert (labelled.index == LABEL_INDEX).any()
    plain = render(x, padding=1)
    assert not (plain.index == LABEL_INDEX).any()
    with_bar = render(x, norm="layer", colorbar=True)
    from onnxviz.rendering.palette import text_index_on_pad

    # the colorbar's values are written in black or white, whichever reads on the padding colour
    assert with_bar.width > plain.width and (with_bar.index[:, plain.width:] == text_index_on_pad(with_bar.palette)).any()
    with pytest.raises(onnxviz.OnnxvizError, match="colorbar needs one shared range"):
        render(x, colorbar=True)


def test_plus_and_minus_inf_in_one_map_stay_quiet():
    """inf and -inf in the same map (weights gone bad) sum to NaN: no warning, NaN colour there."""
    from onnxviz.report.writers import layer_stats

    maps = _maps(2, 4, 4)
    maps[1, 0, 0], maps[1, 3, 3] = np.inf, -np.inf
    with np.errstate(all="raise"):
        img = render(maps, padding=0, ncols=2)
        stats = layer_stats(maps)
    assert img.index[0, 4] == NAN_INDEX and img.index[3, 7] == NAN_INDEX
    assert stats["nonfinite"] == 2 and stats["min"] is not None


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_survives_constant_nan_inf(norm):
    maps = _maps(4, 5, 5)
    maps[0] = 2.0
    maps[1] = np.nan
    maps[2, 0, 0] = np.inf
    with np.errstate(all="raise"):
        img = render(maps, norm=norm, padding=0, ncols=4)
    assert (img.index[:, 5:10] == NAN_INDEX).all()
    assert img.index[0, 10] == NAN_INDEX


def test_sum_map_and_overlay(tmp_path):
    x = np.zeros((3, 4, 6), np.float32)
    x[0, 1, 2] = 1.0
    x[1, 1, 2] = 2.0
    x[2, 0, 0] = np.nan
    total = reduce_maps(x)
    assert total.shape == (4, 6) and total[1, 2] == 3.0 and total[0, 0] == 0.0
    assert reduce_maps(x, "mean")[1, 2] == 1.0
    base = np.full((40, 60, 3), 100, np.uint8)
    over = overlay(total, base, alpha=0.5, cmap="gray")
    rgb = over.to_array()
    assert rgb.shape == (40, 60, 3)
    assert rgb[12, 21].mean() > rgb[35, 55].mean()  # the hot spot is brighter than the background
    assert tuple(rgb[39, 0]) == (50, 50, 50)  # 0.5 · 100 + 0.5 · black
    assert overlay(total, base, alpha=0.0).to_array().tolist() == base.tolist()
    path = over.save(tmp_path / "o.png")
    assert Image.open(path).size == (60, 40)
    with pytest.raises(onnxviz.OnnxvizError, match="alpha"):
        overlay(total, base, alpha=2)


def test_matplotlib_figure_for_notebooks():
    fig = render(_maps(4, 8, 8)).to_figure(title="layer")
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and fig.axes
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, onnxviz\n"
        "onnxviz.render(np.zeros((2, 4, 4))).to_figure()\n"
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0  # no pyplot


def test_colormap_cache_matches_matplotlib(tmp_path, monkeypatch):
    import matplotlib

    from onnxviz.rendering import palette as render_module

    monkeypatch.setenv("ONNXVIZ_CACHE_DIR", str(tmp_path))
    render_module._colormap_lut.cache_clear()
    first = render_module._colormap_lut("plasma")
    cached = list((tmp_path / "colormaps").glob("plasma-*"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    render_module._colormap_lut.cache_clear()
    assert render_module._colormap_lut("plasma") == first  # served from the cache file
    expected = matplotlib.colormaps["plasma"](np.linspace(0, 1, LEVELS), bytes=True)[:, :3].astype(np.uint8).tobytes()
    assert first == expected
    render_module._colormap_lut.cache_clear()
