"""train.py end to end on the CPU: the published checkpoint, resume equivalence, interrupts, NaN, DDP, bad data."""
import dataclasses
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from conftest import REPO, TINY_RUN, failing_block_compiler, train_tiny
from resnet_core import list_checkpoints, load_pretrained, read_checkpoint
from resnet_core.checkpoint import regenerate_command
from resnet_core.data import CLASSES, augmentation_plan, load_cifar10
from resnet_core.probes import evaluate, per_class_accuracy
from resnet_core.trainer import device_name

TINY = [*TINY_RUN, "--device", "cpu"]


def test_published_checkpoint_is_complete_and_loads(tiny_checkpoints, shared_cifar):
    for name in ("resnet20", "plain20"):
        info = read_checkpoint(tiny_checkpoints / name)
        assert sorted(p.name for p in info.path.iterdir()) == sorted(
            ["README.md", "config.json", "history.json", "metrics.json", "model.safetensors"])
        assert info.config["model"] == name and info.config["recipe"]["iterations"] == 8
        assert info.config["residual"] == (name == "resnet20") and info.config["torch_version"] == torch.__version__
        records = info.history["records"]
        assert [r["epoch"] for r in records] == [1, 2] and records[-1]["iteration"] == 8
        assert all(len(r["grad_norms"]) == len(info.history["layers"]) == 20 for r in records)
        assert all(g > 0 for g in records[0]["grad_norms"])
        m = info.metrics
        assert len(m["response_std"]) == 19 and all(r["std"] > 0 for r in m["response_std"])
        assert sum(map(sum, m["confusion_matrix"])) == m["test_images"] == 50
        assert m["per_class_accuracy"] == pytest.approx(per_class_accuracy(m["confusion_matrix"]))
        # The recorded figures are those of the weights as stored (fp16): our own eval of the loaded model gives
        # them exactly; the last epoch's evaluation, of the fp32 weights, differs by at most fp16's rounding.
        model = load_pretrained(info.path)
        assert not model.training
        x, y = load_cifar10(shared_cifar, "test", limit=50)
        mean, std = torch.tensor(model.normalization["mean"]), torch.tensor(model.normalization["std"])
        again = evaluate(model, x, y, mean, std)
        assert again["test_error"] == m["test_error"] and again["test_loss"] == pytest.approx(m["test_loss"], rel=1e-6)
        assert again["confusion_matrix"] == m["confusion_matrix"]
        assert abs(records[-1]["test_error"] - m["test_error"]) <= 2.0  # at most 1 of 50 images flips
        assert m["final_evaluation"] == "its final weights as stored in model.safetensors, fp32 arithmetic, on " \
                                        f"{device_name(torch.device('cpu'))} when it was published"
        # The most confident mistakes, recorded with the final weights: as many as the test error counts (up to
        # 24), most confident first, each a real mistake on that image.
        wrong, found = round(m["test_error"] * 50 / 100), m["confident_mistakes"]
        assert len(found) == min(24, wrong) > 0 and "50 test images" in m["confident_mistakes_from"]
        assert [r["probability"] for r in found] == sorted((r["probability"] for r in found), reverse=True)
        assert all(r["true"] == CLASSES[y[r["index"]]] != r["predicted"] for r in found)
        assert all(r["probability"] > r["true_probability"] for r in found)
    good, bad = list_checkpoints(tiny_checkpoints)
    assert [c.name for c in good] == ["resnet20", "plain20"] and bad == {}


def test_a_compiled_step_computes_what_the_eager_step_does():
    """compiled_forward (inductor, one compiled function shared by every block) changes how a step runs, not
    what it computes: from the same weights, one SGD step gives the same loss, gradients, weights and BN running
    statistics up to fp32 rounding. (Over many steps at lr 0.1 such rounding grows, as between any two kernels.)"""
    from resnet_core import trainer
    cpu = torch.device("cpu")
    # TINY_RUN's batch: test_compile_from_the_command_line_trains_and_says_so, later, finds these blocks compiled
    # (inductor's first compile of each block shape takes seconds; the shapes are the cache's key, not the model)
    eager, compiled = (trainer.make_lane(trainer.RunConfig(model="resnet20", recipe=trainer.Recipe(batch_size=16),
                                                           compile=c), cpu) for c in (False, True))
    assert eager.forward is eager.model and compiled.forward is not compiled.model
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (16,))
    for lane in (eager, compiled):
        trainer.train_step(lane, x, y)
    assert float(compiled.stats["loss_sum"]) == pytest.approx(float(eager.stats["loss_sum"]), rel=1e-5)
    torch.testing.assert_close(compiled.stats["grad_norm_sum"], eager.stats["grad_norm_sum"], rtol=1e-3, atol=0)
    for (name, a), b in zip(compiled.model.state_dict().items(), eager.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)  # weights after the step, BN statistics
    assert not hasattr(compiled.model, "_compiled_call_impl") or compiled.model._compiled_call_impl is None


def test_compile_that_cannot_run_here_is_one_clear_message(tmp_path, shared_cifar, monkeypatch):
    """No C++ compiler or Triton, an op inductor cannot lower: the run stops at once, saying to train without
    --compile, not with a compiler's traceback; any other error still propagates as itself."""
    import torch._dynamo.exc

    from resnet_core import trainer

    cannot_compile = failing_block_compiler(
        torch._dynamo.exc.TorchDynamoException("backend 'inductor' failed: no working C++ compiler found"))
    monkeypatch.setattr(trainer, "block_compiler", cannot_compile)
    with pytest.raises(SystemExit, match=r"--compile failed at iteration 0 on cpu .*TorchDynamoException: backend "
                                         r"'inductor' failed: no working C\+\+ compiler found\); train without --compile"):
        train_tiny(tmp_path / "out", tmp_path / "runs", ("resnet20",), "--compile")
    assert not trainer.compile_failure(ValueError("a bug of ours")) and not (tmp_path / "out" / "resnet20").exists()


def test_a_run_compiled_in_some_sittings_only_says_so():
    from resnet_core.trainer import run_compiled
    assert run_compiled([dict(start=0, compile=True), dict(start=900, compile=True)]) is True
    assert run_compiled([dict(start=0), dict(start=900, compile=False)]) is False  # from before --compile: eager
    assert run_compiled([dict(start=0, compile=True), dict(start=900, compile=False)]) == "partly"


def test_compile_from_the_command_line_trains_and_says_so(tmp_path, tiny_checkpoints, shared_cifar):
    train_tiny(tmp_path / "out", tmp_path / "runs", ("resnet20",), "--compile")
    compiled, eager = read_checkpoint(tmp_path / "out" / "resnet20"), read_checkpoint(tiny_checkpoints / "resnet20")
    assert compiled.config["compile"] and compiled.config["compile_used"]
    assert not eager.config["compile"] and not eager.config["compile_used"]
    for c, e in zip(compiled.history["records"], eager.history["records"], strict=True):  # the same run, near enough
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-2)
    load_pretrained(tmp_path / "out" / "resnet20")


def test_side_by_side_models_share_one_clock_and_say_what_ran(tiny_checkpoints):
    """resnet20 and plain20 trained side by side: each names the other, and each one's wall time is the run's
    clock, beyond its epochs' training steps by the evaluations and publishing. On the CPU the bf16 autocast and
    CUDA graphs asked for did nothing, and config.json says so."""
    for name, other in (("resnet20", "plain20"), ("plain20", "resnet20")):
        info = read_checkpoint(tiny_checkpoints / name)
        assert info.config["trained_alongside"] == [other]
        assert info.config["wall_time_s"] > sum(r["epoch_time_s"] for r in info.history["records"])
        assert info.config["amp"] and info.config["cuda_graphs"] and info.config["channels_last"]  # as asked for
        used = {k: info.config[k] for k in ("precision", "cuda_graphs_used", "channels_last_used")}
        assert used == dict(precision="fp32", cuda_graphs_used=False, channels_last_used=True)
        card = (tiny_checkpoints / name / "README.md").read_text()  # the model card says both
        assert f"side by side with {other}" in card
        assert f"clean training set | {info.metrics['train_error_clean']:.2f} %" in card


def test_cpu_bf16_computes_in_bf16_on_the_cpu_and_says_so(tmp_path, tiny_checkpoints, shared_cifar):
    """--cpu-bf16: the same run as the fp32 fixture's resnet20 (same seed, data and order) but under bf16 autocast,
    so its weights differ; config.json and the model card say bf16, and the recorded figures are the fp32 re-eval's."""
    train_tiny(tmp_path / "out", tmp_path / "runs", ("resnet20",), "--cpu-bf16")
    info = read_checkpoint(tmp_path / "out/resnet20")
    assert info.config["cpu_bf16"] and info.config["precision"] == "bf16 autocast"
    assert "| arithmetic in training | bf16 autocast |" in (info.path / "README.md").read_text()
    fp32 = load_file(tiny_checkpoints / "resnet20/model.safetensors")
    bf16 = load_file(info.path / "model.safetensors")
    assert fp32.keys() == bf16.keys() and not torch.equal(fp32["fc.weight"], bf16["fc.weight"])
    # Trained and evaluated each epoch in bf16, but the recorded figures are the fp32 ones of the weights as stored:
    # what a re-evaluation of the checkpoint gives, to the last digit of the loss.
    model = load_pretrained(info.path)
    x, y = load_cifar10(shared_cifar, "test", limit=50)
    again = evaluate(model, x, y, torch.tensor(model.normalization["mean"]), torch.tensor(model.normalization["std"]))
    assert again["test_error"] == info.metrics["test_error"]
    assert again["test_loss"] == pytest.approx(info.metrics["test_loss"], rel=1e-6)
    assert info.history["records"][-1]["test_loss"] != pytest.approx(again["test_loss"], rel=1e-6)  # bf16's


def test_a_resume_that_changes_the_arithmetic_is_recorded_as_mixed(tmp_path, shared_cifar):
    """Seven iterations in fp32, the eighth after a resume with --cpu-bf16: config.json and the card say both, with
    where the change came, never one arithmetic for the whole run."""
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs")]
    assert train.main(argv + ["--stop-after", "7"]) == 0
    assert train.main(argv + ["--resume", "--cpu-bf16"]) == 0
    info = read_checkpoint(tmp_path / "out/resnet20")
    assert info.config["precision"] == "mixed: fp32 for iterations 0 to 7, then bf16 autocast"
    assert [(s["start"], s["precision"]) for s in info.config["sittings"]] == [(0, "fp32"), (7, "bf16 autocast")]
    assert "| arithmetic in training | mixed: fp32 for iterations 0 to 7, then bf16 autocast |" in \
        (info.path / "README.md").read_text()


def test_a_state_saved_before_sittings_were_recorded_says_what_its_flags_allow():
    """Its first sitting's device is unknown: bf16 on both devices with --cpu-bf16, fp32 on both with --no-amp,
    and otherwise unknown ('unrecorded'); resumes that keep the arithmetic are one span."""
    from resnet_core.trainer import legacy_sitting, run_precision

    later = dict(start=4_290, device="cpu (2 cores)", precision="bf16 autocast")
    assert run_precision([legacy_sitting(dict(amp=True, cpu_bf16=True)), later]) == "bf16 autocast"
    assert run_precision([legacy_sitting(dict(amp=False)), later]) == \
        "mixed: fp32 for iterations 0 to 4,290, then bf16 autocast"
    assert run_precision([legacy_sitting(dict(amp=True)), later, dict(later, start=9_000)]) == \
        "mixed: unrecorded for iterations 0 to 4,290, then bf16 autocast"


