"""Registry, shapes, parameter and FLOP counts against the paper, the probe interface, the SGD step."""
import pytest
import torch

from resnet_core import build_model, count_macs, count_params, list_models, model_info
from resnet_core.models import CIFAR_DEPTHS, ZeroPadShortcut
from resnet_core.paper import TABLE1_GFLOPS, TABLE6_PARAMS_M
from resnet_core.trainer import Recipe, lr_at, sgd_step


def test_registry_names_and_unknown_name():
    names = list_models()
    for depth in (20, 32, 44, 56, 110, 1202):
        assert f"resnet{depth}" in names and f"plain{depth}" in names
    assert {"resnet18", "resnet34", "plain18", "plain34"} <= set(names)
    assert {f"imagenet-resnet{d}" for d in (18, 34, 50, 101, 152)} | {"imagenet-plain18", "imagenet-plain34"} <= set(names)
    assert list_models("plain*") == [n for n in names if n.startswith("plain")]
    with pytest.raises(ValueError, match="valid names: .*resnet56"):
        build_model("resnet57")


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"])
def test_cifar_parameter_counts_match_table6(name):
    residual, plain = build_model(name), build_model(name.replace("resnet", "plain"))
    assert round(count_params(residual) / 1e6, 2 if count_params(residual) < 1e6 else 1) == TABLE6_PARAMS_M[name]
    assert count_params(plain) == count_params(residual)  # option A shortcuts add no parameters


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_nets_have_as_many_weight_layers_as_their_depth(depth):
    """6n+2: a 3x3 stem, three stages of n blocks of two convs each, and the fc."""
    for kind in ("resnet", "plain"):
        model = build_model(f"{kind}{depth}")
        assert len(model.weight_layers()) == depth
        assert [len(stage) for stage in model.stages] == [(depth - 2) // 6] * 3


def test_a_residual_block_adds_the_shortcut_before_its_last_relu():
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the paper's Fig. 2, for an identity block and
    a downsampling one (option A); a plain block is the same without the addition."""
    torch.manual_seed(0)
    model, plain = build_model("resnet20"), build_model("plain20")
    for m in (model, plain):
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):  # statistics away from 0/1, so each BN does something
                bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        m.eval()
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        for block in (model.stages[0][0], model.stages[1][0], plain.stages[0][0]):
            r = block.residual
            branch = r.bn2(r.conv2(torch.relu(r.bn1(r.conv1(x)))))
            expected = torch.relu(branch + block.shortcut(x)) if block.shortcut is not None else torch.relu(branch)
            torch.testing.assert_close(block(x), expected)
            assert (branch < 0).any()  # so a ReLU moved before the addition would change the output


@pytest.mark.parametrize("name,gflops", sorted(TABLE1_GFLOPS.items()))
def test_imagenet_flops_match_table1(name, gflops):
    # Table 1 gives one decimal, sometimes truncated (ResNet-50: 3.86 is printed as 3.8); 18/34 with option A.
    assert abs(count_macs(build_model(name), (224, 224)) / 1e9 - gflops) < 0.07


def test_imagenet_18_34_default_to_option_a_as_in_table_2():
    # Table 2's plain-vs-residual comparison used zero-padding shortcuts: the same parameters as the plain nets
    for depth in (18, 34):
        assert model_info(f"imagenet-resnet{depth}")["default_shortcut"] == "A"
        assert count_params(build_model(f"imagenet-resnet{depth}")) == count_params(build_model(f"imagenet-plain{depth}"))
    assert round(count_macs(build_model("imagenet-resnet34"), (224, 224)) / 1e9, 1) == 3.6  # B's projections: 3.66
    assert model_info("imagenet-resnet50")["default_shortcut"] == "B"


def test_seed_report_nets_parameter_counts():
    assert round(count_params(build_model("resnet18")) / 1e6, 1) == 11.2
    assert round(count_params(build_model("resnet34")) / 1e6, 1) == 21.3
    # The plain nets lose only the three 1x1 projection shortcuts.
    assert 0 < count_params(build_model("resnet18")) - count_params(build_model("plain18")) < 200_000


@pytest.mark.parametrize("name,size,classes", [("resnet20", 32, 10), ("plain32", 32, 10), ("resnet18", 32, 10),
                                               ("plain34", 32, 10), ("imagenet-resnet50", 64, 1000),
                                               ("imagenet-plain18", 64, 1000)])
def test_output_shapes(name, size, classes):
    model = build_model(name).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, classes)
    assert build_model(name, num_classes=7).eval()(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_shortcut_options():
    a, b = build_model("resnet20"), build_model("resnet20", shortcut="B")
    assert count_params(b) > count_params(a)  # B adds two 1x1 projections (+BN)
    assert model_info("plain20")["residual"] is False
    assert all(blk.shortcut is None for blk in build_model("plain20").blocks())
    with pytest.raises(ValueError, match="plain net"):
        build_model("plain20", shortcut="B")
    with pytest.raises(ValueError, match="unknown shortcut"):
        build_model("resnet20", shortcut="C")


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_probe_interface():
    model = build_model("resnet20").eval()
    layers = model.conv3x3_layers()
    assert len(layers) == 19  # the stem and 2 per block: 6n + 1 with n = 3
    assert len(model.weight_layers()) == 20  # plus the fc layer (option A adds no convs)
    _, responses = model.forward_intermediates(torch.randn(3, 3, 32, 32))
    assert list(responses) == [name for name, _, _ in layers]
    assert responses["stem.conv"].shape == (3, 16, 32, 32)
    assert responses[layers[-1][0]].shape == (3, 64, 8, 8)
    assert not any(bn._forward_hooks for _, _, bn in layers)  # hooks are removed
    assert all(hasattr(b, "residual") for b in model.blocks())


def test_forward_intermediates_records_the_bn_outputs_fig7_measures():
    """Fig. 7's responses: each 3x3 conv's BN output (after BN, before ReLU and addition), on the same forward pass
    that gives the logits. BN statistics and affine parameters are made non-trivial, so that the conv output, the
    ReLU after it or the block's output would all differ from what is expected."""
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits, responses = model.forward_intermediates(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
        stem = model.stem
        torch.testing.assert_close(responses["stem.conv"], stem.bn(stem.conv(x)))
        block = model.stages[0][0].residual  # input: the stem's output, after its ReLU
        first = block.bn1(block.conv1(stem(x)))
        torch.testing.assert_close(responses["stages.0.0.residual.conv1"], first)
        torch.testing.assert_close(responses["stages.0.0.residual.conv2"], block.bn2(block.conv2(block.relu1(first))))
        down = model.stages[1][0].residual  # the first strided block: input is the whole first stage's output
        torch.testing.assert_close(responses["stages.1.0.residual.conv1"], down.bn1(down.conv1(model.stages[0](stem(x)))))
    assert (responses["stem.conv"] < 0).any()  # before the ReLU


def test_sgd_step_matches_torch_optim_sgd():
    """The update rule alone, on the same gradients each step: running the nets forward again would let the
    last-bit rounding differences (a*b+c in two roundings or one) grow through batch-4 BatchNorm."""
    torch.manual_seed(0)
    ref = [p.detach().clone().requires_grad_(True) for p in build_model("resnet20").parameters()]
    params = [p.detach().clone() for p in ref]
    momentum = [torch.zeros_like(p) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for lr in (0.1, 0.1, 0.01):
        grads = [torch.randn_like(p) for p in params]
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        opt.step()
        sgd_step(params, [g.clone() for g in grads], momentum, torch.tensor(lr), 0.9, 1e-4)
    for p, q in zip(ref, params):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)


def test_lr_schedule():
    r = Recipe(warmup_iters=400)
    assert lr_at(0, r) == 0.01 and lr_at(399, r) == 0.01 and lr_at(400, r) == 0.1
    assert lr_at(31_999, r) == 0.1
    assert lr_at(32_000, r) == pytest.approx(0.01) and lr_at(48_000, r) == pytest.approx(0.001)


def test_core_imports_without_streamlit_or_altair():
    """resnet_core and train.py run on the GPU machine, which has neither."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['streamlit'] = None; sys.modules['altair'] = None; "
            "import resnet_core, resnet_core.trainer, resnet_core.landscape, resnet_core.explain, train")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
