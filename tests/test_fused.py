"""--fuse: CIFAR nets of one depth trained as one network of grouped convolutions, the same arithmetic as apart."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import train
from conftest import TINY_RUN
from resnet_core.fused import FuseError, FusedNet
from resnet_core.models import build_model
from resnet_core.trainer import (Recipe, RunConfig, finite_state, fuse_lanes, fused_train_step, make_lane,
                                 step_units, train_step)

CPU = torch.device("cpu")


def nets(*names: str, seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [build_model(n).to(memory_format=torch.channels_last) for n in names]


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g).to(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (n,), generator=g)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture
def float64():
    """Fused against apart in double precision. In float32 the two pick different convolution kernels, whose
    rounding a plain net's backward amplifies: two SGD steps of plain20 on 1 thread and on 2 (apart both times)
    end up to 2e-2 apart in the stem's weights on some CPUs, so a float32 tolerance tight enough to catch a wrong
    step fails on rounding somewhere. In float64 the same steps agree to 1e-15."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_the_fused_net_computes_what_its_members_compute_apart(float64):
    # plain and residual together (the shortcut masked per member), and a third member of other weights
    apart = nets("plain20", "resnet20") + nets("resnet20", seed=5)
    fused = FusedNet([copy.deepcopy(m) for m in apart])
    x, y = batch()
    logits = fused(x)
    assert logits.shape == (16, 3, 10)
    sum(F.cross_entropy(logits[:, k], y) for k in range(3)).backward()
    for k, net in enumerate(apart):
        alone = net(x)
        F.cross_entropy(alone, y).backward()
        assert logits.dtype == torch.float64 and rel(logits[:, k].detach(), alone.detach()) < 1e-12
        grads = fused.member_grads(k)
        assert len(grads) == len(list(net.parameters()))
        for g, p in zip(grads, net.parameters()):
            assert g.shape == p.shape and rel(g, p.grad) < 1e-10
        # BN statistics moved by one training batch, exactly as the net's own (and its batch counter)
        for (name, a), b in zip(fused.members[k].state_dict().items(), net.state_dict().values()):
            if "running" in name:
                assert rel(a, b) < 1e-12, name
            if "num_batches_tracked" in name:
                assert int(a) == int(b) == 1
    fused.eval()
    for k, net in enumerate(apart):
        assert rel(fused(x)[:, k].detach(), net.eval()(x).detach()) < 1e-12


def test_the_members_are_views_of_the_fused_weights():
    members = nets("resnet20", "plain20")
    fused = FusedNet(members)
    with torch.no_grad():
        fused.stem_conv.add_(1.0)  # the fused net trains: the members' own modules see it
        members[1].stem.conv.weight.zero_()  # a state loaded into a member lands in the fused net
        members[0].fc.bias.fill_(3.0)
    assert fused.stem_conv[:16].min() > 0.5 and fused.stem_conv[16:].abs().max() == 0
    assert (fused.fc_bias[0] == 3.0).all() and not (fused.fc_bias[1] == 3.0).any()
    x, _ = batch(4)
    assert rel(fused.eval()(x)[:, 0].detach(), members[0].eval()(x).detach()) < 1e-5
    with pytest.raises(RuntimeError, match="move the members"):
        fused.to(torch.float64)  # would leave the members behind, on the old tensors


def test_every_tensor_of_the_fused_net_is_on_its_members_device():
    """Built where the members are (a FusedNet never moves): the meta device stands in for CUDA here, where a
    tensor left on the CPU fails the forward as it would on a GPU."""
    members = [build_model(n).to("meta") for n in ("plain20", "resnet20")]
    fused = FusedNet(members)
    assert {t.device.type for t in [*fused.parameters(), *fused.buffers(), *fused.counters]} == {"meta"}
    assert fused(torch.empty(4, 3, 32, 32, device="meta")).shape == (4, 2, 10)


@pytest.mark.parametrize("names, why", [
    (("resnet18", "plain18"), "only CIFAR nets of basic blocks with option A"),  # projection shortcuts
    (("resnet20", "resnet32"), "differ in depth"),
    (("resnet20",), None),
])
def test_nets_of_other_shapes_or_shortcuts_are_refused(names, why):
    members = [build_model(n) for n in names]
    if why is None:  # one net alone fuses (the trainer just never asks for it)
        assert FusedNet(members)(batch(2)[0]).shape == (2, 1, 10)
        return
    with pytest.raises(FuseError, match=why):
        FusedNet(members)
    with pytest.raises(FuseError, match="option A"):
        FusedNet([build_model("resnet20", shortcut="B"), build_model("plain20")])


