"""The seeded fuzz test: mutated model files (bit flips, truncation, field-level protobuf mutations
of the bundled demo CNN and tiny helper-built models; PaddleOCR's classifier in the extended run)
through load, capture, render and every CLI command.

Every run must end with exit 0 or 2; on 2 exactly one stderr line ``onnxviz: error: ...``; no
traceback; nothing left in the temporary folder (TMPDIR per case) or beside the output; the input
files unchanged; the API raising nothing but one-line OnnxvizErrors. The mutators and checks live
in ``tests/fuzzing.py`` (``python tests/fuzzing.py N`` runs N mutants standalone).

By default ``ONNXVIZ_FUZZ_CI`` mutants (300) run in process: each through the API and two of the
CLI commands in turn, so every command sees about 60 of them, plus a handful through the real
console script in a subprocess. ``ONNXVIZ_FUZZ=N`` (the slow test, skipped unless ``--runslow`` /
``ONNXVIZ_SLOW=1``) runs N mutants (default 2000) through every command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fuzzing
from fuzzing import COMMANDS, check_outcome, command_lines, digest, mutants, run_case, small_machine

SEED = 20261129


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 28, 3), dtype=np.uint8)).save(path)
    return path


def _report(outcomes) -> tuple[Counter, list[str]]:
    codes: Counter = Counter()
    failures = []
    for what, outcome in outcomes:
        codes[outcome.code] += 1
        if outcome.problems:
            failures.append(f"{outcome.case} [{what}] {outcome.command}: rc={outcome.code} {outcome.problems} "
                            f"{outcome.stderr.strip()[-300:]!r}")
    return codes, failures


def _fuzz(n: int, seed: int, tmp_path: Path, image: Path, per_mutant: int | None) -> tuple[Counter, list[str]]:
    outcomes = []
    with small_machine():
        for k, (name, data, what) in enumerate(mutants(n, seed)):
            if per_mutant is None:
                commands = COMMANDS
            else:  # rotate through the commands so each sees n * per_mutant / len(COMMANDS) mutants
                commands = [COMMANDS[(k * per_mutant + j) % len(COMMANDS)] for j in range(per_mutant)]
            outcomes += [(what, o) for o in run_case(tmp_path / "cases", name, data, image, commands, api=True)]
            shutil.rmtree(tmp_path / "cases" / name, ignore_errors=True)
    return _report(outcomes)


def test_fuzz_mutated_models(tmp_path, image):
    n = int(os.environ.get("ONNXVIZ_FUZZ_CI", 300))
    codes, failures = _fuzz(n, SEED, tmp_path, image, per_mutant=2)
    assert not failures, "\n".join(failures[:20])
    assert set(codes) <= {0, 2} and codes[0] > 0 and codes[2] > 0, codes  # both kinds of outcome are reached


@pytest.mark.slow
def test_fuzz_many_mutants_through_every_command(tmp_path, image):
    n = int(os.environ.get("ONNXVIZ_FUZZ", 2000))
    codes, failures = _fuzz(n, SEED + 1, tmp_path, image, per_mutant=None)
    print(f"{n} mutants: exit codes {dict(sorted(codes.items()))}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])


@pytest.mark.slow
def test_fuzz_a_real_third_party_model(tmp_path, image):
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr not installed")
    data = (Path(list(spec.submodule_search_locations)[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx").read_bytes()
    rng = np.random.default_rng(SEED)
    outcomes = []
    with small_machine():
        for k in range(int(os.environ.get("ONNXVIZ_FUZZ_PADDLE", 60))):
            what, mutant = fuzzing.mutate(data, rng)
            outcomes += [(what, o) for o in run_case(tmp_path / "cases", f"paddle{k:03d}", mutant, image,
                                                    ["summary", "maps", "filters", "expose-verify"], api=True)]
    codes, failures = _report(outcomes)
    assert not failures, "\n".join(failures[:20])


def test_fuzz_sample_through_the_console_script(tmp_path, image):
    """A few mutants through ``python -m onnxviz`` for real: stderr as a user sees it (warnings,
    C-level output), TMPDIR per run, the output's parent left as it was."""
    tmp = tmp_path / "tmp"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "ONNXVIZ_DEBUG")}
    env["TMPDIR"] = str(tmp)
    runs = 0
    for k, (name, data, what) in enumerate(mutants(4, SEED + 7)):
        case = tmp_path / name
        case.mkdir()
        model = case / "model.onnx"
        model.write_bytes(data)
        before = digest(model), digest(image)
        for command in (COMMANDS[(2 * k) % len(COMMANDS)], COMMANDS[(2 * k + 5) % len(COMMANDS)]):
            tmp.mkdir(exist_ok=True)
            out_parent = case / f"outputs-{command}"
            out_parent.mkdir()
            argv = command_lines(command, model, image, out_parent)
            proc = subprocess.run([sys.executable, "-m", "onnxviz", *argv], capture_output=True, text=True, env=env, timeout=300)
            runs += 1
            problems = check_outcome(proc.returncode, proc.stdout, proc.stderr)
            assert not problems, (name, what, command, problems, proc.stderr[-500:])
            assert not list(tmp.iterdir()), (name, command, list(tmp.iterdir()))
            left = [p.name for p in out_parent.iterdir()]
            assert all(not p.startswith(".") for p in left), left
            if proc.returncode != 0:
                assert not left, left
            assert (digest(model), digest(image)) == before
    assert runs == 8
