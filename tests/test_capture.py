"""One-pass capture with onnxruntime (onnxviz/capture.py, inputs.py, session.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from PIL import Image

import models
import onnxviz
from onnxviz.errors import InputError, ProviderError


def _x(shape=(2, 3, 10, 12), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["conv", "activation"])
@pytest.mark.parametrize("builder", [models.conv_bn_relu, models.silu_chain, models.conv_kinds, models.conv_in_if])
def test_capture_equals_reference_and_outputs_unchanged(builder, mode):
    model = builder()
    m = onnxviz.load(model, tap=mode, provider="cpu")
    x = _x()
    cap = m.capture(x, verify=True)
    ref = ReferenceEvaluator(model).run([t.tensor for t in m.taps] + list(m.plan.model_outputs), {"x": x})
    assert list(cap) == [t.name for t in m.taps]
    for layer, expected in zip(cap.values(), ref):
        assert layer.array.shape == expected.shape
        np.testing.assert_allclose(layer.array, expected, rtol=1e-4, atol=1e-5)
    for name, expected in zip(m.plan.model_outputs, ref[len(m.taps):]):
        np.testing.assert_allclose(cap.outputs[name], expected, rtol=1e-4, atol=1e-5)
    assert cap.verify is not None and cap.verify.ok and cap.verify.max_rel <= 1e-5
    assert cap.provider == "cpu"


def test_layer_record_fields():
    m = onnxviz.load(models.conv_bn_relu(), tap="activation")
    layer = m.capture(_x())["layer1.0.conv1"]
    assert (layer.tensor, layer.node, layer.op) == ("r1", "/layer1/layer1.0/conv1/Conv", "Conv")
    assert layer.through_ops == ("BatchNormalization", "Relu")
    assert layer.shape == (2, 4, 10, 12)


@pytest.mark.parametrize("optimization", ["basic", "extended", "all"])
def test_every_graph_optimization_level_captures_the_same(optimization):
    model = models.conv_bn_relu()
    reference = onnxviz.load(model, tap="activation", optimization="all").capture(_x())
    m = onnxviz.load(model, tap="activation", optimization=optimization)
    cap = m.capture(_x(), verify=True)
    import onnxruntime as ort

    level = m._session.get_session_options().graph_optimization_level
    assert level == getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}")
    assert cap.verify.ok
    for name in reference:
        np.testing.assert_allclose(cap[name].array, reference[name].array, rtol=1e-5, atol=1e-6)


def test_unknown_optimization_level():
    with pytest.raises(onnxviz.OnnxvizError, match="unknown graph optimization level 'fast'"):
        onnxviz.load(models.conv_bn_relu(), optimization="fast")


def test_session_is_created_once_and_reused():
    m = onnxviz.load(models.conv_bn_relu())
    m.capture(_x())
    first = m._session
    m.capture(_x(seed=1))
    assert m._session is first


def test_1d_and_3d_convs_keep_their_rank():
    c1 = onnxviz.load(models.conv1d()).capture(_x((2, 2, 9)))
    assert c1["encoder.conv"].shape == (2, 5, 9)
    c3 = onnxviz.load(models.conv3d()).capture(_x((1, 2, 4, 6, 6)))
    assert c3["conv3d"].shape == (1, 3, 4, 6, 6)


def test_dynamic_dims_use_the_image_size_or_size(rgb_image):
    m = onnxviz.load(models.conv_bn_relu())
    cap = m.capture([rgb_image])
    assert cap["layer1.0.conv1"].shape == (1, 4, 30, 40)
    cap = m.capture([rgb_image], size=(16, 20))
    assert cap.feeds["x"].shape == (1, 3, 16, 20)


def test_fixed_nhwc_input_is_resized_and_laid_out(rgb_image):
    m = onnxviz.load(models.nhwc_fixed(), tap="activation")
    assert m.inputs[0].layout == "NHWC"
    cap = m.capture([rgb_image])
    assert cap.feeds["x"].shape == (1, 20, 24, 3)
    assert cap["model.conv2d"].shape == (1, 4, 20, 24)
    with pytest.raises(InputError, match="fixed size"):
        m.capture([rgb_image], size=(10, 10))


def test_scaling_presets(rgb_image):
    m = onnxviz.load(models.conv_bn_relu())
    pixels = np.asarray(Image.open(rgb_image).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(m.capture([rgb_image]).feeds["x"], pixels / 255, rtol=1e-6)
    np.testing.assert_allclose(m.capture([rgb_image], scale="raw").feeds["x"], pixels)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_allclose(m.capture([rgb_image], scale="imagenet").feeds["x"], (pixels / 255 - mean) / std, rtol=1e-5, atol=1e-6)
    custom = m.capture([rgb_image], scale="raw", mean=[100, 110, 120], std=[2])
    np.testing.assert_allclose(custom.feeds["x"], (pixels - np.array([100, 110, 120], np.float32)[:, None, None]) / 2)
    bgr = m.capture([rgb_image], scale="raw", bgr=True).feeds["x"]
    np.testing.assert_array_equal(bgr[0], pixels[0, ::-1])
    with pytest.raises(InputError, match="mean has 2 values"):
        m.capture([rgb_image], mean=[0.1, 0.2])


def test_grayscale_rgba_and_palette_images_are_converted(tmp_path, photo):
    gray = onnxviz.load(onnxviz.demo.demo_model() if hasattr(onnxviz, "demo") else __import__("onnxviz.demo").demo.demo_model())
    cap = gray.capture([photo])
    assert cap.feeds["input"].shape == (1, 1, 300, 451)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(rgba)
    pal = tmp_path / "pal.gif"
    Image.new("P", (20, 10), 3).save(pal)
    m = onnxviz.load(models.conv_bn_relu())
    feeds = m.capture([rgba]).feeds["x"]
    assert feeds.shape == (1, 3, 10, 20) and np.allclose(feeds, 1.0)  # transparent → white background
    assert m.capture([pal]).feeds["x"].shape == (1, 3, 10, 20)


def test_batches_of_images_and_fixed_batch_one(rgb_image, photo):
    m = onnxviz.load(models.conv_bn_relu())
    cap = m.capture([rgb_image, photo])  # different sizes: all resized to the first
    assert cap["layer1.0.conv1"].shape == (2, 4, 30, 40)
    fixed = onnxviz.load(models.conv_bn_relu(batch=1))
    x = _x((3, 3, 8, 8))
    got = fixed.capture(x)
    assert got["layer1.0.conv1"].shape == (3, 4, 8, 8)
    one_by_one = [fixed.capture(x[i : i + 1])["layer1.0.conv1"].array for i in range(3)]
    np.testing.assert_allclose(got["layer1.0.conv1"].array, np.concatenate(one_by_one))


def test_two_inputs_need_explicit_feeds():
    m = onnxviz.load(models.two_inputs())
    with pytest.raises(InputError, match=r"model has 2 inputs \(a\[1,3,8,8\] float32; b\[1,3,8,8\] float32\)"):
        m.capture(_x((1, 3, 8, 8)))
    cap = m.capture(feeds={"a": _x((1, 3, 8, 8)), "b": _x((1, 3, 8, 8), seed=1)})
    assert list(cap) == ["conv_a", "conv_b"]
    with pytest.raises(InputError, match="missing input"):
        m.capture(feeds={"a": _x((1, 3, 8, 8))})
    with pytest.raises(InputError, match="unknown input"):
        m.capture(feeds={"a": _x((1, 3, 8, 8)), "b": _x((1, 3, 8, 8)), "c": _x((1,))})


def test_bad_arrays():
    m = onnxviz.load(models.nhwc_fixed())
    with pytest.raises(InputError, match="expects size 20 on axis 1"):
        m.capture(np.zeros((1, 21, 24, 3), np.float32))
    with pytest.raises(InputError, match="expects 4 dims"):
        m.capture(np.zeros((24, 3), np.float32))
    x = np.zeros((1, 20, 24, 3), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        m.capture(x)
    assert m.capture(np.zeros((20, 24, 3), np.float32))["model.conv2d"].shape[0] == 1  # batch axis added


def test_unconvertible_channel_count(rgb_image):
    model = models.conv_bn_relu()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32), "c1.w"))
    with pytest.raises(InputError, match="expects 5 channels"):
        onnxviz.load(model).capture([rgb_image])


def test_bad_image_files(tmp_path):
    m = onnxviz.load(models.conv_bn_relu())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="not an image"):
        m.capture([bad])
    with pytest.raises(InputError, match="image file not found"):
        m.capture([tmp_path / "missing.png"])


def test_nan_activations_are_captured_and_rendered():
    m = onnxviz.load(models.nan_producing())
    cap = m.capture(_x((1, 3, 6, 6)))
    second = cap["conv2"].array
    assert np.isnan(second).any()
    img = onnxviz.render(cap["conv2"])
    assert (img.index == 254).any()  # NaN marker colour


def test_external_data_model_captures_and_exposes(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(models.conv_bn_relu(), path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    m = onnxviz.load(path)
    cap = m.capture(_x(), verify=True)
    assert cap.verify.ok
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written = m.expose(out_dir / "tapped.onnx")
    assert (out_dir / "tapped.onnx.data").is_file()
    reloaded = onnx.load_model(written, load_external_data=False)
    assert any(i.data_location == onnx.TensorProto.EXTERNAL for i in reloaded.graph.initializer)
    assert [o.name for o in reloaded.graph.output] == ["y", "c1", "c2"]
    again = onnxviz.load(written).capture(_x())
    np.testing.assert_allclose(again.outputs["y"], cap.outputs["y"], rtol=1e-6)


def test_expose_refuses_to_overwrite_the_input(save):
    path = save(models.conv_bn_relu())
    before = path.read_bytes()
    with pytest.raises(onnxviz.OnnxvizError, match="refusing to overwrite"):
        onnxviz.load(path).expose(path)
    assert path.read_bytes() == before


def test_cuda_request_without_cuda_is_an_error():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    m = onnxviz.load(models.conv_bn_relu(), provider="cuda")
    with pytest.raises(ProviderError, match="has no CUDAExecutionProvider"):
        m.capture(_x())


def test_auto_provider_reports_what_ran():
    m = onnxviz.load(models.conv_bn_relu(), provider="auto")
    assert m.capture(_x()).provider in ("cpu", "cuda")


def test_random_feeds_and_verify():
    m = onnxviz.load(models.conv_bn_relu())
    feeds = m.random_feeds(size=(9, 11))
    assert feeds["x"].shape == (1, 3, 9, 11)
    report = m.verify(feeds)
    assert report.ok and report.max_abs <= 1e-5


def test_opset_newer_than_onnxruntime_is_one_clear_line():
    import onnxruntime as ort

    from onnxviz.errors import ModelLoadError

    model = models.conv_bn_relu()
    model.ir_version = 11
    for version in range(onnx.defs.onnx_opset_version(), 20, -1):
        model.opset_import[0].version = version
        try:
            onnxviz.load(model).capture(_x())
        except ModelLoadError as exc:
            text = str(exc)
            assert text.startswith(f"model uses ai.onnx opset {version}, but onnxruntime {ort.__version__} supports up to opset")
            assert "onnxruntime_src" not in text and "\n" not in text
            return
    pytest.skip("this onnxruntime supports every opset the installed onnx knows")


def test_ort_error_message_cleanup():
    from onnxviz.run.session import ort_error_message

    raw = (
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Add node. Name:'Add.178' "
        "Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/element_wise_ops.h:563 void "
        "onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 was false.\nAttempting to broadcast"
    )
    cleaned = ort_error_message(RuntimeError(raw))
    assert cleaned.startswith("Non-zero status code returned while running Add node") and "\n" not in cleaned


def test_taps_are_read_lazily_and_each_capture_keeps_its_own_buffers():
    m = onnxviz.load(models.conv_bn_relu(), tap="activation", provider="cpu")
    first = m.capture(_x(seed=1))
    layer = first["layer1.0.conv1"]
    assert "array" not in layer.__dict__  # nothing read yet
    assert layer.shape == (2, 4, 10, 12) and layer.dtype == np.float32 and layer.nbytes == 2 * 4 * 10 * 12 * 4
    assert "array" not in layer.__dict__ and layer.on_host  # CPU memory: reading costs no copy
    kept = layer.array.copy()
    second = m.capture(_x(seed=2))  # a new run must not write into the first capture's buffers
    np.testing.assert_array_equal(first["layer1.0.conv1"].array, kept)
    assert not np.array_equal(second["layer1.0.conv1"].array, kept)
    assert first.plan.total_bytes == sum(layer.nbytes for layer in first.values())


class _DeviceValue:
    """An OrtValue as a CUDA run returns it: readable only through a (counted) copy to the host."""

    copies: list[str] = []

    def __init__(self, name, value):
        self.name, self._value = name, value

    def numpy(self):
        _DeviceValue.copies.append(self.name)
        return self._value.numpy().copy()

    def shape(self):
        return self._value.shape()

    def element_type(self):
        return self._value.element_type()

    def device_name(self):
        return "cuda"


class _DeviceSession:
    """Runs on the CPU session but hands outputs over as device values, recording the binding."""

    def __init__(self, session):
        self.session, self.bound = session, {}

    def io_binding(self):
        outer = self

        class Binding:
            def bind_cpu_input(self, name, value):
                self.feeds = {**getattr(self, "feeds", {}), name: value}

            def bind_output(self, name, device):
                outer.bound[name] = device

            def get_outputs(self):
                return self.outputs

        return Binding()

    def run_with_iobinding(self, binding):
        import onnxruntime as ort

        names = list(self.bound)
        values = self.session.run(names, binding.feeds)
        binding.outputs = [_DeviceValue(n, ort.OrtValue.ortvalue_from_numpy(v)) for n, v in zip(names, values)]


def test_on_cuda_taps_stay_on_the_device_until_read():
    m = onnxviz.load(models.conv_bn_relu(), tap="activation", provider="cpu")
    fake = _DeviceSession(m._ensure_session())
    m._session, m._provider = fake, "cuda"
    _DeviceValue.copies = []
    cap = m.capture(_x())
    assert set(fake.bound.values()) == {"cuda"} and set(fake.bound) == set(m.plan.output_names)
    assert _DeviceValue.copies == list(m.plan.model_outputs)  # only the model's own (small) outputs
    layer = cap["layer1.0.conv2"]
    assert not layer.on_host and layer.shape == (2, 6, 4, 5) and cap.plan.total_bytes > 0
    assert _DeviceValue.copies == list(m.plan.model_outputs)
    layer.render()
    layer.render(image=1)
    assert _DeviceValue.copies == [*m.plan.model_outputs, "r2"] and layer.on_host  # copied once, when rendered
