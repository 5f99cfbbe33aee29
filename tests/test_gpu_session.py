"""bench/gpu: the packer that brings results back from the device machine within its limits, and the
session script's collect/receive round trip (both run here on the CPU with stand-in folders)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))
import pack  # noqa: E402

MIB = 1 << 20


def test_plan_respects_the_per_file_count_and_total_limits():
    sizes = {"a": 14 * MIB, "b": 14 * MIB, "c": 7 * MIB, "d": 7 * MIB, "e": 1 * MIB, "huge": 20 * MIB}
    bins, left = pack.plan(sizes, per_file=15 * MIB, files=3, total=40 * MIB)
    assert "huge" in left  # larger than one file may be
    for b in bins:
        assert sum(sizes[n] for n in b) <= 15 * MIB
    assert len(bins) <= 3 and sum(sizes[n] for b in bins for n in b) <= 40 * MIB
    placed = [n for b in bins for n in b]
    assert sorted(placed + left) == sorted(sizes), "every folder is packed or listed as left, once"
    bins, left = pack.plan({"x": 1, "y": 1}, per_file=10, files=0, total=100)
    assert bins == [] and sorted(left) == ["x", "y"]


def make_run(root: Path, name: str, finished: bool, size: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(dict(finished=finished, iteration=390 if not finished else 64_000,
                                                       config=dict(recipe=dict(iterations=64_000)))))
    (folder / "state.safetensors").write_bytes(os.urandom(size))
    return folder


def test_collect_packs_unfinished_state_and_receive_unpacks_it(tmp_path):
    runs, ckpt, out, log = tmp_path / "runs", tmp_path / "ckpt", tmp_path / "out", tmp_path / "train.log"
    make_run(runs, "resnet20", True, 1000)
    make_run(runs, "plain110", False, 3 * MIB)
    make_run(runs, "resnet110", False, 3 * MIB)
    (ckpt / "resnet20").mkdir(parents=True)
    (ckpt / "resnet20" / "metrics.json").write_text("{}")
    log.write_text("resnet20: finished\r2 models: 50%|#####     | 1/2 [00:01<00:01,  1.00it/s]\n")
    out.mkdir()
    env = dict(os.environ, OUT=str(out), RUNS=str(runs), CKPT=str(ckpt), LOG=str(log))
    done = subprocess.run(["bash", "bench/gpu/session.sh", "collect"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status = (out / "status.txt").read_text()
    assert "resnet20: finished; published: True" in status
    assert "plain110: at iteration 390 of 64,000; published: False" in status
    assert "--model plain110 resnet110 --resume" in status
    with tarfile.open(out / "runs-1.tgz") as tar:
        names = tar.getnames()
    assert "plain110/state.safetensors" in names and not any(n.startswith("resnet20") for n in names)
    assert "it/s]" not in (out / "train.log").read_text()  # the progress redraws are dropped

    here = tmp_path / "here"
    here.mkdir()
    script = REPO / "bench" / "gpu" / "session.sh"
    done = subprocess.run(["bash", str(script), "receive", str(out)], cwd=here, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (here / "checkpoints" / "resnet20" / "metrics.json").is_file()
    assert (here / "runs" / "resnet110" / "state.safetensors").stat().st_size == 3 * MIB
