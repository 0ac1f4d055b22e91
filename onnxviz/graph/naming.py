"""Friendly layer names for taps, and safe file-name slugs made from them.

Names come from what exporters leave in the graph: torch parameter names on the weight
initializer (``layer1.0.conv1.weight``), the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata, TorchScript-exporter node names such as
``/layer1/layer1.0/conv1/Conv``, scope-style names such as ``model/conv_a_1/convolution``; failing
those the node name, then the output tensor name. Slugs never contain path separators or ``..``
and have a bounded length, because model-supplied strings are untrusted.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Collection, Iterable

import onnx

__all__ = [
    "LAYER_KEY",
    "CONV_KEY",
    "BN_FOLDED_KEY",
    "FRAMEWORK_KEY",
    "friendly_name",
    "folded_batchnorm",
    "display_label",
    "node_path_name",
    "unique_names",
    "slugify",
]

# Node metadata written by onnxviz's converters (converters/), read back here without any framework.
LAYER_KEY = "onnxviz.layer"  # the framework's layer name, on every node (older files: Conv-family nodes only)
CONV_KEY = "onnxviz.conv"  # a conv's own name where its layer holds two convs (Keras SeparableConv2D)
BN_FOLDED_KEY = "onnxviz.bn_folded"  # the BatchNorm layer the exporter folded into this Conv
FRAMEWORK_KEY = "onnxviz.framework"  # model-level: "torch" or "keras"

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
# Last path components that name the operation rather than the layer.
_OP_WORDS = re.compile(
    r"^(conv|convolution|conv[123]d|convtranspose|conv[123]dtranspose|conv[123]d_transpose|"
    r"qlinearconv|convinteger|fusedconv|biasadd|depthwise|depthwise_conv2d|separable_conv[12]d|_convolution)"
    r"([_.:]\d+)?(_quant)?$",
    re.IGNORECASE,
)
_MAX_SLUG = 80
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\.weight$")


def _meta(node: onnx.NodeProto, key: str) -> str | None:
    for prop in node.metadata_props:
        if prop.key == key:
            return prop.value
    return None


def _literal_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):  # model-supplied text: anything goes
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _from_name_scopes(node: onnx.NodeProto) -> str | None:
    scopes = _literal_list(_meta(node, _SCOPES_KEY))
    if not scopes:
        return None
    # The last scope is the op instance (``conv2d_1``); the one before it the module path.
    modules = [s for s in scopes[:-1] if s]
    return modules[-1] if modules else None


def folded_batchnorm(node: onnx.NodeProto, initializers: Collection[str] = frozenset()) -> str | None:
    """The BatchNorm layer folded into this Conv's weights, when the file says so.

    From onnxviz's converters' metadata, or from the dynamo exporter's metadata: after folding,
    the fused Conv's scopes and class hierarchy end in the BatchNorm module.
    """
    recorded = _meta(node, BN_FOLDED_KEY)
    if recorded is not None:
        return recorded or None
    scopes = _literal_list(_meta(node, _SCOPES_KEY))
    classes = _literal_list(_meta(node, _CLASSES_KEY))
    if not scopes or not classes or len(classes) < 2 or "batchnorm" not in classes[-2].lower():
        return None
    modules = [s for s in scopes[:-1] if s]
    bn = modules[-1] if modules else None
    return bn if bn and bn != _from_weight(node, initializers) else None


def display_label(name: str, bn_folded: str | None) -> str:
    """``layer1.0.conv1`` + ``layer1.0.bn1`` → ``layer1.0.conv1 (+bn1)``."""
    if not bn_folded:
        return name
    prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
    short = bn_folded[len(prefix):] if prefix and bn_folded.startswith(prefix) else bn_folded
    if short.isdigit():  # nn.Sequential index: keep its container's name (downsample.1)
        short = ".".join(bn_folded.split(".")[-2:])
    return f"{name} (+{short})"


def _from_path(name: str, op_type: str, scoped: bool = False) -> str | None:
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        return None
    if scoped and len(parts) > 2:
        parts = parts[1:]  # tf2onnx: the first scope is the Keras model's own name
    # Drop the op's own name; tf2onnx scopes can hold two (``separable_conv2d/depthwise``), but a
    # torch module may well be called ``conv``, so only the last part goes there.
    for _ in range(2 if scoped else 1):
        last = parts[-1]
        if len(parts) > 1 and (
            last.lower() == op_type.lower()
            or re.match(rf"^{re.escape(op_type)}([_.:]\d+)?$", last, re.I)
            or _OP_WORDS.match(last)
        ):
            parts = parts[:-1]
    # TorchScript scopes name each module relative to its owner, repeating the container's name:
    # /layer1/layer1.1/downsample/downsample.0/Conv → layer1.1 . downsample.0
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        elif not path or part != path[-1]:
            path.append(part)
    return ".".join(path) or None


def _from_weight(node: onnx.NodeProto, initializers: Collection[str]) -> str | None:
    """``layer1.0.conv1.weight`` → ``layer1.0.conv1`` (torch parameter names kept by exporters)."""
    if len(node.input) < 2 or node.input[1] not in initializers:
        return None
    match = _PARAM.match(node.input[1])
    return match.group(1) if match else None


def node_path_name(name: str, op_type: str, scoped: bool = False) -> str | None:
    """The module/layer path encoded in a scoped node name, e.g. ``/layer1/layer1.0/conv1/Conv``."""
    return _from_path(name, op_type, scoped)


def friendly_name(
    node: onnx.NodeProto, tensor: str, initializers: Collection[str] = frozenset(), *, scoped: bool = False
) -> str:
    """The name a user knows the layer by, derived from what the exporter recorded.

    ``scoped``: node names are TensorFlow scopes whose first part is the model's name (tf2onnx).
    """
    return (
        _meta(node, CONV_KEY)
        or _meta(node, LAYER_KEY)
        or _from_weight(node, initializers)
        or _from_name_scopes(node)
        or _from_path(node.name, node.op_type, scoped)
        or node.name
        or tensor
    )


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique by suffixing ``_2``, ``_3``… to repeats, keeping first occurrences."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in seen:
            candidate = f"{name}_{k}"
            k += 1
        seen.add(candidate)
        out.append(candidate)
    return out


def slugify(name: str, *, max_len: int = _MAX_SLUG) -> str:
    """A file-name-safe slug: ``[A-Za-z0-9._-]`` only, no leading dot, no ``..``, bounded length.

    Uniqueness is the caller's job (prefix an index); long names keep a short hash of the full
    name so that two long names sharing a prefix still differ.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    slug = re.sub(r"\.{2,}", ".", slug).strip("._-") or "layer"
    if len(slug) > max_len:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{slug[: max_len - 9].rstrip('._-')}-{digest}"
    return slug
