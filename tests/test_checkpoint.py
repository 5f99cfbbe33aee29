"""Checkpoint folders: round trip, atomic replacement, and clear errors for every kind of damage."""
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import resnet_core.checkpoint as ckpt
from resnet_core import CheckpointError, build_model, list_checkpoints, load_pretrained, read_checkpoint
from resnet_core.checkpoint import storage_state, stored_precision

CONFIG = {"model": "resnet20", "recipe": {"iterations": 1}, "residual": True, "depth": 20}
HISTORY = {"layers": ["stem.conv"], "records": [{"epoch": 1, "iteration": 1, "test_error": 90.0}]}
METRICS = {"test_error": 90.0, "confusion_matrix": [[1] * 10] * 10, "nan_is_null": float("nan")}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    path = ckpt.save_checkpoint(tmp_path, "resnet20", model, CONFIG, HISTORY, METRICS)
    return model, path


def test_round_trip_in_fp16(saved):
    model, path = saved
    loaded = load_pretrained(path)
    assert not loaded.training
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0.02, atol=0.02)
    info = read_checkpoint(path)
    assert info.metrics["nan_is_null"] is None and info.config["has_weights"] is True
    assert "# resnet20 on CIFAR-10" in (path / "README.md").read_text()
    # for everyone to read, as a copied or cloned folder is: mkstemp and mkdtemp would leave 0600 and 0700
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == {f.name: 0o644 for f in path.iterdir()}


