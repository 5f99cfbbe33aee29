"""Explanations: Grad-CAM and saliency contracts (shape, range, no state left), overlays, confident mistakes."""
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from resnet_core import build_model, explain, load_pretrained, read_checkpoint
from resnet_core.checkpoint import atomic_write_json
from resnet_core.data import CIFAR10_STD, load_cifar10
from resnet_core.explain import INFERNO, colormap, confident_mistakes, grad_cam, input_saliency, overlay


@pytest.fixture
def x():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def assert_unit_map(heat: torch.Tensor) -> None:
    assert heat.shape == (32, 32) and not heat.isnan().any()
    assert heat.min() >= 0 and heat.max() <= 1


def assert_no_state_left(model, buffers: dict) -> None:
    assert all(p.grad is None for p in model.parameters())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())


def test_grad_cam_contract(model, x):
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    model.train()  # grad_cam must switch to eval itself, then give the mode back
    try:
        cam, index = grad_cam(model, x)
        assert model.training
    finally:
        model.eval()
    assert_unit_map(cam)
    assert cam.max() == 1 and index == int(model(x).argmax())
    assert grad_cam(model, x, target=3)[1] == 3
    assert_no_state_left(model, buffers)


def test_grad_cam_on_a_constant_input_and_a_flat_map(model):
    cam, _ = grad_cam(model, torch.zeros(1, 3, 32, 32))
    assert_unit_map(cam)
    torch.manual_seed(0)
    blind = build_model("plain20").eval()
    with torch.no_grad():
        blind.fc.weight.zero_()  # every class score ignores the features: d score / d map = 0 everywhere
    cam, _ = grad_cam(blind, torch.randn(1, 3, 32, 32))
    assert_unit_map(cam)
    assert not cam.any()


def test_input_saliency_contract(model, x):
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    saliency = input_saliency(model, x, target=7)
    assert_unit_map(saliency)
    assert saliency.max() == 1
    assert_no_state_left(model, buffers)


class TwoSpots(nn.Module):
    """A net whose Grad-CAM is known: forward_features averages 4x4 blocks of input channels 0 and 1 into an 8x8
    map per channel; class k scores the mean of channel k (k = 0, 1), class 2 minus the mean of channel 0.
    An input with a bright block in channel 0 at one place and in channel 1 at another thus has class 0's
    evidence at the first place, class 1's at the second, and nothing that raises class 2."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))

    def forward_features(self, x):  # (1, 3, 32, 32) -> (1, 2, 8, 8)
        return F.avg_pool2d(x[:, :2], 4)

    def forward_head(self, f):
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


SPOTS = {0: (1, 2), 1: (5, 6)}  # class (= channel) -> (row, column) of its bright block in the 8x8 feature map


def two_spots_input(brightness=(1.0, 3.0)) -> torch.Tensor:
    x = torch.zeros(1, 3, 32, 32)
    for channel, (r, c) in SPOTS.items():
        x[0, channel, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = brightness[channel]
    x[0, 2] = 5.0  # a channel the features ignore
    return x


def test_grad_cam_shows_each_class_its_own_evidence():
    model, x = TwoSpots().eval(), two_spots_input()
    assert int(model(x).argmax()) == 1  # channel 1's spot is the brighter: class 1 is predicted
    for target, (r, c) in SPOTS.items():
        cam, index = grad_cam(model, x, target=target)
        assert index == target
        assert_unit_map(cam)
        peak = divmod(int(cam.argmax()), 32)
        assert (peak[0] // 4, peak[1] // 4) == (r, c), f"class {target}'s map peaks at {peak}, not in block {(r, c)}"
        assert cam[4 * r + 1, 4 * c + 1] == 1  # the middle of its own block is at the top of the scale
        other_r, other_c = SPOTS[1 - target]
        assert cam[4 * other_r:4 * other_r + 4, 4 * other_c:4 * other_c + 4].max() < 1e-6  # not the other spot
    assert grad_cam(model, x)[1] == 1  # no target: the predicted class
    cam, index = grad_cam(model, x, target=2)  # evidence only against class 2: ReLU leaves nothing
    assert index == 2 and not cam.any()


class SharedEvidence(TwoSpots):
    """TwoSpots with class 0 scoring the sum of both channels' means and class 1 channel 0's alone."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))


def test_grad_cam_weighs_the_score_before_the_softmax():
    """Selvaraju et al. take the gradient of the class score y^c, not of its probability: class 0 weighs both channels
    alike, so its map is the features' sum and the two spots keep their brightness ratio, 1 : 3. Through the softmax
    the channels' weights would be p0 p2 and p0 (p1 + p2), and the ratio about 1 : 6 here."""
    cam, index = grad_cam(SharedEvidence().eval(), two_spots_input(), target=0)
    (r0, c0), (r1, c1) = SPOTS[0], SPOTS[1]
    assert index == 0 and cam[4 * r1 + 1, 4 * c1 + 1] == 1
    assert float(cam[4 * r0 + 1, 4 * c0 + 1]) == pytest.approx(1 / 3, rel=1e-5)