def test_resume_reaches_the_same_result(tmp_path, shared_cifar):
    train_tiny(tmp_path / "a", tmp_path / "runs-a", ("resnet20",))
    # Interrupted mid-epoch (4 iterations per epoch), then resumed.
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "b"),
            "--state-dir", str(tmp_path / "runs-b")]
    assert train.main(argv + ["--stop-after", "3"]) == 0
    assert not (tmp_path / "b" / "resnet20").exists()
    first_part_s = json.loads((tmp_path / "runs-b/resnet20/state.json").read_text())["wall_time_s"]
    with pytest.raises(SystemExit, match="unfinished run of resnet20 .*--resume"):
        train.main(argv)  # never silently overwrite an unfinished run
    assert train.main(argv + ["--resume"]) == 0
    a, b = load_file(tmp_path / "a/resnet20/model.safetensors"), load_file(tmp_path / "b/resnet20/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda recs: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in recs]
    ha, hb = (json.loads((tmp_path / d / "resnet20/history.json").read_text()) for d in "ab")
    assert strip(ha["records"]) == strip(hb["records"])
    # The clock goes on across the resume: the first part (no epoch ended in it), then every recorded epoch and more.
    config = json.loads((tmp_path / "b/resnet20/config.json").read_text())
    assert config["wall_time_s"] > first_part_s + sum(r["epoch_time_s"] for r in hb["records"]) and first_part_s > 0
    assert config["trained_alongside"] == []
    assert train.main(argv + ["--resume"]) == 0  # a finished run is skipped on --resume
    # A model named for resuming whose state did not come along (a carry left behind): refuse, rather than
    # train it from scratch beside the resumed ones.
    with pytest.raises(SystemExit, match="holds no saved run of plain20"):
        train.main(argv[:1] + ["resnet20", "plain20"] + argv[2:] + ["--resume"])
    assert not (tmp_path / "runs-b" / "plain20").exists()


def test_a_resume_on_a_torch_that_draws_other_plans_says_so(tmp_path, shared_cifar, capsys):
    """The data order and crops come from torch's CPU generator. The state records a fingerprint of the plans and the
    torch that drew them, so that a resume on the GPU machine's torch says whether it is the exact continuation."""
    from resnet_core.data import plan_fingerprint

    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs")]
    assert train.main(argv + ["--stop-after", "3"]) == 0
    meta_path = tmp_path / "runs/resnet20/state.json"
    meta = json.loads(meta_path.read_text())
    assert (meta["plan_sha256"], meta["torch"]) == (plan_fingerprint(64, 0), torch.__version__)
    assert plan_fingerprint(64, 0) != plan_fingerprint(64, 1) and plan_fingerprint(64, 0) != plan_fingerprint(63, 0)
    if torch.__version__.startswith("2.14.1"):  # requirements.txt's torch: the plans the 32-layer CPU runs parked in
        assert plan_fingerprint(50000, 0) == "521dcccc61209cdf"  # bench/gpu/state were drawn with, as they record
    capsys.readouterr()
    assert train.main(argv + ["--resume", "--stop-after", "1"]) == 0  # the same torch: nothing to say
    assert "draws other" not in capsys.readouterr().err
    meta = json.loads(meta_path.read_text())
    meta.update(plan_sha256="0123456789abcdef", torch="2.11.0+cu130")
    meta_path.write_text(json.dumps(meta))
    assert train.main(argv + ["--resume"]) == 0
    assert (f"note: resnet20: this torch ({torch.__version__}) draws other data orders, crops and flips than the one "
            "that saved its state (2.11.0+cu130); the rest of the run trains on the same images, augmented alike, "
            "but is not the exact continuation") in capsys.readouterr().err
    assert (tmp_path / "out/resnet20/model.safetensors").exists()


def test_the_plan_fingerprint_changes_with_any_one_order_crop_or_flip(monkeypatch):
    """One image's place, crop offset or flip in the first epoch's plan changes the fingerprint."""
    from resnet_core import data

    real = data.augmentation_plan
    base = data.plan_fingerprint(64, 0)
    for which in range(3):  # the order, the crop offsets, the flips
        def changed(*args, which=which, **kwargs):
            plan = [t.clone() for t in real(*args, **kwargs)]
            flat = plan[which].view(-1)
            flat[5] = ~flat[5] if flat.dtype == torch.bool else flat[5] + 1
            return tuple(plan)
        monkeypatch.setattr(data, "augmentation_plan", changed)
        assert data.plan_fingerprint(64, 0) != base
    monkeypatch.setattr(data, "augmentation_plan", real)
    assert data.plan_fingerprint(64, 0) == base


def test_a_save_killed_halfway_resumes_from_the_previous_one(tmp_path, shared_cifar, monkeypatch):
    """Killed after the new tensors file is written but before state.json points to it: the previous pair is
    whole, and resuming from it reaches the uninterrupted run's weights bit for bit."""
    from resnet_core import checkpoint

    train_tiny(tmp_path / "a", tmp_path / "runs-a", ("resnet20",))
    runs = tmp_path / "runs-b" / "resnet20"
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "b"),
            "--state-dir", str(runs.parent)]
    assert train.main(argv + ["--stop-after", "3"]) == 0
    assert state_files(runs) == ["state-00000003.safetensors", "state.json"]

    real = checkpoint.atomic_write_json

    def killed(path, obj):
        if Path(path).name == "state.json":
            raise KeyboardInterrupt("killed between the two files")
        real(path, obj)

    monkeypatch.setattr(checkpoint, "atomic_write_json", killed)
    assert train.main(argv + ["--resume"]) == 130  # stopped at once, as by a second Ctrl-C
    # The new tensors (at the first save after resuming: iteration 4, the epoch's end), never pointed to.
    assert state_files(runs) == ["state-00000003.safetensors", "state-00000004.safetensors", "state.json"]
    assert json.loads((runs / "state.json").read_text())["tensors"] == "state-00000003.safetensors"
    monkeypatch.setattr(checkpoint, "atomic_write_json", real)
    assert train.main(argv + ["--resume"]) == 0
    a, b = load_file(tmp_path / "a/resnet20/model.safetensors"), load_file(tmp_path / "b/resnet20/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert state_files(runs) == ["state-00000008.safetensors", "state.json"]  # old ones gone


def state_files(folder: Path) -> list[str]:
    """The files of a state folder but its lock (lock_state's `.lock`, which stays)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")


def stopped_run(tmp_path: Path, shared_cifar: Path) -> tuple[list[str], Path, dict]:
    """A tiny resnet20 run stopped at iteration 2: its command line, state folder and state.json."""
    runs = tmp_path / "runs" / "resnet20"
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(runs.parent)]
    assert train.main(argv + ["--stop-after", "2"]) == 0
    return argv, runs, json.loads((runs / "state.json").read_text())


def test_state_saved_before_state_json_named_its_file_still_resumes(tmp_path, shared_cifar):
    argv, runs, meta = stopped_run(tmp_path, shared_cifar)
    (runs / meta.pop("tensors")).rename(runs / "state.safetensors")  # the layout of runs saved until now
    (runs / "state.json").write_text(json.dumps(meta))
    assert train.main(argv + ["--resume"]) == 0
    assert read_checkpoint(tmp_path / "out" / "resnet20").metrics["iterations"] == 8
    assert not (runs / "state.safetensors").exists()  # the first save in the new layout tidied it away


def test_state_naming_a_foreign_file_is_refused(tmp_path, shared_cifar):
    argv, runs, meta = stopped_run(tmp_path, shared_cifar)
    (runs / "state.json").write_text(json.dumps(dict(meta, tensors="../../elsewhere.safetensors")))
    with pytest.raises(SystemExit, match="names '../../elsewhere.safetensors' as its tensors file"):
        train.main(argv + ["--resume"])


def test_resume_refuses_a_changed_recipe(tmp_path, shared_cifar):
    argv = ["--model", "plain20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "c"),
            "--state-dir", str(tmp_path / "runs")]
    assert train.main(argv + ["--stop-after", "2"]) == 0
    with pytest.raises(SystemExit, match=r"was made with other options \(lr 0\.1 -> 0\.2\); resume with the ones"):
        train.main(argv + ["--resume", "--lr", "0.2"])  # only what differs is named
    assert train.main(argv + ["--restart", "--stop-after", "1"]) == 0  # --restart discards it on purpose


def test_resume_refuses_a_changed_seed(tmp_path, shared_cifar):
    """Another seed means another init and another order of the images: not the run that was stopped."""
    argv, _, _ = stopped_run(tmp_path, shared_cifar)
    with pytest.raises(SystemExit, match=r"other options \(seed 0 -> 1\); resume with the ones"):
        train.main(argv + ["--resume", "--seed", "1"])


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too), byte for byte, by its path under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_published_checkpoint_is_never_replaced_silently(tmp_path, shared_cifar, monkeypatch):
    """Training a model into an out dir that holds its published checkpoint (the bundled checkpoints/, say, and
    the short CPU command a model card prints) is refused at the start, before any data loads or state is
    written: the folder stays byte for byte as it was, and the message names it, what it holds and the two ways
    out. --no-weights runs publish too; a resumed unfinished run would publish there at its end, so it is refused
    as well. --overwrite replaces it; a model --resume skips as finished is no conflict."""
    from resnet_core import trainer

    out = tmp_path / "out"
    train_tiny(out, tmp_path / "runs-a", ("resnet20",), "--epochs", "1")  # 4 iterations, published
    before = folder_bytes(out)
    loads = []
    real = trainer.load_data
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: (loads.append(a), real(*a, **k))[1])
    runs = tmp_path / "runs-b"
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(out), "--state-dir", str(runs)]
    refusal = (f"error: {out / 'resnet20'} holds a published checkpoint of resnet20 (4 iterations on "
               f"{device_name(torch.device('cpu'))}), which this run (8 iterations) would replace when it finishes; "
               f"pass --out DIR to publish elsewhere, or --overwrite to replace it")
    for extra in ([], ["--no-weights"], ["--restart"]):
        with pytest.raises(SystemExit) as refused:
            train.main(argv + extra)
        assert str(refused.value) == refusal, extra
    assert loads == [] and not runs.exists() and folder_bytes(out) == before

    # An unfinished run in the state dir (stopped while publishing elsewhere): resuming it here would replace it too.
    elsewhere = [*argv[:-4], "--out", str(tmp_path / "elsewhere"), "--state-dir", str(runs)]
    assert train.main(elsewhere + ["--stop-after", "2"]) == 0
    loads.clear()
    with pytest.raises(SystemExit) as refused:
        train.main(argv + ["--resume"])
    assert str(refused.value) == refusal and loads == [] and folder_bytes(out) == before

    assert train.main(argv + ["--resume", "--overwrite"]) == 0  # on purpose: replaced
    info = read_checkpoint(out / "resnet20")
    assert info.metrics["iterations"] == info.config["recipe"]["iterations"] == 8 and folder_bytes(out) != before
    assert info.config["sittings"][0]["start"] == 0 and info.config["sittings"][-1]["start"] == 2  # the resumed run
    assert train.main(argv + ["--resume"]) == 0  # finished, so skipped: nothing would be replaced


def test_the_refusal_names_every_folder_in_the_way_and_overwrite_replaces_them(tmp_path, shared_cifar):
    """trainer.train itself: every published folder in the way is named with what its config.json says (only that
    it holds a published checkpoint when config.json is unreadable); overwrite=True publishes over them."""
    from resnet_core.trainer import Recipe, RunConfig, train as run

    out = tmp_path / "out"
    (out / "resnet20").mkdir(parents=True)
    (out / "resnet20" / "config.json").write_text(
        json.dumps(dict(model="resnet20", recipe=dict(iterations=64_000), device="NVIDIA H200")))
    (out / "resnet20" / "model.safetensors").write_bytes(b"the H200's weights")
    (out / "plain20").mkdir()
    (out / "plain20" / "config.json").write_text("{not json")
    before = folder_bytes(out)
    recipe = Recipe(iterations=4, batch_size=64, milestones=(2, 3))
    configs = [RunConfig(m, recipe, limit_train=256, limit_test=200) for m in ("resnet20", "plain20")]
    kwargs = dict(data_dir=str(shared_cifar), out_dir=out, state_dir=tmp_path / "runs", device="cpu",
                  log=lambda *a, **k: None)
    with pytest.raises(SystemExit) as refused:
        run(configs, **kwargs)
    assert str(refused.value) == (
        f"error: {out / 'resnet20'} holds a published checkpoint of resnet20 (64,000 iterations on NVIDIA H200), "
        f"which this run (4 iterations) would replace when it finishes; {out / 'plain20'} holds a published "
        f"checkpoint, which this run (4 iterations) would replace when it finishes; pass --out DIR to publish "
        f"elsewhere, or --overwrite to replace them")
    assert folder_bytes(out) == before and not (tmp_path / "runs").exists()
    assert run(configs, **kwargs, overwrite=True) == {"resnet20": "finished", "plain20": "finished"}
    for name in ("resnet20", "plain20"):
        info = read_checkpoint(out / name)
        assert info.config["recipe"]["iterations"] == 4 and info.config["device"].startswith("cpu")
    load_pretrained(out / "resnet20")


def test_the_printed_command_regenerates_a_weightless_checkpoint(tmp_path, shared_cifar):
    """What the app and the model card print for a checkpoint without weights does what they say: run where that
    checkpoint is (here given its --out and data, which the printed command leaves to the machine), it trains
    the net again and replaces the folder, weights included, instead of stopping at the overwrite guard."""
    out = tmp_path / "checkpoints"
    train_tiny(out, tmp_path / "runs", ("resnet20", "plain20"), "--no-weights")
    assert not read_checkpoint(out / "resnet20").has_weights
    beside = {f.name: f.read_bytes() for f in (out / "plain20").iterdir()}
    printed = regenerate_command(read_checkpoint(out / "resnet20").config, "resnet20")
    argv = shlex.split(printed)[2:]  # after "python train.py"
    assert train.main(argv + ["--out", str(out), "--state-dir", str(tmp_path / "fresh"), "--data-dir", str(shared_cifar)]) == 0
    assert read_checkpoint(out / "resnet20").has_weights
    load_pretrained(out / "resnet20")
    # the net trained beside it is not trained again, nor its checkpoint replaced: --overwrite is for this one alone
    assert {f.name: f.read_bytes() for f in (out / "plain20").iterdir()} == beside


def torchrun(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a torch.distributed.run command line with one thread a rank, in a process group of its own: past
    `timeout` the whole group is killed, ranks included (a hung rank would spin in gloo for the rest of the suite),
    and the test fails."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun ran past {timeout} s; killed with its ranks: {err[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_torchrun_ranks_all_refuse_a_published_checkpoint(tmp_path, shared_cifar):
    """Under torchrun every rank reads the same folder and refuses alike, before any collective: the run exits
    with the message and no rank is left waiting."""
    out = tmp_path / "out"
    (out / "resnet20").mkdir(parents=True)
    (out / "resnet20" / "config.json").write_text(json.dumps(dict(model="resnet20", recipe=dict(iterations=64_000))))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
            "--model", "resnet20", "--epochs", "1", "--limit-train", "256", "--limit-test", "100", "--batch-size", "64",
            "--data-dir", str(shared_cifar), "--out", str(out), "--state-dir", str(tmp_path / "runs")]
    done = torchrun(argv, timeout=180)
    assert done.returncode != 0
    assert f"error: {out / 'resnet20'} holds a published checkpoint of resnet20 (64,000 iterations)" in done.stderr
    assert "--overwrite to replace it" in done.stderr and "training resnet20" not in done.stderr
    assert sorted(p.name for p in (out / "resnet20").iterdir()) == ["config.json"] and not (tmp_path / "runs").exists()


def test_torchrun_stops_at_once_when_rank_0_alone_cannot_start(tmp_path, shared_cifar):
    """Another run holds the model's state lock, which only rank 0 takes: rank 0 stops with the message, at once,
    instead of waiting for rank 1 at the end (rank 1 was in a collective rank 0 never joins: both hung, silent)."""
    (tmp_path / "runs" / "resnet20").mkdir(parents=True)
    fd = os.open(tmp_path / "runs" / "resnet20" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a run training it now holds it
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                "--model", "resnet20", "--epochs", "1", "--limit-train", "256", "--limit-test", "100",
                "--batch-size", "64", "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
                "--state-dir", str(tmp_path / "runs")]
        done = torchrun(argv, timeout=120)
    finally:
        os.close(fd)
    assert done.returncode != 0 and "training resnet20 on" not in done.stderr
    assert f"error: another run is training resnet20 with its state in {tmp_path / 'runs' / 'resnet20'}" in done.stderr
    assert not (tmp_path / "out" / "resnet20").exists()


def test_a_cpu_is_named_by_its_cores_model_and_widest_instructions(monkeypatch, tmp_path):
    """config.json's device for a CPU run: two 2-core hosts here differ 2-3x per iteration, so the name says the
    model (from /proc/cpuinfo, else macOS's sysctl, else at least the architecture) and the vector instructions
    torch uses; "DEFAULT" (none wider) leaves its part out."""
    from resnet_core import trainer

    real = trainer.device_name(torch.device("cpu"))  # this machine's, as runs here record it (and cache it: first)
    assert real == f"cpu ({', '.join(trainer.cpu_description())})" and real.startswith(f"cpu ({os.cpu_count()} cores")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: avx2\n")
    real_open = open
    monkeypatch.setattr(trainer, "open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                          *a, **k), raising=False)
    monkeypatch.setattr(trainer.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    describe = trainer.cpu_description.__wrapped__  # past the cache of this process's real answer
    assert describe() == ("2 cores", "AMD EPYC 7B13", "AVX2")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert describe() == ("2 cores", "AMD EPYC 7B13")
    cpuinfo.write_text("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n")  # Arm Linux: no model name
    monkeypatch.setattr(trainer.platform, "machine", lambda: "aarch64")
    assert describe() == ("2 cores", "aarch64")
    cpuinfo.unlink()  # not Linux
    monkeypatch.setattr(trainer.sys, "platform", "darwin")
    monkeypatch.setattr(trainer.subprocess, "run", lambda argv, **k: subprocess.CompletedProcess(
        argv, 0, "Apple M2\n" if argv == ["sysctl", "-n", "machdep.cpu.brand_string"] else ""))
    assert describe() == ("2 cores", "Apple M2")
    monkeypatch.setattr(trainer.platform, "machine", lambda: "")
    monkeypatch.setattr(trainer.sys, "platform", "win32")
    assert describe() == ("2 cores",)


def test_a_long_run_on_the_cpu_says_what_it_costs(tmp_path, shared_cifar, capsys):
    base = ["--model", "resnet20", "--limit-train", "256", "--limit-test", "100", "--batch-size", "64", "--device",
            "cpu", "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"), "--stop-after", "1"]
    assert train.main(base + ["--state-dir", str(tmp_path / "a"), "--iterations", "20000"]) == 0
    assert "note: 20,000 iterations on the CPU take hours" in capsys.readouterr().err
    assert train.main(base + ["--state-dir", str(tmp_path / "b"), "--iterations", "10000"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_nan_loss_stops_and_names_the_iteration(tmp_path, shared_cifar, capsys):
    argv = ["--model", "plain20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs"), "--lr", "1e30"]
    assert train.main(argv) == 3
    err = capsys.readouterr().err
    # The check runs at the epoch's end, but it names the first iteration that went bad, not the last.
    assert "error: plain20: the training loss became NaN/inf at iteration 2 (epoch 1, lr 1e+30). Stopped; " \
           "no state had been saved yet." in err
    assert not (tmp_path / "out" / "plain20").exists()


def test_a_diverging_lane_stops_alone_and_the_others_finish(tmp_path, shared_cifar):
    """plain20 at an absurd lr goes NaN; resnet20 beside it trains to the end and is published, then the run
    reports the divergence (train.py exits 3 on it)."""
    from resnet_core.trainer import Recipe, RunConfig, TrainingDiverged, train as run

    recipe = Recipe(iterations=8, batch_size=64, milestones=(4, 6))
    configs = [RunConfig("resnet20", recipe, limit_train=256, limit_test=200),
               RunConfig("plain20", dataclasses.replace(recipe, lr=1e30), limit_train=256, limit_test=200)]
    with pytest.raises(TrainingDiverged, match=r"^plain20: the training loss became NaN/inf at iteration \d") as e:
        run(configs, data_dir=str(shared_cifar), out_dir=tmp_path / "out", state_dir=tmp_path / "runs", device="cpu",
            log=lambda *a, **k: None)
    assert "resnet20" not in str(e.value)
    assert read_checkpoint(tmp_path / "out" / "resnet20").history["records"][-1]["iteration"] == 8
    assert not (tmp_path / "out" / "plain20").exists()
    assert json.loads((tmp_path / "runs" / "resnet20" / "state.json").read_text())["finished"]


def test_missing_data_dir_is_one_clear_message(tmp_path, capsys):
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
            "--state-dir", str(tmp_path / "r")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nowhere" in err and "Traceback" not in err


def test_download_fetches_into_the_data_dir_then_trains(tmp_path, shared_cifar, monkeypatch, capsys):
    """--download (a connected machine's path): torchvision's archive into --data-dir, then training reads it; an
    offline machine gets one clear message. No network here: the fetch is stood in for."""
    from http.client import IncompleteRead
    from urllib.error import URLError

    from resnet_core import data
    from torchvision.datasets import utils

    fetched = []

    def offline(url, root, filename=None, md5=None):
        fetched.append((url, Path(root), filename, md5))
        raise URLError("no route to host")

    monkeypatch.setattr(utils, "download_and_extract_archive", offline)
    argv = ["--model", "resnet20", *TINY, "--out", str(tmp_path / "o"), "--state-dir", str(tmp_path / "r"), "--download"]
    assert train.main([*argv, "--data-dir", str(tmp_path / "cifar")]) == 2
    assert fetched == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", tmp_path / "cifar",
                        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]
    err = capsys.readouterr().err
    assert "could not download CIFAR-10" in err and "offline?" in err and "Traceback" not in err

    def cut_off(url, root, filename=None, md5=None):
        raise IncompleteRead(b"partial")  # a connection dropped mid-download: not an OSError

    monkeypatch.setattr(utils, "download_and_extract_archive", cut_off)
    assert train.main([*argv, "--data-dir", str(tmp_path / "cifar")]) == 2
    assert "could not download CIFAR-10" in capsys.readouterr().err
    monkeypatch.setattr(utils, "download_and_extract_archive", offline)

    fetched.clear()  # a folder that holds CIFAR-10 already (the shared zips here): nothing fetched, it trains
    assert train.main([*argv, "--data-dir", str(shared_cifar)]) == 0 and fetched == []
    assert read_checkpoint(tmp_path / "o" / "resnet20").metrics["test_error"] >= 0

    monkeypatch.setattr(utils, "check_integrity", lambda path, md5: True)  # torchvision's batches there, intact
    assert data.download_cifar10(tmp_path / "cifar") == tmp_path / "cifar" and fetched == [], "nothing fetched again"


def test_a_run_killed_between_publishing_and_its_last_save_resumes_as_done(tmp_path, shared_cifar, monkeypatch,
                                                                          capsys):
    """Killed after publishing its checkpoint and before saving its final state, a run's --resume finds its own
    checkpoint (the run_id in config.json is the state's) and skips the model, instead of refusing to publish over
    it or training it again; the checkpoint stays as published."""
    from resnet_core import trainer

    class Killed(BaseException):
        pass

    real_save = trainer.save_state

    def killed_at_the_last_save(lane, *args, **kwargs):
        if lane.finished:
            raise Killed
        real_save(lane, *args, **kwargs)

    out, runs = tmp_path / "out", tmp_path / "runs"
    monkeypatch.setattr(trainer, "save_state", killed_at_the_last_save)
    with pytest.raises(Killed):
        train_tiny(out, runs, ("resnet20",))
    monkeypatch.setattr(trainer, "save_state", real_save)
    published = (out / "resnet20" / "model.safetensors").read_bytes()
    meta = json.loads((runs / "resnet20" / "state.json").read_text())
    assert not meta["finished"] and meta["run_id"] == read_checkpoint(out / "resnet20").config["run_id"]
    capsys.readouterr()
    for again in ([], ["--resume"]):  # without --resume too: not "an unfinished run ... pass --resume"
        train_tiny(out, runs, ("resnet20",), *again)
        said = capsys.readouterr().err
        assert f"resnet20: already published by this run in {out / 'resnet20'}" in said
        assert "To train it again: --restart --overwrite" in said
    assert (out / "resnet20" / "model.safetensors").read_bytes() == published
    train_tiny(out, runs, ("resnet20",), "--restart", "--overwrite")  # what the message says does train it again
    assert read_checkpoint(out / "resnet20").config["run_id"] != meta["run_id"]


def test_a_checkpoint_published_by_another_run_meanwhile_is_kept(tmp_path, shared_cifar, monkeypatch, capsys):
    """The overwrite guard runs at the start; a checkpoint that another run publishes into the same folder while
    this one trains is not replaced at the end either: this run publishes beside it, into <model>-run<id>, and
    says so. Killed after that publish and before its last state save, a later start finds it there and skips."""
    from resnet_core import trainer

    other = tmp_path / "other"
    train_tiny(other, tmp_path / "runs-other", ("resnet20",), "--epochs", "1")
    out, runs = tmp_path / "out", tmp_path / "runs"
    real_publish, real_save = trainer.publish, trainer.save_state

    class Killed(BaseException):
        pass

    def another_run_publishes_first(lane, data, out_dir, *args, **kwargs):
        shutil.copytree(other / "resnet20", out_dir / "resnet20")
        return real_publish(lane, data, out_dir, *args, **kwargs)

    def killed_at_the_last_save(lane, *args, **kwargs):
        if lane.finished:
            raise Killed
        real_save(lane, *args, **kwargs)

    monkeypatch.setattr(trainer, "publish", another_run_publishes_first)
    monkeypatch.setattr(trainer, "save_state", killed_at_the_last_save)
    capsys.readouterr()
    with pytest.raises(Killed):
        train_tiny(out, runs, ("resnet20",))
    monkeypatch.setattr(trainer, "publish", real_publish)
    monkeypatch.setattr(trainer, "save_state", real_save)
    run_id = json.loads((runs / "resnet20" / "state.json").read_text())["run_id"]
    ours = out / f"resnet20-run{run_id[:8]}"
    said = capsys.readouterr().err
    assert (f"resnet20: {out / 'resnet20'} now holds a published checkpoint of resnet20 (4 iterations on "
            f"{device_name(torch.device('cpu'))}), published by another run while this one trained; that one is kept, and "
            f"this run publishes to {ours} instead") in said
    assert folder_bytes(out / "resnet20") == folder_bytes(other / "resnet20")  # the other run's, untouched
    info = read_checkpoint(ours)
    assert info.config["run_id"] == run_id and info.metrics["iterations"] == 8
    load_pretrained(ours)
    train_tiny(out, runs, ("resnet20",), "--resume")
    assert f"resnet20: already published by this run in {ours}" in capsys.readouterr().err


def test_sigterm_saves_state_then_resume_finishes(tmp_path, shared_cifar):
    options = ["--model", "resnet20", "--epochs", "6", "--limit-train", "256", "--limit-test", "100", "--batch-size",
               "64", "--device", "cpu", "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"), "--state-dir",
               str(tmp_path / "runs")]
    proc = subprocess.Popen([sys.executable, "train.py", *options], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log = []
    for line in proc.stderr:  # wait until it has trained an epoch, then interrupt it
        log.append(line)
        if line.lstrip().startswith("resnet20 epoch    1 "):
            proc.send_signal(signal.SIGTERM)
            break
    log += proc.stderr.readlines()
    assert proc.wait(timeout=120) == 130, "".join(log)
    assert "stopped (SIGTERM)" in "".join(log)
    meta = json.loads((tmp_path / "runs/resnet20/state.json").read_text())
    assert 4 <= meta["iteration"] < 24 and not meta["finished"]
    assert meta["command"].startswith("python train.py --model resnet20 ")  # how to resume it, on any machine
    assert not (tmp_path / "out" / "resnet20").exists()
    assert train.main(options + ["--resume"]) == 0  # ... and it goes on from there to the end
    info = read_checkpoint(tmp_path / "out" / "resnet20")
    assert [r["epoch"] for r in info.history["records"]] == [1, 2, 3, 4, 5, 6] and info.metrics["iterations"] == 24
    assert len(info.config["sittings"]) == 2


def exit_status(argv: list[str]) -> int:
    """train.main's status; a KeyboardInterrupt that escapes it (a traceback at the terminal) fails the test
    instead of stopping pytest."""
    try:
        return train.main(argv)
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-C escaped train.main as a KeyboardInterrupt: a traceback, no exit status")


@pytest.mark.parametrize("when", ["decoding the data", "twice while training"])
def test_ctrl_c_is_said_at_once_and_a_second_one_stops_in_one_line(tmp_path, shared_cifar, monkeypatch, capsys, when):
    """The first Ctrl-C in training says at once that the run stops at the next step, saving its state; a second
    one, or one before training's handler is set (the data decoding), stops at once without saving: status 130
    and one line, no traceback."""
    from resnet_core import trainer

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    real = trainer.step_lanes

    def pressed_twice(lanes, x, y, it, **kwargs):
        real(lanes, x, y, it, **kwargs)
        if it == 1:
            signal.raise_signal(signal.SIGINT)  # stop at the next step
            signal.raise_signal(signal.SIGINT)  # no, now

    if when == "decoding the data":
        monkeypatch.setattr(trainer, "load_data", pressed)
    else:
        monkeypatch.setattr(trainer, "step_lanes", pressed_twice)
    assert exit_status(tiny_argv(tmp_path, shared_cifar)) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("interrupted: stopped at once, without saving; the state saved last, if any, is "
                                    "kept, and the same command with --resume continues from it")
    first = "SIGINT: stopping at the next step, after saving the state; Ctrl-C again stops at once, without saving"
    assert (first in err) == (when == "twice while training") and "Traceback" not in err
    assert not (tmp_path / "runs" / "resnet20" / "state.json").exists()


def test_torchrun_two_gloo_processes(tmp_path, shared_cifar):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
            "--model", "resnet20", "--epochs", "1", "--limit-train", "256", "--limit-test", "100", "--batch-size", "64",
            "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs")]
    done = torchrun(argv, timeout=240)
    assert done.returncode == 0, done.stderr[-8000:]
    info = read_checkpoint(tmp_path / "out" / "resnet20")
    record = info.history["records"][-1]
    assert info.config["world_size"] == 2 and record["iteration"] == 4
    assert record["images_per_s"] * record["epoch_time_s"] == pytest.approx(4 * 64)  # the global batch, counted once
    load_pretrained(info.path)
    # The training loss is the mean over both ranks, as one process training the same recipe records it (the
    # numbers differ a little: each rank's BN sees half the batch), not their sum.
    options = argv[argv.index("--model"):argv.index("--out")]
    assert train.main([*options, "--device", "cpu", "--out", str(tmp_path / "one"), "--state-dir", str(tmp_path / "r1")]) == 0
    alone = read_checkpoint(tmp_path / "one" / "resnet20").history["records"][-1]
    assert record["train_loss"] == pytest.approx(alone["train_loss"], rel=0.2)


def _check_finite_as_rank(rank: int, init_file: str, out: str) -> None:
    """One of two gloo processes: only rank 1 has seen resnet20's loss go NaN (at iteration 13); plain20 is fine."""
    import torch.distributed as dist

    from resnet_core import trainer
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        lanes = [trainer.make_lane(trainer.RunConfig(model=m, recipe=trainer.Recipe()), torch.device("cpu"))
                 for m in ("plain20", "resnet20")]
        lanes[1].stats["first_bad"].fill_(12 if rank == 1 else -1)
        diverged = trainer.check_finite(lanes, Path(out))
        assert [lane.name for lane, _ in diverged] == ["resnet20"]
        Path(out, f"rank{rank}.txt").write_text(diverged[0][1])
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_on_a_nan_stop(tmp_path):
    """A rank that saw no NaN yet stops with the one that did, instead of waiting alone in the next all-reduce."""
    torch.multiprocessing.spawn(_check_finite_as_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith("resnet20: the training loss became NaN/inf at iteration 13 ")


@pytest.mark.parametrize("argv,names", [
    (["--depth", "56", "--plain"], ["plain56"]),
    (["--depth", "56"], ["resnet56"]),
    (["--all"], [f"{k}{d}" for d in (20, 32, 44, 56, 110) for k in ("resnet", "plain")]),
    (["--depth", "18", "34", "--both"], ["resnet18", "plain18", "resnet34", "plain34"]),
    (["--model", "resnet1202"], ["resnet1202"]),
    (["--model", "resnet20", "plain20", "resnet20"], ["resnet20", "plain20"]),  # each trained once
    (["--depth", "20", "20", "--both"], ["resnet20", "plain20"]),
])
def test_model_selection(argv, names):
    assert train.model_names(train.parse_args(argv)) == names


@pytest.mark.parametrize("argv", [
    ["--depth", "20", "--model", "plain56"], ["--model", "resnet20", "--plain"], ["--model", "resnet20", "--both"],
    ["--all", "--model", "resnet20"], ["--all", "--depth", "56"], ["--all", "--plain"], ["--depth", "20", "--plain", "--both"],
    ["--depth", "20", "--epochs", "2", "--iterations", "100"], ["--depth", "20", "--resume", "--restart"],
])
def test_options_that_contradict_each_other_are_refused_before_anything_runs(argv, capsys):
    """Each pair used to be settled silently (--model over --depth, --iterations over --epochs, --restart over
    --resume, which threw a saved run away) and hours of training began. Now: argparse's one line naming both."""
    with pytest.raises(SystemExit) as stop:
        train.parse_args(argv)
    a, b = next(pair for pair in train.CONFLICTS if set(pair) <= set(argv))
    assert stop.value.code == 2 and f"error: {a} and {b} do not go together: " in capsys.readouterr().err


def test_settings_that_make_no_run_are_refused_or_noted_before_the_data_loads(tmp_path, monkeypatch, capsys):
    """A momentum of 1 or more, a bad --device, a batch larger than the training images: refused in one line
    before any image is decoded. A shortcut for plain nets only, milestones or a warm-up past the run's end: said,
    and the run goes on."""
    from resnet_core import trainer

    out = ["--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs")]
    # said, not refused: the commands the project prints for one net of a pair keep the pair's --shortcut; and the
    # notes come before the data loads (here: none, so the run stops there)
    none = str(tmp_path / "no-data")
    assert train.main(["--depth", "20", "--plain", "--shortcut", "B", "--iterations", "10", "--milestones", "500",
                       "--data-dir", none, "--device", "cpu", *out]) == 2
    err = capsys.readouterr().err
    assert "note: --shortcut B does nothing for plain20: plain nets have no shortcuts\n" in err
    assert "note: --milestones 500 at or past the run's 10 iterations: the lr is never divided there\n" in err
    assert f"error: CIFAR-10 train split not found in {none}" in err
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    with pytest.raises(SystemExit) as stop:
        train.parse_args(["--depth", "20", "--momentum", "1"])
    assert stop.value.code == 2 and "argument --momentum: 1 is not below 1" in capsys.readouterr().err
    assert train.parse_args(["--depth", "20", "--momentum", "0"]).momentum == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU machine, wherever it runs
    for device, said in (("gpu", "not a device; use cpu, cuda or cuda:N"),
                         ("mps", "this project runs on cpu or cuda (cuda:N) only"),
                         ("cuda:1", "no CUDA GPU on this machine; use --device cpu")):
        with pytest.raises(SystemExit, match=f"^error: --device {device}: {re.escape(said)}$"):
            train.main(["--depth", "20", "--device", device, *out])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"^error: --device cuda:1: this machine has 1 GPU \(cuda:0\)$"):
        train.main(["--depth", "20", "--device", "cuda:1", *out])
    with pytest.raises(SystemExit, match=r"^error: --batch-size 128 is more than the 100 training images "
                                         r"\(--limit-train\): ask for a batch of 100 or fewer$"):
        train.main(["--depth", "20", "--limit-train", "100", *out])
    with pytest.raises(SystemExit, match=r"^error: --batch-size 60000 is more than the 50,000 training images: "):
        train.main(["--depth", "20", "--batch-size", "60000", *out])
    args = train.parse_args(["--depth", "20", "110", "--iterations", "10", "--milestones", "5", "500",
                             "--warmup-iters", "20"])
    configs = [train.make_config(n, args, 50_000) for n in train.model_names(args)]
    assert train.recipe_notes(configs, args) == [  # once each, for both nets
        "note: --milestones 500 at or past the run's 10 iterations: the lr is never divided there",
        "note: --warmup-iters 20 lasts the whole run of 10 iterations (at --warmup-lr throughout)"]
    paper = train.parse_args(["--depth", "110", "--iterations", "200"])  # its own scaled milestones, 400-it warm-up
    assert train.recipe_notes([train.make_config("resnet110", paper, 50_000)], paper) == []


def test_a_refusal_exits_2_with_its_line_alone():
    """As argparse's own refusals do (--help lists the statuses): a script or session.sh's queue can tell a
    refusal (2) from a crash (1, a traceback)."""
    done = subprocess.run([sys.executable, "train.py", "--depth", "21"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: no CIFAR model of depth 21; depths: 20 32 44 56 110 1202 (6n+2) and 18 34\n"


def test_help_says_what_stop_after_exits_with_and_where_the_data_is_looked_for(monkeypatch, capsys):
    """--stop-after exits 0, unlike an interruption (130); --data-dir's defaults are data.resolve_data_dir's: the
    repository's own data/ too, and shared/ beside the repository, not beside the current folder."""
    monkeypatch.setenv("COLUMNS", "1000")  # no line broken inside a word
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "--stop-after STOP_AFTER iterations, counted from where this run starts (or resumes); then save state " \
           "and exit 0, not an interruption's 130 (continue with --resume) " in said
    assert "torchvision's cifar-10-batches-py (default: $CIFAR10_DIR, else the first of ./data, the repository's " \
           "data/ and shared/datasets/cifar10 beside the repository that holds both splits) " in said


def test_the_configuration_is_said_in_words_once_for_nets_that_share_it():
    args = train.parse_args(["--depth", "20", "110", "--both", "--no-weights", "--limit-train", "256"])
    lines = train.describe([train.make_config(n, args, 256) for n in train.model_names(args)])
    recipe = "SGD with momentum 0.9 and weight decay 0.0001; lr 0.1, multiplied by 0.1 at iterations 32,000 and 48,000"
    assert lines == [
        f"  resnet20, plain20: 64,000 iterations of batch 128; {recipe}; seed 0; the first 256 training images; "
        "published without weights (bf16 autocast, channels-last, CUDA graphs where they apply)",
        f"  resnet110, plain110: 64,000 iterations of batch 128; {recipe}; warm-up at lr 0.01 for 400 iterations; "
        "seed 0; the first 256 training images; published without weights (bf16 autocast, channels-last, CUDA "
        "graphs where they apply)"]
    cpu = train.parse_args(["--model", "resnet20", "--cpu-bf16", "--no-cuda-graphs", "--shortcut", "B", "--seed", "3"])
    assert train.describe([train.make_config("resnet20", cpu, 50_000)])[0].endswith(
        "; seed 3; shortcut B (bf16 autocast, on the CPU too, channels-last where they apply)")


def test_recipes():
    args = train.parse_args(["--depth", "110"])
    r = train.make_config("resnet110", args, 50_000).recipe
    assert (r.iterations, r.batch_size, r.lr, r.milestones, r.warmup_iters) == (64_000, 128, 0.1, (32_000, 48_000), 400)
    assert train.make_config("plain20", args, 50_000).recipe.warmup_iters == 0
    for depth in (20, 32, 44, 56, 110, 1202):  # the 110-layer nets' warm-up (and 1202's, trained alike), no other's
        for kind in ("resnet", "plain"):
            config = train.make_config(f"{kind}{depth}", train.parse_args(["--depth", str(depth)]), 50_000)
            assert config.recipe.warmup_iters == (400 if depth >= 110 else 0), config.model
    seed = train.make_config("resnet18", train.parse_args(["--depth", "18", "--recipe", "seed"]), 50_000).recipe
    assert seed.iterations == 200 * 390 and seed.milestones == (60 * 390, 120 * 390, 160 * 390)
    tiny = train.make_config("resnet20", train.parse_args(["--depth", "20", "--epochs", "2", "--batch-size", "64"]), 256).recipe
    assert tiny.iterations == 8 and tiny.milestones == (4, 6)  # scaled like the paper's 32k/48k of 64k
    with pytest.raises(SystemExit, match="no CIFAR model of depth 21"):
        train.model_names(train.parse_args(["--depth", "21"]))


def test_torchrun_ranks_share_each_batch_without_overlap():
    """Under torchrun each rank trains on its own part of the step's batch; the ranks' parts, in rank order, are the
    batch one process trains on: no image twice, none left out."""
    from resnet_core.trainer import rank_rows

    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 4):
        for step in (0, 3):
            parts = [rank_rows(perm, step, 16, rank, world) for rank in range(world)]
            assert all(len(p) == 16 // world for p in parts)
            assert torch.equal(torch.cat(parts), perm[step * 16:(step + 1) * 16])


def test_torchrun_time_budget_stops_every_rank_together(tmp_path, shared_cifar):
    """A stop seen by the ranks at different moments must not leave one waiting in all-reduce."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
            "--model", "resnet20", "--epochs", "300", "--limit-train", "256", "--limit-test", "100", "--batch-size", "64",
            "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs"),
            "--time-budget", "0.1"]  # 6 s, set-up included: on a loaded machine 3 s were once spent before epoch 1
    done = torchrun(argv, timeout=240)
    assert done.returncode == 0, done.stderr[-8000:]
    meta = json.loads((tmp_path / "runs/resnet20/state.json").read_text())
    assert 0 < meta["iteration"] < 1200 and meta["iteration"] % 4 == 0  # stopped at an epoch end (4 steps/epoch)


@pytest.mark.parametrize("every_s, saves", [(0.0, [2, 4, 6, 8]), (1e9, [2, 8])])
def test_state_is_saved_at_epoch_ends_at_most_once_a_minute_and_always_at_the_end(tmp_path, monkeypatch, every_s, saves):
    """Four epochs: with no minimum interval every epoch's end writes the state; with one longer than the run only
    the first epoch's end and the model's end do (a GPU's epochs take seconds, and a hard kill loses at most
    SAVE_EVERY_S of training). The first save does not depend on how long the machine has been up."""
    from resnet_core import trainer

    written = []
    real = trainer.save_state
    monkeypatch.setattr(trainer, "SAVE_EVERY_S", every_s)
    monkeypatch.setattr(trainer, "save_state", lambda lane, *a: (written.append(lane.iteration), real(lane, *a)))
    train_tiny(tmp_path / "out", tmp_path / "runs", ("resnet20",), "--epochs", "4", "--limit-train", "32")
    assert written == saves  # 4 epochs of 2 iterations (32 images, batch 16)
    assert json.loads((tmp_path / "runs" / "resnet20" / "state.json").read_text())["finished"]


def test_time_budget_counts_the_set_up_too(tmp_path, shared_cifar, monkeypatch):
    """A budget spent while the data loads: the run stops after its first iteration, state saved, rather than
    training a whole budget past the deadline a device session gave it."""
    from resnet_core import trainer

    real = trainer.load_data
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: (time.sleep(1.0), real(*a, **k))[1])
    argv = ["--model", "resnet20", *TINY, "--epochs", "30", "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs"), "--time-budget", str(0.5 / 60)]
    assert train.main(argv) == 0
    assert json.loads((tmp_path / "runs/resnet20/state.json").read_text())["iteration"] == 1


# -- robustness: bad folders, failed publishes, divergence beyond the loss, options, damaged state, locks ---------
def tiny_argv(tmp_path: Path, shared_cifar: Path, *models: str) -> list[str]:
    return ["--model", *(models or ["resnet20"]), *TINY, "--data-dir", str(shared_cifar), "--out",
            str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs")]


@pytest.mark.parametrize("bad", ["out-is-a-file", "state-dir-is-a-file", "out-under-a-file"])
def test_a_folder_that_cannot_be_written_is_refused_before_the_data_loads(tmp_path, shared_cifar, monkeypatch, bad):
    """Not found by the first save or the publish, after all the training: a file where --out or --state-dir should
    be a folder stops the run at once, in one line naming the option."""
    from resnet_core import trainer

    loads = []
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: loads.append(a))
    argv = tiny_argv(tmp_path, shared_cifar)
    (tmp_path / "file").write_text("not a folder")
    option, path = {"out-is-a-file": ("--out", tmp_path / "file"), "state-dir-is-a-file": ("--state-dir", tmp_path / "file"),
                    "out-under-a-file": ("--out", tmp_path / "file" / "checkpoints")}[bad]
    argv[argv.index(option) + 1] = str(path)
    with pytest.raises(SystemExit) as refused:
        train.main(argv)
    why = "a file, not a folder" if path.name == "file" else "Not a directory"
    assert str(refused.value) == (f"error: {option} {path} is not a folder this run can write in ({why}); pass "
                                  f"{option} with one that is")
    assert loads == [] and (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize("layout", ["one folder", "a link to the state", "the state inside"])
def test_out_and_state_dir_that_overlap_are_refused_before_anything_is_written(tmp_path, shared_cifar, monkeypatch,
                                                                               layout):
    """`--out runs` beside the default --state-dir runs/: publishing would replace runs/resnet20 whole, the state and
    its lock with it, and then write the final state into the checkpoint. Refused at the start in one line, as is a
    model's published folder that is (a link to) its state folder, or holds it."""
    from resnet_core import trainer

    loads = []
    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: loads.append(a))
    out, state = {"one folder": ("runs", "runs"), "a link to the state": ("out", "runs"),
                  "the state inside": ("out", "out/resnet20")}[layout]
    out, state = tmp_path / out, tmp_path / state
    if layout == "a link to the state":
        (state / "resnet20").mkdir(parents=True)
        out.mkdir()
        (out / "resnet20").symlink_to(state / "resnet20")
    argv = tiny_argv(tmp_path, shared_cifar)
    argv[argv.index("--out") + 1], argv[argv.index("--state-dir") + 1] = str(out), str(state)
    with pytest.raises(SystemExit) as refused:
        train.main(argv)
    published, kept = (out / "resnet20").resolve(), (state / "resnet20").resolve()
    assert str(refused.value) == (f"error: --out {out} and --state-dir {state} overlap: publishing resnet20 would "
                                  f"replace {published} whole, and with it its resumable state in {kept}; give them "
                                  f"separate folders (the defaults are checkpoints/ and runs/)")
    assert loads == [] and not list(tmp_path.rglob(".lock"))  # refused before any state folder was locked


def test_a_publish_that_fails_saves_the_state_and_resume_publishes_it(tmp_path, shared_cifar, monkeypatch,
                                                                      tiny_checkpoints, capsys):
    """Disk full while publishing: every model's state is saved first (the one publishing at its last iteration,
    unfinished), the run stops in one line saying so, with status 5 (not a refusal's 2), and --resume publishes
    without training again: the very weights of an uninterrupted run. Where the state cannot be saved either, the
    one saved before stays, and the line says so."""
    from resnet_core import trainer

    real, real_save = trainer.save_checkpoint, trainer.save_state

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def full_by_the_end(lane, *args):
        if lane.iteration == 8:
            disk_full()
        real_save(lane, *args)

    monkeypatch.setattr(trainer, "save_checkpoint", disk_full)
    monkeypatch.setattr(trainer, "save_state", full_by_the_end)
    argv = tiny_argv(tmp_path, shared_cifar, "resnet20", "plain20")
    assert train.main(argv) == 5
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: could not publish resnet20 into {tmp_path / 'out'} (OSError: [Errno 28] No space left on device); "
        f"then could not save the state of resnet20 in {tmp_path / 'runs' / 'resnet20'} (OSError: [Errno 28] No "
        f"space left on device); its state saved at iteration 4 is intact: once the disk is fixed, the same command "
        f"with --resume continues from it")
    assert json.loads((tmp_path / "runs" / "resnet20" / "state.json").read_text())["iteration"] == 4
    monkeypatch.setattr(trainer, "save_state", real_save)
    assert train.main(argv + ["--resume"]) == 5
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: could not publish resnet20 into {tmp_path / 'out'} (OSError: [Errno 28] No space left on device); "
        f"its state, and that of any model beside it, is saved in {tmp_path / 'runs'}: once that is fixed, the same "
        f"command with --resume publishes it")
    for name in ("resnet20", "plain20"):
        meta = json.loads((tmp_path / "runs" / name / "state.json").read_text())
        assert (meta["iteration"], meta["finished"], len(meta["history"])) == (8, False, 2)
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    assert train.main(argv + ["--resume"]) == 0
    for name in ("resnet20", "plain20"):
        info = read_checkpoint(tmp_path / "out" / name)
        assert info.metrics["iterations"] == 8 and [r["epoch"] for r in info.history["records"]] == [1, 2]
        # 0 to 4 (saved), 4 to 8 (its publish failed): the sitting that only published trained none, so adds none
        assert [s["start"] for s in info.config["sittings"]] == [0, 4]
        assert json.loads((tmp_path / "runs" / name / "state.json").read_text())["finished"]
        ours, uninterrupted = (load_file(d / name / "model.safetensors") for d in (tmp_path / "out", tiny_checkpoints))
        assert all(torch.equal(ours[k], uninterrupted[k]) for k in uninterrupted)


def test_a_diverted_publish_that_failed_is_published_beside_the_other_on_resume(tmp_path, shared_cifar, monkeypatch,
                                                                                capsys):
    """Another run published resnet20 while this one trained, and this run's publish beside it failed (disk full):
    --resume, as the message says, publishes it beside the other, not refused by the checkpoint in the way."""
    from resnet_core import trainer

    other = tmp_path / "other"
    train_tiny(other, tmp_path / "runs-other", ("resnet20",), "--epochs", "1")
    real_publish, real_save = trainer.publish, trainer.save_checkpoint

    def another_run_publishes_first(lane, data, out_dir, *args, **kwargs):
        shutil.copytree(other / "resnet20", out_dir / "resnet20")
        monkeypatch.setattr(trainer, "publish", real_publish)
        return real_publish(lane, data, out_dir, *args, **kwargs)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "publish", another_run_publishes_first)
    monkeypatch.setattr(trainer, "save_checkpoint", disk_full)
    argv = tiny_argv(tmp_path, shared_cifar, "resnet20")
    assert train.main(argv) == 5
    assert capsys.readouterr().err.endswith("the same command with --resume publishes it\n")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert train.main(argv + ["--resume"]) == 0
    run_id = json.loads((tmp_path / "runs" / "resnet20" / "state.json").read_text())["run_id"]
    assert read_checkpoint(tmp_path / "out" / f"resnet20-run{run_id[:8]}").metrics["iterations"] == 8
    assert folder_bytes(tmp_path / "out" / "resnet20") == folder_bytes(other / "resnet20")


def test_a_state_save_that_fails_ends_in_one_line_and_resume_continues_from_the_one_before(tmp_path, shared_cifar,
                                                                                          monkeypatch, capsys):
    """Disk full at a state save (or --state-dir taken away): the run stops with status 5 and one line naming the
    folder, the error and the state saved before, which the atomic writes keep whole (no half file left), and from
    which --resume, once there is room, trains to the end; the sitting whose save failed leaves no trace."""
    from resnet_core import checkpoint

    argv, runs, _ = stopped_run(tmp_path, shared_cifar)  # its state saved at iteration 2
    real = checkpoint.save_file

    def disk_full(tensors, path, **kwargs):  # half the file written, then no room
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    assert train.main(argv + ["--resume"]) == 5  # the first save after resuming: iteration 4, the epoch's end
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"error: could not save the state of resnet20 in {runs} (OSError: [Errno 28] No space left on device); its "
        f"state saved at iteration 2 is intact: once the disk is fixed, the same command with --resume continues "
        f"from it") and "Traceback" not in err
    assert state_files(runs) == ["state-00000002.safetensors", "state.json"]
    assert json.loads((runs / "state.json").read_text())["iteration"] == 2
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert train.main(argv + ["--resume"]) == 0
    info = read_checkpoint(tmp_path / "out" / "resnet20")
    assert info.metrics["iterations"] == 8 and [s["start"] for s in info.config["sittings"]] == [0, 2]


