"""bench/gpu: the packer that brings results back from the device machine within its limits, and the
session script's collect/receive round trip (both run here on the CPU with stand-in folders)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))
import pack  # noqa: E402

MIB = 1 << 20
# session.sh runs `python3`: let it be this interpreter, with torch, as the device machine's python3 has it
PYTHON_FIRST = f"{Path(sys.executable).parent}:{os.environ['PATH']}"


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


def test_resume_command_keeps_the_recipe_and_drops_what_start_sets():
    command = ("python train.py --data-dir /root/data --out /root/ckpt --state-dir=/root/runs --all --iterations 60 "
               "--milestones 30 45 --limit-train 1024 --time-budget 0.5 --device cpu")
    assert pack.resume_command(command, ["plain20", "resnet20"]) == (
        "bash bench/gpu/session.sh start --iterations 60 --milestones 30 45 --limit-train 1024 "
        "--model plain20 resnet20 --resume --time-budget N")  # no --device cpu: it goes on on the device's GPU
    again = pack.resume_command("python train.py --model plain20 resnet20 --iterations 60 --resume --time-budget 5",
                                ["plain20"])  # a resumed run's own command
    assert again == "bash bench/gpu/session.sh start --iterations 60 --model plain20 --resume --time-budget N"


def make_published(ckpt: Path) -> None:
    """resnet20 published, and a 32-layer pair published beside another run's checkpoint (a run id in the name)."""
    for name in ("resnet20", "resnet32-runabcdef12", "plain32-run00000000"):
        (ckpt / name).mkdir(parents=True)
        (ckpt / name / "metrics.json").write_text("{}")


def session_env(out: Path, runs: Path, ckpt: Path, log: Path) -> dict:
    """session.sh's environment on the device machine, pointed at a test's folders."""
    return dict(os.environ, OUT=str(out), RUNS=str(runs), CKPT=str(ckpt), LOG=str(log), PATH=PYTHON_FIRST)


def make_run(root: Path, name: str, finished: bool, size: int, command: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(dict(finished=finished, iteration=390 if not finished else 64_000,
                                                       config=dict(recipe=dict(iterations=64_000)), command=command)))
    (folder / "state.safetensors").write_bytes(os.urandom(size))
    return folder


def test_collect_packs_unfinished_state_and_receive_unpacks_it(tmp_path):
    runs, ckpt, out, log = tmp_path / "runs", tmp_path / "ckpt", tmp_path / "out", tmp_path / "train.log"
    make_run(runs, "resnet20", True, 1000)
    make_run(runs, "plain110", False, 3 * MIB)
    make_run(runs, "resnet110", False, 3 * MIB)
    (runs / "cpu-paper" / "state").mkdir(parents=True)  # a CPU run's own folders kept under runs/: no run's state
    (runs / "cpu-paper" / "train.log").write_text("2 models: 10%")
    make_run(runs, "resnet18", False, 1000, command="python train.py --data-dir /root/data --out /root/ckpt "
             "--state-dir /root/runs --depth 18 34 --both --recipe seed --no-weights --time-budget 20")
    make_published(ckpt)
    log.write_text("resnet20: finished\r2 models: 50%|#####     | 1/2 [00:01<00:01,  1.00it/s]\n")
    out.mkdir()
    env = session_env(out, runs, ckpt, log)
    done = subprocess.run(["bash", "bench/gpu/session.sh", "collect"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status = (out / "status.txt").read_text()
    assert "resnet20: finished; published: True" in status
    assert "plain110: at iteration 390 of 64,000; published: False" in status
    assert "resume: bash bench/gpu/session.sh start <the first start's options> --model plain110 resnet110 " \
           "--resume --time-budget N" in status  # state saved before the command was recorded
    assert "resume: bash bench/gpu/session.sh start --recipe seed --no-weights --model resnet18 --resume " \
           "--time-budget N" in status
    with tarfile.open(out / "runs-1.tgz") as tar:
        names = tar.getnames()
    assert "plain110/state.safetensors" in names and not any(n.startswith(("resnet20", "cpu-paper")) for n in names)
    assert "it/s]" not in (out / "train.log").read_text()  # the progress redraws are dropped

    here = tmp_path / "here"
    (here / "checkpoints" / "resnet20").mkdir(parents=True)
    (here / "checkpoints" / "resnet20" / "landscape.json").write_text("{}")  # measured on the weights being replaced
    make_run(here / "bench" / "gpu" / "state", "resnet20", False, 100)  # parked by the last session, finished now
    for name, run_id in (("resnet32", "abcdef12" * 4), ("plain32", "12345678" * 4)):  # the first one's run published
        meta = make_run(here / "bench" / "gpu" / "state", name, False, 100) / "state.json"
        meta.write_text(json.dumps(dict(json.loads(meta.read_text()), run_id=run_id)))
    script = REPO / "bench" / "gpu" / "session.sh"
    done = subprocess.run(["bash", str(script), "receive", str(out)], cwd=here, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (here / "checkpoints" / "resnet20").iterdir()) == ["metrics.json"]
    parked = here / "bench" / "gpu" / "state"  # tracked by git: a fresh checkout of the next session has it
    assert (parked / "resnet110" / "state.safetensors").stat().st_size == 3 * MIB
    assert sorted(p.name for p in parked.iterdir()) == ["plain110", "plain32", "resnet110", "resnet18"]
    assert "unparked: resnet20" in done.stdout and "unparked: resnet32" in done.stdout and "commit it" in done.stdout
    assert "git add -A checkpoints bench/results/gpu-" in done.stdout and done.stdout.rstrip().endswith("bench/gpu/state")
    kept = list(here.glob("bench/results/gpu-*"))
    assert len(kept) == 1 and sorted(p.name for p in kept[0].iterdir()) == ["status.txt", "train.log"]


def test_a_state_folder_is_packed_as_the_pair_state_json_names(tmp_path, monkeypatch):
    """The trainer may be saving while a poll packs: what goes in is state.json as read and the tensors file it
    names, never a stale or newer one beside it; if the named one is gone, state.json is read again."""
    folder = tmp_path / "runs" / "plain56"
    folder.mkdir(parents=True)
    (folder / "state-00000390.safetensors").write_bytes(b"old")
    (folder / "state-00000780.safetensors").write_bytes(b"new")
    (folder / "state.json").write_text(json.dumps(dict(finished=False, tensors="state-00000390.safetensors")))
    real_open = open

    def save_meanwhile(path, *args, **kwargs):  # the trainer's next save lands between the read and the open
        if Path(path).name == "state-00000390.safetensors" and (folder / "state-00000390.safetensors").exists():
            (folder / "state.json").write_text(json.dumps(dict(finished=False, tensors="state-00000780.safetensors")))
            (folder / "state-00000390.safetensors").unlink()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pack, "open", save_meanwhile, raising=False)
    assert pack.main([str(tmp_path / "out"), "runs", str(folder)]) == 0
    with tarfile.open(tmp_path / "out" / "runs-1.tgz") as tar:
        assert sorted(tar.getnames()) == ["plain56/state-00000780.safetensors", "plain56/state.json"]
        assert json.load(tar.extractfile("plain56/state.json"))["tensors"] == "state-00000780.safetensors"
        assert tar.extractfile("plain56/state-00000780.safetensors").read() == b"new"

    (folder / "state.json").write_text(json.dumps(dict(finished=False, tensors="state-00001170.safetensors")))
    assert pack.main([str(tmp_path / "out2"), "runs", str(folder)]) == 1  # named file never appears: left, said
    assert (tmp_path / "out2" / "runs-left.txt").read_text() == "plain56\n"


def test_a_checkpoint_replaced_while_packed_is_left_whole_not_half_packed(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    for name in ("plain20", "resnet20"):
        (ckpt / name).mkdir(parents=True)
        for file in ("config.json", "metrics.json", "model.safetensors"):
            (ckpt / name / file).write_text(f"{name} {file}")
    real_open = open

    def republished(path, *args, **kwargs):  # resnet20's folder swapped for a new one between listing and reading
        if Path(path).parent.name == "resnet20" and Path(path).name == "metrics.json":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pack, "open", republished, raising=False)
    assert pack.main([str(tmp_path / "out"), "ckpt", str(ckpt / "plain20"), str(ckpt / "resnet20")]) == 1
    with tarfile.open(tmp_path / "out" / "ckpt-1.tgz") as tar:
        assert sorted(tar.getnames()) == ["plain20/config.json", "plain20/metrics.json", "plain20/model.safetensors"]
    assert (tmp_path / "out" / "ckpt-left.txt").read_text() == "resnet20\n"


def test_every_poll_brings_back_a_snapshot(tmp_path):
    runs, ckpt, out, log = tmp_path / "runs", tmp_path / "ckpt", tmp_path / "out", tmp_path / "train.log"
    make_run(runs, "plain110", False, 1000)
    make_published(ckpt)
    log.write_text("resnet20: published\n")
    out.mkdir()
    env = session_env(out, runs, ckpt, log)
    done = subprocess.run(["bash", "bench/gpu/session.sh", "poll", "0"], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "snapshot: 2 archives" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["ckpt-1.tgz", "runs-1.tgz", "status.txt", "train.log"]
    assert "plain110: at iteration 390 of 64,000" in (out / "status.txt").read_text()
    done = subprocess.run(["bash", "bench/gpu/session.sh", "poll", "0"], cwd=REPO, env=dict(env, SNAPSHOT="0", OUT=str(tmp_path / "none")),
                          capture_output=True, text=True)
    assert done.returncode == 0 and "snapshot" not in done.stdout


def staging_repo(tmp_path: Path, zip_bytes: int) -> tuple[Path, dict]:
    """A git repo with the project's .gitignore, six fake CIFAR-10 zips of `zip_bytes` beside it, and the env."""
    zips = tmp_path / "cifar10"
    zips.mkdir()
    for name in ("train-1", "train-2", "train-3", "train-4", "train-5", "test"):
        (zips / f"{name}.zip").write_bytes(os.urandom(zip_bytes))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text((REPO / ".gitignore").read_text())
    subprocess.run(["git", "add", ".gitignore"], cwd=repo, check=True)
    env = dict(os.environ, CIFAR_ZIPS=str(zips), PATH=PYTHON_FIRST)
    return repo, env


def stage(repo: Path, env: dict, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "session.sh"), "stage", *args], cwd=repo, env=env,
                          capture_output=True, text=True)
    return done, {f.name: sorted(z.name for z in f.iterdir()) for f in sorted(repo.glob(".gpu-*"))}


