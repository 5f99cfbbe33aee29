"""GPU-only checks of the fast paths (CUDA graphs, lanes on streams, bf16); skipped where there is no GPU.

Run them on the lent GPU machine before a long training run: `python -m pytest tests/test_gpu.py -q`.
"""
import dataclasses
import math
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from resnet_core import model_info, read_checkpoint, trainer
from resnet_core.data import CIFAR10_MEAN, CIFAR10_STD, augmentation_plan, normalize
from resnet_core.trainer import Data, Recipe, RunConfig, fill_batch, fuse_lanes, make_lane, step_lanes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def synthetic_data(n=1024, device="cuda") -> Data:
    """Learnable images: the class sets the mean colour, plus noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n,), generator=g)
    base = (labels.float() * 25).view(n, 1, 1, 1)
    images = (base + torch.randn(n, 32, 32, 3, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    return Data(images.to(device), labels.to(device), images[:256].to(device), labels[:256].to(device),
                torch.tensor(CIFAR10_MEAN, device=device), torch.tensor(CIFAR10_STD, device=device))


def run_lanes(configs, data, iterations, streams, capture_after=3, join_at=None, fuse=False):
    """Train `configs` side by side for `iterations` steps; lane k takes part from iteration join_at[k] (default 0).
    `fuse`: the lanes of one depth as one FusedNet, as train.py --fuse."""
    lanes = [make_lane(c, torch.device("cuda")) for c in configs]
    join_at = join_at or [0] * len(lanes)
    for lane in lanes:
        if streams:
            lane.stream = torch.cuda.Stream()
    for group in fuse_lanes(lanes) if fuse else []:
        group.stream = group.lanes[0].stream
    batch = configs[0].recipe.batch_size
    x = torch.zeros(batch, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device="cuda")
    perm, offsets, flips = augmentation_plan(len(data.train_y), 0, 0, "cuda")
    for it in range(iterations):
        s = it % (len(data.train_y) // batch)
        fill_batch(data, perm[s * batch:(s + 1) * batch], offsets, flips, x, y)
        active = [lane for lane, first in zip(lanes, join_at) if it >= first]
        step_lanes(active, x, y, it, capture=streams and it >= capture_after)
    torch.cuda.synchronize()
    return lanes


@pytest.fixture(autouse=True)
def deterministic():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic = False


def test_graph_replay_matches_eager_steps():
    cfg = RunConfig(model="resnet20", recipe=Recipe(batch_size=128, milestones=(10,)), amp=False)
    data = synthetic_data()
    eager = run_lanes([cfg], data, 20, streams=False)[0]
    graphed = run_lanes([cfg], data, 20, streams=True)[0]
    assert graphed.graph is not None and eager.graph is None
    for a, b in zip(eager.params, graphed.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for k in ("loss_sum", "correct", "steps", "grad_norm_sum"):
        torch.testing.assert_close(eager.stats[k], graphed.stats[k], rtol=1e-4, atol=1e-5)
    assert int(graphed.stats["iteration"]) == 20


def test_lanes_side_by_side_match_lanes_alone():
    configs = [RunConfig(model=m, recipe=Recipe(batch_size=128), amp=False) for m in ("resnet20", "plain20", "resnet32")]
    data = synthetic_data()
    together = run_lanes(configs, data, 12, streams=True)
    for cfg, lane in zip(configs, together):
        alone = run_lanes([cfg], data, 12, streams=True)[0]
        for a, b in zip(alone.params, lane.params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lane_joining_late_warms_up_before_capture():
    """A lane resumed ahead of the others joins when the loop reaches its iteration: it runs eager warm-up steps
    on its own stream first (never a capture as its first step), then replays like eager steps."""
    early = RunConfig(model="resnet20", recipe=Recipe(batch_size=128, milestones=(10,)), amp=False)
    late = RunConfig(model="plain20", recipe=Recipe(batch_size=128, milestones=(10,)), amp=False)
    data = synthetic_data()
    eager = run_lanes([late], data, 20, streams=False, join_at=[8])[0]
    _, graphed = run_lanes([early, late], data, 20, streams=True, join_at=[0, 8])
    assert graphed.graph is not None and graphed.eager_steps == 3
    for a, b in zip(eager.params, graphed.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert int(graphed.stats["steps"]) == int(eager.stats["steps"]) == 12


def test_fused_lanes_capture_and_match_eager_and_apart():
    """--fuse under CUDA graphs: the captured fused step replays what the same fused step computes eagerly
    (tight), and a fused step computes what the lanes compute apart (grouped convolutions round otherwise; in fp32, TF32 off)."""
    configs = [RunConfig(model=m, recipe=Recipe(batch_size=128, milestones=(10,)), amp=False)
               for m in ("resnet20", "plain20")]
    data = synthetic_data()
    eager = run_lanes(configs, data, 20, streams=False, fuse=True)
    graphed = run_lanes(configs, data, 20, streams=True, fuse=True)
    assert graphed[0].group is not None and graphed[0].group.graph is not None and graphed[0].graph is None
    for e, g in zip(eager, graphed):
        for a, b in zip(e.params, g.params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for k in ("loss_sum", "correct", "steps", "grad_norm_sum"):
            torch.testing.assert_close(e.stats[k], g.stats[k], rtol=1e-4, atol=1e-5)
    with trainer.strict_fp32():  # no TF32: grouped and plain convolutions would round at 1e-3 otherwise
        fused, apart = run_lanes(configs, data, 2, streams=False, fuse=True), run_lanes(configs, data, 2, streams=False)
    for f, a in zip(fused, apart):
        for u, v in zip(f.params, a.params):
            torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-4)


def test_a_fused_lane_gone_nan_leaves_the_other_finite():
    """Nothing in the fused net mixes its members: NaN weights in the plain net (as when it diverges) leave the
    residual net's logits, gradients and step finite, under bf16 autocast as trained."""
    configs = [RunConfig(model=m, recipe=Recipe(batch_size=128)) for m in ("resnet20", "plain20")]
    lanes = [make_lane(c, torch.device("cuda")) for c in configs]
    (group,) = fuse_lanes(lanes)
    with torch.no_grad():
        lanes[1].model.stem.conv.weight.fill_(float("nan"))
    data = synthetic_data()
    x = normalize(data.train_x[:128], data.mean, data.std).contiguous(memory_format=torch.channels_last)
    trainer.fused_train_step(group, x, data.train_y[:128])
    torch.cuda.synchronize()
    assert int(lanes[0].stats["first_bad"]) == -1 and int(lanes[1].stats["first_bad"]) == 0
    assert trainer.finite_state(lanes[0]) and not trainer.finite_state(lanes[1])