def test_a_stop_due_when_the_last_model_has_just_diverged_ends_in_one_line(tmp_path, shared_cifar, monkeypatch,
                                                                          capsys):
    """The only model goes NaN at an epoch's end (its test loss), and --stop-after falls due on that very
    iteration: the stop finds no model left to check or save, and the run ends with status 3 and the message,
    not a traceback."""
    from resnet_core import trainer

    real = trainer.step_lanes

    def poisoned(lanes, x, y, it, **kwargs):
        real(lanes, x, y, it, **kwargs)
        for lane in lanes:
            if lane.iteration == 4:  # the end of epoch 1: 256 images in batches of 64
                lane.model.stem.bn.running_var[0] = float("nan")

    monkeypatch.setattr(trainer, "step_lanes", poisoned)
    assert train.main(tiny_argv(tmp_path, shared_cifar, "plain20") + ["--stop-after", "4"]) == 3
    assert "plain20: its weights, BN statistics or momentum became NaN/inf" in capsys.readouterr().err


def test_weights_that_overflow_are_never_published(tmp_path, shared_cifar, capsys):
    """The reviewer's run: eight iterations at lr 0.1, then lr 1e6. The training loss can stay finite (1e26) while
    the weights overflow and the test loss is NaN: the model stops as diverged (exit 3), is not published, and the
    state on disk, the one the message names, is finite."""
    argv = tiny_argv(tmp_path, shared_cifar, "plain20") + ["--epochs", "3", "--lr", "1e6", "--warmup-iters", "8",
                                                             "--warmup-lr", "0.1", "--milestones"]
    assert train.main(argv) == 3
    err = capsys.readouterr().err
    meta = json.loads((tmp_path / "runs" / "plain20" / "state.json").read_text())
    assert not meta["finished"] and not (tmp_path / "out" / "plain20").exists()
    assert f"its last good state, saved at iteration {meta['iteration']}, stays in" in err
    tensors = load_file(tmp_path / "runs" / "plain20" / meta["tensors"])
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


