"""Shared fixtures: CIFAR-10 where train.py finds it, and tiny real checkpoints made by the trainer on the CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from resnet_core import build_model, data

REPO = Path(__file__).resolve().parents[1]

# Keep every test away from the user's cache and checkpoints.
os.environ.setdefault("RESNET_CACHE_DIR", str(REPO / ".pytest_cache" / "cifar-cache"))


def find_cifar10() -> tuple[Path | None, str]:
    """(folder, "") where train.py would find CIFAR-10 (data.resolve_data_dir: $CIFAR10_DIR, else the first whole
    copy of ./data, the repo's data/ and shared/datasets/cifar10 beside the repo), or
    (None, why not). Both splits must be there in a layout load_cifar10 reads; whether they are intact is for the
    tests to find out."""
    try:
        folder = data.resolve_data_dir(None)
        for split in ("train", "test"):
            data.find_source(folder, split)
    except data.DatasetError as e:
        return None, f"no CIFAR-10 for the tests: {e}"
    return folder, ""


# Found once, at start-up: some tests point CIFAR10_DIR at an empty folder, and nothing they do may move this.
CIFAR10, NO_CIFAR10 = find_cifar10()

# CI sets this (.ci/run): there, a test skipped for want of the data or the browser fails instead, so that a CI
# machine without them cannot pass green with half the suite unrun. Only the CUDA tests may skip, in a test or at
# collection (importorskip, a module-level skip).
STRICT = os.environ.get("RESNET_TESTS_NO_SKIPS") == "1"
NO_SKIP = "where RESNET_TESTS_NO_SKIPS=1 (CI) allows no skip"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail") and item.path.name != "test_gpu.py":
        report.outcome = "failed"
        report.longrepr = f"skipped {NO_SKIP}: {skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and isinstance(collector, pytest.Module) and collector.path.name != "test_gpu.py":
        report.outcome = "failed"
        report.longrepr = f"{collector.path.name} skipped at collection {NO_SKIP}: {skip_reason(report)}"


def skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.fixture(scope="module")
def model():
    """An untrained resnet20, seeded, in eval mode: one per test module."""
    torch.manual_seed(0)
    return build_model("resnet20").eval()


def failing_block_compiler(error: Exception):
    """A stand-in for trainer.block_compiler whose compiled blocks raise `error` when called: a machine where
    torch.compile cannot run (or a bug of ours, for an error that is not torch.compile's)."""
    def block_compiler():
        def call(block, x):
            raise error
        return call
    return block_compiler


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    """The CIFAR-10 folder the project itself would use, in any layout it reads."""
    if CIFAR10 is None:
        pytest.skip(NO_CIFAR10)
    return CIFAR10


# A tiny real run: two epochs of 4 iterations (64 training images, batch 16), scored on 50 test images. Small,
# because the suite trains dozens of them on 2 cores; the trainer's code paths are the same at any size.
TINY_RUN = ["--epochs", "2", "--limit-train", "64", "--limit-test", "50", "--batch-size", "16"]


def train_tiny(out: Path, state: Path, models=("resnet20", "plain20"), *extra: str) -> None:
    """A real TINY_RUN of train.py's main() on the CPU."""
    import train

    argv = ["--model", *models, *TINY_RUN, "--data-dir", str(CIFAR10), "--out", str(out), "--state-dir", str(state),
            "--device", "cpu", *extra]
    assert train.main(argv) == 0


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, shared_cifar) -> Path:
    """A checkpoints folder holding tiny resnet20 and plain20, trained for real (a few seconds)."""
    root = tmp_path_factory.mktemp("checkpoints")
    train_tiny(root, tmp_path_factory.mktemp("runs"))
    return root


@pytest.fixture(scope="session")
def tiny_landscapes(tiny_checkpoints, tmp_path_factory, shared_cifar) -> Path:
    """A copy of the tiny checkpoints with a small real landscape.json beside each: the CLI on the CPU, the first
    32 training images, a 5x5 grid (under a second per net). The shared fixture folder is never written to."""
    import shutil

    from resnet_core import landscape

    root = shutil.copytree(tiny_checkpoints, tmp_path_factory.mktemp("landscapes") / "checkpoints")
    for name in ("resnet20", "plain20"):
        argv = ["--model", name, "--checkpoints", str(root), "--data-dir", str(shared_cifar), "--points", "32",
                "--grid", "5", "--device", "cpu"]
        assert landscape.main(argv) == 0
    return root


@pytest.fixture(scope="session")
def tiny_seed_checkpoints(tmp_path_factory, shared_cifar) -> Path:
    """CIFAR ResNet-18 and Plain-18 published as issue 6 publishes them: the seed report's recipe, no weights.
    Real but tiny: one epoch on 64 training images, scored on the first 50 test images (~15 s)."""
    root = tmp_path_factory.mktemp("seed-checkpoints")
    import train

    argv = ["--model", "resnet18", "plain18", "--recipe", "seed", "--no-weights", "--epochs", "1", "--limit-train", "64",
            "--limit-test", "50", "--batch-size", "32", "--data-dir", str(shared_cifar), "--out", str(root),
            "--state-dir", str(tmp_path_factory.mktemp("seed-runs")), "--device", "cpu"]
    assert train.main(argv) == 0
    return root