class Linear(nn.Module):
    """logits = W . x + b: d score_k / d x = W[k], whatever x is."""

    def __init__(self, classes=4, shape=(3, 8, 8)):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.weight = nn.Parameter(torch.randn(classes, *shape, generator=g))
        self.bias = nn.Parameter(torch.randn(classes, generator=g))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.weight) + self.bias


def test_input_saliency_is_the_gradient_of_the_chosen_class():
    """Saliency of a linear net for class k: |d score / d pixel| = |W[k] / std| (x = (pixel - mean) / std), the
    largest over the three colour channels, min-max scaled to [0, 1] (as input_saliency documents); the std is
    the checkpoint's normalization, CIFAR-10's for a bare net."""
    model = Linear()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))

    def expected(k: int, std) -> torch.Tensor:
        per_pixel = (model.weight[k].detach() / torch.tensor(std).view(3, 1, 1)).abs().amax(dim=0)  # (8, 8)
        return (per_pixel - per_pixel.min()) / (per_pixel.max() - per_pixel.min())

    for k in range(4):
        torch.testing.assert_close(input_saliency(model, x, target=k), expected(k, CIFAR10_STD))
    model.normalization = dict(mean=[0.0] * 3, std=[0.5, 0.05, 2.0])  # as load_pretrained sets it
    for k in range(4):
        torch.testing.assert_close(input_saliency(model, x, target=k), expected(k, [0.5, 0.05, 2.0]))
        assert not torch.allclose(expected(k, [0.5, 0.05, 2.0]), expected(k, [1.0] * 3))  # the std tells
    predicted = int(model(x).argmax())
    torch.testing.assert_close(input_saliency(model, x), input_saliency(model, x, target=predicted))
    assert all(p.grad is None for p in model.parameters())


def test_overlay_sizes_and_blend():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for picture, heat in ((image, torch.rand(32, 32)), (Image.fromarray(image), np.zeros((8, 8)))):
        out = overlay(picture, heat, scale=4)
        assert isinstance(out, Image.Image) and out.size == (128, 128) and out.mode == "RGB"
    plain = np.asarray(overlay(image, np.ones((32, 32)), alpha=0.0))
    assert np.array_equal(plain, image.repeat(8, axis=0).repeat(8, axis=1))  # nearest-neighbour enlargement
    hot = np.asarray(overlay(image, np.ones((32, 32)), alpha=1.0))
    assert (hot == INFERNO[-1]).all()
    np.testing.assert_array_equal(colormap(np.array([0.0, 1.0, 2.0])), INFERNO[[0, -1, -1]])