@pytest.mark.parametrize("poison", ["test loss", "BN statistics"])
def test_a_nan_test_loss_or_bn_statistic_stops_that_model_alone(tmp_path, shared_cifar, monkeypatch, capsys, poison):
    """plain20's test loss, or one of its BN running variances, turns NaN/inf at the end of epoch 2 (its training
    loss still finite): it stops there, unpublished, its state of iteration 4 kept (saves come once a minute, so
    not the 8 of its last record); resnet20 finishes, is published and (--push-to-hub) pushed; exit 3 names plain20
    and says to --restart."""
    from resnet_core import trainer

    pushed = fake_hub(monkeypatch)
    real = trainer.end_epoch

    def poisoned(lane, data, epoch, *args):
        record = real(lane, data, epoch, *args)
        if lane.name == "plain20" and epoch == 2:
            if poison == "test loss":
                record["test_loss"] = float("nan")
            else:
                lane.model.stem.bn.running_var[0] = float("inf")
        return record

    monkeypatch.setattr(trainer, "end_epoch", poisoned)
    argv = tiny_argv(tmp_path, shared_cifar, "resnet20", "plain20") + ["--push-to-hub", "me/resnet"]
    assert train.main(argv) == 3
    what = "the test loss" if poison == "test loss" else "its weights, BN statistics or momentum"
    err = capsys.readouterr().err
    assert (f"error: plain20: {what} became NaN/inf by the end of epoch 2 (iteration 8). Stopped; its last good "
            f"state, saved at iteration 4, stays in {tmp_path / 'runs' / 'plain20'}. Start it over with --restart and "
            f"a lower --lr or some --warmup-iters (--model plain20 for it alone).") in err
    assert json.loads((tmp_path / "runs" / "plain20" / "state.json").read_text())["iteration"] == 4
    assert not (tmp_path / "out" / "plain20").exists()
    assert read_checkpoint(tmp_path / "out" / "resnet20").metrics["iterations"] == 8
    assert pushed == [(tmp_path / "out" / "resnet20", "me/resnet-resnet20")]
    assert "pushed resnet20: https://hub/me/resnet-resnet20" in err