def unpack(device: Path, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """session.sh unpack in the device's copy of the tree, with whatever carried folders it holds."""
    env = dict(env, DATA=str(tmp_path / "data"), RUNS=str(tmp_path / "device-runs"),
               INCOMING=str(tmp_path / "incoming"))
    return subprocess.run(["bash", str(REPO / "bench" / "gpu" / "session.sh"), "unpack"], cwd=device, env=env,
                          capture_output=True, text=True)


def carry(repo: Path, device: Path, folder: str) -> None:
    """One call's carry: only this folder of the staged ones arrives in the device's tree."""
    shutil.rmtree(device, ignore_errors=True)
    shutil.copytree(repo / folder, device / folder)


KIB = 1024


def test_stage_fills_each_carry_and_unpack_joins_the_pieces_in_any_order(tmp_path):
    """All the data a session carries is staged before its first device call, cut into pieces that fill each
    folder to the room left beside the tree, so the calls are as few as the bytes need; on the device each file
    is joined once all its pieces came, whatever order the folders came in, and checked against its SHA-256."""
    repo, env = staging_repo(tmp_path, 90 * KIB)
    env.update(TRAVEL_LIMIT_MIB=str(1 + 144 / 1024))  # 1 MiB margin + 144 KiB, less 8 KiB for the manifest
    done, staged = stage(repo, env)
    assert done.returncode == 0, done.stderr
    assert len(staged) == 4  # 540 KiB of zips in folders of 136 KiB: ceil(540 / 136) = 4, not one zip a call (6)
    for folder in staged:
        pieces = sum((repo / folder / name).stat().st_size for name in staged[folder] if name != "manifest.json")
        assert pieces <= 136 * KIB
        assert json.loads((repo / folder / "manifest.json").read_text())["files"]["test.zip"]["size"] == 90 * KIB
    assert "4 carries" in done.stdout and "travel with the tree (limit 1.14062)" in done.stdout
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=repo, capture_output=True, text=True)
    assert "!! .gpu-1/" in status.stdout, "the staged pieces are ignored: only a carry takes them along"

    (repo / "notes.txt").write_bytes(os.urandom(40 * KIB))  # an untracked file travels too: less room a call
    assert len(stage(repo, env)[1]) == 6  # ceil(540 / 96)
    shutil.copytree(repo / ".gpu-6", tmp_path / "old-gpu-6")  # a folder of this staging, cut differently
    (repo / "notes.txt").unlink()
    staged = stage(repo, env)[1]
    assert len(staged) == 4, "a new staging replaces the last one whole"

    device, data = tmp_path / "device", tmp_path / "data"
    for n, folder in enumerate([".gpu-3", ".gpu-1", ".gpu-4", ".gpu-2"]):
        carry(repo, device, folder)
        if n == 2:  # a folder left on the device from an earlier call is skipped, not joined twice
            shutil.copytree(repo / ".gpu-1", device / ".gpu-1")
        if n == 3:  # and one left from an earlier staging is not mixed in
            shutil.copytree(tmp_path / "old-gpu-6", device / ".gpu-6")
        done = unpack(device, env, tmp_path)
        assert done.returncode == 0, done.stderr + done.stdout
        if n < 3:
            assert "waiting:" in done.stdout and "data: 6 of 6" not in done.stdout
    assert "data: 6 of 6 zips" in done.stdout and ": complete" in done.stdout
    assert "skipped .gpu-6: from an earlier staging" in done.stdout and "CORRUPT" not in done.stdout
    zips = tmp_path / "cifar10"
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in zips.iterdir())
    for z in zips.iterdir():
        assert (data / z.name).read_bytes() == z.read_bytes()
    assert not [p for p in (tmp_path / "incoming").rglob("*") if p.is_file() and p.name != "done.json"], \
        "pieces are cleaned up"