def test_statistics_beyond_fp16_survive_publishing(tmp_path):
    """A deep plain net's early BN running variances reach millions (plain56 after 15 CPU epochs: 3.5e6); cast to
    fp16 they become inf and the loaded net guesses. Buffers are stored in fp32, parameters in fp16 where finite."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_model("plain20").eval()
    with torch.no_grad():
        model.stem.bn.running_var.fill_(3.5e6)
        model.stages[0][0].residual.conv1.weight[0, 0, 0, 0] = 1e6  # a parameter fp16 cannot hold
    path = ckpt.save_checkpoint(tmp_path, "plain20", model, dict(CONFIG, model="plain20"), HISTORY, METRICS)
    stored = load_file(path / "model.safetensors")
    assert stored["stem.bn.running_var"].dtype == torch.float32 and stored["stem.bn.running_var"][0] == 3.5e6
    assert stored["stages.0.0.residual.conv1.weight"].dtype == torch.float32  # the cast would overflow: kept fp32
    assert stored["stages.0.1.residual.conv1.weight"].dtype == torch.float16  # the rest: fp16
    loaded = load_pretrained(path).state_dict()
    for k, v in model.state_dict().items():  # fp32 where stored so, fp16 rounding elsewhere; nothing inf
        half = stored[k].dtype == torch.float16
        torch.testing.assert_close(loaded[k], v, rtol=1e-3 if half else 0, atol=1e-6 if half else 0)
    assert torch.isfinite(load_pretrained(path)(torch.randn(4, 3, 32, 32))).all()


def test_load_by_name_from_the_default_folder(saved, monkeypatch):
    _, path = saved
    monkeypatch.setenv("RESNET_CHECKPOINTS", str(path.parent))
    loaded = load_pretrained("resnet20")
    assert not loaded.training
    # What the file holds, read directly (fp16 weights, fp32 BN statistics) into a fresh net in eval mode.
    from safetensors.torch import load_file

    expected = build_model("resnet20")
    expected.load_state_dict({k: v.float() for k, v in load_file(path / "model.safetensors").items()})
    expected.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected(x))
        assert not torch.allclose(build_model("resnet20").eval()(x), expected(x), atol=1e-3)  # another net differs
    with pytest.raises(CheckpointError) as missing:
        load_pretrained("resnet32")
    assert str(missing.value) == (f"no checkpoint folder resnet32 (looked in {path.parent}); train one with "
                                  f"`python train.py --model resnet32 --out {path.parent}`")


def test_a_missing_checkpoint_names_the_folder_searched_and_what_to_do(tmp_path, monkeypatch, capsys):
    """The plain path, the folder actually searched (a path's own, a name's in the checkpoints folder), and a
    command to train it only where the name is a model the registry knows; else the checkpoints that are there."""
    from resnet_core import landscape

    root = tmp_path / "ck"
    for name in ("resnet20", "plain20-15ep", ".hidden"):
        (root / name).mkdir(parents=True)
    (root / "notes.txt").write_text("not a checkpoint")
    monkeypatch.setattr(ckpt, "REPO_ROOT", tmp_path / "repo")  # the default folder, as if this were the repo
    monkeypatch.delenv("RESNET_CHECKPOINTS", raising=False)

    def message(name_or_path) -> str:
        with pytest.raises(CheckpointError) as missing:
            ckpt.resolve_checkpoint(name_or_path)
        return str(missing.value)

    default = tmp_path / "repo" / "checkpoints"
    assert message("resnet56") == (f"no checkpoint folder resnet56 (looked in {default}); "
                                   "train one with `python train.py --model resnet56`")  # train.py's --out default
    assert message(root / "nosuch") == (f"no checkpoint folder {root / 'nosuch'} (looked in {root}); nosuch is no "
                                        "model this project knows; checkpoints there: plain20-15ep, resnet20")
    assert message(str(tmp_path / "gone" / "plain20-15ep")) == (
        f"no checkpoint folder {tmp_path / 'gone' / 'plain20-15ep'} (looked in {tmp_path / 'gone'}); plain20-15ep "
        "is no model this project knows; there are no checkpoints there")
    monkeypatch.chdir(tmp_path)  # a relative path: looked for from here, then under the checkpoints folder
    assert message(Path("ck") / "resnet110") == (f"no checkpoint folder ck/resnet110 (looked in ck, {default / 'ck'});"
                                                 " train one with `python train.py --model resnet110 --out ck`")
    assert ckpt.resolve_checkpoint(Path("ck") / "resnet20") == Path("ck") / "resnet20"

    # The command line of the review's finding: one line, the plain path, the folder searched, nothing to train.
    assert landscape.main(["--checkpoints", str(root), "--model", "nosuch", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (f"error: no checkpoint folder {root / 'nosuch'} (looked in {root}); nosuch is "
                                       "no model this project knows; checkpoints there: plain20-15ep, resnet20\n")


def test_a_crash_while_saving_keeps_the_old_checkpoint(saved, monkeypatch):
    model, path = saved
    before = (path / "model.safetensors").read_bytes()

    def crash(p, obj):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "atomic_write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path.parent, "resnet20", build_model("resnet20"), CONFIG, HISTORY, METRICS)
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["resnet20"]  # no temp folder left behind
    assert read_checkpoint(path).name == "resnet20"


def test_atomic_writes_reach_the_disk_before_their_rename_and_the_rename_after(tmp_path, monkeypatch):
    """The order that lets a resumable state survive a crash of the machine, not only of the process: the new file's
    data is synced, then renamed into place, then the folder (its new name) is synced, before anyone deletes the
    previous state. Seen here as the sequence of fsync and rename calls."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("rename", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    ckpt.atomic_save_tensors(tmp_path / "state-1.safetensors", {"w": torch.ones(3)})
    ckpt.atomic_write_json(tmp_path / "state.json", {"tensors": "state-1.safetensors"})
    assert [(what, name if what == "rename" or name == tmp_path.name else "temp") for what, name in calls] == [
        ("fsync", "temp"), ("rename", "state-1.safetensors"), ("fsync", tmp_path.name),
        ("fsync", "temp"), ("rename", "state.json"), ("fsync", tmp_path.name)]


def test_a_publish_killed_between_its_two_renames_is_undone(saved, monkeypatch):
    """Killed after moving the old checkpoint aside and before renaming the new one into place: out/ holds no
    resnet20, only .resnet20.old and a .resnet20.tmp-*. The next save (or the trainer's start) moves the old one back
    first, instead of deleting it as a leftover; temp folders and files untouched for long go, a fresh one (another
    run publishing right now) stays."""
    _, path = saved
    root, before = path.parent, (path / "model.safetensors").read_bytes()
    shutil.copytree(path, root / ".resnet20.tmp-killed")
    path.rename(root / ".resnet20.old")
    (root / ".resnet20.old" / ".metrics.json.x1.tmp").write_text("{")  # an atomic write killed earlier
    shutil.copytree(root / ".resnet20.old", root / ".resnet20.tmp-now")
    for old in (root / ".resnet20.tmp-killed", root / ".resnet20.old" / ".metrics.json.x1.tmp"):
        os.utime(old, (0, 0))
    assert ckpt.recover_checkpoint(root, "resnet20") == (
        f"{path}: restored the checkpoint that a publish killed halfway had moved aside to .resnet20.old")
    assert sorted(p.name for p in root.iterdir()) == [".resnet20.tmp-now", "resnet20"]
    assert (path / "model.safetensors").read_bytes() == before and read_checkpoint(path).name == "resnet20"
    assert not (path / ".metrics.json.x1.tmp").exists() and ckpt.recover_checkpoint(root, "resnet20") is None

    (root / "resnet20").rename(root / ".resnet20.old")  # killed again; this time the next save comes first

    def crash(p, obj):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "atomic_write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(root, "resnet20", build_model("resnet20"), CONFIG, HISTORY, METRICS)
    assert (path / "model.safetensors").read_bytes() == before and not (root / ".resnet20.old").exists()


