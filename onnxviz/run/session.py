"""onnxruntime sessions: lazy import, provider choice, and checking what really runs.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available on machines without a usable GPU and
silently falls back to CPU, so the provider in use is read back from ``session.get_providers()``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from ..errors import ModelLoadError, OnnxvizError, ProviderError

__all__ = ["Provider", "Optimization", "OPTIMIZATIONS", "MEM_PATTERN", "import_onnxruntime", "create_session", "provider_label", "ort_error_message"]

Provider = Literal["auto", "cpu", "cuda"]
Optimization = Literal["basic", "extended", "all"]
OPTIMIZATIONS: tuple[str, ...] = ("basic", "extended", "all")

# ``config={MEM_PATTERN: "0"}`` turns onnxruntime's memory pattern off. Sessions run many times with
# large outputs need it: with the pattern on, the second run of a ResNet-50 exposing all 53 convs at
# batch 32 could not reuse the first run's freed output memory and RSS doubled (2.0 → 3.9 GB).
MEM_PATTERN = "session.enable_mem_pattern"

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_INSTALL = "pip install 'onnxviz[cpu]' (or 'onnxviz[gpu]' for CUDA)"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime, or say in one line how to install it."""
    # onnxruntime's telemetry (Linux/macOS builds since 1.32) writes a session file (.ses) into the
    # temporary folder on import and keeps it; ORT_DISABLE_TELEMETRY=1 turns it off (a user's own
    # setting of the variable wins).
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from ..interrupts import shielded

    try:
        with shielded():  # a Ctrl-C inside its extension's initialisation can abort the interpreter
            import onnxruntime
    except ImportError:
        from ..interrupts import reraise_if_interrupted

        reraise_if_interrupted()  # a Ctrl-C inside onnxruntime's import can surface as ImportError
        raise ProviderError(f"onnxruntime is not installed: {_INSTALL}") from None
    return onnxruntime


def provider_label(name: str) -> str:
    """``CUDAExecutionProvider`` → ``cuda``."""
    return name.removesuffix("ExecutionProvider").lower()


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# "/onnxruntime_src/.../file.h:46 void ns::Func(args...) Message" → "Message"
_SOURCE_LOCATION = re.compile(r"^/\S+\.(?:cc|h|cpp|hpp):\d+ .*?\) (?=[A-Z])")


def ort_error_message(exc: BaseException) -> str:
    """onnxruntime's error text without its status prefix and C++ source location, one line."""
    text = " ".join(str(exc).split())
    text = _ORT_PREFIX.sub("", text)
    for _ in range(3):  # nested statuses repeat the prefix and location
        text = _SOURCE_LOCATION.sub("", _ORT_PREFIX.sub("", text))
    return text or type(exc).__name__


def _opset_message(text: str, version: str) -> str | None:
    used = re.search(r"Opset (\d+) is under development", text)
    supported = re.search(r"support for domain (\S+) is till opset (\d+)", text)
    if used and supported:
        return (
            f"model uses {supported.group(1)} opset {used.group(1)}, but onnxruntime {version} supports up to "
            f"opset {supported.group(2)}: upgrade onnxruntime"
        )
    return None


def create_session(
    model_bytes: bytes,
    *,
    provider: str = "auto",
    external_dir: Path | None = None,
    threads: int = 0,
    config: dict[str, str] | None = None,
    initializers: dict[str, Any] | None = None,
    optimization: Optimization = "all",
) -> tuple[Any, str]:
    """Create an InferenceSession and return it with the provider that is really active.

    ``optimization``: onnxruntime's graph optimization level, ``basic`` | ``extended`` | ``all``
    (``all`` adds layout rewrites such as NCHWc, which cost time to build and pay off over
    repeated runs).

    ``config``: onnxruntime session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``;
    ``MEM_PATTERN`` (``"session.enable_mem_pattern"``) sets that SessionOptions field.
    ``initializers``: name → numpy array for initializers the model marks as external (zero-copy).
    """
    if provider not in ("auto", "cpu", "cuda"):
        raise ProviderError(f"unknown provider {provider!r}: use auto, cpu or cuda")
    if optimization not in OPTIMIZATIONS:
        raise OnnxvizError(f"unknown graph optimization level {optimization!r}: use {', '.join(OPTIMIZATIONS)}")
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if provider == "cuda" and _CUDA not in available:
        raise ProviderError(
            f"provider 'cuda' requested but onnxruntime {ort.__version__} has no {_CUDA} "
            f"(available: {', '.join(available)}); pip uninstall onnxruntime && pip install 'onnxviz[gpu]'"
        )
    want_cuda = provider in ("cuda", "auto") and _CUDA in available
    providers = [_CUDA, _CPU] if want_cuda else [_CPU]
    if want_cuda and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # missing pip CUDA libraries: session creation reports what is active
            pass
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}")
    options.log_severity_level = 4  # fatal only: CUDA fallback and kernel errors are reported by onnxviz itself
    if threads:
        options.intra_op_num_threads = threads
    for key, value in (config or {}).items():
        if key == MEM_PATTERN:  # a SessionOptions field: the config entry alone is ignored
            options.enable_mem_pattern = str(value).lower() not in ("0", "false")
            continue
        options.add_session_config_entry(str(key), str(value))
    if external_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_dir))
    keep_alive: list[Any] = []
    if initializers:
        keep_alive = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in initializers.values()]
        options.add_external_initializers(list(initializers), keep_alive)
    try:
        session = ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as exc:
        message = ort_error_message(exc)
        opset = _opset_message(message, ort.__version__)
        if opset is not None:
            raise ModelLoadError(opset) from None
        if "opset" in message.lower():
            raise ModelLoadError(f"unsupported opset for onnxruntime {ort.__version__}: {message}") from None
        raise ModelLoadError(f"onnxruntime {ort.__version__} cannot load the model: {message}") from None
    session._onnxviz_initializers = keep_alive  # the OrtValues must outlive the session
    active = session.get_providers()
    if provider == "cuda" and (not active or active[0] != _CUDA):
        raise ProviderError(
            f"provider 'cuda' requested but {_CUDA} did not initialise (no usable GPU, or CUDA/cuDNN "
            f"libraries missing: pip install 'onnxruntime-gpu[cuda,cudnn]'); onnxruntime fell back to {active[0]}"
        )
    return session, provider_label(active[0])