def test_unpack_refuses_a_piece_damaged_on_the_way(tmp_path):
    repo, env = staging_repo(tmp_path, 90 * KIB)
    env.update(TRAVEL_LIMIT_MIB=str(1 + 144 / 1024))
    staged = stage(repo, env)[1]
    device = tmp_path / "device"
    for folder in staged:
        shutil.copytree(repo / folder, device / folder)
    part = device / ".gpu-2" / next(n for n in staged[".gpu-2"] if n != "manifest.json")
    damaged = bytearray(part.read_bytes())
    damaged[100] ^= 1
    part.write_bytes(bytes(damaged))
    done = unpack(device, env, tmp_path)
    name = part.name.split(".part")[0]
    assert done.returncode != 0 and f"CORRUPT: {name}" in done.stdout
    assert not (tmp_path / "data" / name).exists() and "data: 5 of 6 zips" in done.stdout


def fake_state(runs: Path, name: str, size: int, finished: bool = False) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "state-00000100.safetensors").write_bytes(os.urandom(size))
    (runs / name / "state.json").write_text(json.dumps(dict(finished=finished, iteration=100,
                                                            tensors="state-00000100.safetensors")))


def test_stage_carries_every_unfinished_state_however_many_calls_it_takes(tmp_path):
    """A resumed --all: more state than one call can carry. Every unfinished run goes, over as many folders as
    it takes (never a silent subset), the finished ones stay, and unpack puts each where the trainer reads it."""
    repo, env = staging_repo(tmp_path, 90 * KIB)
    env.update(TRAVEL_LIMIT_MIB=str(1 + 144 / 1024))
    unfinished = [f"m{i}" for i in range(5)]
    for i, name in enumerate(unfinished):
        fake_state(repo / "runs", name, (60 + 20 * i) * KIB)
    fake_state(repo / "runs", "done", 50 * KIB, finished=True)
    (repo / "runs" / "cpu-paper").mkdir()  # no state.json: not a run to carry
    (repo / "runs" / "cpu-paper" / "train.log").write_bytes(os.urandom(40 * KIB))
    done, staged = stage(repo, env)
    assert done.returncode == 0, done.stderr + done.stdout
    files = json.loads((repo / ".gpu-1" / "manifest.json").read_text())["files"]
    assert [name for name in files if name.startswith("runs-")] == ["runs-1.tgz"]  # 500 KiB: one archive
    payload = sum(f["size"] for f in files.values())  # 540 KiB of zips + the (incompressible) state archives
    assert len(staged) == -(-payload // (136 * KIB)), "every folder but the last is full"
    device = tmp_path / "device"
    for folder in staged:
        shutil.copytree(repo / folder, device / folder)
    done = unpack(device, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "device-runs").iterdir()) == unfinished
    for name in unfinished:
        assert (tmp_path / "device-runs" / name / "state-00000100.safetensors").read_bytes() == \
            (repo / "runs" / name / "state-00000100.safetensors").read_bytes()
    assert stage(repo, env, "--no-state")[1].keys() == {".gpu-1", ".gpu-2", ".gpu-3", ".gpu-4"}


def test_stage_carries_the_parked_state_beside_runs_and_refuses_one_name_in_both(tmp_path):
    """The state a last session's receive parked in bench/gpu/state (git keeps it between sessions) goes with the
    trainer's own runs/; a net unfinished in both would be unpacked into one folder, one copy lost: refused."""
    repo, env = staging_repo(tmp_path, 10 * KIB)
    fake_state(repo / "bench" / "gpu" / "state", "plain44", 20 * KIB)
    fake_state(repo / "runs", "resnet32", 20 * KIB)
    done, staged = stage(repo, env)
    assert done.returncode == 0, done.stderr + done.stdout
    device = tmp_path / "device"
    for folder in staged:
        shutil.copytree(repo / folder, device / folder)
    assert unpack(device, env, tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "device-runs").iterdir()) == ["plain44", "resnet32"]
    fake_state(repo / "runs", "plain44", 20 * KIB)
    done, _ = stage(repo, env)
    assert done.returncode != 0 and "one name in two places" in done.stderr
    assert "bench/gpu/state/plain44" in done.stderr and "runs/plain44" in done.stderr


def test_stage_refuses_a_tree_that_leaves_no_room(tmp_path):
    repo, env = staging_repo(tmp_path, 90 * KIB)
    env.update(TRAVEL_LIMIT_MIB=str(1 + 144 / 1024))
    (repo / "big.bin").write_bytes(os.urandom(300 * KIB))
    done, staged = stage(repo, env)
    assert done.returncode != 0 and "the tree alone is" in done.stderr and not staged


def test_start_refuses_before_the_data_is_complete(tmp_path):
    (tmp_path / "data").mkdir()
    done = subprocess.run(["bash", "bench/gpu/session.sh", "start", "--all"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, DATA=str(tmp_path / "data"), CKPT=str(tmp_path / "ckpt")))
    assert done.returncode != 0 and "train-1.zip is missing" in done.stdout and not (tmp_path / "ckpt").exists()