class FixedLogits(nn.Module):
    """Logits looked up by image: image i is filled with the value i, and mean 0, std 1 make the input i / 255."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", probs.log())

    def forward(self, x):
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


def probability_row(true: int, predicted: int, p: float, q: float) -> list[float]:
    """p on the predicted class, q on the true one (if different), the rest spread evenly."""
    others = 9 if true == predicted else 8
    row = [(1 - p - (0 if true == predicted else q)) / others] * 10
    row[predicted], row[true] = p, (p if true == predicted else q)
    return row


def test_confident_mistakes_sorted_and_correct_ones_left_out():
    # (true, predicted, p, q) per image; images 2 and 5 have the same row: a tie, whatever the rounding
    cases = [(0, 0, 0.99, 0.0), (1, 2, 0.6, 0.3), (2, 3, 0.9, 0.05), (3, 3, 0.95, 0.0), (4, 5, 0.75, 0.2), (2, 3, 0.9, 0.05)]
    model = FixedLogits(torch.tensor([probability_row(t, p, pp, q) for t, p, pp, q in cases]))
    images = torch.arange(len(cases), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 32, 32, 3)
    labels = torch.tensor([t for t, *_ in cases])
    mistakes = confident_mistakes(model, images, labels, (0, 0, 0), (1, 1, 1), batch_size=4)
    assert [m["index"] for m in mistakes] == [2, 5, 4, 1]  # 0.9 tie: the lower index first; 0 and 3 are right
    assert mistakes[0] == pytest.approx(dict(index=2, true="bird", predicted="cat", probability=0.9, true_probability=0.05))
    assert all(m.keys() == {"index", "true", "predicted", "probability", "true_probability"} for m in mistakes)
    assert [m["index"] for m in confident_mistakes(model, images, labels, (0, 0, 0), (1, 1, 1), k=2)] == [2, 5]
    assert all(math.isclose(m["probability"], cases[m["index"]][2], rel_tol=1e-5) for m in mistakes)

    # Sure mistakes: 1 - p is 1e-9 and 1e-12, below fp32's resolution at 1 (both round to 1.0 there); the surer
    # one (image 1) ranks first, not the lower index.
    sure = torch.full((2, 10), -40.0, dtype=torch.float64)
    sure[0, 1], sure[1, 2] = 0.0, 0.0
    sure[0, 0], sure[1, 0] = math.log(1e-9), math.log(1e-12)  # true class 0: its probability
    found = confident_mistakes(FixedLogits(sure.exp().float()), images[:2], torch.tensor([0, 0]), (0, 0, 0), (1, 1, 1))
    assert [m["index"] for m in found] == [1, 0] and all(m["probability"] == pytest.approx(1.0) for m in found)

    probs = torch.tensor([probability_row(t, p, pp, q) for t, p, pp, q in cases])
    probs[2, 0] = float("nan")  # overflowed logits: no probability to rank the image by
    probs[4, :] = float("inf")
    found = confident_mistakes(FixedLogits(probs), images, labels, (0, 0, 0), (1, 1, 1))
    assert [m["index"] for m in found] == [5, 1] and all(math.isfinite(m["probability"]) for m in found)


def test_record_mistakes_fills_in_a_checkpoint_published_without_them(tiny_checkpoints, shared_cifar, tmp_path,
                                                                      monkeypatch):
    """The CLI for checkpoints published before the trainer recorded their mistakes: it measures them with the
    stored weights, exactly as the app would live, and keeps the rest of metrics.json."""
    # What is recorded is under test, not the search's size: the first 500 test images stand in for all 10,000.
    monkeypatch.setattr(explain, "load_cifar10", lambda folder, split: load_cifar10(folder, split, limit=500))
    folder = shutil.copytree(tiny_checkpoints / "plain20", tmp_path / "plain20")
    metrics = read_checkpoint(folder).metrics
    del metrics["confident_mistakes"], metrics["confident_mistakes_from"]
    atomic_write_json(folder / "metrics.json", metrics)
    assert explain.main([str(folder), "--data-dir", str(shared_cifar)]) == 0
    recorded = read_checkpoint(folder).metrics
    model = load_pretrained(folder)
    images, labels = load_cifar10(shared_cifar, "test", limit=500)
    live = confident_mistakes(model, images, labels, model.normalization["mean"], model.normalization["std"], k=24)
    assert recorded["confident_mistakes"] == live and len(live) == 24
    assert recorded["confident_mistakes_from"].endswith("on the CPU after it was published, over 500 test images")
    assert {k: v for k, v in recorded.items() if not k.startswith("confident_mistakes")} == metrics


def test_record_mistakes_says_what_is_wrong(tmp_path, shared_cifar, capsys):
    assert explain.main([str(tmp_path / "nowhere"), "--data-dir", str(shared_cifar)]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
    assert explain.main(["resnet20", "--data-dir", str(tmp_path / "no-data")]) == 2
    assert "error:" in capsys.readouterr().err


def test_record_mistakes_checks_every_name_before_the_test_set_loads(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """A misspelt name among good ones: a line for it, naming the folder searched, exit status 2, and neither the
    test set loaded nor any checkpoint changed."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    monkeypatch.setenv("RESNET_CHECKPOINTS", str(root))
    monkeypatch.setattr(explain, "load_cifar10", lambda *a, **k: pytest.fail("loaded the test set before the names"))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert explain.main(["resnet20", "resnet2O", str(tmp_path / "gone" / "plain20")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"error: no checkpoint folder resnet2O (looked in {root}); resnet2O is no model this project knows; "
        "checkpoints there: plain20, resnet20\n"
        f"error: no checkpoint folder {tmp_path / 'gone' / 'plain20'} (looked in {tmp_path / 'gone'}); "
        "train one with `python train.py --model plain20 --out " + str(tmp_path / "gone") + "`\n")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_record_mistakes_goes_on_past_a_checkpoint_it_cannot_write(tiny_checkpoints, shared_cifar, tmp_path,
                                                                   monkeypatch, capsys):
    """A metrics.json that cannot be written (a read-only folder, a full disk): a line naming the checkpoint, the
    next one recorded all the same, exit status 2."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    monkeypatch.setattr(explain, "load_cifar10", lambda folder, split: load_cifar10(folder, split, limit=100))

    def read_only_resnet20(path, obj):
        if path.parent.name == "resnet20":
            raise OSError(30, "Read-only file system")
        atomic_write_json(path, obj)

    monkeypatch.setattr(explain, "atomic_write_json", read_only_resnet20)
    assert explain.main([str(root / "resnet20"), str(root / "plain20"), "--data-dir", str(shared_cifar)]) == 2
    err = capsys.readouterr().err
    assert f"error: {root / 'resnet20'}: metrics.json not written (Read-only file system)\n" in err
    assert read_checkpoint(root / "plain20").metrics["confident_mistakes_from"].endswith("over 100 test images")


def test_help_says_where_names_are_looked_up(capsys):
    with pytest.raises(SystemExit) as done:
        explain.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "checkpoint folders, or names in $RESNET_CHECKPOINTS (default: checkpoints/)" in text
    assert ("CIFAR-10 folder (default: $CIFAR10_DIR, else the first of ./data, the repository's data/ and "
            "shared/datasets/cifar10 beside the repository that holds the split whole)") in text
