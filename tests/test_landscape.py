"""Loss landscapes: filter-normalised directions, grid contracts, exact restoration, the CLI end to end."""
import itertools
import json
import re

import pytest
import torch
import torch.nn as nn

from resnet_core import build_model, load_pretrained
from resnet_core.checkpoint import save_checkpoint
from resnet_core.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from resnet_core.landscape import grid_values, landscape_1d, landscape_2d, main, random_direction, read_landscape
from resnet_core.probes import evaluate


@pytest.fixture(scope="module")
def batch():
    """Twelve random images (12, 32, 32, 3) uint8 and labels (12,)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (12, 32, 32, 3), generator=g, dtype=torch.uint8), torch.randint(0, 10, (12,), generator=g)


def snapshot(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers


def assert_same_state(model, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_direction_is_filter_normalised(model):
    params = dict(model.named_parameters())
    d = random_direction(model, torch.Generator().manual_seed(0))
    assert d.keys() == params.keys()
    assert all(d[k].shape == p.shape for k, p in params.items())
    for name, w in params.items():
        if w.dim() > 1:  # conv and fc weights: every filter as long as the trained one
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1))
        else:
            assert not d[name].any(), name
    zeroed = [f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d) for p in ("weight", "bias")]
    assert len(zeroed) == 2 * 19 and not any(d[k].any() for k in zeroed + ["fc.bias"])


def test_direction_is_deterministic_per_seed(model):
    def draw(seed):
        return random_direction(model, torch.Generator().manual_seed(seed))
    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.conv.weight"], c["stem.conv.weight"])


def test_grid_values_are_symmetric_with_an_exact_centre():
    assert grid_values(5, 2.0) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert grid_values(21, 1.0)[10] == 0.0


def test_grids_and_centre_match_evaluate(model, batch):
    images, labels = batch
    one = landscape_1d(model, images, labels, CIFAR10_MEAN, CIFAR10_STD, steps=5, span=0.5, batch_size=5)
    two = landscape_2d(model, images, labels, CIFAR10_MEAN, CIFAR10_STD, steps=3, span=0.5, batch_size=5)
    assert [r["alpha"] for r in one] == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert all(r.keys() == {"alpha", "loss", "error"} for r in one)
    assert [(r["alpha"], r["beta"]) for r in two] == list(itertools.product([-0.5, 0.0, 0.5], repeat=2))
    direct = evaluate(model, images, labels, torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD))
    for centre in (one[2], two[4]):
        assert abs(centre["loss"] - direct["test_loss"]) < 1e-5
        assert abs(centre["error"] - direct["test_error"]) < 1e-5
    # Same seed, same first direction: the 1-D slice is the beta = 0 row of the surface.
    row = [r for r in two if r["beta"] == 0.0]
    assert [r["loss"] for r in row] == pytest.approx([one[0]["loss"], one[2]["loss"], one[4]["loss"]], rel=1e-6)
    assert len({r["loss"] for r in two}) == 9  # every point really moved the weights


def test_weights_buffers_and_mode_restored(model, batch):
    images, labels = batch
    model.train()  # also checks BN running statistics stay put and the mode comes back
    before = snapshot(model)
    try:
        landscape_2d(model, images, labels, CIFAR10_MEAN, CIFAR10_STD, steps=3)
        assert model.training
        assert_same_state(model, before)
    finally:
        model.eval()


def test_weights_restored_after_an_error_midway(batch, monkeypatch):
    images, labels = batch
    torch.manual_seed(0)
    model = build_model("plain20").eval()
    before = snapshot(model)
    calls = []

    def fail_on_third_call(x):
        calls.append(1)
        if len(calls) == 3:  # inside the third point, while its perturbed weights are in the model
            raise RuntimeError("boom")
        return nn.Linear.forward(model.fc, x)

    monkeypatch.setattr(model.fc, "forward", fail_on_third_call)
    with pytest.raises(RuntimeError, match="boom"):
        landscape_2d(model, images, labels, CIFAR10_MEAN, CIFAR10_STD, steps=3)
    assert len(calls) == 3 and not model.training
    assert_same_state(model, before)


def test_cli_end_to_end(tmp_path, shared_cifar, capsys):
    torch.manual_seed(0)
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # not CIFAR-10's: the landscape must use the net's
    config = {"model": "resnet20", "recipe": {"iterations": 1}, "normalization": norm}
    history = {"layers": ["stem.conv"], "records": [{"epoch": 1, "iteration": 1, "test_error": 90.0}]}
    metrics = {"test_error": 90.0, "confusion_matrix": [[1]]}
    path = save_checkpoint(tmp_path, "resnet20", build_model("resnet20"), config, history, metrics)
    assert read_landscape(path) is None

    argv = ["--model", "resnet20", "--checkpoints", str(tmp_path), "--data-dir", str(shared_cifar),
            "--points", "64", "--grid", "3", "--span", "0.5", "--seed", "3", "--device", "cpu"]
    assert main(argv) == 0
    assert "64 training images" in capsys.readouterr().out
    data = read_landscape(path)
    assert {k: data[k] for k in ("model", "points", "grid", "span", "seed", "bn", "augmentation", "precision")} == dict(
        model="resnet20", points=64, grid=3, span=0.5, seed=3, bn="eval", augmentation="none", precision="fp32")
    assert data["direction"] == "filter-normalised gaussian, BN and biases zeroed"
    assert len(data["slice_1d"]) == 3 and len(data["surface_2d"]) == 9 and data["wall_time_s"] > 0
    images, labels = load_cifar10(shared_cifar, "train", limit=64)
    direct = evaluate(load_pretrained(path), images, labels, torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
    assert data["center_loss"] == pytest.approx(direct["test_loss"], abs=1e-5)
    cifar = evaluate(load_pretrained(path), images, labels, torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD))
    assert abs(cifar["test_loss"] - direct["test_loss"]) > 1e-3  # so the check above can tell the two apart
    assert data["center_error"] == pytest.approx(direct["test_error"], abs=1e-5)

    good = (path / "landscape.json").read_text()
    save_checkpoint(tmp_path, "resnet20", build_model("resnet20"), config, history, metrics)  # retrained: new weights
    (path / "landscape.json").write_text(good)  # the old landscape left beside them
    with pytest.raises(ValueError, match="measured on other weights"):
        read_landscape(path)
    (path / "landscape.json").write_text(json.dumps({k: v for k, v in data.items() if k != "weights_sha256"}))
    assert read_landscape(path)["grid"] == 3  # a file from before the digest was recorded: read, unchecked

    (path / "landscape.json").write_text("{not json")
    with pytest.raises(ValueError, match="landscape.json"):
        read_landscape(path)
    (path / "landscape.json").write_text(json.dumps({"model": "resnet20"}))
    with pytest.raises(ValueError, match="no slice_1d or surface_2d"):
        read_landscape(path)
    unchecked = {k: v for k, v in data.items() if k != "weights_sha256"}
    for key, record in [("slice_1d", {"alpha": "0.5", "loss": 1.0, "error": 5.0}),  # values of the wrong type
                        ("surface_2d", {"alpha": 0.0, "loss": 1.0, "error": 5.0}),  # no beta
                        ("slice_1d", {"alpha": 0.0, "loss": [1.0], "error": 5.0}),
                        ("slice_1d", {"alpha": 0.0, "error": 5.0})]:
        (path / "landscape.json").write_text(json.dumps(dict(unchecked, **{key: [record]})))
        with pytest.raises(ValueError, match=f"a {key} record that is not"):
            read_landscape(path)
    (path / "landscape.json").write_text(json.dumps(dict(unchecked, slice_1d=[{"alpha": 0.0, "loss": None,
                                                                                "error": None}])))
    assert read_landscape(path)["slice_1d"][0]["loss"] is None  # an overflowed loss is null, and allowed
    with pytest.raises(SystemExit):
        main(argv + ["--grid", "4"])  # an even grid has no centre point


def test_landscape_frames_for_the_app(tmp_path):
    from resnet_core.checkpoint import CheckpointInfo
    from resnet_core.zoo import landscape_frames

    info = CheckpointInfo("plain20", tmp_path, {"model": "plain20"}, {}, {})
    data = {"grid": 3, "span": 0.5, "seed": 0, "device": "cpu (2 cores)",
            "slice_1d": [{"alpha": a, "loss": 1.0, "error": 50.0} for a in (-0.5, 0.0, 0.5)],
            "surface_2d": [{"alpha": a, "beta": b, "loss": None if a == b == 0.5 else 1.0, "error": 50.0}
                           for a, b in itertools.product([-0.5, 0.0, 0.5], repeat=2)]}
    slices, surface, settings = landscape_frames([(info, data)])
    assert len(slices) == 3 and set(slices["net"]) == {"plain"}
    assert surface["loss"].isna().sum() == 1  # an overflow, written as null, is NaN
    assert (surface["a0"] == surface["alpha"] - 0.25).all() and (surface["b1"] == surface["beta"] + 0.25).all()
    assert settings.loc[0, "parts"] == "1-D slice, 2-D surface" and settings.loc[0, "grid"] == 3
    empty_slices, empty_surface, _ = landscape_frames([(info, {"slice_1d": data["slice_1d"]})])
    assert empty_surface.empty and {"checkpoint", "alpha", "beta", "loss"} <= set(empty_surface.columns)


# A landscape.json as the CLI writes it, in brief: its settings and one slice.
LANDSCAPE = {"model": "resnet20", "points": 64, "grid": 3, "span": 0.5, "seed": 3, "precision": "fp32",
             "direction": "filter-normalised gaussian, BN and biases zeroed", "center_loss": 2.3, "center_error": 90.0,
             "slice_1d": [{"alpha": 0.0, "loss": 2.3, "error": 90.0}]}


@pytest.mark.parametrize("setting, value", [("span", [1]), ("points", {"n": 2000}), ("points", True), ("grid", 3.0),
                                            ("seed", "0"), ("center_loss", "2.3"), ("precision", 16)])
def test_read_landscape_refuses_a_setting_of_the_wrong_type(tmp_path, setting, value):
    """A hand-edited setting the app would fail to show (a list where the span is, a count that is an object) is
    refused like damaged records, naming the setting and the folder to recompute."""
    folder = tmp_path / "resnet20-again"
    folder.mkdir()
    (folder / "landscape.json").write_text(json.dumps(dict(LANDSCAPE, **{setting: value})))
    again = f"python -m resnet_core.landscape --model resnet20-again --checkpoints {tmp_path} --overwrite"
    with pytest.raises(ValueError, match=rf"{setting} is .+, not a .+; recompute it with `{re.escape(again)}`"):
        read_landscape(folder)


def test_read_landscape_reads_settings_left_out_or_null(tmp_path):
    """A file older than a setting lacks it, or holds null: not recorded, read all the same."""
    folder = tmp_path / "resnet20"
    folder.mkdir()
    data = dict(LANDSCAPE, precision=None, center_loss=None)
    del data["points"]
    (folder / "landscape.json").write_text(json.dumps(data))
    assert read_landscape(folder) == data


@pytest.fixture
def no_loading(monkeypatch):
    """The landscape CLI with its model and data loaders replaced by failures: a refusal must come before either."""
    from resnet_core import landscape

    def never(*args, **kwargs):
        raise AssertionError("loaded before the arguments were checked")

    monkeypatch.setattr(landscape, "load_pretrained", never)
    monkeypatch.setattr(landscape, "load_cifar10", never)


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "--device gpu: not a device; use cpu, cuda or cuda:N"),
    (["--points", "0"], "argument --points: 0 is not at least 1"),
    (["--points", "-5"], "argument --points: -5 is not at least 1"),
    (["--batch-size", "0"], "argument --batch-size: 0 is not at least 1"),
    (["--span", "-1"], "argument --span: -1 is not above 0"),
    (["--span", "nan"], "argument --span: nan is not a finite number"),
    (["--span", "inf"], "argument --span: inf is not a finite number"),
    (["--seed", "-1"], "argument --seed: -1 is not at least 0"),
    (["--seed", str(2 ** 64)], f"argument --seed: {2 ** 64} is not below {2 ** 64}"),  # torch.manual_seed's limit
    (["--seed", "1" + "0" * 400], f"argument --seed: 1{'0' * 400} is not below {2 ** 64}"),  # too large for a float
])
def test_cli_refuses_bad_arguments_before_loading(tmp_path, capsys, no_loading, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["--model", "resnet20", "--checkpoints", str(tmp_path), "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"python -m resnet_core.landscape: error: {message}"


def test_cli_refuses_cuda_on_a_machine_without_a_gpu(tmp_path, capsys, monkeypatch, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        main(["--model", "resnet20", "--checkpoints", str(tmp_path), "--device", "cuda"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m resnet_core.landscape: error: --device cuda: no CUDA GPU on this machine; use --device cpu")


def test_cli_keeps_an_existing_landscape_unless_told_to_overwrite(tmp_path, capsys, monkeypatch, no_loading,
                                                                    tiny_landscapes, shared_cifar):
    """A quick trial beside a landscape that took CPU-minutes is refused before anything loads, naming the file and
    --overwrite; with --overwrite it is measured again and replaced."""
    import shutil

    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_landscapes / "resnet20", root / "resnet20")
    path = root / "resnet20" / "landscape.json"
    before = path.read_bytes()
    argv = ["--model", "resnet20", "--checkpoints", str(root), "--data-dir", str(shared_cifar), "--points", "10",
            "--grid", "3", "--device", "cpu"]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.err == f"error: {path} exists; pass --overwrite to replace it\n" and not out.out
    assert path.read_bytes() == before

    monkeypatch.undo()  # the loaders back
    assert main(argv + ["--overwrite"]) == 0
    assert path.read_bytes() != before
    data = read_landscape(root / "resnet20")
    assert (data["points"], data["grid"], len(data["surface_2d"])) == (10, 3, 9)
    assert json.loads(before)["grid"] == 5  # what the fixture measured, now replaced


def test_cli_refuses_a_folder_it_cannot_write_before_loading(tmp_path, capsys, no_loading):
    """Found before the model and the data load, not by the write after up to half an hour of CPU work."""
    (tmp_path / "resnet20" / "landscape.json").mkdir(parents=True)  # where the file goes, a folder
    assert main(["--model", "resnet20", "--checkpoints", str(tmp_path), "--device", "cpu", "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot write {tmp_path / 'resnet20' / 'landscape.json'} (it is a folder); measure a copy of the "
        "checkpoint in a folder that can be written (--checkpoints)\n")


def tiny_landscape(tmp_path, tiny_checkpoints, shared_cifar, *args: str) -> int:
    """The CLI on a copy of the tiny resnet20: 8 training images, the 3-point slice only."""
    import shutil

    shutil.copytree(tiny_checkpoints / "resnet20", tmp_path / "resnet20")
    return main(["--model", "resnet20", "--checkpoints", str(tmp_path), "--data-dir", str(shared_cifar), "--points",
                 "8", "--grid", "3", "--dims", "1", "--device", "cpu", *args])


def test_cli_says_in_one_line_that_the_result_could_not_be_written(tmp_path, capsys, monkeypatch, tiny_checkpoints,
                                                                    shared_cifar):
    """A disk that fills up while it computes: one line naming the file, not a traceback."""
    from resnet_core import landscape

    def disk_full(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(landscape, "atomic_write_json", disk_full)
    assert tiny_landscape(tmp_path, tiny_checkpoints, shared_cifar) == 2
    out = capsys.readouterr()
    assert out.err.splitlines()[-1] == (
        f"error: could not write {tmp_path / 'resnet20' / 'landscape.json'} (No space left on device)")
    assert not out.out and not (tmp_path / "resnet20" / "landscape.json").exists()


def test_cli_summary_takes_the_largest_finite_loss(tmp_path, capsys, tiny_checkpoints, shared_cifar):
    """At a span of 1e30 the weights off the centre overflow: the summary's largest loss is of the points whose loss
    is a number, and it says how many were not (the file records those as null)."""
    assert tiny_landscape(tmp_path, tiny_checkpoints, shared_cifar, "--span", "1e30") == 0
    out = capsys.readouterr().out
    losses = [r["loss"] for r in read_landscape(tmp_path / "resnet20")["slice_1d"]]
    finite = [loss for loss in losses if loss is not None]
    assert len(finite) < len(losses)  # so the line below is tested where it matters
    assert f"max loss {max(finite):.4f} ({len(losses) - len(finite)} not finite), 3 points" in out
