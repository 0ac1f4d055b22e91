"""Dataset mode (onnxviz/datasets/): fixed-bin histograms, per-row reductions, exact merges,
graph-side reductions, receptive fields, and onnxviz.dataset against a capture-based reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

import models
import onnxviz
from onnxviz.datasets.bins import NAN_BIN, NBINS, ZERO_BIN, bin_edges, bin_index
from onnxviz.datasets.engine import Engine, JobSpec, Part, image_key
from onnxviz.datasets.rows import numpy_rows, sample_slices
from onnxviz.datasets.stats import LayerStats
from onnxviz.demo import demo_model


# -- bins --------------------------------------------------------------------------------------
def test_bins_are_ordered_and_every_value_lands_between_its_edges():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 8, 20000),
        [0.0, -0.0, 1e-30, -1e-30, 2.0**-16, -(2.0**-16), 2.0**16, -(2.0**16), 1e30, -1e30, np.inf, -np.inf, 1.0, 1.25, 6.0],
    ]).astype(np.float32)  # fmt: skip
    bins = bin_index(values)
    edges = bin_edges()
    assert edges.shape == (NBINS + 1,) and np.all(np.diff(edges[:-1]) >= 0)
    finite_bins = bins != ZERO_BIN
    lo, hi = edges[bins], edges[bins + 1]
    assert np.all((lo[finite_bins] <= values[finite_bins]) & (values[finite_bins] <= hi[finite_bins]))
    assert np.all(np.diff(bins[np.argsort(values, kind="stable")]) >= 0)  # monotone in the value
    assert bin_index(np.array([np.nan], np.float32))[0] == NAN_BIN and bin_index(np.array([0.0, -0.0], np.float32)).tolist() == [ZERO_BIN] * 2
    # four bins per octave: 1 and 1.2 share one, 1.25 starts the next
    assert bin_index(np.array([1.0, 1.2], np.float32)).tolist()[0] == bin_index(np.array([1.2], np.float32))[0] != bin_index(np.array([1.25], np.float32))[0]


# -- per-row reductions ------------------------------------------------------------------------
def test_numpy_rows_match_float64_reference_and_handle_nonfinite():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((5, 6, 13, 11)) * 3 + 100).astype(np.float32)  # offset: naive sums of squares would cancel
    a[1, 2, 4, 5] = np.nan
    a[3, 0, 0, 0] = np.inf
    a[4, 5] = np.nan  # a row with no finite value
    rows = numpy_rows(a, grid=4)
    flat = a.reshape(5, 6, -1).astype(np.float64)
    finite = np.isfinite(flat)
    masked = np.where(finite, flat, np.nan)
    ok = finite.any(axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN row
        mean = np.nanmean(masked, axis=2)
        m2 = np.nansum((masked - mean[..., None]) ** 2, axis=2)
        nanmax = np.nanmax(masked, axis=2)
    np.testing.assert_allclose(rows.mean[ok], mean[ok], rtol=1e-6)
    np.testing.assert_allclose(rows.m2[ok], m2[ok], rtol=1e-4)
    assert np.array_equal(rows.count, finite.sum(axis=2)) and np.array_equal(rows.nonfinite, (~finite).sum(axis=2))
    assert np.array_equal(rows.max[ok], nanmax[ok]) and rows.max[4, 5] == -np.inf and rows.argmax[4, 5] == -1
    assert np.array_equal(rows.positive, (np.nan_to_num(flat, nan=0.0, posinf=0.0) > 0).sum(axis=2))
    assert rows.samples.shape == (5, 6, 3, 4)  # ceil(13/4)=4 → rows 2,6,10; ceil(11/4)=3 → cols 1,4,7,10
    assert sample_slices((13, 11), 4) == (slice(2, None, 4), slice(1, None, 3))


def test_rows_do_not_depend_on_the_batch():
    rng = np.random.default_rng(2)
    for shape in ((12, 3, 70, 70), (12, 40, 7, 7)):
        a = (rng.standard_normal(shape) + 0.3).astype(np.float32)
        whole = numpy_rows(a, 4)
        for n in (1, 5):
            part = numpy_rows(a[:n], 4)
            for name in ("max", "argmax", "min", "mean", "m2", "positive", "samples"):
                assert np.array_equal(getattr(whole, name)[:n], getattr(part, name)), (shape, n, name)


# -- merging -----------------------------------------------------------------------------------
def _stats_of(rows_list, k=3):
    stats = LayerStats("l", 4, (5, 5), k)
    for rows, index in rows_list:
        stats.add_rows(rows, index, np.array([image_key(f"img{i}.png") for i in index], np.uint64))
    return stats


def test_any_split_and_order_merges_to_the_same_statistics():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((23, 4, 5, 5)).astype(np.float32)
    a[7] = a[3]  # exact ties in the top-k: broken by the path key, whatever the split
    a[11] = a[3]
    index = np.arange(23)
    reference = _stats_of([(numpy_rows(a, 2), index)])
    for cuts in ([5, 17], [1, 2, 3, 20], [12]):
        parts = [_stats_of([(numpy_rows(a[lo:hi], 2), index[lo:hi])]) for lo, hi in zip([0, *cuts], [*cuts, 23])]
        merged = LayerStats("l", 4, (5, 5), 3)
        for part in reversed(parts):
            merged.merge(part)
        for name in ("top_image", "top_pos", "top_key", "top_score", "hist", "count", "positive", "min", "max", "nonfinite"):
            assert np.array_equal(getattr(merged, name), getattr(reference, name)), name
        np.testing.assert_allclose(merged.mean, reference.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(merged.std, reference.std, rtol=1e-12)
    flat = a.reshape(23, 4, -1).astype(np.float64)
    np.testing.assert_allclose(reference.std, flat.transpose(1, 0, 2).reshape(4, -1).std(axis=1), rtol=1e-6)
    tied = [i for i in reference.top_image.ravel() if i in (3, 7, 11)]
    keys = {i: image_key(f"img{i}.png") for i in (3, 7, 11)}
    if len(tied) >= 2:  # the tied images come in key order
        ranks = [i for i in reference.top_image[np.isin(reference.top_image, [3, 7, 11]).any(axis=1)][0] if i in keys]
        assert [keys[i] for i in ranks] == sorted(keys[i] for i in ranks)


def test_part_round_trips_through_bytes():
    rng = np.random.default_rng(4)
    stats = _stats_of([(numpy_rows(rng.standard_normal((6, 4, 5, 5)).astype(np.float32), 4), np.arange(6))])
    part = Part({"l": stats}, np.arange(6), [(9, "broken")], 1.5, ["a.png"])
    back = Part.from_bytes(part.to_bytes())
    assert back.skipped == [(9, "broken")] and back.paths == ["a.png"] and back.seconds == 1.5
    for name in ("hist", "top_image", "mean", "m2", "top_key"):
        assert np.array_equal(getattr(back.layers["l"], name), getattr(stats, name))


# -- graph-side reductions ---------------------------------------------------------------------
def test_graph_reductions_equal_numpy_reductions(save, photos):
    images = sorted(str(p) for p in photos.glob("*.jpg"))[:12]
    keys = np.array([image_key(p) for p in images], np.uint64)
    results = {}
    path = str(save(models.conv_bn_relu()))  # one model: each call draws new random weights
    for reduce in ("numpy", "graph"):
        engine = Engine(JobSpec(model=path, size=(20, 24), reduce=reduce, batch=5, top_k=4))
        assert engine.reduce == reduce
        results[reduce] = engine.process(images, images, np.arange(len(images)), keys)
    for name, a in results["numpy"].layers.items():
        b = results["graph"].layers[name]
        for field in ("top_image", "top_pos", "hist", "count", "positive", "min", "max", "top_score"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-5)


def test_nan_activations_are_counted_and_excluded_on_both_paths(save, photos):
    images = sorted(str(p) for p in photos.glob("*.jpg"))[:6]
    keys = np.array([image_key(p) for p in images], np.uint64)
    out = {}
    path = str(save(models.nan_producing()))
    for reduce in ("numpy", "graph"):
        engine = Engine(JobSpec(model=path, size=(16, 16), reduce=reduce, batch=4))
        out[reduce] = engine.process(images, images, np.arange(6), keys).layers["conv2"]
    a, b = out["numpy"], out["graph"]
    assert a.nonfinite.sum() > 0 and np.array_equal(a.nonfinite, b.nonfinite) and np.array_equal(a.count, b.count)
    assert np.isfinite(a.mean).all() and np.array_equal(a.top_image, b.top_image)


# -- receptive fields --------------------------------------------------------------------------
def test_receptive_fields_match_the_pixels_that_change_the_output(save):
    """Perturb each input pixel alone: the output positions it moves must be exactly those whose
    computed field contains it (interior positions, where padding does not clip the field)."""
    from onnxviz.datasets.receptive import receptive_fields

    model = onnxviz.load(save(models.conv_bn_relu()), tap="conv")
    fields = receptive_fields(model.proto, "x", "NCHW", [t.tensor for t in model.taps])
    rf = fields[model.taps[1].tensor]
    assert rf.size == (5.0, 5.0) and rf.stride == (2.0, 2.0) and rf.exact
    h = w = 17
    base = np.random.default_rng(5).standard_normal((1, 3, h, w)).astype(np.float32)
    batch = np.repeat(base, 2 * h * w, axis=0)
    for p in range(h * w):  # ±100: whatever the weights, one sign gets through the ReLU between the convs
        batch[p, :, p // w, p % w] += 100.0
        batch[h * w + p, :, p // w, p % w] -= 100.0
    out = model.capture(np.concatenate([base, batch]))[model.taps[1].name].array
    diff = np.abs(out[1:] - out[:1]).max(axis=1) > 1e-6
    moved = diff[: h * w] | diff[h * w :]  # (pixels, oh, ow)
    for y, x in ((3, 3), (2, 5), (4, 4)):
        top, left, bottom, right = rf.box(y, x, h, w)
        seen = moved[:, y, x].reshape(h, w)
        expected = np.zeros((h, w), bool)
        expected[top:bottom, left:right] = True
        assert np.array_equal(seen, expected), (y, x)
    # the bundled digits CNN: conv 5x5 p2, pool 2, conv 5x5 p2, pool 2, conv 3x3 p1
    digits = onnxviz.load(demo_model())
    fields = receptive_fields(digits.proto, "input", "NCHW", [t.tensor for t in digits.taps])
    assert [fields[t.tensor].size for t in digits.taps] == [(5, 5), (14, 14), (24, 24)]  # 5; 5+1; 6+4·2; 14+1·2; 16+2·4
    assert [fields[t.tensor].stride for t in digits.taps] == [(1, 1), (2, 2), (4, 4)]


# -- the API against a capture-based reference -------------------------------------------------
def test_dataset_equals_a_reference_computed_from_captures(photos):
    images = sorted(str(p) for p in photos.glob("*.jpg"))
    stats = onnxviz.dataset(demo_model(), photos, size=(40, 40), batch=7, shard_size=10, top_k=5, progress=False)
    assert stats.count == len(images) and stats.images == images and list(stats) == ["conv1", "conv2", "conv3"]
    model = onnxviz.load(demo_model())
    keys = np.array([image_key(p) for p in images], np.uint64)
    captured = {name: [] for name in stats}
    for k in range(0, len(images), 16):
        cap = model.capture(images[k : k + 16], size=(40, 40))
        for name in stats:
            captured[name].append(np.array(cap[name].values()))
    for name in stats:
        acts = np.concatenate(captured[name]).astype(np.float64)  # N×C×H×W
        s = stats[name]
        per_channel = acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)
        np.testing.assert_allclose(s.mean, per_channel.mean(axis=1), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(s.std, per_channel.std(axis=1), rtol=1e-6)
        assert np.array_equal(s.min, per_channel.min(axis=1)) and np.array_equal(s.max, per_channel.max(axis=1))
        assert np.array_equal(s.positive, (per_channel > 0).sum(axis=1))
        scores = acts.reshape(*acts.shape[:2], -1).max(axis=2)  # N×C
        for c in range(s.channels):
            order = sorted(range(len(images)), key=lambda i: (-scores[i, c], int(keys[i]), i))[:5]
            assert s.top_image[c].tolist() == order, (name, c)
        sampled = acts[(slice(None), slice(None), *sample_slices(acts.shape[2:], 4))].astype(np.float32)
        hist = np.stack([np.bincount(bin_index(sampled[:, c]).ravel().astype(np.intp), minlength=NBINS) for c in range(s.channels)])
        assert np.array_equal(s.hist, hist)
    top = stats.top("conv2", 0)[0]
    assert top["path"] == images[stats["conv2"].top_image[0, 0]] and len(top["position"]) == 2
    y, x = top["position"]
    assert acts.shape and top["box"] == list(stats.receptive_field("conv2").box(y, x, 40, 40))


def test_dataset_split_over_batches_shards_and_reduce_modes_is_identical(photos):
    a = onnxviz.dataset(demo_model(), photos, size=(32, 32), batch=32, progress=False)
    b = onnxviz.dataset(demo_model(), photos, size=(32, 32), batch=3, shard_size=7, reduce="graph", progress=False)
    for name in a:
        for field in ("top_image", "top_pos", "hist", "count", "positive", "min", "max"):
            assert np.array_equal(getattr(a[name], field), getattr(b[name], field)), (name, field)
        np.testing.assert_allclose(a[name].std, b[name].std, rtol=1e-5)


def test_dead_and_saturated_channels_are_flagged(save, photos):
    """Channel 0 never positive (negative bias, zero weights), channel 1 clipped at 6 (Relu6)."""
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[2] = 0.5
    bias = np.array([-1.0, 100.0, 0.0], np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6"),
    ]
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(bias, "b"),
             onnx.numpy_helper.from_array(np.array(0.0, np.float32), "lo"), onnx.numpy_helper.from_array(np.array(6.0, np.float32), "hi")]  # fmt: skip
    model = models.make(nodes, [models.image_input()], [models.out("y")], inits)
    stats = onnxviz.dataset(save(model), photos, tap="activation", size=(16, 16), progress=False)
    name = next(iter(stats))
    assert stats.dead(name) == [0] and stats.saturated(name) == [1]
    table = stats.table(name)
    assert table["frac_positive"][0] == 0 and table["frac_positive"][1] == 1 and math.isclose(table["max"][1], 6.0)


def test_threads_reach_the_session(save):
    path = save(models.conv_bn_relu())
    model = onnxviz.load(path, threads=1)
    model.capture(np.zeros((1, 3, 8, 8), np.float32))
    assert model._session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(onnxviz.OnnxvizError, match="threads"):
        onnxviz.load(path, threads=-1)


def test_progress_shows_images_per_second():
    import io

    from onnxviz.progress import Progress

    stream = io.StringIO()
    with Progress(10, "images", stream=stream, enabled=True, rate=True, done=4) as bar:
        bar.update(6)
    assert "10/10 images" in stream.getvalue() and "/s" in stream.getvalue()


def test_dataset_takes_a_loaded_model_and_layer_selections(photos):
    model = onnxviz.load(demo_model(), tap="activation", layers="conv[23]")
    stats = onnxviz.dataset(model, photos, size=(24, 24), top_k=2, progress=False)
    assert list(stats) == ["conv2", "conv3"] and stats.settings["top_k"] == 2
    assert stats.info["conv2"]["through"] and stats.run["runner"] == "local" and stats.run["images_per_second"] > 0
    picked = onnxviz.dataset(demo_model(), photos, layers="conv1", size=(24, 24), progress=False)
    assert list(picked) == ["conv1"] and picked["conv1"].channels == 8
    with pytest.raises(onnxviz.OnnxvizError, match="ray"):
        onnxviz.dataset(model, photos, size=(24, 24), ray="auto", progress=False)


def test_a_loaded_model_runs_in_a_session_of_its_own_without_the_memory_pattern():
    from onnxviz.datasets.engine import Engine, JobSpec

    model = onnxviz.load(demo_model(), tap="activation")  # its own session keeps onnxruntime's memory pattern
    engine = Engine(JobSpec(model=str(demo_model()), size=(24, 24), reduce="numpy"), model=model)
    assert engine.model is not model and engine.model.plan is model.plan and engine.model.loaded is model.loaded
    assert engine.model._ensure_session().get_session_options().enable_mem_pattern is False
    assert model._ensure_session().get_session_options().enable_mem_pattern is True
