"""The suite's own rule for CI (tests/conftest.py): with RESNET_TESTS_NO_SKIPS=1 a skipped test fails, except the
CUDA ones, so that a CI machine missing the data or the browser cannot pass with part of the suite unrun."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
import pytest

def test_without_its_data():
    pytest.skip("no CIFAR-10")

@pytest.mark.skipif(True, reason="no chromium")
def test_without_a_browser():
    pass

def test_that_runs():
    assert True
'''


MODULE_SKIP = '''
import pytest

pytest.importorskip("a_module_this_machine_lacks")

def test_never_collected():
    pass
'''


def run_probe(tmp_path: Path, strict: bool, probe: str = PROBE) -> subprocess.CompletedProcess:
    """The probe twice, as tests/test_probe.py and as tests/test_gpu.py (where the CUDA tests live), in one run."""
    (tmp_path / "tests").mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    for name in ("test_probe.py", "test_gpu.py"):
        (tmp_path / "tests" / name).write_text(probe)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RESNET_TESTS_NO_SKIPS", None)
    if strict:
        env["RESNET_TESTS_NO_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_in_ci_a_skip_fails_but_not_a_cuda_one(tmp_path):
    relaxed = run_probe(tmp_path, strict=False)
    assert relaxed.returncode == 0 and "2 passed, 4 skipped" in relaxed.stdout, relaxed.stdout
    strict = run_probe(tmp_path, strict=True)
    assert strict.returncode == 1 and "1 failed, 2 passed, 2 skipped, 1 error" in strict.stdout, strict.stdout
    assert "FAILED tests/test_probe.py::test_without_its_data" in strict.stdout
    assert "ERROR tests/test_probe.py::test_without_a_browser" in strict.stdout
    assert "allows no skip: Skipped: no CIFAR-10" in strict.stdout
    assert strict.stdout.count("SKIPPED [1] tests/test_gpu.py") == 2  # the CUDA tests may skip anywhere


def test_in_ci_a_module_skipped_at_collection_fails_but_not_the_cuda_one(tmp_path):
    strict = run_probe(tmp_path, strict=True, probe=MODULE_SKIP)
    assert strict.returncode != 0 and "1 skipped, 1 error" in strict.stdout, strict.stdout
    assert "ERROR tests/test_probe.py" in strict.stdout and "SKIPPED [1] tests/test_gpu.py" in strict.stdout
    assert "test_probe.py skipped at collection where RESNET_TESTS_NO_SKIPS=1 (CI) allows no skip" in strict.stdout