def test_a_stop_never_saves_weights_that_went_nan(tmp_path, shared_cifar, monkeypatch, capsys):
    """--stop-after (or Ctrl-C, a time budget) mid-epoch, when plain20's BN statistics have gone inf since the last
    check: plain20 stops as diverged with its saved state of iteration 4; resnet20's state is saved at the stop."""
    from resnet_core import trainer

    real = trainer.step_lanes

    def poisoned(lanes, x, y, it, **kwargs):
        real(lanes, x, y, it, **kwargs)
        for lane in lanes:
            if lane.name == "plain20" and lane.iteration == 6:
                lane.model.stem.bn.running_var[0] = float("nan")

    monkeypatch.setattr(trainer, "step_lanes", poisoned)
    assert train.main(tiny_argv(tmp_path, shared_cifar, "resnet20", "plain20") + ["--stop-after", "6"]) == 3
    assert "plain20: its weights, BN statistics or momentum became NaN/inf by iteration 6. Stopped; its last good " \
           "state, saved at iteration 4," in capsys.readouterr().err
    iterations = {name: json.loads((tmp_path / "runs" / name / "state.json").read_text())["iteration"]
                  for name in ("resnet20", "plain20")}
    assert iterations == {"resnet20": 6, "plain20": 4}


@pytest.mark.parametrize("argv, said", [
    (["--iterations", "0"], "argument --iterations: 0 is not at least 1"),
    (["--iterations", "-5"], "argument --iterations: -5 is not at least 1"),
    (["--epochs", "0"], "argument --epochs: 0 is not above 0"),
    (["--time-budget", "0"], "argument --time-budget: 0 is not above 0"),
    (["--time-budget", "-1"], "argument --time-budget: -1 is not above 0"),
    (["--stop-after", "0"], "argument --stop-after: 0 is not at least 1"),
    (["--batch-size", "0"], "argument --batch-size: 0 is not at least 1"),
    (["--batch-size", "-4"], "argument --batch-size: -4 is not at least 1"),
    (["--limit-train", "0"], "argument --limit-train: 0 is not at least 1"),
    (["--limit-train", "-5"], "argument --limit-train: -5 is not at least 1"),
    (["--limit-test", "0"], "argument --limit-test: 0 is not at least 1"),
    (["--lr", "nan"], "argument --lr: nan is not a finite number"),
    (["--warmup-iters", "-1"], "argument --warmup-iters: -1 is not at least 0"),
    (["--epochs", "2x"], "argument --epochs: '2x' is not a number"),
    (["--seed", "-1"], "argument --seed: -1 is not at least 0"),  # torch.manual_seed's range, not a late traceback
    # each epoch's data order is seeded with seed * 1_000_003 + epoch, within torch.manual_seed's 64 bits: a seed
    # of 2**44 overflowed there, after the data had loaded, in a traceback
    (["--seed", str(2 ** 32)], f"argument --seed: {2 ** 32} is not below {2 ** 32}"),
    (["--seed", str(2 ** 64)], f"argument --seed: {2 ** 64} is not below {2 ** 32}"),
])
def test_out_of_range_options_are_refused_in_one_line(argv, said, capsys):
    with pytest.raises(SystemExit) as refused:
        train.parse_args(["--model", "resnet20", *argv])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.strip().endswith(f"error: {said}") and "Traceback" not in err