def lanes(*names: str, **cfg) -> list:
    return [make_lane(RunConfig(model=n, recipe=Recipe(batch_size=16), **cfg), CPU) for n in names]


def test_a_fused_step_is_each_lanes_own_step(float64):
    apart, together = lanes("resnet20", "plain20"), lanes("resnet20", "plain20")
    (group,) = fuse_lanes(together)
    assert group.lanes == together and all(lane.group is group for lane in together)
    for seed in (8, 9):  # two steps: the second from weights and momentum the first one moved
        x, y = batch(32, seed=seed)
        for lane in apart:
            train_step(lane, x, y)
        fused_train_step(group, x, y)
    # batches on which the two nets get different numbers right: each lane counts its own predictions
    assert int(apart[0].stats["correct"]) != int(apart[1].stats["correct"])
    for a, b in zip(apart, together):
        for key in ("steps", "correct", "iteration"):
            assert int(a.stats[key]) == int(b.stats[key])
        assert float(b.stats["loss_sum"]) == pytest.approx(float(a.stats["loss_sum"]), rel=1e-12)
        assert rel(b.stats["grad_norm_sum"], a.stats["grad_norm_sum"]) < 1e-10
        for (name, u), v in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert u.dtype in (torch.float64, torch.int64) and (u - v).abs().max() < 1e-12, name
        assert max(float((u - v).abs().max()) for u, v in zip(a.momentum, b.momentum)) < 1e-12


def test_the_recorded_gradient_norms_leave_weight_decay_out():
    """sgd_step adds weight_decay * w into the gradients in place: the norms a step records are taken before that,
    apart and fused alike, as the Gradient flow page says. A weight decay of 10 would show in every one of them."""
    def decaying():
        return [make_lane(RunConfig(model=n, recipe=Recipe(batch_size=16, weight_decay=10.0)), CPU)
                for n in ("resnet20", "plain20")]

    apart, together = decaying(), decaying()
    x, y = batch(16, seed=3)
    expected = []
    for lane in apart:
        model = copy.deepcopy(lane.model).train()
        weights = [w for _, w in model.weight_layers()]
        expected.append(torch.stack([g.norm() for g in torch.autograd.grad(F.cross_entropy(model(x), y), weights)]))
    for lane in apart:
        train_step(lane, x, y)
    (group,) = fuse_lanes(together)
    fused_train_step(group, x, y)
    for want, a, b in zip(expected, apart, together):
        assert rel(a.stats["grad_norm_sum"], want) < 1e-4 and rel(b.stats["grad_norm_sum"], want) < 1e-4


def test_a_lane_gone_nan_leaves_the_other_finite():
    """Nothing in the fused net mixes its members: NaN weights in the plain net (as when it diverges) leave the
    residual net's loss, gradients and step finite (tests/test_gpu.py checks the same under bf16 on a GPU)."""
    together = lanes("resnet20", "plain20")
    (group,) = fuse_lanes(together)
    with torch.no_grad():
        together[1].model.stem.conv.weight.fill_(float("nan"))
    fused_train_step(group, *batch())
    assert int(together[0].stats["first_bad"]) == -1 and int(together[1].stats["first_bad"]) == 0
    assert finite_state(together[0]) and not finite_state(together[1])


def test_only_lanes_of_one_shape_and_flags_are_fused():
    mixed = (lanes("resnet20", "resnet32", "plain20") + lanes("plain32", compile=True) + lanes("resnet18")
             + lanes("resnet44") + lanes("plain44", cpu_bf16=True) + lanes("resnet56") + lanes("plain56", amp=False))
    groups = fuse_lanes(mixed)
    assert [[lane.name for lane in g.lanes] for g in groups] == [["resnet20", "plain20"]]
    assert [lane.name for lane in mixed if lane.group is None] == ["resnet32", "plain32", "resnet18", "resnet44",
                                                                  "plain44", "resnet56", "plain56"]


def test_a_group_that_loses_a_lane_dissolves_and_the_rest_trains_on():
    together = lanes("resnet20", "plain20")
    (group,) = fuse_lanes(together)
    for lane in together:  # as train() records a fused sitting
        lane.sittings.append(dict(start=0, fused_with=["the other"]))
        lane.iteration = 7
    assert step_units(together) == [group]
    survivor = together[1]
    before = survivor.model.stem.conv.weight.detach().clone()
    assert step_units([survivor]) == [survivor]  # resnet20 left the run (it diverged)
    assert all(lane.group is None for lane in together)
    assert all(lane.sittings[-1]["fused_until"] == 7 for lane in together)  # the record says when it ended
    x, y = batch()
    train_step(survivor, x, y)  # alone now, on its own forward; its weights are still the fused net's slice
    assert not torch.equal(survivor.model.stem.conv.weight, before)
    assert torch.equal(group.net.stem_conv[16:], survivor.model.stem.conv.weight)
    assert int(survivor.stats["steps"]) == 1


