"""Probe contracts: evaluation arithmetic, gradient norms without side effects, Fig. 7 responses."""
import weakref

import pytest
import torch

from resnet_core import build_model
from resnet_core.probes import evaluate, first_epoch_reaching, gradient_norms, per_class_accuracy, response_std


class FixedLogits(torch.nn.Module):
    """Logits chosen per image by its first pixel value, so the expected metrics are known exactly."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].round().long()] + self.w


def test_evaluate_counts_exactly():
    # 3 images, 6 classes; image k has pixel value k (normalisation is the identity: mean 0, std 1/255).
    images = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 32, 32, 3).contiguous()
    labels = torch.tensor([0, 1, 5])
    table = [[9, 0, 0, 0, 0, 0],   # right
             [9, 1, 0, 0, 0, 0],   # wrong, true class 2nd: top-5 hit
             [9, 8, 7, 6, 5, 0]]   # wrong, true class last: top-5 miss
    out = evaluate(FixedLogits(table), images, labels, torch.zeros(3), torch.full((3,), 1 / 255), batch_size=2, num_classes=6)
    assert out["test_error"] == pytest.approx(100 * 2 / 3)
    assert out["test_top5_error"] == pytest.approx(100 * 1 / 3)
    cm = out["confusion_matrix"]
    assert cm[0][0] == 1 and cm[1][0] == 1 and cm[5][0] == 1 and sum(map(sum, cm)) == 3
    assert per_class_accuracy(cm)[:2] == [100.0, 0.0]
    expected_loss = torch.nn.functional.cross_entropy(torch.tensor(table, dtype=torch.float32), labels)
    assert out["test_loss"] == pytest.approx(float(expected_loss), rel=1e-5)


def test_gradient_norms_leave_no_trace():
    torch.manual_seed(0)
    model = build_model("plain20").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    records = gradient_norms(model, x, y)
    assert [r["layer"] for r in records] == [name for name, _ in model.weight_layers()]
    assert all(r["grad_norm"] > 0 for r in records)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert records == gradient_norms(model, x, y)  # and so it is repeatable


def test_gradient_norms_are_those_of_a_training_steps_backward():
    """The norms a training step's backward gives: BN on the batch's statistics, not on running ones far from them,
    of the mean cross-entropy; and inside torch.no_grad too, where a caller might sit."""
    import copy

    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # running statistics nothing like a batch's
                m.running_mean.fill_(3.0)
                m.running_var.fill_(0.05)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    reference = copy.deepcopy(model).train()
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    expected = [float(w.grad.norm()) for _, w in reference.weight_layers()]
    with torch.no_grad():
        records = gradient_norms(model, x, y)
    assert [r["grad_norm"] for r in records] == pytest.approx(expected, rel=1e-4)


def test_response_std_follows_layer_order():
    torch.manual_seed(0)
    model = build_model("resnet32")
    records = response_std(model, torch.randn(16, 3, 32, 32))
    assert [r["index"] for r in records] == list(range(1, 32))  # 6n + 1 = 31 layers of 3x3
    assert [r["layer"] for r in records] == [name for name, _, _ in model.conv3x3_layers()]
    assert all(r["std"] > 0 and r["channel_std"] > 0 for r in records) and model.training  # restored to train mode
    assert all(set(r) == {"layer", "index", "std", "channel_std"} for r in records)


def test_response_std_in_batches_equals_the_std_of_the_whole_batch_at_once():
    """Merged over uneven batches (10, 10, 5), each layer's std is torch's sample std of all its outputs at once."""
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    x = torch.randn(25, 3, 32, 32)
    with torch.no_grad():
        _, responses = model.forward_intermediates(x)
    whole = [float(r.float().std()) for r in responses.values()]
    sizes = []  # what the net was given at a time
    hook = model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    try:
        batched = [r["std"] for r in response_std(model, x, batch_size=10)]
    finally:
        hook.remove()
    assert sizes == [10, 10, 5]
    assert batched == pytest.approx(whole, rel=1e-6)


def full_responses(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every 3x3 layer's whole BN output (N, C, H, W) for `x` at once, in eval mode, caught by hooks of our own."""
    outputs = []
    hooks = [bn.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for _, _, bn in model.conv3x3_layers()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 12])