@pytest.fixture
def pidfile(tmp_path):
    """Where `start` and `queue` note what they detached; whatever still runs there at the end is stopped, so a
    failed test leaves no trainer behind (setsid made it lead its own process group)."""
    path = tmp_path / "train.pid"
    yield path
    if path.is_file():
        try:
            os.killpg(int(path.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def test_the_runbook_end_to_end_on_the_cpu(tmp_path, shared_cifar, pidfile):
    """The device calls as a session makes them (start, then a poll that returns once the trainer stops at its
    time budget), on the CPU with a tiny run, then receive here: the unfinished run's state and the log come
    back, and the resume line in status.txt continues it to published checkpoints that receive puts in place."""
    if not all((shared_cifar / f"{z}.zip").is_file() for z in ("train-1", "train-2", "train-3", "train-4", "train-5", "test")):
        pytest.skip(f"the CIFAR-10 in {shared_cifar} is not the six zips that `start` looks for")
    device, here = tmp_path / "device", tmp_path / "here"
    env = dict(os.environ, DATA=str(shared_cifar), CKPT=str(device / "ckpt"), RUNS=str(device / "runs"),
               LOG=str(device / "train.log"), START_WAIT="1", PATH=PYTHON_FIRST,
               PIDFILE=str(pidfile))

    def call(*args, out=None, cwd=REPO):
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
        done = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "session.sh"), *args], cwd=cwd, capture_output=True,
                              text=True, env=dict(env, OUT=str(out)) if out else env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    tiny = ["--model", "resnet20", "--iterations", "8", "--milestones", "4", "6", "--limit-train", "64",
            "--limit-test", "50", "--batch-size", "16", "--device", "cpu"]
    call("start", *tiny, "--stop-after", "4")  # stands in for --time-budget: stops with state saved
    printed = call("poll", "120", out=tmp_path / "out1")
    assert "train.py: not running" in printed and "published:" not in printed
    status = (tmp_path / "out1" / "status.txt").read_text()
    assert "resnet20: at iteration 4 of 8" in status
    resume = next(line for line in status.splitlines() if line.startswith("resume: "))[len("resume: "):]
    assert resume == ("bash bench/gpu/session.sh start --iterations 8 --milestones 4 6 --limit-train 64 --limit-test 50 "
                      "--batch-size 16 --model resnet20 --resume --time-budget N")

    here.mkdir()
    call("receive", str(tmp_path / "out1"), cwd=here)  # the state comes here, as a later session's stage would find it
    assert json.loads((here / "bench/gpu/state/resnet20/state.json").read_text())["iteration"] == 4
    assert list(here.glob("bench/results/gpu-*/train.log")), "the device's log is kept"

    call(*resume.split()[2:-1], "5")  # bash bench/gpu/session.sh start ... --time-budget 5
    printed = call("poll", "120", out=tmp_path / "out2")
    assert "train.py: not running" in printed and "published: resnet20" in printed
    call("receive", str(tmp_path / "out2"), cwd=here)
    assert not (here / "bench/gpu/state").exists(), "the published net's parked state is gone, and nothing else was"
    from resnet_core.checkpoint import read_checkpoint
    info = read_checkpoint(here / "checkpoints" / "resnet20")
    assert info.config["recipe"]["iterations"] == 8 and [r["epoch"] for r in info.history["records"]] == [1, 2]
    assert info.metrics == json.loads((device / "ckpt" / "resnet20" / "metrics.json").read_text())