def test_bf16_graphed_training_learns():
    cfg = RunConfig(model="resnet20", recipe=Recipe(batch_size=128, lr=0.05))
    data = synthetic_data(4096)
    lane = run_lanes([cfg], data, 120, streams=True)[0]
    assert int(lane.stats["first_bad"]) == -1
    accuracy = int(lane.stats["correct"]) / (120 * 128)
    assert accuracy > 0.3, accuracy  # chance is 0.1


def test_compiled_lanes_capture_and_match_eager_steps():
    """train.py --compile under CUDA graphs. The capture: inductor's kernels replayed in the graph compute what the
    same compiled step computes run eagerly (the same kernels, so as tight as graph against eager). The kernels:
    one compiled step against one eager step from the same weights (other kernels: equal up to fp32/TF32
    rounding, which ten steps of this net would amplify past any useful tolerance). And bf16 learns."""
    for model in ("resnet20", "plain20"):
        cfg = RunConfig(model=model, recipe=Recipe(batch_size=128, lr=0.01, milestones=()), amp=False, compile=True)
        data = synthetic_data()
        eager = run_lanes([cfg], data, 10, streams=False)[0]
        graphed = run_lanes([cfg], data, 10, streams=True)[0]
        assert graphed.graph is not None and eager.graph is None and graphed.forward is not graphed.model
        for k in ("loss_sum", "correct", "steps"):
            torch.testing.assert_close(eager.stats[k], graphed.stats[k], rtol=1e-4, atol=1e-5)
        for a, b in zip(eager.params, graphed.params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        plain_step = run_lanes([dataclasses.replace(cfg, compile=False)], data, 1, streams=False)[0]
        compiled_step = run_lanes([cfg], data, 1, streams=False)[0]
        torch.testing.assert_close(compiled_step.stats["loss_sum"], plain_step.stats["loss_sum"], rtol=5e-3, atol=0)
        for a, b in zip(plain_step.params, compiled_step.params):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    lane = run_lanes([RunConfig(model="resnet20", recipe=Recipe(batch_size=128, lr=0.05), compile=True)],
                     synthetic_data(4096), 120, streams=True)[0]
    assert int(lane.stats["first_bad"]) == -1 and int(lane.stats["correct"]) / (120 * 128) > 0.3


@pytest.mark.parametrize("fuse", [False, True], ids=["apart", "fused"])
def test_train_end_to_end_on_gpu_with_resume(tmp_path, monkeypatch, fuse):
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: synthetic_data(1024))
    configs = [RunConfig(model=m, recipe=Recipe(iterations=24, batch_size=128, milestones=(12, 18))) for m in
               ("resnet20", "plain20")]
    status = trainer.train(configs, out_dir=tmp_path / "a", state_dir=tmp_path / "ra", device="cuda", fuse=fuse)
    assert status == {"resnet20": "finished", "plain20": "finished"}
    assert trainer.train(configs, out_dir=tmp_path / "b", state_dir=tmp_path / "rb", device="cuda",
                         stop_after=11, fuse=fuse)["resnet20"] == "stopped"
    trainer.train(configs, out_dir=tmp_path / "b", state_dir=tmp_path / "rb", device="cuda", resume=True, fuse=fuse)
    for name in ("resnet20", "plain20"):
        a, b = read_checkpoint(tmp_path / "a" / name), read_checkpoint(tmp_path / "b" / name)
        assert len(a.history["records"]) == len(b.history["records"]) == 3
        assert a.config["cuda_graphs_used"] and b.config["cuda_graphs_used"]  # the captured path, on both sides
        assert all(("fused_with" in sitting) == fuse for sitting in a.config["sittings"] + b.config["sittings"])
        # bf16 + cudnn are not bit-reproducible across a resume boundary; the curves must still agree closely.
        assert abs(a.metrics["test_error"] - b.metrics["test_error"]) < 5.0


