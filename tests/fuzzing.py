"""Seeded mutation of ONNX model files, and a harness that runs a mutant through onnxviz.

Used by ``tests/test_fuzz.py`` (a few hundred mutants by default, ``ONNXVIZ_FUZZ=N`` for more) and
by ``python tests/fuzzing.py N`` (a standalone run that prints the exit codes seen).

Mutations are byte-level (bit flips, truncation, overwritten, duplicated or removed byte runs) and
field-level (parse the model, change one protobuf field to a plausible but wrong value: dims,
data types, attributes such as pads and strides, names including hostile ones, external-data
entries, graph input shapes, opsets, raw bytes, node wiring), each drawn from a seeded generator.

What every run must show: exit code 0 or 2; on 2 exactly one stderr line ``onnxviz: error: ...``;
on 0 only onnxviz's own lines on stderr; never a traceback; nothing left in the temporary
folder or beside the output; the input files unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models  # noqa: E402

HOSTILE_NAMES = (
    "\x1b]52;c;aGFja2Vk\x07",  # OSC 52: write to the clipboard
    "\x1b]0;pwned\x07",  # OSC 0: window title
    "\x1b[2J\x1b[31mred",  # clear screen, colour
    "evil\u202eslp.exe",  # right-to-left override
    "nul\x00byte",
    "../../../etc/passwd",
    "a" * 5000,
    "<script>alert(1)</script>",
    "line\nbreak\r\x0bx",
    "\x7f\x9b31m",  # DEL and a C1 CSI
    "",
)


# -- base models -------------------------------------------------------------------------
def base_models() -> dict[str, bytes]:
    """Small real models: the bundled demo CNN and tiny helper-built ones."""
    from onnxviz.demo import demo_model

    return {
        "demo": Path(demo_model()).read_bytes(),
        "conv_bn_relu": models.conv_bn_relu().SerializeToString(),
        "conv_kinds": models.conv_kinds().SerializeToString(),
        "silu": models.silu_chain().SerializeToString(),
        "nhwc": models.nhwc_fixed().SerializeToString(),
    }


# -- byte-level mutations ----------------------------------------------------------------
def _bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(0, len(buf)))
        buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _overwrite(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    start = int(rng.integers(0, len(buf)))
    n = int(rng.integers(1, 17))
    fill = rng.choice([0x00, 0xFF, 0x7F, 0x80]) if rng.random() < 0.5 else None
    for k in range(start, min(start + n, len(buf))):
        buf[k] = int(fill) if fill is not None else int(rng.integers(0, 256))
    return bytes(buf)


def _splice(data: bytes, rng: np.random.Generator) -> bytes:
    a, b = sorted(int(v) for v in rng.integers(0, len(data), 2))
    if rng.random() < 0.5:
        return data[:a] + data[b:]  # remove a run
    return data[:b] + data[a:b] + data[b:]  # duplicate a run


BYTE_MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "bitflip": _bit_flips, "truncate": _truncate, "overwrite": _overwrite, "splice": _splice,
}  # fmt: skip


# -- field-level mutations ---------------------------------------------------------------
def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(0, len(items)))] if len(items) else None


_BAD_INTS = (0, -1, -7, 2, 3, 1 << 20, 1 << 31, (1 << 62), 255)


def _m_dims(m: onnx.ModelProto, rng) -> str:
    init = _pick(rng, m.graph.initializer)
    if init is None or not init.dims:
        return "noop"
    k = int(rng.integers(0, len(init.dims)))
    init.dims[k] = int(_pick(rng, _BAD_INTS + (init.dims[k] + 1, max(init.dims[k] - 1, 0))))
    return f"dims {init.name}"


def _m_data_type(m: onnx.ModelProto, rng) -> str:
    init = _pick(rng, m.graph.initializer)
    if init is None:
        return "noop"
    init.data_type = int(_pick(rng, (0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 23, 40, 99, -3)))
    return f"data_type {init.name}"


def _m_raw(m: onnx.ModelProto, rng) -> str:
    init = _pick(rng, [i for i in m.graph.initializer if i.raw_data])
    if init is None:
        return "noop"
    raw = init.raw_data
    choice = rng.integers(0, 4)
    if choice == 0:
        init.raw_data = raw[: len(raw) // 2]
    elif choice == 1:
        init.raw_data = raw + raw[:7]
    elif choice == 2:
        nan = np.array([np.nan, np.inf, -np.inf, 3e38], np.float32).tobytes()
        pos = int(rng.integers(0, max(len(raw) - len(nan), 1)))
        init.raw_data = raw[:pos] + nan + raw[pos + len(nan):]
    else:
        init.raw_data = b""
    return f"raw {init.name}"


def _m_attribute(m: onnx.ModelProto, rng) -> str:
    node = _pick(rng, [n for n in m.graph.node if n.attribute] or list(m.graph.node))
    if node is None:
        return "noop"
    if not node.attribute or rng.random() < 0.3:
        name = _pick(rng, ("pads", "strides", "kernel_shape", "dilations", "group", "axis", "perm", "to"))
        if name in ("group", "axis", "to"):
            node.attribute.append(helper.make_attribute(name, int(_pick(rng, _BAD_INTS))))
        else:
            node.attribute.append(helper.make_attribute(name, [int(_pick(rng, _BAD_INTS))] * int(rng.integers(1, 5))))
        return f"attr+ {node.op_type}.{name}"
    attr = _pick(rng, node.attribute)
    if attr.ints:
        k = int(rng.integers(0, len(attr.ints)))
        attr.ints[k] = int(_pick(rng, _BAD_INTS + (1048576,)))
    elif attr.type == onnx.AttributeProto.INT:
        attr.i = int(_pick(rng, _BAD_INTS))
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = float(_pick(rng, (np.nan, np.inf, -1.0, 0.0, 1e30)))
    elif attr.type == onnx.AttributeProto.TENSOR:
        attr.t.dims.append(int(_pick(rng, (0, 2, 1 << 20))))
    else:
        attr.type = int(_pick(rng, (1, 2, 3, 7, 99)))
    return f"attr {node.op_type}.{attr.name}"


def _m_pads(m: onnx.ModelProto, rng) -> str:
    conv = _pick(rng, [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose")])
    if conv is None:
        return "noop"
    value = int(_pick(rng, (1048576, 65536, 4096, -3)))
    rank = 2
    for a in conv.attribute:
        if a.name == "kernel_shape":
            rank = len(a.ints)
    del conv.attribute[:]
    conv.attribute.append(helper.make_attribute("pads", [value] * (2 * rank)))
    return f"pads {value}"


def _m_names(m: onnx.ModelProto, rng) -> str:
    name = _pick(rng, HOSTILE_NAMES)
    where = int(rng.integers(0, 4))
    if where == 0:
        node = _pick(rng, m.graph.node)
        node.name = name
        return "name node"
    if where == 1:  # rename a tensor consistently (producer, consumers, outputs)
        node = _pick(rng, m.graph.node)
        if not node.output:
            return "noop"
        old = node.output[0]
        for n in m.graph.node:
            for i, v in enumerate(n.input):
                if v == old:
                    n.input[i] = name
            for i, v in enumerate(n.output):
                if v == old:
                    n.output[i] = name
        for o in list(m.graph.output) + list(m.graph.value_info):
            if o.name == old:
                o.name = name
        return "name tensor"
    if where == 2:
        m.graph.name = name
        m.producer_name = name
        return "name graph"
    node = _pick(rng, [n for n in m.graph.node if n.op_type == "Conv"]) or _pick(rng, m.graph.node)
    entry = node.metadata_props.add()
    entry.key, entry.value = _pick(rng, ("onnxviz.layer", "pkg.torch.onnx.name_scopes", "onnxviz.bn_folded")), name
    m.ir_version = max(m.ir_version, 10)
    return "name metadata"


def _m_wiring(m: onnx.ModelProto, rng) -> str:
    nodes = m.graph.node
    choice = int(rng.integers(0, 5))
    node = _pick(rng, nodes)
    if choice == 0 and len(nodes) > 1:
        nodes.remove(node)
        return "drop node"
    if choice == 1:
        nodes.append(node)  # duplicate
        return "dup node"
    if choice == 2 and node.input:
        k = int(rng.integers(0, len(node.input)))
        tensors = [i.name for i in m.graph.initializer] + [o for n in nodes for o in n.output] + ["", "nope"]
        node.input[k] = _pick(rng, tensors)
        return "rewire"
    if choice == 3:
        node.op_type = _pick(rng, ("Conv", "Relu", "Unknown", "MaxPool", "Gemm", "Loop", "ConvTranspose"))
        return "op_type"
    node.domain = _pick(rng, ("com.microsoft", "bogus", "ai.onnx.ml"))
    return "domain"


def _m_input_shape(m: onnx.ModelProto, rng) -> str:
    vi = _pick(rng, m.graph.input)
    if vi is None:
        return "noop"
    dims = vi.type.tensor_type.shape.dim
    choice = int(rng.integers(0, 4))
    if choice == 0 and len(dims):
        d = dims[int(rng.integers(0, len(dims)))]
        d.Clear()
        d.dim_value = int(_pick(rng, (0, 1, 2, 5, 100000, 20000, 1 << 40)))
    elif choice == 1:
        vi.type.tensor_type.elem_type = int(_pick(rng, (2, 3, 6, 7, 9, 10, 11, 0, 16)))
    elif choice == 2:
        dims.add().dim_value = 3
    else:
        del dims[:]
        for v in (1, 3, 100000, 100000):
            dims.add().dim_value = v
    return "input shape"


def _m_external(m: onnx.ModelProto, rng) -> str:
    init = _pick(rng, m.graph.initializer)
    if init is None:
        return "noop"
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    del init.external_data[:]
    entries = {
        "location": _pick(rng, ("weights.bin", "../outside.bin", "/etc/passwd", "missing.bin", "", "model.onnx")),
        "offset": _pick(rng, ("0", "-4", "abc", "1e3", str(1 << 40), "16")),
        "length": _pick(rng, ("4", "-1", "xyz", str(1 << 40), "100000", "")),
    }
    for key, value in entries.items():
        if rng.random() < 0.85:
            e = init.external_data.add()
            e.key, e.value = key, value
    return "external"


def _m_opset(m: onnx.ModelProto, rng) -> str:
    choice = int(rng.integers(0, 3))
    if choice == 0:
        m.opset_import[0].version = int(_pick(rng, (1, 6, 10, 99, 0)))
    elif choice == 1:
        m.ir_version = int(_pick(rng, (1, 3, 99, 0)))
    else:
        m.opset_import.add(domain=_pick(rng, ("com.microsoft", "evil", "")), version=int(_pick(rng, (1, 999))))
    return "opset"


def _m_output(m: onnx.ModelProto, rng) -> str:
    choice = int(rng.integers(0, 3))
    if choice == 0 and len(m.graph.output) > 0:
        m.graph.output[0].name = _pick(rng, ("", "nope", m.graph.input[0].name if m.graph.input else "x"))
    elif choice == 1:
        del m.graph.output[:]
    else:
        init = _pick(rng, m.graph.initializer)
        if init is not None:
            m.graph.output.append(helper.make_tensor_value_info(init.name, init.data_type or 1, None))
    return "outputs"


def _m_constant_conv(m: onnx.ModelProto, rng) -> str:
    """A Conv over a constant: its data input becomes an initializer whose first dim is not the batch."""
    conv = _pick(rng, [n for n in m.graph.node if n.op_type == "Conv"])
    if conv is None:
        return "noop"
    shape = (int(_pick(rng, (2, 3, 5))), 3, 6, 6)
    name = "const_in"
    m.graph.initializer.append(numpy_helper.from_array(np.ones(shape, np.float32), name))
    conv.input[0] = name
    return "constant conv"


FIELD_MUTATIONS: dict[str, Callable[[onnx.ModelProto, np.random.Generator], str]] = {
    "dims": _m_dims, "data_type": _m_data_type, "raw": _m_raw, "attribute": _m_attribute, "pads": _m_pads,
    "names": _m_names, "wiring": _m_wiring, "input_shape": _m_input_shape, "external": _m_external,
    "opset": _m_opset, "outputs": _m_output, "constant_conv": _m_constant_conv,
}  # fmt: skip


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutant of a serialised model: (what was done, bytes)."""
    if rng.random() < 0.4:
        kind = _pick(rng, list(BYTE_MUTATIONS))
        return kind, BYTE_MUTATIONS[kind](data, rng)
    model = onnx.load_model_from_string(data)
    kind = _pick(rng, list(FIELD_MUTATIONS))
    what = FIELD_MUTATIONS[kind](model, rng)
    if rng.random() < 0.25:  # sometimes a second one
        what += " + " + FIELD_MUTATIONS[_pick(rng, list(FIELD_MUTATIONS))](model, rng)
    try:
        return what, model.SerializeToString()
    except Exception:  # protobuf refused (e.g. a bad enum in a strict build): mutate bytes instead
        return "bitflip", _bit_flips(data, rng)