def tiny(out, state, *extra) -> list[str]:
    from conftest import CIFAR10
    return ["--model", "resnet20", "plain20", *TINY_RUN, "--data-dir", str(CIFAR10), "--out", str(out),
            "--state-dir", str(state), "--device", "cpu", "--fuse", *extra]


def test_train_fuse_publishes_both_as_trained_apart_and_resumes_bit_for_bit(tmp_path, tiny_checkpoints, capsys):
    assert train.main(tiny(tmp_path / "whole", tmp_path / "s1")) == 0
    assert "fused: resnet20, plain20 train as one network (--fuse)" in capsys.readouterr().err
    for name, other in (("resnet20", "plain20"), ("plain20", "resnet20")):
        config = json.loads((tmp_path / "whole" / name / "config.json").read_text())
        assert config["sittings"][0]["fused_with"] == [other] and "--fuse" in config["command"]
        fused = json.loads((tmp_path / "whole" / name / "history.json").read_text())["records"]
        apart = json.loads((tiny_checkpoints / name / "history.json").read_text())["records"]
        # the same init, data and arithmetic as the unfused tiny run: the figures agree to float32 rounding (the
        # unfused run itself moves by up to 0.4 % between 1 and 2 threads; the float64 tests above are the exact
        # check), the second epoch's too, after the lr's drops at iterations 4 and 6 (each lane's own lr)
        assert [r["train_loss"] for r in fused] == pytest.approx([r["train_loss"] for r in apart], rel=1e-2)
        # per layer to 15 %, the median layer to 2 %: a plain net's stem amplifies four steps' rounding (its
        # gradient norm 7 % apart on one CPU), where the other lane's norms are 10 % to 5x off at most layers
        off = sorted(abs(f / a - 1) for f, a in zip(fused[0]["grad_norms"], apart[0]["grad_norms"], strict=True))
        assert off[-1] < 0.15 and off[len(off) // 2] < 0.02, off
        assert [r["lr"] for r in fused] == [r["lr"] for r in apart]
        assert [r["iteration"] for r in fused] == [r["iteration"] for r in apart] == [4, 8]
    # stopped after 3 iterations, resumed fused: the same weights, bit for bit, as the uninterrupted fused run
    assert train.main(tiny(tmp_path / "split", tmp_path / "s2", "--stop-after", "3")) == 0
    assert train.main(tiny(tmp_path / "split", tmp_path / "s2", "--resume")) == 0
    for name in ("resnet20", "plain20"):
        whole = load_file(tmp_path / "whole" / name / "model.safetensors")
        split = load_file(tmp_path / "split" / name / "model.safetensors")
        assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)


@pytest.mark.parametrize("first, then", [("apart", "fused"), ("fused", "apart")])
def test_a_state_saved_apart_resumes_fused_and_the_other_way(tmp_path, tiny_checkpoints, first, then):
    """A GPU session resumes a pair the CPU trained apart with --fuse (and a fused state may be resumed apart): the
    resume is accepted, each sitting records how it trained, and the curves are the uninterrupted run's to rounding."""
    def argv(how, *extra):
        args = tiny(tmp_path / "out", tmp_path / "runs", *extra)
        return args if how == "fused" else [a for a in args if a != "--fuse"]

    assert train.main(argv(first, "--stop-after", "3")) == 0
    assert train.main(argv(then, "--resume")) == 0
    for name in ("resnet20", "plain20"):
        sittings = json.loads((tmp_path / "out" / name / "config.json").read_text())["sittings"]
        assert [bool(s.get("fused_with")) for s in sittings] == [first == "fused", then == "fused"]
        resumed = json.loads((tmp_path / "out" / name / "history.json").read_text())["records"]
        apart = json.loads((tiny_checkpoints / name / "history.json").read_text())["records"]
        assert [r["iteration"] for r in resumed] == [4, 8]
        # to float32 rounding, as in the test above
        assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in apart], rel=1e-2)


def test_fuse_with_nothing_to_fuse_says_why_and_trains_each_alone(tmp_path, capsys):
    """A residual net with no plain twin in the run: the note says what --fuse joins, and each model trains as its
    own lane (here for one iteration)."""
    argv = tiny(tmp_path / "out", tmp_path / "runs", "--stop-after", "1")
    argv[argv.index("plain20")] = "resnet32"
    assert train.main(argv) == 0
    err = capsys.readouterr().err
    assert "note: --fuse found nothing to fuse: it joins a plain and a residual 6n+2 net of one depth" in err
    assert "fused:" not in err
