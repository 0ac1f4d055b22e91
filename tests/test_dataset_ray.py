"""Dataset mode on Ray Data: one local in-process cluster for the module (2 CPUs, two actors),
results identical to the local run, and nothing listening beyond loopback."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import onnxviz
from conftest import require_in_ci
from onnxviz.demo import demo_model


@pytest.fixture(scope="module")
def ray_cluster():
    from onnxviz.datasets.ray_run import import_ray

    if importlib.util.find_spec("ray") is None:  # not require_in_ci: importing ray here would come before import_ray's setting
        if os.environ.get("CI"):
            raise AssertionError("CI must install the ray extra")
        pytest.skip("ray not installed")
    psutil = require_in_ci("psutil")
    before = _listening(psutil)
    ray = import_ray()  # sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray: servers bind 127.0.0.1
    import logging

    temp = tempfile.mkdtemp(prefix="ovr-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short: Ray's socket paths
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, _temp_dir=temp)
    try:
        yield ray, psutil, before
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _listening(psutil) -> set[tuple[str, int, int]]:
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr:
            found.add((conn.laddr.ip, conn.laddr.port, conn.pid or 0))
    return found


def test_ray_servers_listen_on_loopback_only(ray_cluster):
    ray, psutil, before = ray_cluster
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    new = [(ip, port) for ip, port, pid in _listening(psutil) - before if pid in ours]  # the machine is shared
    assert new, "the local Ray cluster should be listening somewhere"
    assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip, _ in new), new


def test_ray_run_equals_the_local_run(ray_cluster, photos, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted(photos.glob("*.jpg"))[:24]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    options = dict(size=(32, 32), top_k=4, batch=4, progress=False)
    local = onnxviz.dataset(demo_model(), images, **options)
    distributed = onnxviz.dataset(demo_model(), images, output=tmp_path / "out", ray="auto", workers=2, shard_size=6, **options)
    run = distributed.run
    assert run["runner"] == "ray" and run["workers"] == 2 and run["threads_per_worker"] == 1 and run["partials"] >= 4
    assert distributed.count == local.count == 24 and distributed.skipped == local.skipped and len(local.skipped) == 1
    for name in local:
        a, b = local[name], distributed[name]
        for field in ("top_image", "top_pos", "top_score", "top_key", "hist", "count", "positive", "nonfinite", "min", "max"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-12)
    assert (tmp_path / "out" / "dataset.json").is_file() and not (tmp_path / "out.onnxviz-resume").exists()
    # --strict: workers list the unreadable image, the driver stops with it named
    with pytest.raises(onnxviz.InputError, match="broken.jpg"):
        onnxviz.dataset(demo_model(), images, ray="auto", workers=2, strict=True, **options)


def test_a_cluster_onnxviz_starts_leaves_nothing_in_the_temp_folder(photos, tmp_path):
    """``--ray local`` starts its own cluster with its session files in a scratch folder, removed at the end."""
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install the ray extra")
        pytest.skip("ray not installed")
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted(photos.glob("*.jpg"))[:8]:
        (images / p.name).write_bytes(p.read_bytes())
    temp = tempfile.mkdtemp(prefix="ovt-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        env = {**os.environ, "TMPDIR": temp}
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "onnxviz", "dataset", str(demo_model()), str(images), "-o", str(out), "--size", "32x32",
             "--ray", "local", "--workers", "1", "--top-k", "2"],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert (out / "dataset.json").is_file()
        assert os.listdir(temp) == [], os.listdir(temp)  # no ray/ session folder, no scratch folder
    finally:
        shutil.rmtree(temp, ignore_errors=True)