def test_save_without_weights(tmp_path):
    """A checkpoint published without its weights says how to train them again: the recorded command without
    what belonged to that sitting (its paths, its stop, --resume, --overwrite, and --no-weights itself)."""
    command = ("python train.py --depth 34 --both --recipe seed --no-weights --out /tmp/x/ckpt --state-dir=/tmp/x/runs "
               "--data-dir /root/data --time-budget 9 --resume --overwrite --device cuda")
    path = ckpt.save_checkpoint(tmp_path, "resnet34", None, dict(CONFIG, model="resnet34", command=command),
                                HISTORY, METRICS)
    assert not (path / "model.safetensors").exists() and not read_checkpoint(path).has_weights
    again = "python train.py --depth 34 --both --recipe seed --device cuda"
    # under its own model's name: the new run replaces these curves, which the trainer does only when told, and
    # trains this net alone, so that the --overwrite replaces nothing of plain34, trained beside it
    alone = "python train.py --recipe seed --device cuda --model resnet34 --overwrite"
    assert ckpt.regenerate_command(read_checkpoint(path).config) == alone
    assert ckpt.regenerate_command(read_checkpoint(path).config, "resnet34") == alone
    # kept under another name (a short run beside a longer one that took its model's name): published elsewhere
    assert ckpt.regenerate_command(read_checkpoint(path).config, "resnet34-15ep") == \
        "python train.py --recipe seed --device cuda --model resnet34 --out regenerated"
    assert ckpt.regenerate_command(dict(read_checkpoint(path).config, has_weights=True), "resnet34-15ep") == \
        again + " --out regenerated"  # with its weights: the command as it ran, published elsewhere
    assert ckpt.regenerate_command(dict(read_checkpoint(path).config, has_weights=True), "resnet34") == \
        again + " --out regenerated"  # under its own name too: beside it, to compare, not over it
    renamed = shutil.copytree(path, tmp_path / "resnet34-15ep")
    assert read_checkpoint(renamed).regenerate_note() == ("It publishes into `regenerated/resnet34`: move that folder "
                                                          "into this checkpoints folder as `resnet34-15ep`, in place "
                                                          "of this one.")
    assert read_checkpoint(path).regenerate_note() == ""
    with pytest.raises(CheckpointError, match=f"model.safetensors: file is missing.*`{alone}`"):
        load_pretrained(path)
    card = (path / "README.md").read_text()
    assert "not bundled (too large); regenerate them with the command below." in card
    assert f"\n    {alone}\n" in card and "load_pretrained" not in card
    assert ckpt.regenerate_command({}) == "python train.py --out regenerated"
    assert ckpt.regenerate_command(dict(command="python train.py --depth 'unclosed")) == "python train.py --depth 'unclosed"


@pytest.mark.parametrize("command", [5, ["python", "train.py"], {"a": 1}])
def test_a_command_that_is_no_text_is_read_as_none_recorded(saved, command):
    """A hand edit that leaves config.json's command a number, list or object: the command is rebuilt as for a
    config without one, never an AttributeError out of shlex on a page or in load_pretrained."""
    _, path = saved
    ckpt.atomic_write_json(path / "config.json", dict(read_checkpoint(path).config, command=command))
    assert read_checkpoint(path).regenerate_command() == "python train.py --out regenerated"
    (path / "model.safetensors").unlink()
    assert read_checkpoint(path).regenerate_command() == "python train.py --model resnet20 --overwrite"
    with pytest.raises(CheckpointError, match="file is missing .*`python train.py --model resnet20 --overwrite`"):
        load_pretrained(path)


def test_train_refuses_abbreviated_options():
    """Recorded commands are read back by full option names, so train.py takes no abbreviations."""
    import train
    with pytest.raises(SystemExit):
        train.parse_args(["--depth", "20", "--time", "9"])


def damage_truncate(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def damage_wrong_model(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, model="resnet32"))


