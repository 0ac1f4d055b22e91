"""Images of every kind Pillow reads, and inputs that cannot hold them: fed without clipping or
wrapping, or refused in one line (exit 2). Images are made here with Pillow/numpy in tmp dirs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import models
import onnxviz
from fuzzing import check_outcome, run_cli

H, W = 12, 16


def _model(dtype: int = TensorProto.FLOAT, channels: int = 3, fixed: bool = True) -> onnx.ModelProto:
    """x (channels × H × W, or dynamic H/W) of ``dtype`` → Cast → Conv."""
    shape = [1, channels, H, W] if fixed else ["N", channels, "h", "w"]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["xf", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    return models.make(nodes, [helper.make_tensor_value_info("x", dtype, shape)], [models.out("y")], [models.init("w", (2, channels, 3, 3))])


def _png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


RAMP16 = np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)


def _save(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _save_big_endian(path: Path) -> Path:
    Image.frombytes("I;16B", (W, H), RAMP16.astype(">u2").tobytes()).save(path)  # (Pillow's convert to I;16B clips)
    with Image.open(path) as img:
        assert img.mode == "I;16B"
    return path


# name → (make the file, expected fed values for --scale unit on a 3-channel float model, or None)
def _cases(tmp: Path) -> dict:
    rgb16 = (np.random.default_rng(1).integers(0, 65536, (H, W, 3))).astype(np.uint16)
    _png16_rgb(tmp / "rgb16.png", rgb16)
    bits = np.random.default_rng(2).random((H, W)) > 0.5
    return {
        "16-bit PNG (I;16)": (_save(tmp / "g16.png", RAMP16), np.repeat((RAMP16 / 65535.0)[None], 3, 0)),
        "16-bit big-endian TIFF (I;16B)": (_save_big_endian(tmp / "g16b.tiff"), np.repeat((RAMP16 / 65535.0)[None], 3, 0)),
        "32-bit integer TIFF within 0..65535 (I)": (_save(tmp / "i32.tiff", RAMP16.astype(np.int32)), np.repeat((RAMP16 / 65535.0)[None], 3, 0)),
        "16-bit RGB PNG (Pillow reads 8 bits)": (tmp / "rgb16.png", (rgb16 >> 8).transpose(2, 0, 1) / 255.0),
        "1-bit PNG": (_save(tmp / "b1.png", bits), np.repeat(bits[None].astype(np.float64), 3, 0)),
    }


@pytest.mark.parametrize("case", ["16-bit PNG (I;16)", "16-bit big-endian TIFF (I;16B)", "32-bit integer TIFF within 0..65535 (I)",
                                  "16-bit RGB PNG (Pillow reads 8 bits)", "1-bit PNG"])
def test_deep_and_shallow_images_are_fed_at_full_depth(case, tmp_path):
    path, expected = _cases(tmp_path)[case]
    model = onnxviz.load(_model())
    fed = model.prepare([path])["x"][0]
    np.testing.assert_allclose(fed, expected, atol=1e-6)
    if "16" in case and "RGB" not in case:
        assert (fed >= 0.999).mean() < 0.01, "a 16-bit image must not be clipped to white"
        assert len(np.unique(fed)) > 150  # the 192 levels of the ramp survive (8 bits would keep far fewer)


def test_16_bit_image_on_a_gray_model_and_resized(tmp_path):
    path = _save(tmp_path / "g16.png", RAMP16)
    gray = onnxviz.load(_model(channels=1, fixed=False))
    fed = gray.prepare([path], size=(H * 2, W * 2))["x"][0, 0]
    assert fed.shape == (H * 2, W * 2) and 0 <= fed.min() and fed.max() <= 1.0
    assert (fed >= 0.999).mean() < 0.02 and len(np.unique(fed)) > 300  # resized in float, not through 8 bits


def test_16_bit_image_in_the_report_is_not_clipped(tmp_path):
    path = _save(tmp_path / "g16.png", RAMP16)
    onnx.save(_model(), tmp_path / "m.onnx")
    code, out, err = run_cli(["report", str(tmp_path / "m.onnx"), str(path), "-o", str(tmp_path / "r"), "--no-graph", "--cam", "none"])
    assert code == 0 and not check_outcome(code, out, err), err
    with Image.open(tmp_path / "r" / "input_0.png") as img:
        shown = np.asarray(img.convert("L"), dtype=np.float64)
    np.testing.assert_allclose(shown, RAMP16 / 257.0, atol=1.0)


def test_float_tiff_is_taken_as_it_is_with_raw_only(tmp_path):
    values = np.linspace(-3.5, 700.25, H * W, dtype=np.float32).reshape(H, W)
    path = _save(tmp_path / "f.tiff", values)
    model = onnxviz.load(_model())
    np.testing.assert_array_equal(model.prepare([path], scale="raw")["x"][0, 1], values)
    np.testing.assert_allclose(model.prepare([path], scale="raw", mean=[1.5], std=[2])["x"][0, 2], (values - 1.5) / 2, rtol=1e-6)
    for scale in (None, "unit", "imagenet"):
        with pytest.raises(onnxviz.InputError, match="no fixed range to scale from: use --scale raw"):
            model.prepare([path], scale=scale)
    bad = values.copy()
    bad[0, 0] = np.nan
    with pytest.raises(onnxviz.InputError, match="NaN or Inf"):
        model.prepare([_save(tmp_path / "nan.tiff", bad)], scale="raw")


INTEGER_CASES = {
    # dtype, scale, mean, expected value for a pixel of 200, or the error
    "uint8 default (raw)": (TensorProto.UINT8, None, None, 200),
    "uint8 raw": (TensorProto.UINT8, "raw", None, 200),
    "uint8 unit refused": (TensorProto.UINT8, "unit", None, "would feed pixels of 0..1 rounded to whole numbers"),
    "uint8 imagenet refused": (TensorProto.UINT8, "imagenet", None, "use --scale raw"),
    "int8 default refused": (TensorProto.INT8, None, None, "--mean 128 shifts 0..255 into -128..127"),
    "int8 with mean 128": (TensorProto.INT8, None, [128.0], 72),
    "int8 mean 100 still out of range": (TensorProto.INT8, None, [100.0], "span -100..155"),
    "int16 raw": (TensorProto.INT16, None, None, 200),
    "int32 with mean/std": (TensorProto.INT32, "raw", [100.0], 100),
    "uint8 negative after mean refused": (TensorProto.UINT8, None, [10.0], "span -10..245"),
}


@pytest.mark.parametrize("case", sorted(INTEGER_CASES))
def test_integer_inputs_hold_the_pixels_or_refuse(case, tmp_path):
    dtype, scale, mean, expected = INTEGER_CASES[case]
    path = _save(tmp_path / "p.png", np.full((H, W, 3), 200, np.uint8))
    model = onnxviz.load(_model(dtype))
    if isinstance(expected, str):
        with pytest.raises(onnxviz.InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            model.prepare([path], scale=scale, mean=mean)
        return
    fed = model.prepare([path], scale=scale, mean=mean)["x"]
    assert fed.dtype == onnx.helper.tensor_dtype_to_np_dtype(dtype)
    assert (fed == expected).all(), np.unique(fed)


def test_integer_inputs_take_the_same_default_scale_in_every_api(tmp_path):
    """dataset, gradients and cam resolve ``scale=None`` as capture does: raw for a uint8 input."""
    path = _save(tmp_path / "p.png", np.full((H, W, 3), 200, np.uint8))
    onnx.save(_model(TensorProto.UINT8), tmp_path / "u8.onnx")
    model = onnxviz.load(tmp_path / "u8.onnx")
    want = model.capture([path])["conv"].array
    stats = onnxviz.dataset(tmp_path / "u8.onnx", [path], top_k=1, batch=1, progress=False)
    np.testing.assert_allclose(stats["conv"].max, want.max(axis=(0, 2, 3)), rtol=1e-6)
    result = onnxviz.gradients(model, [path], wrt="xf", target="conv:0")  # an integer input has no gradient
    assert result.feeds["x"].dtype == np.uint8 and (result.feeds["x"] == 200).all()


def test_integer_input_on_the_command_line(tmp_path):
    path = _save(tmp_path / "p.png", np.full((H, W, 3), 200, np.uint8))
    onnx.save(_model(TensorProto.INT8), tmp_path / "i8.onnx")
    code, out, err = run_cli(["maps", str(tmp_path / "i8.onnx"), str(path), "-o", str(tmp_path / "o")])
    assert code == 2 and not check_outcome(code, out, err) and "--mean 128" in err
    assert not (tmp_path / "o").exists()
    code, out, err = run_cli(["maps", str(tmp_path / "i8.onnx"), str(path), "-o", str(tmp_path / "o"), "--mean", "128"])
    assert code == 0, err
    manifest = __import__("json").loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["inputs"][0]["scale"] == "raw"


def test_boolean_input_takes_no_images(tmp_path):
    path = _save(tmp_path / "p.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(onnxviz.InputError, match="boolean: pass an array"):
        onnxviz.load(_model(TensorProto.BOOL)).prepare([path])


BROKEN = {
    "truncated PNG": lambda p: p.write_bytes(_png_bytes()[: len(_png_bytes()) // 2]),
    "not an image": lambda p: p.write_bytes(b"hello, this is text\n" * 10),
    "empty file": lambda p: p.write_bytes(b""),
    "32-bit integer outside 0..65535": lambda p: Image.fromarray(np.full((H, W), 70000, np.int32)).save(p, format="TIFF"),
}


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", ["maps", "report"])
def test_broken_images_are_one_line(case, command, tmp_path):
    path = tmp_path / "bad.img"
    BROKEN[case](path)
    onnx.save(_model(), tmp_path / "m.onnx")
    code, out, err = run_cli([command, str(tmp_path / "m.onnx"), str(path), "-o", str(tmp_path / "o")])
    assert code == 2 and not check_outcome(code, out, err), (code, err)
    assert not (tmp_path / "o").exists()


def test_modes_pillow_cannot_convert_are_one_line():
    model = onnxviz.load(_model())
    lab = Image.new("LAB", (W, H))
    try:
        lab.convert("RGB")
    except ValueError:
        with pytest.raises(onnxviz.InputError, match="cannot convert a LAB image"):
            model.prepare([lab])
    else:
        assert model.prepare([lab])["x"].shape == (1, 3, H, W)


def test_exif_rotation_decides_the_fed_size_before_decoding(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # 40 wide, 20 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: shown 20 wide, 40 high
    img.save(tmp_path / "r.jpg", exif=exif)
    model = onnxviz.load(_model(fixed=False))
    assert model.prepare([tmp_path / "r.jpg"])["x"].shape == (1, 3, 40, 20)


def test_huge_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    from onnxviz.run.inputs import plan_images

    rng = np.random.default_rng(0)
    small = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    Image.fromarray(small).resize((8000, 6000), Image.Resampling.BILINEAR).save(tmp_path / "big.jpg", quality=90)
    model = onnxviz.load(_model())
    plan = plan_images(model.inputs[0], [tmp_path / "big.jpg"])
    assert plan.decode_bytes() < 8000 * 6000 * 3 // 16  # decoded at 1/8 scale, not 144 MB
    fed = model.prepare([tmp_path / "big.jpg"])["x"][0]
    with Image.open(tmp_path / "big.jpg") as full:
        reference = np.asarray(full.convert("RGB").resize((W, H), Image.Resampling.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.abs(fed - reference).mean() < 0.02  # the same picture


def test_images_past_pillows_bomb_warning_do_not_warn(tmp_path):
    """Pillow warns above 89 Mpx; onnxviz's memory estimate decides what fits, so no warning reaches a notebook."""
    import warnings

    Image.new("L", (10000, 9500), 128).save(tmp_path / "big.jpg", quality=50)  # 95 Mpx
    model = onnxviz.load(_model())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fed = model.prepare([tmp_path / "big.jpg"])["x"]
    assert fed.shape == (1, 3, H, W) and np.allclose(fed, 128 / 255, atol=2 / 255)
