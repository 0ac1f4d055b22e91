"""onnxruntime sessions: lazy import, provider choice, and checking what really runs.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available on machines without a usable GPU and
silently falls back to CPU, so the provider in use is read back from ``session.get_providers()``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from .errors import ModelLoadError, ProviderError

__all__ = ["Provider", "import_onnxruntime", "create_session", "provider_label"]

Provider = Literal["auto", "cpu", "cuda"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_INSTALL = "pip install 'onnxviz[cpu]' (or 'onnxviz[gpu]' for CUDA)"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime, or say in one line how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ProviderError(f"onnxruntime is not installed: {_INSTALL}") from None
    return onnxruntime


def provider_label(name: str) -> str:
    """``CUDAExecutionProvider`` → ``cuda``."""
    return name.removesuffix("ExecutionProvider").lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create_session(
    model_bytes: bytes, *, provider: str = "auto", external_dir: Path | None = None, threads: int = 0
) -> tuple[Any, str]:
    """Create an InferenceSession and return it with the provider that is really active."""
    if provider not in ("auto", "cpu", "cuda"):
        raise ProviderError(f"unknown provider {provider!r}: use auto, cpu or cuda")
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
    options.log_severity_level = 4  # fatal only: CUDA fallback and kernel errors are reported by onnxviz itself
    if threads:
        options.intra_op_num_threads = threads
    if external_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_dir))
    try:
        session = ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as exc:
        message = _first_line(exc)
        if "opset" in message.lower():
            raise ModelLoadError(
                f"unsupported opset for onnxruntime {ort.__version__}: {message}; upgrade onnxruntime"
            ) from None
        raise ModelLoadError(f"onnxruntime {ort.__version__} cannot load the model: {message}") from None
    active = session.get_providers()
    if provider == "cuda" and (not active or active[0] != _CUDA):
        raise ProviderError(
            f"provider 'cuda' requested but {_CUDA} did not initialise (no usable GPU, or CUDA/cuDNN "
            f"libraries missing: pip install 'onnxruntime-gpu[cuda,cudnn]'); onnxruntime fell back to {active[0]}"
        )
    return session, provider_label(active[0])
