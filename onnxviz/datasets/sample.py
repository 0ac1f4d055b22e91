"""A small real image set for tests and the demo, built from pictures that ship inside installed
packages — scikit-image's photographs (``skimage/data``, when scikit-image is installed),
matplotlib's sample photographs and onnxviz's own bundled photo — cut into crops and mirrored.
Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from ..errors import OnnxvizError
from ..report.output import MANIFEST, staged_dir, write_json

__all__ = ["sample_sources", "write_sample"]

# Photographs (not synthetic test patterns such as the chessboard or the phantom).
_SKIMAGE = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
    "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
_MATPLOTLIB = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
# (name, left, top, right, bottom) as fractions of the picture
_CROPS = (("full", 0, 0, 1, 1), ("centre", 0.2, 0.2, 0.8, 0.8), ("tl", 0, 0, 0.6, 0.6), ("tr", 0.4, 0, 1, 0.6),
          ("bl", 0, 0.4, 0.6, 1), ("br", 0.4, 0.4, 1, 1))  # fmt: skip


def sample_sources() -> list[Path]:
    """The photographs available on this installation, in a fixed order."""
    found: list[Path] = []
    try:
        import skimage

        folder = Path(skimage.__file__).resolve().parent / "data"
        found += [folder / name for name in _SKIMAGE if (folder / name).is_file()]
    except ImportError:
        pass
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    found += [folder / name for name in _MATPLOTLIB if (folder / name).is_file()]
    if not any(p.name == "chelsea.png" for p in found):
        from ..demo import demo_image

        found.append(demo_image())
    return found


def write_sample(out_dir: str | os.PathLike, count: int | None = None, max_side: int = 320) -> list[Path]:
    """Write up to ``count`` images (every crop of every photo when None) as JPEG files into
    ``out_dir`` (staged; an earlier sample folder is replaced). Crops and mirror images are
    interleaved across photos, so a small ``count`` still covers many photographs."""
    from PIL import Image, ImageOps

    sources = sample_sources()
    if not sources:
        raise OnnxvizError("no sample photographs found (install scikit-image for more)")
    if count is not None and count < 1:
        raise OnnxvizError(f"count must be at least 1, got {count}")
    plan = [(flip, crop, src) for flip in (False, True) for crop in _CROPS for src in sources]
    plan = plan[: count if count is not None else len(plan)]
    out = Path(out_dir)
    files: list[str] = []
    opened: dict[Path, Image.Image] = {}
    with staged_dir(out) as tmp:
        for k, (flip, (name, l, t, r, b), src) in enumerate(plan):
            if src not in opened:
                with Image.open(src) as img:
                    opened[src] = ImageOps.exif_transpose(img).convert("RGB")
            img = opened[src]
            w, h = img.size
            piece = img.crop((round(l * w), round(t * h), round(r * w), round(b * h)))
            if flip:
                piece = ImageOps.mirror(piece)
            piece.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            fname = f"{k:04d}_{src.stem}_{name}{'_flip' if flip else ''}.jpg"
            piece.save(tmp / fname, quality=90)
            files.append(fname)
        write_json(tmp / MANIFEST, {"onnxviz_version": __version__, "kind": "sample-images",
                                    "sources": [str(s) for s in sources], "files": files})
    return [out / f for f in files]