def damage_unknown_model(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, model="resnet21"))


def damage_bad_json(path):
    (path / "metrics.json").write_text("{ not json")


def damage_no_config(path):
    (path / "config.json").unlink()


def damage_garbage_weights(path):
    (path / "model.safetensors").write_bytes(b"\x00" * 100)


def damage_tensor(path, name, value):
    weights = path / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(dict(state, **{name: value(state[name])}), str(weights), metadata=metadata)


def damage_shape(path):
    damage_tensor(path, "fc.weight", lambda w: w[:3])


def damage_nan(path):
    damage_tensor(path, "stages.1.0.residual.conv1.weight", lambda w: w.index_fill(0, torch.tensor([1]), float("nan")))


def damage_overflow(path):  # finite in float64, inf in the net's float32
    damage_tensor(path, "fc.weight", lambda w: w.double().index_fill(0, torch.tensor([0]), 1e300))


def damage_negative_variance(path):  # finite, but BatchNorm takes its square root
    damage_tensor(path, "stem.bn.running_var", lambda v: v.index_fill(0, torch.tensor([2]), -1.0))


def damage_dtype(path):
    damage_tensor(path, "fc.weight", lambda w: w > 0)


def damage_float8(path):
    damage_tensor(path, "fc.weight", lambda w: w.to(torch.float8_e4m3fn))  # torch.isfinite has no float8 kernel


def damage_counter(path):
    damage_tensor(path, "stages.0.0.residual.bn1.num_batches_tracked", lambda n: n.float())


def damage_classes(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, arch={"num_classes": 10**13}))


def damage_imagenet(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, model="imagenet-resnet18"))


def damage_zero_std(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, normalization={"mean": [0.5] * 3, "std": [0.2, 0, 0.2]}))


def damage_tiny_std(path):  # 0 in float32
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, normalization={"mean": [0.5] * 3, "std": [1e-50] * 3}))


def damage_huge_mean(path):  # inf in float32
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, normalization={"mean": [1e300] * 3, "std": [0.25] * 3}))


def damage_deep_json(path):
    (path / "config.json").write_text("[" * 100_000 + "]" * 100_000)


def damage_huge_integer(path):
    (path / "config.json").write_text('{"model": "resnet20", "wall_time_s": ' + "9" * 5000 + "}")


def damage_huge_json(path):
    with open(path / "config.json", "wb") as f:
        f.truncate(ckpt.MAX_JSON_BYTES + 1)  # sparse: no 16 MiB written


def damage_normalization(path):
    ckpt.atomic_write_json(path / "config.json", dict(CONFIG, normalization={"mean": [0.5], "std": [0.2]}))


@pytest.mark.parametrize("damage,file,message", [
    (damage_truncate, "model.safetensors", "not a readable safetensors"),
    (damage_garbage_weights, "model.safetensors", "not a readable safetensors"),
    (damage_wrong_model, "model.safetensors", "does not match resnet32"),
    (damage_unknown_model, "config.json", "unknown model 'resnet21'"),
    (damage_no_config, "config.json", "file is missing"),
    (damage_shape, "model.safetensors", r"tensor fc.weight has shape \(3, 64\), resnet20 expects \(10, 64\)"),
    (damage_nan, "model.safetensors", "tensor stages.1.0.residual.conv1.weight holds NaN or infinite values"),
    (damage_overflow, "model.safetensors", r"tensor fc.weight holds NaN or infinite values \(in float32, as the net"),
    (damage_negative_variance, "model.safetensors", "tensor stem.bn.running_var holds a negative variance"),
    (damage_dtype, "model.safetensors", "tensor fc.weight is bool, not 16-, 32- or 64-bit floating point"),
    (damage_float8, "model.safetensors", "tensor fc.weight is float8_e4m3fn, not 16-, 32- or 64-bit floating point"),
    (damage_counter, "model.safetensors", r"tensor stages.0.0.residual.bn1.num_batches_tracked is float32, not whole numbers"),
    (damage_classes, "config.json", "arch gives 10000000000000 classes, not CIFAR-10's 10"),
    (damage_imagenet, "config.json", "imagenet-resnet18 is an ImageNet net; the explorer reads CIFAR-10 checkpoints"),
    (damage_normalization, "config.json", "normalization is not a mean and a std of three numbers each"),
    (damage_zero_std, "config.json", "normalization is not a mean and a std of three numbers each"),
    (damage_tiny_std, "config.json", "normalization is not .*, finite in float32 and the std above 0"),
    (damage_huge_mean, "config.json", "normalization is not .*, finite in float32 and the std above 0"),
    (damage_deep_json, "config.json", "not readable JSON \\(RecursionError"),
    (damage_huge_integer, "config.json", "not readable JSON \\(ValueError: Exceeds the limit"),
    (damage_huge_json, "config.json", "config.json: 16 MiB, larger than any checkpoint file \\(16 MiB at most\\)$"),
])
def test_damaged_checkpoints_raise_naming_the_file(saved, damage, file, message):
    _, path = saved
    damage(path)
    with pytest.raises(CheckpointError, match=message) as e:
        load_pretrained(path)
    assert str(path / file) in str(e.value)