# -- running -----------------------------------------------------------------------------
@contextlib.contextmanager
def captured_fds() -> Iterator[dict[str, str]]:
    """Capture what is written to fds 1 and 2 (Python and C alike) while the block runs."""
    result: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(dir=os.environ.get("ONNXVIZ_FUZZ_CAPTURE_DIR")) for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    try:
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        # Python-level writes go to the same fds (pytest's capture swaps sys.stdout/err for its own).
        sys.stdout = open(1, "w", encoding="utf-8", errors="strict", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="strict", closefd=False)  # noqa: SIM115
        yield result
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            files[fd].seek(0)
            result["stdout" if fd == 1 else "stderr"] = files[fd].read().decode("utf-8", "replace")
            files[fd].close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


@dataclass
class Outcome:
    case: str
    command: str
    code: int
    stdout: str
    stderr: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def command_lines(command: str, model: Path, image: Path, out_parent: Path) -> list[str]:
    out = out_parent / "out"
    lines = {
        "summary": ["summary", str(model)],
        "summary-json": ["summary", str(model), "--json", "--tap", "activation"],
        "maps": ["maps", str(model), str(image), "-o", str(out), "--size", "16x20"],
        "maps-fixed": ["maps", str(model), str(image), "-o", str(out), "--norm", "zscore"],
        "filters": ["filters", str(model), "-o", str(out)],
        "report": ["report", str(model), str(image), "-o", str(out), "--size", "16x20"],
        "graph": ["graph", str(model), "-o", str(out_parent / "graph.svg")],
        "graph-dot": ["graph", str(model), "-o", str(out_parent / "graph.dot")],
        "expose": ["expose", str(model), "-o", str(out_parent / "tapped.onnx")],
        "expose-verify": ["expose", str(model), "-o", str(out_parent / "tapped.onnx"), "--verify", "--size", "16x20"],
    }
    return lines[command]