def test_response_std_per_channel_is_the_mean_of_each_channels_std(batch_size):
    """channel_std: torch.std of each channel over images and positions (dims 0, 2, 3), averaged over the channels,
    however the images are batched (12 images, in batches that divide 12 and batches that do not)."""
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    for _, _, bn in model.conv3x3_layers():  # channels of unequal means and spreads, as trained nets' are
        bn.weight.data.uniform_(0.2, 2)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(12, 3, 32, 32)
    outputs = full_responses(model, x)
    records = response_std(model, x, batch_size=batch_size)
    assert [r["channel_std"] for r in records] == pytest.approx(
        [float(out.double().std(dim=(0, 2, 3)).mean()) for out in outputs], rel=1e-6)
    assert [r["std"] for r in records] == pytest.approx([float(out.double().std()) for out in outputs], rel=1e-6)


def test_bn_offsets_that_differ_across_channels_raise_the_pooled_std_only():
    """The two readings of Fig. 7's std part where a BN's bias differs across channels: the channels' means then lie
    apart, which the pooled std counts and the per-channel std does not."""
    torch.manual_seed(0)
    model = build_model("plain20").eval()
    x = torch.randn(8, 3, 32, 32)
    _, _, bn = model.conv3x3_layers()[-1]  # the last: no later layer sees the change
    before = response_std(model, x)[-1]
    bn.bias.data = torch.linspace(-3, 3, bn.num_features)
    after = response_std(model, x)[-1]
    assert after["channel_std"] == pytest.approx(before["channel_std"], rel=1e-6)  # fp32 rounding of the shifted values
    assert after["std"] > 1.5 * before["std"]
    assert after["std"] > after["channel_std"]


def test_response_std_holds_one_layer_output_at_a_time():
    """A 1202-layer net's responses to 1,000 images are about 50 GB: no BN output may outlive its use. When a
    layer's BN runs, at most a few earlier outputs are still alive (a block's input and shortcut), not all of them."""
    torch.manual_seed(0)
    model = build_model("plain20")
    bns = [bn for _, _, bn in model.conv3x3_layers()]
    outputs, most_alive = [], []

    def watch(_m, _i, out):
        most_alive.append(sum(ref() is not None for ref in outputs))
        outputs.append(weakref.ref(out))

    hooks = [bn.register_forward_hook(watch) for bn in bns]
    try:
        response_std(model, torch.randn(8, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    assert len(most_alive) == len(bns) and max(most_alive) <= 3, most_alive


def test_response_std_measures_the_eval_mode_net_and_leaves_bn_statistics_alone():
    """Fig. 7 measures the trained net as it predicts: BN on its running statistics, which the probe must not
    update. A net in train mode gives the same std as bn(conv(x)) in eval mode, and its buffers stay as they were."""
    torch.manual_seed(0)
    model = build_model("plain20")
    for _, _, bn in model.conv3x3_layers():  # running statistics far from a batch's, so the two modes differ
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.2, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 32, 32)
    records = response_std(model, x)
    assert model.training  # back to train mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics untouched
    _, conv, bn = model.conv3x3_layers()[0]
    bn.eval()
    with torch.no_grad():
        expected = float(bn(conv(x)).std())
    assert records[0]["std"] == pytest.approx(expected, rel=1e-5)


def test_first_epoch_reaching():
    records = [{"epoch": 1, "test_error": 30.0}, {"epoch": 2, "test_error": 9.9}, {"epoch": 3, "test_error": 8.0}]
    assert first_epoch_reaching(records, 90.0) == 2
    assert first_epoch_reaching(records, 95.0) is None
    assert first_epoch_reaching(records[:1] + [{"epoch": 2, "test_error": 10.0}], 90.0) == 2  # on the line: reached