def test_weights_that_predict_nan_are_listed_and_refused_at_load_as_nan_ones_are(saved):
    """Damaged weights are found when loaded (listing reads no weights): the folder stays listed, and the page that
    loads it shows the CheckpointError (pages.common.load_model). A normalization float32 cannot hold is in
    config.json, which listing reads: that folder is left out with its reason."""
    _, path = saved
    for name, damage in (("overflow", damage_overflow), ("negative-var", damage_negative_variance),
                         ("tiny-std", damage_tiny_std), ("huge-mean", damage_huge_mean)):
        damage(shutil.copytree(path, path.parent / name))
    good, bad = list_checkpoints(path.parent)
    assert [c.name for c in good] == ["negative-var", "overflow", "resnet20"]
    assert set(bad) == {"tiny-std", "huge-mean"} and all("finite in float32" in why for why in bad.values())
    for info in good[:2]:
        with pytest.raises(CheckpointError, match=f"{info.path / 'model.safetensors'}: tensor "):
            load_pretrained(info.path)


def test_a_plain_nets_weights_in_a_residual_nets_folder_are_refused(saved, tmp_path):
    """plain20 and resnet20 with option-A shortcuts have the same tensors: only the file's metadata, which
    save_checkpoint writes, tells whose weights they are. A file without that entry (saved by hand) still loads."""
    _, path = saved
    plain = ckpt.save_checkpoint(tmp_path / "plain", "plain20", build_model("plain20"), dict(CONFIG, model="plain20"),
                                 HISTORY, METRICS)
    shutil.copy(plain / "model.safetensors", path / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match resnet20: the file holds plain20's weights") as e:
        load_pretrained(path)
    assert str(path / "model.safetensors") in str(e.value)
    save_file(storage_state(build_model("resnet20")), str(path / "model.safetensors"))
    assert not load_pretrained(path).training


def test_weights_saved_by_hand_with_a_tensor_missing_or_extra_are_refused_by_name(saved):
    """A file without metadata gets no check of whose weights it holds, but still must hold exactly the net's
    tensors: one short or one too many is a CheckpointError naming the key, never a silent partial load."""
    model, path = saved
    state = storage_state(model)
    fc = state.pop("fc.weight")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"does not match resnet20: missing \['fc.weight'\], unexpected \[\]"):
        load_pretrained(path)
    save_file(dict(state, **{"fc.weight": fc, "fc.extra": fc.clone()}), str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \[\], unexpected \['fc.extra'\]"):
        load_pretrained(path)


def test_weights_lost_from_a_checkpoint_that_had_them_print_a_command_that_brings_them_back(saved):
    """config.json says weights were published, the file is gone (a partial copy): the message's command trains the
    net alone with --overwrite, as for a checkpoint published without weights; the guard would refuse it without."""
    _, path = saved
    assert "--overwrite" not in read_checkpoint(path).regenerate_command()  # with its weights, the guard stays
    (path / "model.safetensors").unlink()
    assert read_checkpoint(path).regenerate_command() == "python train.py --model resnet20 --overwrite"  # as pages say
    with pytest.raises(CheckpointError, match=r"file is missing \(config.json says it was published with its weights: "
                                              r"copied only in part\?; .*--model resnet20 --overwrite`"):
        load_pretrained(path)


def test_bundled_checkpoints_are_listed_residual_first_each_kind_by_depth():
    good, bad = list_checkpoints(Path(__file__).resolve().parents[1] / "checkpoints")
    depths = (20, 32, 44, 56, 110)  # by name, plain110 would come before plain20; the 15-epoch runs of the depths
    assert [c.name for c in good] == [n for kind in ("resnet", "plain") for d in depths  # trained to the paper's recipe
                                      for n in ([f"{kind}{d}"] + ([f"{kind}{d}-15ep"] if d in (20, 56) else []))] and bad == {}  # beside


def test_list_checkpoints_reports_the_unreadable_and_keeps_the_rest(saved):
    _, path = saved
    shutil.copytree(path, path.parent / "plain20")
    ckpt.atomic_write_json(path.parent / "plain20" / "config.json", dict(CONFIG, model="plain20"))
    damage_bad_json(path)
    good, bad = list_checkpoints(path.parent)
    assert [c.name for c in good] == ["plain20"]
    assert list(bad) == ["resnet20"] and "metrics.json: not readable JSON" in bad["resnet20"]


@pytest.mark.parametrize("file,content,message", [
    ("config.json", dict(CONFIG, model="resnet21"), "unknown model 'resnet21'"),
    ("metrics.json", dict(METRICS, confusion_matrix=[[1, 2], [3, 4]]), "confusion_matrix is not 10x10 counts"),
    ("history.json", {"layers": ["a"], "records": [{"epoch": 1, "grad_norms": [1.0, 2.0]}]}, "2 gradient norms for 1 layers"),
    ("history.json", {"layers": [], "records": [{"iteration": 1}]}, "a record without an epoch"),
    # Values of the wrong type, as a hand edit would leave them: refused here, not inside a chart.
    ("config.json", dict(CONFIG, recipe="fast"), "recipe is not an object with a whole number of iterations"),
    ("config.json", dict(CONFIG, recipe={"iterations": "64k"}), "recipe is not an object"),
    ("config.json", dict(CONFIG, normalization={"mean": [0.5], "std": [0.2, 0.2, 0.2]}), "normalization is not"),
    ("config.json", dict(CONFIG, wall_time_s="20 min"), "wall_time_s is not a number of seconds"),
    ("config.json", dict(CONFIG, arch={"shortcut": "C"}), "arch {'shortcut': 'C'} is not a shortcut option"),
    ("config.json", dict(CONFIG, arch={"width": 2}), "is not a shortcut option"),
    ("config.json", dict(CONFIG, model="plain20", arch={"shortcut": "B"}), "residual nets only"),
    ("config.json", dict(CONFIG, arch={"num_classes": -1}), "arch gives -1 classes, not CIFAR-10's 10"),
    ("config.json", dict(CONFIG, arch={"num_classes": 10.0}), "arch gives 10.0 classes, not CIFAR-10's 10"),
    ("config.json", dict(CONFIG, wall_time_s=10**400), "wall_time_s is not a number of seconds"),  # no float holds it
    ("config.json", dict(CONFIG, model="imagenet-plain34"), "imagenet-plain34 is an ImageNet net"),
    ("config.json", dict(CONFIG, normalization={"mean": [0.5] * 3, "std": [0.2, 0.2, -1]}), "normalization is not"),
    ("history.json", {"layers": [], "records": [{"epoch": 1, "test_error": "zz"}]}, "epoch 1: test_error not a number"),
    ("history.json", {"layers": ["a"], "records": [{"epoch": 1, "grad_norms": ["x"]}]}, "grad_norms is not a list of numbers"),
    ("history.json", {"layers": "a", "records": [{"epoch": 1}]}, "layers is not a list of layer names"),
    ("metrics.json", dict(METRICS, test_error="abc"), "test_error not a number"),
    ("metrics.json", dict(METRICS, test_error=None), "test_error not a number"),
    ("metrics.json", dict(METRICS, train_loss_clean=[1]), "train_loss_clean not a number"),
    ("metrics.json", dict(METRICS, confusion_matrix=[["x"] * 10] * 10), "confusion_matrix is not 10x10 counts"),
    ("metrics.json", dict(METRICS, response_std=[{"layer": "a"}]), "response_std is not a list of records"),
    ("metrics.json", dict(METRICS, response_std=[dict(layer="a", index=1, std=0.5, channel_std="0.4")]),
     "response_std is not a list of records"),
    ("metrics.json", dict(METRICS, epochs_to_90="never"), "epochs_to_90 is not a whole number"),
    ("metrics.json", dict(METRICS, test_images="20"), "test_images is '20', not a count of test images from 1 to 10,000"),
    ("metrics.json", dict(METRICS, test_images=20.0), "test_images is 20.0, not a count"),
    ("metrics.json", dict(METRICS, test_images=[20]), "test_images is \\[20\\], not a count"),
    ("metrics.json", dict(METRICS, test_images=True), "test_images is True, not a count"),
    ("metrics.json", dict(METRICS, test_images=0), "test_images is 0, not a count"),
    ("metrics.json", dict(METRICS, test_images=10_001), "test_images is 10001, not a count"),
    ("metrics.json", dict(METRICS, train_images=-5), "train_images is -5, not a count of train images from 1 to 50,000"),
    ("metrics.json", dict(METRICS, confident_mistakes={"index": 3}), "confident_mistakes is not a list"),
    ("metrics.json", dict(METRICS, confident_mistakes=[dict(index=3, true="bird", predicted="cat", probability=1.5,
                                                            true_probability=0.1)]), "confident_mistakes is not a list"),
    ("metrics.json", dict(METRICS, confident_mistakes=[dict(index=-1, true="bird", predicted="cat", probability=0.5,
                                                            true_probability=0.1)]), "confident_mistakes is not a list"),
    ("metrics.json", dict(METRICS, confident_mistakes=[dict(index=3, true="bird", predicted="dragon",
                                                            probability=0.5, true_probability=0.1)]),
     "confident_mistakes is not a list"),
])
def test_inconsistent_checkpoints_are_unreadable(saved, file, content, message):
    _, path = saved
    ckpt.atomic_write_json(path / file, content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_a_number_too_large_for_a_float_is_refused(saved):
    """1e999 in a hand-written file reads as an infinite float (our writer stores an overflow as null)."""
    _, path = saved
    (path / "metrics.json").write_text(ckpt.to_json(METRICS).replace('"test_error": ', '"test_error": 1e999, "was": '))
    with pytest.raises(CheckpointError, match="test_error not a number"):
        read_checkpoint(path)


def test_stored_precision_reads_the_file_header(tmp_path):
    model = build_model("resnet20")
    folder = tmp_path / "ck"
    folder.mkdir()
    assert stored_precision(folder) == ""  # no weights
    save_file(storage_state(model), str(folder / "model.safetensors"))
    assert stored_precision(folder) == "fp16, BN statistics fp32"  # what save_checkpoint publishes
    save_file({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    assert stored_precision(folder) == "fp16"  # checkpoints published before the statistics were kept in fp32
    assert "Weights: `model.safetensors` (fp16).\n" in ckpt.model_card(CONFIG, METRICS, stored_precision(folder))


def test_stored_precision_of_a_damaged_file_names_it(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as e:
        stored_precision(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(e.value)


def test_no_value_of_the_wrong_type_reaches_the_app(tiny_checkpoints, tmp_path):
    """Each top-level value of the three files (and each of a history record's and the recipe's), replaced in
    turn by a value of another type: read_checkpoint refuses the folder, or every frame the app draws from it
    is built without an exception."""
    import copy
    import inspect
    import json

    from resnet_core import zoo

    frames = [f for name, f in inspect.getmembers(zoo, inspect.isfunction) if f.__module__ == zoo.__name__
              and list(inspect.signature(f).parameters)[:1] == ["infos"] and not name.startswith("short_run")]
    folder = shutil.copytree(tiny_checkpoints / "resnet20", tmp_path / "resnet20")
    other = read_checkpoint(tiny_checkpoints / "plain20")
    for file in ("config.json", "history.json", "metrics.json"):
        original = json.loads((folder / file).read_text())
        places = [(k,) for k in original] + [("records", 0, k) for k in original.get("records", [{}])[0]] + \
                 [("recipe", k) for k in original.get("recipe", {})]
        for place in places:
            for bad in ("x", [], {}, None, -1, True, {"shortcut": "B", "x": 1}):
                damaged = copy.deepcopy(original)
                parent = damaged
                for key in place[:-1]:
                    parent = parent[key]
                parent[place[-1]] = bad
                (folder / file).write_text(json.dumps(damaged))
                try:
                    info = read_checkpoint(folder)
                except CheckpointError:
                    continue
                for frame in frames:
                    try:
                        frame([info, other])
                    except Exception as e:  # noqa: BLE001 - any exception is the failure under test
                        pytest.fail(f"{file} {place} = {bad!r}: {frame.__name__} raised {e!r}")
        (folder / file).write_text(json.dumps(original))


def test_overflowed_values_are_read_as_not_recorded(tiny_checkpoints, tmp_path):
    """A deep plain net's eval-mode responses and gradients can overflow; JSON stores inf and NaN as null. Such a
    checkpoint is the trainer's own output: it is read, and every frame is drawn, with the value missing."""
    import inspect
    import json

    from resnet_core import zoo

    folder = shutil.copytree(tiny_checkpoints / "plain20", tmp_path / "plain20")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["response_std"][0]["std"] = None
    metrics["test_loss"] = None
    (folder / "metrics.json").write_text(json.dumps(metrics))
    history = json.loads((folder / "history.json").read_text())
    history["records"][0]["grad_norms"][0] = None
    (folder / "history.json").write_text(json.dumps(history))
    history["records"][0]["train_loss"] = float("inf")  # Python's json.dump writes Infinity, which JSON lacks
    history["records"][-1]["test_loss"] = float("nan")
    (folder / "history.json").write_text(json.dumps(history))
    records = read_checkpoint(folder).history["records"]
    assert records[0]["train_loss"] is None and records[-1]["test_loss"] is None  # read as our writer stores them
    infos = [read_checkpoint(folder), read_checkpoint(tiny_checkpoints / "resnet20")]
    for name, frame in inspect.getmembers(zoo, inspect.isfunction):
        if frame.__module__ == zoo.__name__ and list(inspect.signature(frame).parameters)[:1] == ["infos"] \
                and not name.startswith("short_run"):
            frame(infos)


def test_model_card_gives_the_recipe_and_the_command(tiny_checkpoints):
    """Each published folder's README says how it was trained, in a command that runs on a fresh machine."""
    card = (tiny_checkpoints / "resnet20" / "README.md").read_text()
    recipe = read_checkpoint(tiny_checkpoints / "resnet20").config["recipe"]
    assert f"SGD with momentum {recipe['momentum']} and weight decay {recipe['weight_decay']}; lr {recipe['lr']}" in card
    command = next(line.strip() for line in card.splitlines() if line.startswith("    python train.py"))
    assert "--model resnet20 plain20 --epochs 2 --limit-train 64 --limit-test 50 --batch-size 16 --device cpu" in command
    assert "--state-dir" not in command and "--data-dir" not in command and str(tiny_checkpoints) not in command
    # published beside this one, not over it: in checkpoints/, the trainer would refuse (the guard, untold)
    assert command.endswith(" --out regenerated") and command.count("--out") == 1
    assert "It publishes into `regenerated/resnet20`, not over this folder." in card
    assert "Load with `resnet_core.load_pretrained" in card
    assert "Weights: `model.safetensors` (fp16, BN statistics fp32)." in card  # what the file holds, read back
    # 8 iterations: the card says it is no paper-length run (on the Hub it would otherwise read as a reproduction)
    assert "| iterations | 8 (batch 16); a short run, under 1 % of the paper's 64,000: its errors are not Table 6's |" in card
    full = ckpt.model_card(dict(CONFIG, recipe=dict(recipe, iterations=64_000)), {}, "fp16")
    assert "| iterations | 64,000 (batch 16) |" in full
    unknown = ckpt.model_card(dict(CONFIG, recipe=dict(recipe, iterations=None)), {}, "fp16")  # read_checkpoint allows it
    assert "| iterations | unknown (batch 16) |" in unknown
    bf16 = ckpt.model_card(dict(CONFIG, command="python train.py --depth 20 --cpu-bf16 --out x"), {}, "fp16")
    assert "    python train.py --depth 20 --cpu-bf16 --out regenerated\n" in bf16
    assert "`--cpu-bf16` is faster only on a CPU with AVX-512 BF16 or AMX" in bf16 and "AMX" not in card
    milestones = " and ".join(f"{m:,}" for m in recipe["milestones"])
    assert f"multiplied by 0.1 at iterations {milestones}." in card


def test_recipe_in_words_says_only_what_is_recorded():
    paper = dict(momentum=0.9, weight_decay=1e-4, lr=0.1, gamma=0.1, milestones=[32_000, 48_000],
                 warmup_iters=400, warmup_lr=0.01)
    assert ckpt.recipe_words(paper) == ("SGD with momentum 0.9 and weight decay 0.0001; lr 0.1, multiplied by 0.1 at "
                                        "iterations 32,000 and 48,000; warm-up at lr 0.01 for 400 iterations")
    assert ckpt.recipe_words(dict(paper, milestones=[1, 2, 3], warmup_iters=0)).endswith("iterations 1, 2 and 3")
    assert ckpt.recipe_words(dict(lr=0.05, milestones=[])) == "lr 0.05, constant"
    assert ckpt.recipe_words({}) == "not recorded"
