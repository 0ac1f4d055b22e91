"""The framework's own layer list, recorded into the ONNX file by the converters.

Torch: a forward pass with hooks on every module without submodules gives each module call in
order (a module called twice is listed twice, ``relu`` and ``relu:2``, its parameters counted on
the first call) with its class and parameter count. Keras: every layer, nested models' layers by
path (``block/conv``), with ``count_params()``. The engine lists a recorded layer that has no ONNX
node as vanished, with the ``note`` given here (a BatchNorm folded into its conv).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from onnxviz.graph.layers import kind_of_class

__all__ = ["TorchCalls", "torch_records", "torch_renamer", "keras_records"]


class TorchCalls:
    """Forward hooks on every leaf module, recording the calls in order (``with`` around a pass)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls: list[str] = []
        self.classes: dict[str, str] = {}
        self.params: dict[str, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "TorchCalls":
        for name, m in self.module.named_modules():
            if not name or any(True for _ in m.children()):
                continue
            cls = type(m)
            self.classes[name] = f"{cls.__module__}.{cls.__qualname__}"
            self.params[name] = sum(p.numel() for p in m.parameters(recurse=False))
            try:
                self._handles.append(m.register_forward_hook(lambda _m, _i, _o, name=name: self.calls.append(name)))
            except RuntimeError:  # ScriptModules take no Python hooks
                self._handles.append(None)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            if handle is not None:
                handle.remove()
        self._handles.clear()


def torch_records(calls: TorchCalls, bn_after: dict[str, str]) -> list[dict[str, Any]]:
    """One record per module call: ``{"name", "class", "kind", "params"[, "note"]}``."""
    folded_into = {bn: conv for conv, bn in bn_after.items()}
    seen: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    for name in calls.calls:
        k = seen.get(name, 0) + 1
        seen[name] = k
        cls = calls.classes.get(name, "")
        record: dict[str, Any] = {
            "name": name if k == 1 else f"{name}:{k}", "class": cls, "kind": kind_of_class(cls),
            "params": calls.params.get(name, 0) if k == 1 else 0,
        }
        if name in folded_into:
            record["note"] = f"folded into {folded_into[name]} by the exporter (its output is that conv's)"
        records.append(record)
    return records


def torch_renamer(records: list[dict[str, Any]]) -> Callable[[str], str]:
    """Group name → module call: TorchScript names a module's second call ``relu_1`` (→ ``relu:2``)."""
    known = {r["name"] for r in records}

    def rename(name: str) -> str:
        if name in known:
            return name
        match = re.match(r"^(.*)_(\d+)$", name)
        if match and f"{match.group(1)}:{int(match.group(2)) + 1}" in known:
            return f"{match.group(1)}:{int(match.group(2)) + 1}"
        return name

    return rename


def keras_records(model: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Every Keras layer in order, nested models' layers by path, with its class and parameter count."""
    records: list[dict[str, Any]] = []
    for layer in getattr(model, "layers", []):
        cls = type(layer).__name__
        if cls == "InputLayer":
            continue
        path = f"{prefix}{layer.name}"
        if hasattr(layer, "layers") and getattr(layer, "layers", None):
            records.extend(keras_records(layer, prefix=path + "/"))
            continue
        try:
            params = int(layer.count_params())
        except (ValueError, AttributeError):  # a layer that was never built
            params = 0
        records.append({"name": path, "class": cls, "kind": kind_of_class(cls), "params": params})
    return records