def test_options_that_make_no_run_are_one_line_errors(tmp_path, shared_cifar, capsys):
    """Too short to make an iteration, or a training set smaller than one batch: said in one line, not as a
    ZeroDivision or ValueError traceback, nor a run of 0 iterations that "finishes" having saved nothing."""
    argv = tiny_argv(tmp_path, shared_cifar)
    with pytest.raises(SystemExit, match=r"^error: --epochs 0.1 makes 0 iterations \(4 an epoch: 64 training "
                                         r"images, batch 16\); ask for --epochs 0.25 or more$"):
        train.main(argv + ["--epochs", "0.1"])
    with pytest.raises(SystemExit, match=r"^error: --batch-size 16 is more than the 8 training images "
                                         r"\(--limit-train\): ask for a batch of 8 or fewer$"):
        train.main(argv + ["--limit-train", "8"])  # train.py: before the data loads
    from resnet_core.trainer import ConfigError, Recipe, RunConfig, train as run
    with pytest.raises(ConfigError, match=r"^8 training images is less than one batch of 16$"):  # the trainer's own
        run([RunConfig("resnet20", Recipe(batch_size=16), limit_train=8)], data_dir=str(shared_cifar),
            out_dir=tmp_path / "o", state_dir=tmp_path / "r", device="cpu")
    with pytest.raises(ConfigError, match="a model named twice: resnet20, resnet20"):
        run([RunConfig("resnet20", Recipe())] * 2, out_dir=tmp_path / "o", state_dir=tmp_path / "r")
    for seed in (-1, 2 ** 44):  # 2**44 * 1_000_003 is past torch.manual_seed's 64 bits: refused before the data loads
        with pytest.raises(ConfigError, match=rf"^seed {seed} is not in 0 to {2 ** 32 - 1}$"):
            run([RunConfig("resnet20", Recipe(), seed=seed)], data_dir=str(tmp_path / "nothing here"),
                out_dir=tmp_path / "o", state_dir=tmp_path / "r")


