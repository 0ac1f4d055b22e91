"""How much memory a run will take, worked out before anything is allocated, against a bound.

Before an input is decoded or a session runs, onnx shape inference runs on the (weightless)
model with the real feed shapes, and the graph is walked in order: each tensor is counted from the
node that makes it to its last consumer (graph outputs and tapped layers are kept to the end), plus
each Conv's im2col workspace. Counted, for what depends on the input (weights are not: they do not
depend on it, and onnxruntime reads them from the file as plain inference does):

- what onnxviz holds: the fed input, its preparation (one decoded image and its resized copy at a
  time; huge JPEGs decode at a reduced scale), the captured layers (all of them in one pass; with
  ``--max-memory``, a group of them at a time, the rest streamed to disk) and rendering (one
  layer's maps as 8-bit levels and the grid, plus a bounded float working block);
- what onnxruntime holds while the model runs: the tensors alive at once.

Two checks, each refused with one line giving the numbers and what to change (instead of a
MemoryError, an onnxruntime allocation failure or a machine driven into swap):

1. with ``--max-memory CAP`` / ``max_memory=``, what onnxviz holds must fit in the cap (amounts
   under ``SLACK``, 16 MiB, are not held against it: the interpreter and its libraries alone take
   more, and a cap in kilobytes still groups layers as before);
2. the whole run must fit in what the machine can spare: three quarters of the memory available
   now (``MemAvailable`` on Linux, the cgroup's limit when lower), or the cap when it is larger.

Tensors whose shapes inference cannot work out count as zero.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx
from onnx import helper

from ..common import parse_size
from ..errors import InputError

if TYPE_CHECKING:
    from .model import Model

__all__ = [
    "MemoryEstimate", "available_memory", "machine_bound", "estimate_run", "check_memory", "check_run", "fmt_bytes", "DEFAULT_FRACTION",
]

DEFAULT_FRACTION = 0.75  # of the memory available when the run starts
RENDER_BLOCK = 32 << 20  # float working block of the renderer (rendering.levels.CHUNK_BYTES)


def fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cgroup_limit() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < (1 << 60):
            return max(int(limit) - usage, 0)
    return None


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None when the system does not say)."""
    found = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    limit = _cgroup_limit()
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def machine_bound() -> tuple[int | None, str]:
    """What the machine can spare now, in bytes, and how to name it (None: the system does not say)."""
    available = available_memory()
    if available is None:
        return None, "no bound"
    return int(available * DEFAULT_FRACTION), f"what this machine can spare ({DEFAULT_FRACTION:.0%} of the {fmt_bytes(available)} available)"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by what needs them."""

    input: int  # the fed arrays
    prepare: int  # beyond the input, while it is prepared (one decoded image and its resized copy)
    peak_all: int  # tensors alive at once during the run, every tapped layer kept (one pass)
    peak_none: int  # the same keeping no tapped layer (passes over layer groups stream them out)
    taps: int  # all tapped layers
    largest_tap: int
    largest: tuple[str, int]  # the largest tensor and its bytes
    render: int  # rendering one layer
    unknown: int  # tensors whose size inference could not tell

    def taps_held(self, cap: int | None) -> int:
        """Captured layers in memory at once: all, or a group of at most ``cap`` (a larger layer alone)."""
        return self.taps if cap is None else max(min(self.taps, cap), self.largest_tap)

    def held(self, cap: int | None) -> int:
        """What onnxviz itself holds at its peak."""
        return self.input + max(self.prepare, self.taps_held(cap) + self.render)

    def total(self, cap: int | None) -> int:
        """The whole run: onnxviz's part and onnxruntime's tensors."""
        run = self.peak_all if cap is None else self.peak_none + self.taps_held(cap)
        return self.input + max(self.prepare, run + self.render)

    def describe(self, cap: int | None, *, runtime: bool) -> str:
        parts = [f"input {fmt_bytes(self.input)}"]
        if self.prepare:
            parts.append(f"decoding and resizing {fmt_bytes(self.prepare)}")
        if runtime:
            run = self.peak_all if cap is None else self.peak_none + self.taps_held(cap)
            parts.append(f"tensors alive at once while the model runs {fmt_bytes(run)}")
        else:
            parts.append(f"captured layers held {fmt_bytes(self.taps_held(cap))}")
        if self.render:
            parts.append(f"rendering {fmt_bytes(self.render)}")
        name, size = self.largest
        if runtime and size:
            parts.append(f"largest tensor '{name}' {fmt_bytes(size)}")
        return "; ".join(parts)


Dims = tuple[list[int | None], int]  # a tensor's dims (None: unknown) and element type


def _dims_of(vi: onnx.ValueInfoProto, subst: Mapping[str, int]) -> Dims | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else subst.get(d.dim_param) for d in t.shape.dim]
    return dims, t.elem_type


def tensor_bytes(dims: Dims | None) -> int | None:
    """Bytes of a tensor of ``(dims, elem_type)`` (None when a dim is unknown; unknown types count 4)."""
    if dims is None or any(d is None or d < 0 for d in dims[0]):
        return None
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(dims[1])).itemsize if dims[1] else 4
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return math.prod(dims[0]) * itemsize


def inferred_sizes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, Dims]:
    """Dims of every tensor for inputs of ``shapes``.

    When the load-time shapes differ from these only by named input dims (a dynamic batch ``N``),
    those names are substituted; otherwise onnx shape inference runs again with the inputs fixed.
    """
    subst: dict[str, int] = {}
    consistent = True
    for vi in model.graph.input:
        if vi.name not in shapes or not vi.type.tensor_type.HasField("shape"):
            continue
        for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            if d.HasField("dim_value"):
                consistent &= d.dim_value == int(size)
            elif d.dim_param:
                consistent &= subst.setdefault(d.dim_param, int(size)) == int(size)
            else:
                consistent = False
    infos = list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    if consistent:
        found = {vi.name: _dims_of(vi, subst) for vi in infos}
        produced = {out for node in model.graph.node for out in node.output}
        if all(found.get(name) is not None and None not in found[name][0] for name in produced):
            return {k: v for k, v in found.items() if v is not None}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for vi in fixed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, size in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # best effort: whatever could not be inferred counts as unknown
        inferred = fixed
    everything = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    return {vi.name: d for vi in everything if (d := _dims_of(vi, {})) is not None}


CONV_WORKSPACE = 32 << 20  # onnxruntime's MLAS convolutions work in tiles: measured at most ~32 MiB beyond the output


def _conv_workspace(node: onnx.NodeProto, infos: Mapping[str, Dims], weights: Mapping[str, onnx.TensorProto]) -> int:
    """A Conv's working buffer: its im2col (C_in/group · prod(kernel) · prod(output spatial) floats),
    at most ``CONV_WORKSPACE`` (onnxruntime tiles larger ones)."""
    if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or not node.output:
        return 0
    w = weights.get(node.input[1])
    out = infos.get(node.output[0])
    if w is None or out is None:
        return 0
    dims = [d or 0 for d in out[0]]
    if len(dims) < 3 or len(w.dims) < 3 or min(dims) <= 0:
        return 0
    return min(int(math.prod(w.dims[1:]) * math.prod(dims[2:]) * 4), CONV_WORKSPACE)


def estimate_run(
    model: onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]],
    dtypes: Mapping[str, np.dtype],
    taps: Sequence[str],
    *,
    prepare: int = 0,
    render_images: int = 1,
) -> MemoryEstimate:
    """Estimate what running ``model`` on inputs of ``shapes`` takes, keeping the tensors ``taps``."""
    infos = inferred_sizes(model, shapes)
    weights = {init.name: init for init in model.graph.initializer}
    graph_inputs = {vi.name for vi in model.graph.input}
    input_bytes = sum(math.prod(int(d) for d in shape) * np.dtype(dtypes.get(name, np.float32)).itemsize for name, shape in shapes.items())
    size: dict[str, int] = {}
    unknown = 0
    for node in model.graph.node:
        for out in node.output:
            value = tensor_bytes(infos.get(out))
            if value is None:
                unknown += 1
            size[out] = value or 0
    last_use: dict[str, int] = {}
    for k, node in enumerate(model.graph.node):
        for name in node.input:
            last_use[name] = k
    keep_to_end = {o.name for o in model.graph.output}
    tapped = [t for t in taps if t in size]
    largest_tap = max((size[t] for t in tapped), default=0)

    def peak(kept: set[str]) -> int:
        alive: dict[str, int] = {}
        current = top = 0
        for k, node in enumerate(model.graph.node):
            made = sum(size.get(o, 0) for o in node.output if o not in alive)
            work = _conv_workspace(node, infos, weights)
            top = max(top, current + made + work)
            for o in node.output:
                if o not in alive:
                    alive[o] = size.get(o, 0)
            current += made
            for name in set(node.input) | set(node.output):
                if name in alive and name not in kept and last_use.get(name, -1) <= k and name not in graph_inputs:
                    current -= alive.pop(name)
        return top

    largest = max(((n, v) for n, v in size.items()), key=lambda item: item[1], default=("", 0))
    # Rendering one layer: its maps for one image as uint8 levels, the grid (about as large), a float block.
    render = 0
    if tapped:
        per_image = max(size[t] // 4 // max(render_images, 1) for t in tapped)
        render = 2 * per_image + min(RENDER_BLOCK, 4 * per_image)
    return MemoryEstimate(input=input_bytes, prepare=prepare, peak_all=peak(keep_to_end | set(tapped)), peak_none=peak(keep_to_end),
                          taps=sum(size[t] for t in tapped), largest_tap=largest_tap, largest=largest, render=render, unknown=unknown)


SLACK = 16 << 20  # onnxviz-held bytes not held against a cap (the interpreter alone takes more)


def check_memory(estimate: MemoryEstimate, max_memory: int | str | None, *, hint: str = "") -> None:
    """Refuse (InputError, one line) a run over the cap or over what the machine can spare."""
    cap = parse_size(max_memory) if max_memory is not None else None
    more = f"{hint}, or " if hint else ""
    if cap is not None and estimate.held(cap) > cap + SLACK:
        raise InputError(
            f"this run holds about {fmt_bytes(estimate.held(cap))} ({estimate.describe(cap, runtime=False)}), "
            f"more than --max-memory {fmt_bytes(cap)}: {more}raise --max-memory"
        )
    machine, named = machine_bound()
    if machine is None:
        return
    limit = max(machine, cap or 0)
    if estimate.total(cap) <= limit:
        return
    if cap is None and estimate.total(estimate.largest_tap) <= machine:
        what = "pass --max-memory SIZE (max_memory=) to capture in passes that stream layers to disk"
    else:
        what = "set --max-memory above it to run anyway"
    raise InputError(
        f"this run needs about {fmt_bytes(estimate.total(cap))} of memory ({estimate.describe(cap, runtime=True)}), "
        f"more than {named if limit == machine else f'--max-memory {fmt_bytes(limit)}'}: {more}{what}"
    )


def check_run(
    model: "Model",
    shapes: Mapping[str, Sequence[int]],
    *,
    max_memory: int | str | None = None,
    prepare: int = 0,
    resizable: str | None = None,
    prepare_at: Callable[[tuple[int, int]], int] | None = None,
) -> MemoryEstimate:
    """Estimate a run of ``model`` on inputs of ``shapes`` and refuse it when over the bound.

    ``resizable``: the image input whose height and width onnxviz chose (dynamic dims, no size
    given): the message then suggests a ``--size`` that fits; ``prepare_at((h, w))`` gives the
    preparation bytes at another size.
    """
    dtypes = {s.name: s.dtype for s in model.inputs}
    taps = [t.tensor for t in model.taps]
    batch = next((int(shape[0]) for shape in shapes.values() if len(shape)), 1)
    # The estimate depends only on the model and the shapes: worked out once per shape (shape
    # inference and the walk cost ~10-25 ms on ResNet-50, paid on every Grad-CAM or gradient run),
    # while the bound it is checked against (memory available now) is read every time.
    key = (tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items())), prepare, batch, tuple(taps))
    cache = model.__dict__.setdefault("_memory_estimates", {})
    est = cache.get(key)
    if est is None:
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        est = cache[key] = estimate_run(model.proto, shapes, dtypes, taps, prepare=prepare, render_images=batch)
    try:
        check_memory(est, max_memory)
        return est
    except InputError:
        spec = next((s for s in model.inputs if s.name == resizable and s.layout), None)
        if spec is None:
            raise
    check_memory(est, max_memory, hint=_size_hint(model, spec, shapes, est, max_memory, prepare_at))
    return est


def _size_hint(model: "Model", spec: Any, shapes: Mapping[str, Sequence[int]], est: MemoryEstimate,
               max_memory: int | str | None, prepare_at: Callable[[tuple[int, int]], int] | None) -> str:
    """``use a smaller --size (e.g. --size HxW fits)`` when some size fits (memory grows with height × width)."""
    cap = parse_size(max_memory) if max_memory is not None else None
    machine = machine_bound()[0]
    ratios = []
    if cap is not None:
        ratios.append((cap + SLACK) / max(est.held(cap), 1))
    if machine is not None:
        ratios.append(max(machine, cap or 0) / max(est.total(cap), 1))
    dtypes = {s.name: s.dtype for s in model.inputs}
    taps = [t.tensor for t in model.taps]
    shape = list(shapes[spec.name])
    hi, wi = (2, 3) if spec.layout == "NCHW" else (1, 2)
    factor = math.sqrt(min(ratios, default=1.0)) * 0.95
    for _ in range(12):
        h, w = int(shape[hi] * factor) // 32 * 32, int(shape[wi] * factor) // 32 * 32
        if h < 32 or w < 32:
            return ""
        candidate = list(shape)
        candidate[hi], candidate[wi] = h, w
        prepare = prepare_at((h, w)) if prepare_at is not None else 0
        try:
            check_memory(estimate_run(model.proto, {**shapes, spec.name: candidate}, dtypes, taps, prepare=prepare,
                                      render_images=int(shape[0]) if shape else 1), max_memory)
            return f"use a smaller --size (e.g. --size {h}x{w} fits)"
        except InputError:
            factor *= 0.8
    return ""