@pytest.mark.parametrize("fuse", [False, True], ids=["apart", "fused"])
def test_ten_lanes_fit_and_project_the_paper_run(tmp_path, capsys, fuse):
    """`train.py --all` on this GPU (with `--fuse`: each depth's pair as one network): the ten 6n+2 nets side by
    side, every one captured; the device memory they take, and the wall time of the paper's 64k iterations plus an
    evaluation and a state save per epoch."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True  # as train() runs
    names = [f"{kind}{depth}" for depth in (20, 32, 44, 56, 110) for kind in ("resnet", "plain")]
    device, batch = torch.device("cuda"), 128
    test_x = torch.randint(0, 256, (10_000, 32, 32, 3), dtype=torch.uint8, device=device)  # as large as CIFAR-10's
    data = dataclasses.replace(synthetic_data(2048), test_x=test_x, test_y=torch.randint(0, 10, (10_000,), device=device))
    torch.cuda.reset_peak_memory_stats()
    lanes = [make_lane(RunConfig(model=m, recipe=trainer.paper_recipe(model_info(m)["depth"])), device) for m in names]
    for lane in lanes:
        lane.stream = torch.cuda.Stream()
    for group in fuse_lanes(lanes) if fuse else []:
        group.stream = group.lanes[0].stream
    x = torch.zeros(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    perm, offsets, flips = augmentation_plan(len(data.train_y), 0, 0, device)
    warm, timed = 8, 200  # 3 eager steps, the capture, then replays

    for it in range(warm + timed):
        if it == warm:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        s = it % (len(data.train_y) // batch)
        fill_batch(data, perm[s * batch:(s + 1) * batch], offsets, flips, x, y)
        step_lanes(lanes, x, y, it, capture=True)
    torch.cuda.synchronize()
    per_iteration = (time.perf_counter() - t0) / timed
    assert all((lane.group or lane).graph is not None and int(lane.stats["first_bad"]) == -1 for lane in lanes)
    assert all(lane.group is not None for lane in lanes) == fuse

    epoch_end = []  # the first round autotunes the evaluation's batches (EVAL_BATCH); the second is timed
    for _ in range(2):
        t0 = time.perf_counter()
        for lane in lanes:
            trainer.end_epoch(lane, data, 1, 1.0, batch, 1)
            trainer.save_state(lane, tmp_path)
        epoch_end.append(time.perf_counter() - t0)
    peak, total = torch.cuda.max_memory_reserved(), torch.cuda.get_device_properties(device).total_memory
    epochs = math.ceil(64_000 / (50_000 // batch))
    minutes = (64_000 * per_iteration + epochs * epoch_end[-1]) / 60
    with capsys.disabled():
        print(f"\nten lanes{' fused in pairs' if fuse else ''} on {torch.cuda.get_device_name()}: {per_iteration * 1e3:.2f} ms per iteration "
              f"({10 * batch / per_iteration:,.0f} img/s), {epoch_end[-1]:.2f} s per epoch end (evaluation + state); "
              f"64k iterations and {epochs} epoch ends: {minutes:.1f} min; peak memory {peak / 2**30:.1f} "
              f"of {total / 2**30:.0f} GiB")
    assert peak < 0.8 * total


def test_torchrun_nccl_one_process(tmp_path):
    """train.py's DDP path on CUDA (NCCL process group, DDP wrapper, the ranks' agreements, barrier), one process."""
    script = tmp_path / "ddp_train.py"
    script.write_text(f"""import sys
sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
import train
from resnet_core import trainer
from test_gpu import synthetic_data
trainer.load_data = lambda *a, **k: synthetic_data(1024)  # 8 iterations per epoch
sys.exit(train.main(sys.argv[1:]))
""")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script),
            "--model", "resnet20", "--iterations", "16", "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-8000:]
    info = read_checkpoint(tmp_path / "out" / "resnet20")
    assert info.config["world_size"] == 1 and [r["iteration"] for r in info.history["records"]] == [8, 16]
