"""PyTorch → ONNX with torch.onnx, keeping every Conv's module name.

Accepts an ``nn.Module``, a ``torch.export`` program (object or ``.pt2`` file), a TorchScript
module (object or file), or a ``package.module:factory`` spec. Uses the dynamo exporter (needs
``onnxscript``) and falls back to the TorchScript exporter when it fails, saying which ran. The
batch dimension stays dynamic.

Names: a forward pass with hooks records which conv module runs and which BatchNorm consumes its
output, and every module call in order (records.py); after export each ONNX Conv is matched to its
module through the weight's parameter name (``layer1.0.conv1.weight``), the dynamo exporter's name
scopes, or TorchScript-exporter node names, and every node is tagged with its module (or function
call: ``layer1.0.add``) the same way whichever exporter ran.
The exporter folds eval-mode BatchNorm into the preceding conv: such taps are labelled with the
BatchNorm (``layer1.0.conv1 (+bn1)``) and flagged ``bn_folded``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxviz.graph.naming import node_path_name

from .base import CONV_OPS, FRAMEWORK_INSTALL, TORCH_INSTALL, Conversion, ConversionError, annotate, save
from .records import TorchCalls, torch_records, torch_renamer

__all__ = ["from_torch", "load_torch_source", "is_torch_object"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError(f"PyTorch is not installed: {TORCH_INSTALL} (the CPU build)") from None
    return torch


def is_torch_object(obj: Any) -> bool:
    """True for torch modules and exported programs (without importing torch if it is not loaded)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram))


