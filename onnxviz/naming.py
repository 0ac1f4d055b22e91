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

__all__ = ["friendly_name", "unique_names", "slugify"]

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
# Last path components that name the operation rather than the layer.
_OP_WORDS = re.compile(
    r"^(conv|convolution|conv[123]d|convtranspose|conv[123]dtranspose|conv2d_transpose|"
    r"qlinearconv|convinteger|fusedconv|biasadd|depthwise|depthwise_conv2d|_convolution)"
    r"([_.:]\d+)?(_quant)?$",
    re.IGNORECASE,
)
_MAX_SLUG = 80
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\.weight$")


def _from_name_scopes(node: onnx.NodeProto) -> str | None:
    for prop in node.metadata_props:
        if prop.key != _SCOPES_KEY:
            continue
        try:
            scopes = ast.literal_eval(prop.value)
        except (ValueError, SyntaxError):
            return None
        if not isinstance(scopes, list):
            return None
        # The last scope is the op instance (``conv2d_1``); the one before it the module path.
        modules = [str(s) for s in scopes[:-1] if str(s)]
        return modules[-1] if modules else None
    return None


def _from_path(name: str, op_type: str) -> str | None:
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        return None
    last = parts[-1]
    if last.lower() == op_type.lower() or re.match(rf"^{re.escape(op_type)}([_.:]\d+)?$", last, re.I) or _OP_WORDS.match(last):
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


def friendly_name(node: onnx.NodeProto, tensor: str, initializers: Collection[str] = frozenset()) -> str:
    """The name a user knows the layer by, derived from what the exporter recorded."""
    return (
        _from_weight(node, initializers)
        or _from_name_scopes(node)
        or _from_path(node.name, node.op_type)
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