COMMANDS = ("summary", "summary-json", "maps", "maps-fixed", "filters", "report", "graph", "graph-dot", "expose", "expose-verify")


def check_outcome(code: int, stdout: str, stderr: str) -> list[str]:
    problems = []
    if code not in (0, 2):
        problems.append(f"exit code {code}")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("traceback")
    lines = stderr.strip().splitlines()
    if code == 2:
        if len(lines) != 1 or not lines[0].startswith("onnxviz: error: "):
            problems.append(f"exit 2 with {len(lines)} stderr line(s): {lines[:4]}")
    elif code == 0:
        foreign = [line for line in lines if not line.startswith("onnxviz: ") and not line.startswith("\r[")]
        if foreign:
            problems.append(f"foreign stderr lines: {foreign[:3]}")
    for text in (stdout, stderr):
        bad = [c for c in set(text) if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
        if bad:
            problems.append(f"raw control/bidi characters on the terminal: {sorted(map(ord, bad))[:5]}")
            break
    return problems


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``onnxviz.cli.main(argv)`` in this process, with fds 1 and 2 captured."""
    from onnxviz.cli import main

    with captured_fds() as out:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse --version and friends
            code = int(exc.code or 0)
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a finding
            import traceback

            traceback.print_exc()
            code = -1 if not isinstance(exc, KeyboardInterrupt) else 130
    return code, out["stdout"], out["stderr"]


def run_case(workdir: Path, name: str, data: bytes, image: Path, commands: Sequence[str], *, api: bool = False) -> list[Outcome]:
    """Write the mutant under ``workdir``, run ``commands`` on it in process (and, with ``api``, the
    Python API's load/capture/render as an ``api`` outcome), check every rule."""
    case_dir = workdir / name
    case_dir.mkdir(parents=True)
    model = case_dir / "model.onnx"
    model.write_bytes(data)
    tmp = case_dir / "tmp"
    tmp.mkdir()
    out_parent = case_dir / "outputs"
    out_parent.mkdir()
    before = {p: digest(p) for p in (model, image)}
    outcomes = []
    old_tempdir = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        if api:
            started = time.monotonic()
            with captured_fds() as printed:
                problems = run_api(model, image)
            if printed["stderr"].strip() or printed["stdout"].strip():
                problems.append(f"the API printed: {(printed['stderr'] + printed['stdout']).strip()[:200]!r}")
            left = sorted(p.name for p in tmp.iterdir())
            if left:
                import gc

                gc.collect()  # a capture's spill folder goes with the capture
                left = sorted(p.name for p in tmp.iterdir())
            if left:
                problems.append(f"left in the temp folder: {left[:5]}")
            outcomes.append(Outcome(name, "api", 2 if problems else 0, "", "", problems, time.monotonic() - started))
        for command in commands:
            argv = command_lines(command, model, image, out_parent)
            started = time.monotonic()
            code, stdout, stderr = run_cli(argv)
            seconds = time.monotonic() - started
            problems = check_outcome(code, stdout, stderr)
            left = sorted(p.name for p in tmp.iterdir())
            if left:
                problems.append(f"left in the temp folder: {left[:5]}")
            produced = sorted(p.name for p in out_parent.iterdir())
            if code != 0 and produced:
                problems.append(f"failed run left {produced[:5]} beside the output")
            stray = [p for p in produced if p.startswith(".")]
            if stray:
                problems.append(f"hidden leftovers beside the output: {stray[:5]}")
            after = {p: digest(p) for p in (model, image)}
            if after != before:
                problems.append("an input file changed")
            keep = bool(problems)  # the text of runs without problems is not kept (thousands of runs)
            outcomes.append(Outcome(name, command, code, stdout if keep else "", stderr if keep else "", problems, seconds))
            for p in out_parent.iterdir():  # next command starts clean
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
    finally:
        tempfile.tempdir = old_tempdir
    return outcomes


def run_api(model_path: Path, image: Path) -> list[str]:
    """Load, capture, render and draw the filters of a mutant through the Python API: each step
    either works or raises an OnnxvizError (one line), without a warning; anything else is a problem."""
    import warnings

    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems += _api_steps(model_path, image)
    for w in caught:  # the library itself must not warn (the CLI hides warnings; notebooks would show them)
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            problems.append(f"the API warned: {w.category.__name__}: {str(w.message)[:160]} ({Path(w.filename).name}:{w.lineno})")
    return problems


def _api_steps(model_path: Path, image: Path) -> list[str]:
    import onnxviz
    from onnxviz.errors import OnnxvizError

    problems: list[str] = []
    try:
        model = onnxviz.load(model_path)
        model.summary()
        for bank in onnxviz.filter_banks(model):
            if bank.viewable:
                onnxviz.render_filters(bank)
        spec = model.inputs[0] if model.inputs else None
        dynamic = spec is not None and spec.layout is not None and None in spec.hw
        capture = model.capture([image], size=(16, 20) if dynamic else None)
        for layer in capture.values():
            onnxviz.render(layer, norm="percentile")
    except OnnxvizError as exc:
        if "\n" in str(exc):
            problems.append(f"multi-line error: {str(exc)[:200]!r}")
    except Exception as exc:  # noqa: BLE001 - anything but a one-line OnnxvizError is a finding
        problems.append(f"API raised {type(exc).__name__}: {str(exc)[:200]}")
    return problems


@contextlib.contextmanager
def small_machine(available: int = 1 << 30) -> Iterator[None]:
    """Pretend only ``available`` bytes are free, so mutants that would allocate gigabytes (pads of
    4096, inputs of 100000²) are refused by the memory estimate instead of slowing the run down."""
    from onnxviz.run import memory

    saved = memory.available_memory
    memory.available_memory = lambda: available
    try:
        yield
    finally:
        memory.available_memory = saved


def mutants(n: int, seed: int) -> Iterator[tuple[str, bytes, str]]:
    """``n`` seeded mutants: (case name, bytes, what was mutated)."""
    rng = np.random.default_rng(seed)
    bases = base_models()
    names = sorted(bases)
    for k in range(n):
        base = names[k % len(names)]
        what, data = mutate(bases[base], rng)
        yield f"{k:05d}_{base}", data, what


def main(argv: Sequence[str]) -> int:
    """``python tests/fuzzing.py N [SEED]``: run N mutants through every command, print a tally."""
    import collections

    from PIL import Image

    import resource

    limit = int(os.environ.get("ONNXVIZ_FUZZ_AS", 6 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway allocation fails instead of swapping
    n = int(argv[0]) if argv else 200
    seed = int(argv[1]) if len(argv) > 1 else 0
    work = Path(tempfile.mkdtemp(prefix="onnxviz-fuzz-"))
    image = work / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 28, 3), dtype=np.uint8)).save(image)
    codes: collections.Counter = collections.Counter()
    failures = []
    slow = []
    start = time.monotonic()
    with small_machine():
        for name, data, what in mutants(n, seed):
            for outcome in run_case(work / "cases", name, data, image, COMMANDS, api=True):
                if outcome.command != "api":
                    codes[(outcome.command, outcome.code)] += 1
                slow.append((outcome.seconds, name, what, outcome.command, outcome.code))
                if outcome.problems:
                    failures.append((name, what, outcome))
            shutil.rmtree(work / "cases" / name, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - start
    total = collections.Counter()
    for (_, code), count in codes.items():
        total[code] += count
    print(f"{n} mutants x {len(COMMANDS)} commands (+ the API) in {elapsed:.0f} s; exit codes: {dict(sorted(total.items()))}")
    for command in COMMANDS:
        print(f"  {command}: " + ", ".join(f"exit {code}: {count}" for (c, code), count in sorted(codes.items()) if c == command))
    for seconds, name, what, command, code in sorted(slow, reverse=True)[:8]:
        print(f"slow: {seconds:.1f} s {name} [{what}] {command} rc={code}")
    for name, what, o in failures:
        print(f"FAIL {name} [{what}] {o.command}: rc={o.code} {o.problems} :: {o.stderr.strip()[-300:]!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