def _factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConversionError(f"expected package.module:factory, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top in FRAMEWORK_INSTALL and top != module_name.partition(".")[0]:
            raise ConversionError(f"cannot import {spec}: it needs {top}, which is not installed: {FRAMEWORK_INSTALL[top]}") from None
        raise ConversionError(f"cannot import {spec}: {exc}") from None
    except (ImportError, AttributeError) as exc:
        raise ConversionError(f"cannot import {spec}: {exc}") from None
    return factory() if callable(factory) else factory


def load_torch_source(source: Any) -> Any:
    """A module, exported program or ScriptModule from ``source`` (object, path or factory spec)."""
    torch = _torch()
    if isinstance(source, (torch.nn.Module, torch.export.ExportedProgram)):
        return source
    text = str(source)
    path = Path(text)
    if not path.exists() and ":" in text:
        obj = _factory(text)
        if isinstance(obj, tuple):
            obj = obj[0]
        if not isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram)):
            raise ConversionError(f"{text} returned {type(obj).__name__}, not a torch.nn.Module")
        return obj
    if not path.is_file():
        raise ConversionError(f"model file not found: {path}")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path))
        except Exception as exc:
            raise ConversionError(f"cannot load {path} as a torch.export program: {_one_line(exc)}") from None
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ConversionError(
            f"{path} is not a TorchScript or .pt2 file (pickled modules and state dicts need their "
            "class: pass package.module:factory instead)"
        ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(exc: BaseException) -> str:
    text = " ".join(_ANSI.sub("", str(exc)).split())
    return (text[:300] + "…") if len(text) > 300 else (text or type(exc).__name__)


def _example(torch: Any, example_inputs: Any, input_shape: Sequence[int] | None) -> tuple[Any, ...]:
    if example_inputs is None:
        if input_shape is None:
            raise ConversionError("need example inputs or an input shape (e.g. --input-shape 1,3,224,224)")
        return (torch.randn(*input_shape, generator=torch.Generator().manual_seed(0)),)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _trace(torch: Any, module: Any, args: tuple[Any, ...], outputs: list[str]) -> tuple[set[str], set[str], dict[str, str]]:
    """Conv modules, BatchNorm modules, and which BatchNorm consumes which conv's output.

    ``outputs`` receives names for the model's outputs (``output`` or ``output_0``…).
    """
    convs = {name for name, m in module.named_modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}
    bns = {name for name, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    producer: dict[int, str] = {}
    keep: list[Any] = []  # hold outputs so their ids stay unique during the pass
    bn_after: dict[str, str] = {}
    handles = []
    for name, m in module.named_modules():
        if name in convs:
            def record(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                keep.append(out)
                producer[id(out)] = name

            handles.append(m.register_forward_hook(record))
        elif name in bns:
            def consume(_m: Any, inputs: Any, name: str = name) -> None:
                conv = producer.get(id(inputs[0])) if inputs else None
                if conv is not None:
                    bn_after[conv] = name

            handles.append(m.register_forward_pre_hook(consume))
    try:
        with torch.no_grad():
            result = module(*args)
        n_out = len(result) if isinstance(result, (tuple, list)) else 1
        outputs[:] = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    except Exception as exc:
        raise ConversionError(f"the model failed on the example input: {_one_line(exc)}") from None
    finally:
        for h in handles:
            h.remove()
    return convs, bns, bn_after


def _batch_two(torch: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # torch.export specialises a dimension of size 1; export with batch 2 to keep it dynamic.
    return tuple(a.expand(2, *a.shape[1:]).clone() if isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == 1 else a for a in args)


def _dynamic_dims(a: Any, dynamic_size: bool) -> dict[int, str]:
    """Axis → name of the dims kept dynamic: batch, and height/width (or length) on request."""
    dims = {0: "batch"}
    if dynamic_size and a.ndim >= 3:
        names = ["length"] if a.ndim == 3 else ["height", "width"] if a.ndim == 4 else ["depth", "height", "width"]
        dims.update({a.ndim - len(names) + i: name for i, name in enumerate(names)})
    return dims


def _export_dynamo(torch: Any, model: Any, args: tuple[Any, ...], opset: int | None, dynamic_size: bool = False) -> onnx.ModelProto:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConversionError("the dynamo exporter needs onnxscript: pip install onnxscript") from None
    dims = {name: torch.export.Dim(name) for name in ("batch", "length", "depth", "height", "width")}
    dynamic = tuple(
        {axis: dims[name] for axis, name in _dynamic_dims(a, dynamic_size).items()} if isinstance(a, torch.Tensor) and a.ndim else None
        for a in args
    )
    kwargs: dict[str, Any] = {"dynamo": True, "dynamic_shapes": dynamic, "verbose": False}
    if opset:
        kwargs["opset_version"] = opset
    program = torch.onnx.export(model, _batch_two(torch, args), **kwargs)
    return program.model_proto


def _export_torchscript(
    torch: Any, model: Any, args: tuple[Any, ...], opset: int | None, dynamic_size: bool = False, outputs: list[str] | None = None
) -> onnx.ModelProto:
    names = [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))]
    buf = io.BytesIO()
    torch.onnx.export(
        model, args, buf, dynamo=False, input_names=names, output_names=outputs or None,
        dynamic_axes={n: _dynamic_dims(a, dynamic_size) for n, a in zip(names, args) if isinstance(a, torch.Tensor) and a.ndim},
        opset_version=opset or 17,
    )
    return onnx.load_model_from_string(buf.getvalue())


def _match(
    model: onnx.ModelProto, convs: set[str], bns: set[str], bn_after: dict[str, str], order: list[str]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """ONNX Conv node → module name; folded BatchNorms; unmatched nodes."""
    from onnxviz.graph.naming import folded_batchnorm
    import ast

    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    conv_of_bn = {bn: conv for conv, bn in bn_after.items()}
    layers: dict[str, str] = {}
    folded: dict[str, str] = {}
    unmatched: list[str] = []
    for node in model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        found: str | None = None
        weight = node.input[1] if len(node.input) > 1 else ""
        if weight.endswith(".weight") and (weight[: -len(".weight")] in convs or (not convs and weight in inits)):
            found = weight[: -len(".weight")]
        if found is None:
            for prop in node.metadata_props:
                if prop.key == "pkg.torch.onnx.name_scopes":
                    try:
                        scopes = [str(s) for s in ast.literal_eval(prop.value)][:-1]
                    except (ValueError, SyntaxError):
                        scopes = []
                    for scope in reversed(scopes):
                        if scope in convs:
                            found = scope
                            break
                        if scope in bns and scope in conv_of_bn:
                            found = conv_of_bn[scope]
                            break
        if found is None:
            path = node_path_name(node.name, node.op_type)
            if path in convs or (path and not convs):
                found = path
        if found is None:
            unmatched.append(node.name)
            continue
        layers[node.name] = found
        bn = bn_after.get(found)
        if bn is not None and "BatchNormalization" not in consumers.get(node.output[0], []):
            folded[found] = bn
        elif not bn_after:
            recovered = folded_batchnorm(node, inits)
            if recovered:
                folded[found] = recovered
    # Last resort: pair leftover nodes with leftover conv modules in execution order.
    leftover = [c for c in order if c not in layers.values()]
    if unmatched and len(unmatched) == len(leftover):
        for node_name, conv in zip(list(unmatched), leftover):
            layers[node_name] = conv
            unmatched.remove(node_name)
    return layers, folded, unmatched


def from_torch(
    source: Any,
    example_inputs: Any = None,
    out: str | os.PathLike | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    dynamic_size: bool = False,
) -> Conversion:
    """Export a PyTorch model to ONNX with every Conv named after its module.

    ``exporter``: ``"auto"`` (dynamo, falling back to TorchScript), ``"dynamo"`` or
    ``"torchscript"``. ``out``: where to write the ``.onnx`` (one file unless over 2 GB).
    ``dynamic_size``: keep height and width (or length) dynamic too, for fully convolutional nets.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ConversionError(f"unknown exporter {exporter!r}: use auto, dynamo or torchscript")
    torch = _torch()
    model = load_torch_source(source)
    args = _example(torch, example_inputs, input_shape)
    convs: set[str] = set()
    bns: set[str] = set()
    bn_after: dict[str, str] = {}
    order: list[str] = []
    output_names: list[str] = []
    was_training = None
    calls: TorchCalls | None = None
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        was_training = model.training
        model.eval()
        with TorchCalls(model) as calls:
            convs, bns, bn_after = _trace(torch, model, args, output_names)
        order = [n for n, _ in model.named_modules() if n in convs]
    elif isinstance(model, torch.jit.ScriptModule):
        convs = {n for n, m in model.named_modules() if getattr(m, "original_name", "").startswith(("Conv", "ConvTranspose"))}
        bns = {n for n, m in model.named_modules() if getattr(m, "original_name", "").startswith("BatchNorm")}
    notes: list[str] = []
    proto: onnx.ModelProto | None = None
    used = ""
    torch_onnx_log = logging.getLogger("torch.onnx")
    log_level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed, skipping …" at import
    try:
        # torch.export prints the graph it failed on; keep the CLI's output to onnxviz's own lines
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if exporter in ("auto", "dynamo") and not isinstance(model, torch.jit.ScriptModule):
                try:
                    proto = _export_dynamo(torch, model, args, opset, dynamic_size)
                    used = "torch.onnx (dynamo)"
                except MemoryError:
                    raise
                except ConversionError:
                    if exporter == "dynamo":
                        raise
                    notes.append("onnxscript missing: used the TorchScript exporter")
                except Exception as exc:
                    if exporter == "dynamo":
                        raise ConversionError(f"dynamo export failed: {_one_line(exc)}") from None
                    notes.append(f"dynamo exporter failed ({_one_line(exc)[:160]}); used the TorchScript exporter")
            if proto is None:
                if isinstance(model, torch.export.ExportedProgram):
                    raise ConversionError("a torch.export program needs the dynamo exporter (install onnxscript)")
                proto = _export_torchscript(torch, model, args, opset, dynamic_size, output_names)
                used = "torch.onnx (torchscript)"
    except MemoryError:
        raise ConversionError(
            "ran out of memory exporting the model: try a smaller --input-shape, or --exporter torchscript"
        ) from None
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"torch.onnx export failed: {_one_line(exc)}") from None
    finally:
        torch_onnx_log.setLevel(log_level)
        if was_training:
            model.train()
    layers, folded, unmatched = _match(proto, convs, bns, bn_after, order)
    conversion = Conversion(
        model=proto, exporter=used, framework="torch", layers=layers, bn_folded=folded, unmatched=unmatched, notes=notes
    )
    records = torch_records(calls, bn_after) if calls is not None and calls.calls else None
    total = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else None
    annotate(conversion, rename=torch_renamer(records) if records else None, records=records, total_params=total)
    if out is not None:
        conversion.path = save(conversion.model, out)
    return conversion