def test_a_damaged_state_json_is_refused_and_restart_replaces_it(tmp_path, shared_cifar):
    """Any state.json that is not a saved run's stops --resume (and a plain start) in one line naming the file, rather
    than training from iteration 0 and then deleting the saved tensors; --restart starts over and replaces it."""
    argv, runs, meta = stopped_run(tmp_path, shared_cifar)
    for content, problem in [
        (b"{}", "config, iteration, wall_time_s, history, finished missing or of the wrong type"),
        (b"[]", "a JSON list, not an object"),
        (b'{"iteration": 2, "wall_time_s": 1.0, "history": [], "finished": false}', "config missing or of the wrong type"),
        (b'{"config": {}, "wall_time_s": 1.0, "history": [], "finished": false}', "iteration missing or of the wrong type"),
        (b"\xff\xfe{}", "unreadable: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ]:
        (runs / "state.json").write_bytes(content)
        for extra in (["--resume"], []):
            with pytest.raises(SystemExit) as refused:
                train.main(argv + extra)
            assert str(refused.value) == (f"error: the saved run state {runs / 'state.json'} is damaged ({problem}); "
                                          f"pass --restart (in place of --resume) to start resnet20 over (it is then "
                                          f"replaced), or move {runs} away")
    assert (runs / meta["tensors"]).exists()
    assert train.main(argv + ["--restart"]) == 0
    assert json.loads((runs / "state.json").read_text())["finished"] and state_files(runs) == [
        "state-00000008.safetensors", "state.json"]


def test_resume_refuses_other_test_images_and_takes_the_default_shortcut_by_name(tmp_path, shared_cifar, monkeypatch):
    """Fewer test images, or other images or labels (the data's SHA-256, whatever folder or layout holds them),
    would mix two evaluations in one history: refused, naming what changed. `--shortcut A`, resnet20's default, is
    the same net as no --shortcut: resumed."""
    from resnet_core import trainer

    argv, runs, _ = stopped_run(tmp_path, shared_cifar)
    with pytest.raises(SystemExit, match=r"other options \(limit_test 50 -> 32\);"):
        train.main(argv + ["--resume", "--limit-test", "32"])
    real = trainer.load_data

    monkeypatch.setattr(trainer, "load_data", lambda *a, **k: dataclasses.replace(real(*a, **k), sha256="0" * 64))
    with pytest.raises(SystemExit, match=r"state.json was made with other training or test images than .*; resume "
                                         r"with the data it was made with, or use --restart \(in place of --resume\) "
                                         r"to start over"):
        train.main(argv + ["--resume"])
    monkeypatch.setattr(trainer, "load_data", real)
    assert train.main(argv + ["--resume", "--shortcut", "A"]) == 0
    assert read_checkpoint(tmp_path / "out" / "resnet20").config["arch"] == {}


def test_a_second_run_of_a_model_with_the_same_state_dir_is_refused(tmp_path, shared_cifar, monkeypatch):
    """Two runs of one model sharing --state-dir would save over each other's state: while one holds the model's
    lock (an flock, which a second open of the file conflicts with, in this process too), the other stops before
    loading any data, in one line; once it is released, the run goes ahead."""
    from contextlib import ExitStack

    from resnet_core import trainer

    argv = tiny_argv(tmp_path, shared_cifar)
    for started in (False, True):  # the state folder made by the other run just now, or holding its saved state
        if started:
            assert train.main(argv + ["--stop-after", "1"]) == 0
        with ExitStack() as other_run:
            trainer.lock_state(tmp_path / "runs" / "resnet20", other_run)
            loads = []
            monkeypatch.setattr(trainer, "load_data", lambda *a, **k: loads.append(a))
            with pytest.raises(SystemExit) as refused:
                train.main(argv + (["--resume"] if started else []))
            monkeypatch.undo()
            assert str(refused.value) == (f"error: another run is training resnet20 with its state in "
                                          f"{tmp_path / 'runs' / 'resnet20'}; wait for it to end, or give this run its "
                                          f"own --state-dir and --out") and loads == []
    assert train.main(argv + ["--resume"]) == 0


def test_a_run_holds_its_state_lock_while_it_trains(tmp_path, shared_cifar, monkeypatch):
    """The lock is held for the whole run, not only checked at its start: a second run trying it mid-training
    is refused."""
    from contextlib import ExitStack

    from resnet_core import trainer

    real, tried = trainer.step_lanes, []

    def step_and_try_the_lock(*a, **k):
        if not tried:
            with ExitStack() as other_run, pytest.raises(SystemExit, match="another run is training resnet20"):
                tried.append(1)
                trainer.lock_state(tmp_path / "runs" / "resnet20", other_run)
        return real(*a, **k)

    monkeypatch.setattr(trainer, "step_lanes", step_and_try_the_lock)
    assert train.main(tiny_argv(tmp_path, shared_cifar) + ["--stop-after", "1"]) == 0
    assert tried == [1]


def test_a_state_folder_that_cannot_be_locked_is_said_in_one_line(tmp_path, monkeypatch):
    """A file system without locks (flock raises ENOLCK there) stops the run in one line, not a traceback."""
    import errno
    from contextlib import ExitStack

    from resnet_core import trainer

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(trainer.fcntl, "flock", no_locks)
    with ExitStack() as locks, pytest.raises(SystemExit) as refused:
        trainer.lock_state(tmp_path / "runs" / "resnet20", locks)
    assert str(refused.value) == (f"error: cannot lock {tmp_path / 'runs' / 'resnet20'} (No locks available); pass "
                                  f"--state-dir with a folder on a local disk")


def test_a_publish_killed_between_its_renames_is_undone_at_the_start(tmp_path, shared_cifar, capsys):
    """Killed after moving the published checkpoint aside (.resnet20.old) and before putting the new one (a whole
    .resnet20.tmp-*) in its place: the next start moves it back and says so, so that the overwrite guard sees it and
    nothing deletes it; old temp folders there and temp files of killed state saves go."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    train_tiny(out, runs, ("resnet20",), "--epochs", "1")
    published = folder_bytes(out / "resnet20")
    shutil.copytree(out / "resnet20", out / ".resnet20.tmp-killed")
    (out / "resnet20").rename(out / ".resnet20.old")
    os.utime(out / ".resnet20.tmp-killed", (0, 0))  # untouched for long: no publish under way
    (runs / "resnet20" / ".state-00000004.safetensors.x1.tmp").write_bytes(b"half a save")
    with pytest.raises(SystemExit, match="holds a published checkpoint of resnet20 .* --overwrite to replace it"):
        train_tiny(out, runs, ("resnet20",), "--restart")
    assert (f"{out / 'resnet20'}: restored the checkpoint that a publish killed halfway had moved aside to "
            f".resnet20.old") in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["resnet20"] and folder_bytes(out / "resnet20") == published
    train_tiny(out, runs, ("resnet20",), "--restart", "--overwrite")
    assert state_files(runs / "resnet20") == ["state-00000008.safetensors", "state.json"]


def test_each_step_trains_on_the_planned_crops_and_flips_at_the_scheduled_lr(tmp_path, shared_cifar, monkeypatch):
    """What the net is fed, step by step, against the paper's recipe computed here by hand: the epoch's order,
    a 4-pixel zero pad then a 32x32 crop at the planned offset, a flip where planned, normalised; and the lr of
    each step (0.1, /10 at each milestone) as the SGD step receives it."""
    from resnet_core import trainer
    fed, lrs, plans = [], [], []
    real_fill, real_step = trainer.fill_batch, trainer.train_step

    def fill_batch(data, idx, offsets, flips, x, y):
        real_fill(data, idx, offsets, flips, x, y)
        fed.append((data.train_x[idx].clone(), offsets[idx].clone(), flips[idx].clone(), data.mean, data.std,
                    x.clone(), y.clone(), data.train_y[idx].clone()))
        plans.append((idx.clone(), offsets[idx].clone(), flips[idx].clone()))

    def train_step(lane, x, y):
        lrs.append(float(lane.lr))
        real_step(lane, x, y)

    monkeypatch.setattr(trainer, "fill_batch", fill_batch)
    monkeypatch.setattr(trainer, "train_step", train_step)
    argv = ["--model", "resnet20", "--iterations", "8", "--milestones", "4", "6", "--limit-train", "128",
            "--batch-size", "32", "--limit-test", "50", "--device", "cpu", "--data-dir", str(shared_cifar),
            "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "runs"), "--seed", "1"]
    assert train.main(argv) == 0
    assert lrs == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert len(fed) == 8
    # step k feeds batch k % 4 of epoch k // 4's plan for this seed: a new order, crops and flips each epoch
    for k, (idx, offsets, flips) in enumerate(plans):
        order, crops, flipped = augmentation_plan(128, k // 4, 1, "cpu")
        rows = order[k % 4 * 32:(k % 4 + 1) * 32]
        assert torch.equal(idx, rows) and torch.equal(offsets, crops[rows]) and torch.equal(flips, flipped[rows])
    assert not torch.equal(torch.cat([p[0] for p in plans[:4]]), torch.cat([p[0] for p in plans[4:]]))
    seen = torch.cat([f[7] for f in fed[:4]])  # one epoch: every image once, in the plan's order
    assert torch.equal(seen.sort().values, load_cifar10(str(shared_cifar), "train", limit=128)[1].sort().values)
    flipped = cropped = 0
    for images, offsets, flips, mean, std, x, y, labels in fed:
        assert torch.equal(y, labels)
        for image, (r, c), flip, got in zip(images, offsets.tolist(), flips.tolist(), x):
            padded = torch.zeros(40, 40, 3, dtype=torch.uint8)
            padded[4:36, 4:36] = image
            crop = padded[r:r + 32, c:c + 32]
            crop = crop.flip(1) if flip else crop
            want = (crop.permute(2, 0, 1).float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
            torch.testing.assert_close(got, want)
            flipped, cropped = flipped + flip, cropped + ((r, c) != (4, 4))
    assert 0.3 < flipped / 256 < 0.7 and cropped / 256 > 0.9  # the plan flips about half and moves nearly all


def test_a_damaged_state_tensors_file_is_one_line_on_resume(tmp_path, shared_cifar, capsys):
    from safetensors.torch import save_file
    argv, runs, meta = stopped_run(tmp_path, shared_cifar)
    tensors = runs / meta["tensors"]
    whole = {k: v.clone() for k, v in load_file(tensors).items()}  # not views of the file, which is cut next
    tensors.write_bytes(tensors.read_bytes()[:1000])  # cut short
    with pytest.raises(SystemExit, match=r"is unreadable .*--restart"):
        train.main(argv + ["--resume"])
    save_file({k: v for k, v in whole.items() if k != "momentum.3"}, tensors)  # whole, but a tensor short
    with pytest.raises(SystemExit, match=r"is not a whole saved state of resnet20 \(no tensor momentum.3\).*--restart"):
        train.main(argv + ["--resume"])
    whole["model.fc.weight"], whole["stats.loss_sum"] = whole["model.fc.weight"][:5], torch.zeros(1, 1)
    save_file(whole, tensors)  # every tensor, two of another shape (the second one copy_ would broadcast)
    with pytest.raises(SystemExit, match=r"saved state of resnet20 \(model.fc.weight of shape \[5, 64\], not \[10, 64\]; "
                                         r"stats.loss_sum of shape \[1, 1\], not \[\]\).*--restart"):
        train.main(argv + ["--resume"])
    assert train.main(argv + ["--restart"]) == 0
    assert read_checkpoint(tmp_path / "out" / "resnet20").metrics["iterations"] == 8


def fake_hub(monkeypatch) -> list[tuple[Path, str]]:
    """train.py's uploads, stubbed (no network): each (folder, repo) pushed, in order, answered with a made-up URL."""
    pushed = []
    monkeypatch.setattr(train, "push_to_hub",
                        lambda folder, repo: pushed.append((folder, repo)) or f"https://hub/{repo}")
    return pushed


def test_push_to_hub_uploads_what_this_run_published_and_a_failed_upload_is_one_line(tmp_path, shared_cifar,
                                                                                      monkeypatch, capsys):
    pushed = fake_hub(monkeypatch)
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs"), "--push-to-hub", "me/resnet"]
    assert train.main(argv + ["--stop-after", "2"]) == 0 and pushed == []  # nothing finished, nothing pushed
    from resnet_core import trainer
    real_publish = trainer.publish

    def another_run_publishes_first(lane, data, out_dir, *args, **kwargs):
        shutil.copytree(REPO / "checkpoints" / "resnet20", out_dir / "resnet20")
        return real_publish(lane, data, out_dir, *args, **kwargs)

    monkeypatch.setattr(trainer, "publish", another_run_publishes_first)
    assert train.main(argv + ["--resume"]) == 0
    monkeypatch.setattr(trainer, "publish", real_publish)
    [(folder, repo)] = pushed
    assert folder.name.startswith("resnet20-run") and repo == "me/resnet-resnet20"  # ours, not the other run's
    assert "pushed resnet20: https://hub/me/resnet-resnet20" in capsys.readouterr().err

    def offline(folder, repo):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(train, "push_to_hub", offline)
    assert train.main(["--model", "plain20", *argv[2:]]) == 4
    err = capsys.readouterr().err
    assert f"error: could not push {tmp_path / 'out' / 'plain20'} to the Hub as me/resnet-plain20 (OSError: " in err
    assert "it stays published there; retry with: python -c" in err and "Traceback" not in err
    assert read_checkpoint(tmp_path / "out" / "plain20").metrics["iterations"] == 8


@pytest.mark.parametrize("native", [False, True])
def test_cpu_bf16_on_a_cpu_without_it_in_hardware_says_to_leave_it_out(tmp_path, shared_cifar, monkeypatch, capsys,
                                                                        native):
    from resnet_core import trainer
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: native)
    argv = ["--model", "resnet20", *TINY, "--data-dir", str(shared_cifar), "--out", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "runs"), "--stop-after", "1"]
    assert train.main(argv + ["--cpu-bf16"]) == 0
    assert ("computes bf16 in software" in capsys.readouterr().err) == (not native)
    assert train.main(argv + ["--restart"]) == 0  # fp32: nothing to say, whatever the CPU
    assert "bf16 in software" not in capsys.readouterr().err


def test_only_cifar10_nets_are_trained(tmp_path):
    """The trainer reads CIFAR-10: an ImageNet net (1,000 outputs for labels 0-9) would train and publish a
    checkpoint the explorer refuses. Named, it is refused before anything loads, saying what those nets are for."""
    for name, extra in (("imagenet-resnet18", "; the imagenet-* nets are for the Architecture page"), ("vgg16", "")):
        with pytest.raises(SystemExit) as stop:
            train.main(["--model", "resnet20", name, "--out", str(tmp_path / "out")])
        message = str(stop.value.code)
        valid = message.removeprefix(f"error: unknown model(s) {name}; valid: ").split("; ")[0].split(", ")
        assert valid[:2] == ["resnet20", "plain20"] and valid[-1] == "plain34" and "imagenet-resnet18" not in valid
        assert (extra in message) if extra else message.count(";") == 1
    assert not (tmp_path / "out").exists()