def test_queue_trains_groups_in_turn_within_its_minutes(tmp_path, shared_cifar, pidfile):
    """`queue T GROUP...`: one train.py per group, in turn, each published before the next starts, all inside T
    minutes (less 10 s for the imports); a group with under QUEUE_MIN_S left is not started, and the log says so."""
    if not all((shared_cifar / f"{z}.zip").is_file() for z in ("train-1", "train-2", "train-3", "train-4", "train-5", "test")):
        pytest.skip(f"the CIFAR-10 in {shared_cifar} is not the six zips that `queue` looks for")
    device = tmp_path / "device"
    env = dict(os.environ, DATA=str(shared_cifar), CKPT=str(device / "ckpt"), RUNS=str(device / "runs"),
               LOG=str(device / "train.log"), START_WAIT="1", PATH=PYTHON_FIRST,
               PIDFILE=str(pidfile), QUEUE_MIN_S="60", QUEUE_FLAGS_FILE=str(tmp_path / "no-flags"))
    tiny = "--iterations 8 --milestones 4 6 --limit-train 64 --limit-test 50 --batch-size 16 --device cpu"
    session = ["bash", str(REPO / "bench" / "gpu" / "session.sh")]
    done = subprocess.run([*session, "queue", "5", f"--model resnet20 {tiny}", f"--model plain20 {tiny}"], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([*session, "poll", "120"], cwd=REPO, env=env, capture_output=True, text=True)
    assert "train.py: not running" in done.stdout and "published: plain20" in done.stdout
    log = (device / "train.log").read_text()
    assert log.index("queue: train.py --model resnet20") < log.index("resnet20: finished; checkpoint written") \
        < log.index("queue: train.py --model plain20") < log.index("queue: done")
    budgets = [float(re.search(r"--time-budget ([\d.]+)", json.loads((device / "ckpt" / m / "config.json").read_text())
                                ["command"]).group(1)) for m in ("resnet20", "plain20")]
    assert 4.7 < budgets[0] <= 5 - 10 / 60 and budgets[1] < budgets[0], "each group gets the minutes left, not T again"

    shutil.rmtree(device)
    done = subprocess.run([*session, "queue", "0.5", f"--model resnet20 {tiny}"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    subprocess.run([*session, "poll", "30"], cwd=REPO, env=env, capture_output=True, text=True)
    assert re.search(r"queue: not started, [12]?\d s left \(under 60\): --model resnet20", (device / "train.log").read_text())
    assert not (device / "ckpt" / "resnet20").exists()


def test_a_mistyped_command_fails_and_stops_an_and_chain():
    """`unpak && queue ...` once printed the help and exited 0, so the queue began on data never unpacked."""
    done = subprocess.run(["bash", "-c", "bash bench/gpu/session.sh unpak && echo queued"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "queued" not in done.stdout
    assert done.stderr == "session.sh: unknown command 'unpak' (bash bench/gpu/session.sh help lists them)\n"


def test_help_prints_the_whole_runbook_header():
    done = subprocess.run(["bash", "bench/gpu/session.sh", "help"], cwd=REPO, capture_output=True, text=True)
    second_line = (REPO / "bench/gpu/session.sh").read_text().splitlines()[1]
    assert done.returncode == 0 and done.stdout.startswith(second_line + "\n")
    assert "`receive` the last poll's files." in done.stdout and "set -euo" not in done.stdout



class LeanRepo:
    """A git repo with a tracked checkpoints/ and code.py, and session.sh and git run in it."""

    def __init__(self, tmp_path: Path):
        self.root, self.tmp = tmp_path / "repo", tmp_path
        (self.root / "checkpoints" / "resnet20").mkdir(parents=True)
        (self.root / "checkpoints" / "resnet20" / "model.safetensors").write_bytes(os.urandom(64 * KIB))
        (self.root / "code.py").write_text("print('hi')\n")
        fake_state(self.root / "bench" / "gpu" / "state", "plain44", 4 * KIB)  # parked: tracked, carried by stage
        self.env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                        GIT_COMMITTER_EMAIL="t@example.org")
        self.git("init", "-q", "-b", "main")
        self.git("add", ".")
        self.git("commit", "-q", "-m", "first")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              check=True).stdout

    def session(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "bench" / "gpu" / "session.sh"), *args], cwd=cwd or self.root,
                              env=self.env, capture_output=True, text=True)

    def as_before(self) -> bool:
        """On main, checkpoints/ tracked, nothing ignored or held, no gpu-lean branch: where lean started."""
        exclude = self.root / ".git" / "info" / "exclude"
        return (self.git("branch", "--show-current") == "main\n" and self.git("status", "--porcelain") == ""
                and "checkpoints/resnet20/model.safetensors" in self.git("ls-files") and "gpu-lean" not in self.git("branch")
                and "bench/gpu/state/plain44/state.json" in self.git("ls-files")
                and (not exclude.exists() or "/checkpoints/" not in exclude.read_text() and "/bench/" not in exclude.read_text())
                and not (self.root / ".git" / "gpu-lean-from").exists() and not (self.root / ".git" / "gpu-lean-hold").exists())


def test_lean_leaves_checkpoints_out_of_what_travels_and_unlean_restores_the_branch(tmp_path):
    """`lean` makes a temporary branch on which checkpoints/ is untracked and ignored (stage's measure of the tree,
    like the device's, is git's): on disk nothing changes. `receive` refuses until `unlean` has switched back."""
    repo = LeanRepo(tmp_path)
    import stage as stage_module  # beside pack, on the path already
    before = stage_module.travelling_bytes(repo.root)

    (repo.root / "code.py").write_text("print('changed')\n")
    refused = repo.session("lean")
    assert refused.returncode != 0 and "uncommitted" in refused.stdout and repo.git("branch", "--show-current") == "main\n"
    repo.git("checkout", "code.py")

    done = repo.session("lean", cwd=repo.root / "checkpoints")  # from a subfolder too: it works from the top
    assert done.returncode == 0, done.stdout + done.stderr
    assert repo.git("branch", "--show-current") == "gpu-lean\n" and repo.git("status", "--porcelain") == ""
    assert "checkpoints" not in repo.git("ls-files") and (repo.root / "checkpoints/resnet20/model.safetensors").is_file()
    assert "bench/gpu/state" not in repo.git("ls-files") and (repo.root / "bench/gpu/state/plain44/state.json").is_file()
    assert stage_module.travelling_bytes(repo.root) < before - 60 * KIB
    assert repo.session("lean").returncode != 0  # not twice
    refused = repo.session("receive", str(tmp_path))
    assert refused.returncode != 0 and "unlean first" in refused.stdout

    done = repo.session("unlean")
    assert done.returncode == 0 and "tracked again: checkpoints bench/gpu/state" in done.stdout, done.stdout + done.stderr
    assert repo.as_before()
    assert repo.session("unlean").returncode != 0  # nothing to undo


def test_lean_that_fails_halfway_leaves_the_repo_as_it_was(tmp_path):
    repo = LeanRepo(tmp_path)
    hook = repo.root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    done = repo.session("lean")
    assert done.returncode != 0 and "failed; back on main" in done.stdout, done.stdout + done.stderr
    assert repo.as_before()


def test_unlean_refuses_to_drop_commits_made_while_lean_or_to_run_off_the_lean_branch(tmp_path):
    repo = LeanRepo(tmp_path)
    assert repo.session("lean").returncode == 0
    (repo.root / "code.py").write_text("print('fixed between device calls')\n")
    repo.git("commit", "-q", "-am", "a fix made while lean")
    refused = repo.session("unlean")
    assert refused.returncode != 0 and "1 commit(s) beyond" in refused.stdout
    assert repo.git("branch", "--show-current") == "gpu-lean\n" and (repo.root / "checkpoints/resnet20").is_dir()
    repo.git("reset", "-q", "--hard", "HEAD~1")  # the fix moved elsewhere: now it may go back
    repo.git("switch", "-q", "main")  # ...but not from another branch
    refused = repo.session("unlean")
    assert refused.returncode != 0 and "not on branch gpu-lean" in refused.stdout
    assert (repo.root / "checkpoints/resnet20/model.safetensors").is_file()
    repo.git("switch", "-q", "gpu-lean")  # which takes checkpoints/ off the disk: main tracks it, gpu-lean does not
    assert repo.session("unlean").returncode == 0 and repo.as_before()
    assert (repo.root / "checkpoints/resnet20/model.safetensors").is_file()


SESSION = ["bash", str(REPO / "bench" / "gpu" / "session.sh")]


def device_env(tmp_path: Path, pidfile: Path, **more: str) -> dict:
    """The device's folders under tmp_path, six empty zips for the data (start and queue check only that they are
    there), and no flags from a check unless a test writes them."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("train-1", "train-2", "train-3", "train-4", "train-5", "test"):
        (data / f"{name}.zip").touch()
    return dict(os.environ, DATA=str(data), CKPT=str(tmp_path / "ckpt"), RUNS=str(tmp_path / "runs"),
                LOG=str(tmp_path / "train.log"), INCOMING=str(tmp_path / "incoming"), PIDFILE=str(pidfile),
                QUEUE_FLAGS_FILE=str(tmp_path / "queue-flags"), START_WAIT="1", PATH=PYTHON_FIRST, **more)


def stand_in_trainer(pidfile: Path) -> subprocess.Popen:
    """A process that `training` takes for the detached trainer (the pidfile fixture stops it)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def test_queue_starts_a_group_with_90_s_left(tmp_path, pidfile):
    """After the 44-layer pair a session has about 150-200 s left: the next group starts in them (its state fits the
    next session's last carry) rather than leave them idle; under 90 s (QUEUE_MIN_S) it does not."""
    env = device_env(tmp_path, pidfile)
    for minutes, expected in (("2.5", r"queue: train\.py --model no-such-net --time-budget 2 min"),
                              ("1.5", r"queue: not started, [78]\d s left \(under 90\): --model no-such-net")):
        done = subprocess.run([*SESSION, "queue", minutes, "--model no-such-net"], cwd=REPO, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        subprocess.run([*SESSION, "poll", "60"], cwd=REPO, env=env, capture_output=True, text=True)  # to its end
        assert re.search(expected, (tmp_path / "train.log").read_text())


def test_queue_resumes_a_group_whose_nets_all_have_state_some_unfinished(tmp_path, pidfile):
    """State parked by an earlier session (or a CPU run's) travels to $RUNS: a group naming only nets with state
    there, some of it unfinished, gets --resume (train.py would refuse to start them otherwise, and the call be
    wasted; a finished one it skips); a group that mixes them with nets never started is queued as typed, with a
    warning, and one with --restart is left alone."""
    env = device_env(tmp_path, pidfile, QUEUE_FLAGS="")
    for name, finished in (("resnet32", False), ("plain32", False), ("resnet44", True), ("plain44", False)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "state.json").write_text(json.dumps(dict(finished=finished, iteration=5070)))
    # 1.5 minutes: no group starts (under QUEUE_MIN_S), but the log names each as it would have run
    done = subprocess.run([*SESSION, "queue", "1.5", "--depth 32 --both", "--depth 44 --both", "--depth 32 56 --both",
                           "--depth 32 --both --restart"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert f"queue: --resume added to '--depth 32 --both': {tmp_path / 'runs'} holds unfinished state of resnet32, " \
           "plain32" in said
    assert "queue: --resume added to '--depth 44 --both'" in said and "unfinished state of plain44\n" in said
    assert "queue: '--depth 32 56 --both' names resnet32, plain32, whose unfinished state is in" in said
    subprocess.run([*SESSION, "poll", "60"], cwd=REPO, env=env, capture_output=True, text=True)  # to its end
    log = (tmp_path / "train.log").read_text()
    assert [line.partition("(under 90): ")[2] for line in log.splitlines() if "not started" in line] == \
        ["--depth 32 --both --resume", "--depth 44 --both --resume", "--depth 32 56 --both",
         "--depth 32 --both --restart"]


def test_start_and_queue_repeated_while_a_run_is_on_poll_it(tmp_path, pidfile):
    """A call repeated after a lost reply: the first run goes on, its log and pidfile untouched, and no second
    trainer starts."""
    env = device_env(tmp_path, pidfile)
    first = stand_in_trainer(pidfile)
    (tmp_path / "train.log").write_text("the first run's log\n")
    for args in (["start", "--model", "resnet20"], ["queue", "5", "--model resnet20"]):
        done = subprocess.run([*SESSION, *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and f"already running (pid {first.pid}): polling it" in done.stdout, done.stdout
        assert (tmp_path / "train.log").read_text() == "the first run's log\n"
        assert pidfile.read_text() == f"{first.pid}\n" and not (tmp_path / "ckpt").exists()


def publish(ckpt: Path, name: str) -> None:
    """A checkpoint folder put in place whole, as the trainer publishes (a rename)."""
    (ckpt / f".{name}.tmp").mkdir(parents=True)
    (ckpt / f".{name}.tmp" / "metrics.json").write_text("{}")
    (ckpt / f".{name}.tmp" / "model.safetensors").write_bytes(os.urandom(1000))
    (ckpt / f".{name}.tmp").rename(ckpt / name)


def test_poll_snapshots_each_publication_and_stops_at_the_calls_deadline(tmp_path, pidfile):
    """A call killed at its 600 s still returns what was published before: poll snapshots into $OUT as each net is
    published (built aside, then moved in whole), and stops waiting by CALL_DEADLINE s after the call began, so
    that its last snapshot comes back. The call began when its command line's shell did."""
    out, ckpt, log = tmp_path / "out", tmp_path / "ckpt", tmp_path / "poll.txt"
    env = device_env(tmp_path, pidfile, OUT=str(out), CALL_START=str(time.time()))
    make_run(tmp_path / "runs", "plain44", False, 1000)
    (tmp_path / "train.log").write_text("training\n")
    ckpt.mkdir()
    out.mkdir()
    stand_in_trainer(pidfile)
    with open(log, "w") as printed:
        poll = subprocess.Popen([*SESSION, "poll", "120"], cwd=REPO, env=env, stdout=printed, stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        publish(ckpt, "resnet44")
        for _ in range(100):  # the snapshot done, the trainer still running, the poll still waiting
            if "snapshot:" in log.read_text() or poll.poll() is not None:
                break
            time.sleep(0.1)
        assert poll.poll() is None and "poll: published resnet44" in log.read_text(), log.read_text()
    finally:
        poll.kill()  # the call killed at its limit
        poll.wait()
    assert sorted(p.name for p in out.iterdir()) == ["ckpt-1.tgz", "runs-1.tgz", "status.txt", "train.log"]
    with tarfile.open(out / "ckpt-1.tgz") as tar:
        assert sorted(tar.getnames()) == ["resnet44/metrics.json", "resnet44/model.safetensors"]
    assert not list(tmp_path.glob(".snapshot.*")), "the snapshot's own folder is gone"

    publish(ckpt, "plain44")  # a later poll's snapshot replaces the last one whole
    for name in ("gpu_tests.txt", "bench.txt", "bench.json"):  # what else the call returns takes the room it takes:
        (out / name).write_text("a check's log")  # 3 files, and the snapshot's 4 fill the 7 pack.py allows
    env.update(CALL_START=str(time.time() - 555))  # 5 s of the default 560 left, less what bash's start takes
    done = subprocess.run([*SESSION, "poll", "120"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and re.search(r"poll: waiting [1-5] s, to the call's deadline", done.stdout)
    assert "train.py: running" in done.stdout and "snapshot: 2 archives" in done.stdout, done.stdout
    assert len(list(out.iterdir())) == 7 and (out / "bench.txt").read_text() == "a check's log"
    with tarfile.open(out / "ckpt-1.tgz") as tar:
        assert {"plain44/metrics.json", "resnet44/metrics.json"} <= set(tar.getnames())

    env.pop("CALL_START")  # the call's shell began 4 s before this poll: 1 s of CALL_DEADLINE=5 left
    env.update(CALL_DEADLINE="5", SNAPSHOT="0")
    script = "sleep 4; bash bench/gpu/session.sh poll 120; true"  # (true: no exec of poll in the shell's stead)
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    # from this poll's own start it would be 5 s
    assert done.returncode == 0 and re.search(r"poll: waiting (-\d+|[012]) s, to the call's deadline", done.stdout), \
        done.stdout


FAKE_PYTHON = """#!/bin/bash
# python3 for check: pytest and the bench write the stand-in results they are given; anything else is python
case " $* " in
*" -m pytest "*)
    echo "pytest $*"
    for a; do case $a in --junitxml=*) [ -z "${FAKE_JUNIT:-}" ] || cp "$FAKE_JUNIT" "${a#--junitxml=}";; esac; done
    [ -z "${FAKE_SLEEP:-}" ] || exec sleep "$FAKE_SLEEP"
    exit "${FAKE_TESTS_RC:-0}";;
*" bench/train_throughput.py "*)
    echo "bench $*"
    while [ $# -gt 0 ]; do [ "$1" != --json ] || [ -z "${FAKE_BENCH:-}" ] || cp "$FAKE_BENCH" "$2"; shift; done
    [ -z "${FAKE_SLEEP:-}" ] || exec sleep "$FAKE_SLEEP"
    exit 0;;
esac
exec PYTHON "$@"
"""


def fake_check_env(tmp_path: Path, pidfile: Path) -> dict:
    """check's python3 a stand-in for pytest and the bench: their results come from FAKE_JUNIT and FAKE_BENCH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON.replace("PYTHON", sys.executable))
    (bin_dir / "python3").chmod(0o755)
    (tmp_path / "out").mkdir()
    return dict(device_env(tmp_path, pidfile), PATH=f"{bin_dir}:{PYTHON_FIRST}", OUT=str(tmp_path / "out"))


def junit(path: Path, **outcomes: str) -> str:
    """pytest's JUnit XML report of tests named test_<key>, each passed, failed or skipped."""
    inner = {"passed": "", "failed": '<failure message="assert"/>', "skipped": '<skipped message="no CUDA"/>'}
    cases = "".join(f'<testcase classname="tests.test_gpu" name="test_{name}">{inner[o]}</testcase>'
                    for name, o in outcomes.items())
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return str(path)


def test_check_writes_the_flags_every_group_gets_and_queue_adds_them(tmp_path, pidfile):
    """The call after check follows within 30 s: check decides the groups' flags from the CUDA tests (pytest's JUnit
    report) and the throughput table (the bench's --json), and queue adds them, saying why."""
    env = fake_check_env(tmp_path, pidfile)
    passed = {"graph_replay": "passed", "fused_lanes": "passed", "end_to_end[apart]": "passed",
              "end_to_end[fused]": "passed"}
    fast = {m: {"ours img/s": 100.0, "ours pair img/s": 150.0, "ours pair fused img/s": 200.0,
                "compiled img/s": 120.0} for m in ("resnet20", "resnet56")}

    def check(tests: dict, table: dict, *args: str) -> tuple[str, list[str]]:
        env.update(FAKE_JUNIT=junit(tmp_path / "junit.xml", **tests), FAKE_BENCH=str(tmp_path / "bench.json"))
        (tmp_path / "bench.json").write_text(json.dumps(table))
        done = subprocess.run([*SESSION, "check", "--fuse", *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        flags = (tmp_path / "queue-flags").read_text().splitlines()
        return done.stdout, [line.split()[0] for line in flags]

    printed, flags = check(passed, fast)
    assert flags == ["--fuse"] and "check: no --compile: check ran without --compile" in printed
    assert (tmp_path / "out" / "bench.json").is_file()  # the bench's table went where check told it
    slower = json.loads(json.dumps(fast))
    slower["resnet56"]["ours pair fused img/s"] = 140.0
    printed, flags = check(passed, slower)
    assert flags == [] and '"ours pair fused" did not beat "ours pair": resnet56 140 against 150 img/s' in printed
    printed, flags = check(dict(passed, graph_replay="failed"), fast)
    assert flags == ["--no-cuda-graphs", "--fuse"] and "test_graph_replay failed" in printed
    _, flags = check(dict(passed, fused_lanes="failed"), fast)  # only a fused test: no --fuse, graphs stay
    assert flags == []
    _, flags = check(dict(passed, graph_replay="skipped"), fast)  # no CUDA: the captured path untried
    assert flags == ["--no-cuda-graphs", "--fuse"]
    # both pass: train.py fuses no compiled lane, so only the faster of the two (two nets compiled side by side
    # against the pair fused); without that column, --fuse alone
    printed, flags = check(dict(passed, compiled_lanes="passed"), fast, "--compile")
    assert flags == ["--fuse"] and 'no --compile: not weighed against --fuse (no "compiled x2 lanes" column' in printed
    lanes = {m: dict(r, **{"compiled x2 lanes img/s": 300.0, "ours x2 lanes img/s": 150.0}) for m, r in fast.items()}
    _, flags = check(dict(passed, compiled_lanes="passed"), lanes, "--compile")
    assert flags == ["--compile"]
    lanes["resnet20"]["compiled x2 lanes img/s"] = 190.0
    printed, flags = check(dict(passed, compiled_lanes="passed"), lanes, "--compile")
    assert flags == ["--compile"]  # --fuse must beat it on every model, as it must beat the pair's lanes
    assert '"ours pair fused" did not beat "compiled x2 lanes": resnet56 200 against 300 img/s' in printed
    lanes["resnet56"]["compiled x2 lanes img/s"] = 190.0
    printed, flags = check(dict(passed, compiled_lanes="passed"), lanes, "--compile")
    assert flags == ["--fuse"] and "no --compile: --fuse is faster" in printed
    _, flags = check(dict(passed, torchrun_nccl_one_process="failed"), fast)  # NCCL alone: the graphs stay on
    assert flags == ["--fuse"]
    _, flags = check(dict(passed, compiled_lanes="failed"), fast, "--compile")
    assert flags == ["--fuse"]
    slow_compiled = {m: dict(r, **{"compiled img/s": 90.0}) for m, r in fast.items()}
    printed, flags = check(dict(passed, compiled_lanes="passed"), slow_compiled, "--compile")
    assert flags == ["--fuse"] and "did not beat the eager ones: resnet20 90 against 100 img/s" in printed

    check(passed, fast)  # --fuse
    env.update(QUEUE_MIN_S="9999")  # each group only logged as not started, with the options it would have had
    for extra, expected in (({}, "--model resnet20 --fuse"), ({"QUEUE_FLAGS": ""}, "--model resnet20\n"),
                            ({"QUEUE_FLAGS": "--no-cuda-graphs"}, "--model resnet20 --no-cuda-graphs\n")):
        done = subprocess.run([*SESSION, "queue", "9.5", "--model resnet20"], cwd=REPO, env=dict(env, **extra),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "a poll 540 in the same call ends before the deadline: chain another `poll` call" in done.stdout
        if not extra:
            assert 'queue: every group gets --fuse: every fused test passed and "ours pair fused" beat' in done.stdout
        subprocess.run([*SESSION, "poll", "30"], cwd=REPO, env=dict(env, OUT=""), capture_output=True, text=True)
        assert expected in (tmp_path / "train.log").read_text()


def test_check_caps_the_tests_and_the_bench(tmp_path, pidfile):
    """A hung CUDA test or bench must not take the call's 600 s: each stops at its cap (300 s and 240 s; here 1 s),
    their logs come back, and the groups get --no-cuda-graphs, no test having reported a pass."""
    env = dict(fake_check_env(tmp_path, pidfile), FAKE_SLEEP="60", CHECK_TESTS_S="1", CHECK_BENCH_S="1")
    began = time.monotonic()
    done = subprocess.run([*SESSION, "check", "--fuse"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=30, start_new_session=True)
    assert time.monotonic() - began < 15 and done.returncode != 0
    assert "tests/test_gpu.py exit 124, bench/train_throughput.py exit 124" in done.stdout, done.stdout
    assert "pytest" in (tmp_path / "out" / "gpu_tests.txt").read_text()
    assert "bench" in (tmp_path / "out" / "bench.txt").read_text()
    assert (tmp_path / "queue-flags").read_text().startswith("--no-cuda-graphs CUDA tests not passed: none ran")


def test_the_readme_runbook_and_the_script_header_agree():
    """Every session.sh command of the runbook (bench/gpu/README.md) is in the script's header (help), and the
    runbook's commit adds all that receive brought: checkpoints, the parked state and the device's log."""
    header = subprocess.run([*SESSION, "help"], cwd=REPO, capture_output=True, text=True).stdout
    header = " ".join(re.sub(r"\\\n\s*#?", " ", "\n".join(line.lstrip("#") for line in header.splitlines())).split())
    runbook = (REPO / "bench" / "gpu" / "README.md").read_text()
    section = runbook.split("# Training on a lent GPU", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [" ".join(line.split(" #", 1)[0].split()) for line in block.splitlines() if "session.sh" in line]
    assert len(commands) >= 8
    for command in commands:
        assert command in header, command
    assert "session.sh unpack; bash bench/gpu/session.sh smoke" in block  # a damaged piece must not skip the test
    assert "git add -A checkpoints bench/gpu/state bench/results/gpu-" in " ".join(section.split())


def tgz(path: Path, folders: dict[str, dict[str, bytes]]) -> Path:
    """An archive as a poll packs one: folder name -> file name -> bytes."""
    src = path.parent / f"{path.name}.src"
    for folder, files in folders.items():
        (src / folder).mkdir(parents=True)
        for name, data in files.items():
            (src / folder / name).write_bytes(data)
    with tarfile.open(path, "w:gz") as tar:
        for folder in folders:
            tar.add(src / folder, arcname=folder)
    shutil.rmtree(src)
    return path


def config(iterations: int) -> bytes:
    return json.dumps(dict(model="resnet44", recipe=dict(iterations=iterations, batch_size=128))).encode()


def test_receive_refuses_to_replace_a_checkpoint_of_another_length(tmp_path):
    """A full-recipe run coming where the 15-epoch run is would take that run out of the tree: receive says to
    rename it first (FORCE=1 replaces it); the state that came with it is parked all the same."""
    here, files = tmp_path / "here", tmp_path / "files"
    (here / "checkpoints" / "resnet44").mkdir(parents=True)
    (here / "checkpoints" / "resnet44" / "config.json").write_bytes(config(5850))
    files.mkdir()
    tgz(files / "ckpt-1.tgz", {"resnet44": {"config.json": config(64_000), "metrics.json": b"{}"}})
    tgz(files / "runs-1.tgz", {"plain32": {"state.json": b"{}", "state.safetensors": b"x"}})
    done = subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True)
    assert done.returncode != 0
    assert "git mv checkpoints/resnet44 checkpoints/resnet44-15ep first" in done.stdout, done.stdout + done.stderr
    assert json.loads((here / "checkpoints/resnet44/config.json").read_text())["recipe"]["iterations"] == 5850
    assert (here / "bench/gpu/state/plain32/state.json").is_file() and not (here / "checkpoints/.receiving").exists()

    (here / "checkpoints/resnet44").rename(here / "checkpoints/resnet44-15ep")  # git mv, in a repo
    done = subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((here / "checkpoints/resnet44/config.json").read_text())["recipe"]["iterations"] == 64_000
    (here / "checkpoints/resnet44/config.json").write_bytes(config(5850))
    done = subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True,
                          env=dict(os.environ, FORCE="1"))
    assert done.returncode == 0 and (here / "checkpoints/resnet44/metrics.json").is_file()


def test_receive_parks_the_state_though_a_checkpoint_archive_is_damaged(tmp_path):
    """A truncated checkpoint archive puts none of its nets in place and leaves no .receiving behind, and the intact
    state archive beside it is parked all the same."""
    here, files = tmp_path / "here", tmp_path / "files"
    (here / "checkpoints" / "resnet20").mkdir(parents=True)
    (here / "checkpoints" / "resnet20" / "metrics.json").write_text("the published one")
    files.mkdir()
    whole = tgz(files / "ckpt-1.tgz", {"resnet20": {"model.safetensors": os.urandom(200 * KIB), "metrics.json": b"{}"}})
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    tgz(files / "runs-1.tgz", {"plain44": {"state.json": b"{}", "state.safetensors": b"x"}})
    done = subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True)
    assert done.returncode != 0 and "ckpt-1.tgz is damaged" in done.stdout, done.stdout + done.stderr
    assert (here / "checkpoints/resnet20/metrics.json").read_text() == "the published one"
    assert sorted(p.name for p in (here / "checkpoints").iterdir()) == ["resnet20"]
    assert (here / "bench/gpu/state/plain44/state.safetensors").read_bytes() == b"x"


def test_receive_keeps_the_state_that_came_beside_a_checkpoint_of_the_same_net(tmp_path):
    """A poll can bring a net published (its short run) and the state of its own new run together: the checkpoint
    goes in place and the state stays parked, for the next stage to carry on; only an older parked state goes."""
    here, files = tmp_path / "here", tmp_path / "files"
    here.mkdir()
    files.mkdir()
    tgz(files / "ckpt-1.tgz", {"resnet44": {"config.json": config(5850), "metrics.json": b"{}"}})
    tgz(files / "runs-1.tgz", {"resnet44": {"state.json": b"{}", "state.safetensors": b"x"}})
    done = subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (here / "checkpoints/resnet44/metrics.json").is_file()
    assert (here / "bench/gpu/state/resnet44/state.safetensors").read_bytes() == b"x"
    assert "unparked: resnet44" not in done.stdout


def test_receive_refuses_an_older_state_of_the_same_run(tmp_path):
    """The files_at of an earlier poll received after a later one would roll a run back: its state is refused while
    the parked one is further on in the same run, and taken when FORCE=1 or when it is another run (a restart)."""
    here, files = tmp_path / "here", tmp_path / "files"
    parked = here / "bench/gpu/state/plain32"
    parked.mkdir(parents=True)
    (parked / "state.json").write_text(json.dumps(dict(run_id="a" * 32, iteration=20_000)))
    files.mkdir()

    def coming(run_id: str, iteration: int) -> None:
        tgz(files / "runs-1.tgz", {"plain32": {"state.json": json.dumps(dict(run_id=run_id, iteration=iteration)).encode(),
                                               "state.safetensors": b"x"}})

    def received(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SESSION, "receive", str(files)], cwd=here, capture_output=True, text=True,
                              env=dict(os.environ, **env))

    def parked_iteration() -> int:
        return json.loads((parked / "state.json").read_text())["iteration"]

    coming("a" * 32, 16_380)
    done = received()
    assert done.returncode != 0 and "the state of plain32 coming is at iteration 16,380, the one parked at 20,000 " \
        "of the same run" in done.stdout, done.stdout + done.stderr
    assert parked_iteration() == 20_000 and not (here / "bench/gpu/state/.receiving").exists()
    assert received(FORCE="1").returncode == 0 and parked_iteration() == 16_380
    coming("a" * 32, 30_000)  # further on: taken
    assert received().returncode == 0 and parked_iteration() == 30_000
    coming("b" * 32, 400)  # another run of it (started over with --restart): taken
    assert received().returncode == 0 and parked_iteration() == 400


def test_landscape_made_again_skips_the_nets_that_have_one(tmp_path, pidfile):
    """A landscape call made again (its reply lost) goes on past the nets done, instead of stopping at the first:
    landscape.py refuses to replace a landscape.json without --overwrite, and set -e would end the loop there."""
    env = device_env(tmp_path, pidfile)
    (tmp_path / "ckpt" / "resnet56").mkdir(parents=True)
    (tmp_path / "ckpt" / "resnet56" / "landscape.json").write_text("{}")
    done = subprocess.run([*SESSION, "landscape", "resnet56", "no-such-net"], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert "landscape: resnet56 has one already\n" in done.stdout
    assert (tmp_path / "ckpt/resnet56/landscape.json").read_text() == "{}"
    # the next net is tried: landscape.py runs for it, and here, with no GPU, refuses its --device cuda in one line
    assert done.returncode == 2
    assert done.stderr.endswith("error: --device cuda: no CUDA GPU on this machine; use --device cpu\n")
