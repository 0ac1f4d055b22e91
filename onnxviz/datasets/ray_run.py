"""The same job over a Ray cluster, as Ray Data: images read by Ray as bytes
(``read_binary_files``), one actor per worker holding its own session
(:class:`~.worker.DatasetWorker`, ``compute=ActorPoolStrategy(size=n)``), and one compressed
partial per ``shard_size`` images streamed back to the driver and merged as it arrives.

Ray is an optional extra (``pip install 'onnxviz[ray]'``) imported only here. Facts this module
handles (measured with ray 2.60): ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` must be set before
``import ray`` or a local cluster's servers bind every interface; actors that take every CPU
starve the read tasks for ever (ray-project/ray#44687), so each actor asks for half a CPU;
onnxruntime ignores Ray's CPU counts, so each session gets an explicit thread count.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OnnxvizError
from ..safefs import clean_stale, discard, scratch_dir
from .engine import JobSpec, Part

__all__ = ["run_ray", "import_ray"]


def import_ray() -> Any:
    """Import ray with its servers bound to loopback for local clusters, or say how to install it."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise OnnxvizError("--ray needs Ray Data: pip install 'onnxviz[ray]'") from None
    return ray


# Ray puts Unix sockets at TEMP/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, and their
# paths must stay under 108 bytes: that leaves about 43 for the temp folder itself.
_RAY_TEMP_MAX = 43


def _local_temp() -> Path | None:
    """A scratch folder for a local cluster this run starts, removed after ``ray.shutdown()`` so
    that Ray's session files do not outlive the run: in the temp folder, or in /tmp when the temp
    folder's path is too long for Ray's sockets; None (Ray's own default) when neither fits."""
    name = len(f"/onnxviz-ray-{os.getpid()}-") + 16
    for parent in (Path(tempfile.gettempdir()), Path("/tmp")):
        if len(str(parent)) + name <= _RAY_TEMP_MAX and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            clean_stale(parent)  # a cluster's folder left by a run that was killed (SIGKILL)
            return scratch_dir(parent, "", "ray", private=True)
    return None


def _connect(ray: Any, address: str) -> tuple[bool, Path | None]:
    """Connect (or start a local cluster). Returns whether this call started or joined it and must
    shut it down, and the scratch folder of a local cluster it started (None otherwise)."""
    if ray.is_initialized():
        return False, None
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    temp: Path | None = None

    def start_local() -> None:
        nonlocal temp
        temp = _local_temp()
        ray.init(**quiet, **({"_temp_dir": str(temp)} if temp is not None else {}))

    try:
        if address == "local":
            start_local()
        elif address == "auto":
            try:
                ray.init(address="auto", logging_level=logging.ERROR, log_to_driver=False)
            except ConnectionError:
                start_local()
        else:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if temp is not None:
            discard(temp)
        raise OnnxvizError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    return True, temp


def run_ray(
    spec: JobSpec,
    images: Sequence[str],
    todo: np.ndarray,
    on_part: Callable[[Part], None],
    *,
    address: str = "auto",
    workers: int | None = None,
    shard_size: int = 1000,
    strict: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the job on the images at ``todo`` over Ray; ``on_part`` receives each merged-in partial
    (indices already mapped to the job's). Returns how it ran (workers, threads, resources)."""
    if not os.path.isfile(spec.model):
        raise OnnxvizError("--ray needs the model as a file path every worker can read")
    ray = import_ray()
    from ray.data import ActorPoolStrategy

    from .worker import DatasetWorker

    started, temp = _connect(ray, address)
    ray_data_log = logging.getLogger("ray.data")
    log_level = ray_data_log.level
    try:
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1.0))
        gpus = float(resources.get("GPU", 0.0))
        use_gpu = spec.provider == "cuda"
        if use_gpu and gpus < 1:
            raise OnnxvizError("--provider cuda with --ray: the cluster has no GPU")
        n = workers or max(1, int(gpus) if use_gpu else int(cpus) - 1)
        threads = spec.threads or max(1, int(cpus // n) if cpus >= n else 1)
        worker_spec = replace(spec, threads=threads)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        ray_data_log.setLevel(logging.CRITICAL)  # onnxviz reports a failure in one line itself
        paths = [os.path.abspath(images[i]) for i in todo]
        index_of = {os.path.abspath(p): i for i, p in enumerate(images)}
        remote: dict[str, Any] = {"num_cpus": 0.5}  # never every CPU: the read tasks need one (ray#44687)
        if use_gpu:
            remote["num_gpus"] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # max_restarts goes through the deprecated ray_remote_args
            data = ray.data.read_binary_files(paths, include_paths=True).map_batches(
                DatasetWorker, fn_constructor_kwargs={"spec": worker_spec}, batch_size=shard_size,
                compute=ActorPoolStrategy(size=n), batch_format="numpy", max_restarts=0, **remote,
            )  # fmt: skip
        parts = 0
        for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["part"]:
                part = Part.from_bytes(bytes(blob)).localized(index_of)
                if strict and part.skipped:  # workers skip and list; the driver stops, as a local --strict run does
                    index, reason = min(part.skipped)
                    raise InputError(f"{images[index]}: {reason} (without --strict, unreadable images are skipped and listed)")
                on_part(part)
                parts += 1
                if progress is not None:
                    progress.update(part.done)
        return {"address": address, "workers": n, "threads_per_worker": threads, "cluster_cpus": cpus, "cluster_gpus": gpus, "partials": parts}
    except Exception as exc:
        if isinstance(exc, OnnxvizError) or not _is_ray_error(exc):
            raise
        raise _worker_error(exc) from None
    finally:
        ray_data_log.setLevel(log_level)
        if started:
            ray.shutdown()
        if temp is not None:
            discard(temp)


def _is_ray_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("ray.")


def _worker_error(exc: BaseException) -> Exception:
    """One line from a worker's failure: Ray Data hands the driver the worker's traceback as text
    (the exception object stays in the worker), so its last ``Type: message`` line is taken."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = [m for m in (re.match(r"^([\w.]*?)(\w+(?:Error|Exception)): (.+)$", line) for line in lines) if m]
    if found:
        module, kind, message = found[-1].groups()
        if module.startswith("onnxviz."):
            return OnnxvizError(f"on a Ray worker: {message}")
        return RuntimeError(f"a Ray worker failed: {kind}: {message}")
    return RuntimeError(f"a Ray worker failed: {lines[-1] if lines else type(exc).__name__}")
