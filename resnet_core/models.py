"""Plain and residual networks of He et al. (2016), CIFAR and ImageNet families, behind one registry."""
from __future__ import annotations

import fnmatch
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples by `stride` and zero-pads the new channels (adds no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_planes - in_planes

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        # Split the new channels half before, half after, as the common CIFAR implementations do.
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """None for a plain block; identity where shapes agree; option A (zero-pad) or B (projection) where not."""
    if kind == "none":
        return None
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    if kind == "B":
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    raise ValueError(f"unknown shortcut {kind!r}: use 'A' (zero-padding), 'B' (projection) or 'none' (plain)")


class Block(nn.Module):
    """out = relu(F(x) + shortcut(x)), or relu(F(x)) in a plain net: `residual` is the branch F,
    `shortcut` is None in a plain net. Subclasses build `residual` and `shortcut`."""

    residual: nn.Sequential
    shortcut: nn.Module | None

    def forward(self, x):
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class BasicBlock(Block):
    """Two 3x3 convs (CIFAR nets, ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.residual = nn.Sequential(OrderedDict(
            conv1=conv3x3(in_planes, planes, stride), bn1=nn.BatchNorm2d(planes), relu1=nn.ReLU(),
            conv2=conv3x3(planes, planes), bn2=nn.BatchNorm2d(planes),
        ))
        self.shortcut = make_shortcut(shortcut, in_planes, planes, stride)


class Bottleneck(Block):
    """1x1 reduce, 3x3, 1x1 expand (x4). The stride sits on the first 1x1, as in the paper's
    original models: that is what gives Table 1's 3.8/7.6/11.3 GFLOPs (torchvision's "v1.5" moves it to the 3x3)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.residual = nn.Sequential(OrderedDict(
            conv1=conv1x1(in_planes, planes, stride), bn1=nn.BatchNorm2d(planes), relu1=nn.ReLU(),
            conv2=conv3x3(planes, planes), bn2=nn.BatchNorm2d(planes), relu2=nn.ReLU(),
            conv3=conv1x1(planes, planes * 4), bn3=nn.BatchNorm2d(planes * 4),
        ))
        self.shortcut = make_shortcut(shortcut, in_planes, planes * 4, stride)


class ResNet(nn.Module):
    """Stem, stages of blocks, global average pool, fc. One class for every family here:
    the CIFAR 6n+2 nets (3 stages of 16/32/64), the CIFAR ResNet-18/34 (3x3 stem, 64-512)
    and the ImageNet nets (7x7 stem + max-pool)."""

    def __init__(self, block: type[nn.Module], blocks_per_stage: list[int], widths: list[int],
                 num_classes: int = 10, shortcut: str = "A", stem: str = "cifar"):
        super().__init__()
        self.config = dict(block=block.__name__, blocks_per_stage=list(blocks_per_stage), widths=list(widths),
                           num_classes=num_classes, shortcut=shortcut, stem=stem)
        if stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False), bn=nn.BatchNorm2d(widths[0]),
                relu=nn.ReLU(), pool=nn.MaxPool2d(3, stride=2, padding=1)))
        else:
            self.stem = nn.Sequential(OrderedDict(conv=conv3x3(3, widths[0]), bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU()))
        in_planes, stages = widths[0], []
        for i, (count, planes) in enumerate(zip(blocks_per_stage, widths)):
            stage = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block(in_planes, planes, stride, shortcut))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. (2015) init, which the paper uses for plain and residual nets alike (fan-out mode, as torchvision).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- the uniform interface every tool uses (probes, app, trainer) --------------------------------
    def forward_features(self, x):  # (B, 3, H, W) -> (B, C, h, w)
        return self.stages(self.stem(x))

    def forward_head(self, x):  # (B, C, h, w) -> (B, num_classes)
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def blocks(self) -> list[nn.Module]:
        """Every block in forward order; each has `.residual` (the branch F) and `.shortcut` (None if plain)."""
        return [b for stage in self.stages for b in stage]

    def conv3x3_layers(self) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
        """(name, conv, bn) for each 3x3 conv and the BN right after it, in forward order (paper Fig. 7's layers)."""
        out, modules = [], list(self.named_modules())
        for k, (name, m) in enumerate(modules):
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                bn = next(mm for _, mm in modules[k + 1:] if isinstance(mm, nn.BatchNorm2d))
                out.append((name, m, bn))
        return out

    def weight_layers(self) -> list[tuple[str, nn.Parameter]]:
        """(name, weight) of every conv and fc layer in forward order: the rows of the gradient-norm records."""
        return [(name, m.weight) for name, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def forward_intermediates(self, x) -> tuple[torch.Tensor, "OrderedDict[str, torch.Tensor]"]:
        """Logits and, per 3x3 conv (by name), its BN output: after BN, before ReLU and addition (paper Fig. 7)."""
        responses: OrderedDict[str, torch.Tensor] = OrderedDict()
        hooks = [bn.register_forward_hook(lambda _m, _i, out, name=name: responses.__setitem__(name, out))
                 for name, _, bn in self.conv3x3_layers()]
        try:
            logits = self(x)
        finally:
            for h in hooks:
                h.remove()
        return logits, responses


# -- registry ---------------------------------------------------------------------------------------
_REGISTRY: dict[str, tuple[Callable[..., ResNet], dict]] = {}
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
PLAIN_VS_RESIDUAL_DEPTHS = CIFAR_DEPTHS[:-1]  # the paper's Fig. 6 pairs; 1202 layers is trained residual only


def register(name: str, builder: Callable[..., ResNet], **info) -> None:
    _REGISTRY[name] = (builder, info)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a glob pattern, e.g. list_models("plain*")."""
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> dict:
    """Family, depth and whether the net has shortcuts, for tables and plots."""
    _check_name(name)
    return dict(_REGISTRY[name][1])


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def build_model(name: str, num_classes: int | None = None, **overrides) -> ResNet:
    """build_model("resnet56"), build_model("plain20"), build_model("resnet20", shortcut="B"), ..."""
    _check_name(name)
    builder, info = _REGISTRY[name]
    kwargs = dict(overrides)
    kwargs["num_classes"] = num_classes if num_classes is not None else info["num_classes"]
    if "shortcut" in kwargs and not info["residual"] and kwargs["shortcut"] != "none":
        raise ValueError(f"{name} is a plain net: it has no shortcuts to choose")
    return builder(**kwargs)


def _cifar(n: int, residual: bool, num_classes: int = 10, shortcut: str = "A") -> ResNet:
    return ResNet(BasicBlock, [n, n, n], [16, 32, 64], num_classes, shortcut if residual else "none", "cifar")


for _depth in CIFAR_DEPTHS:
    _n = (_depth - 2) // 6
    for _residual in (True, False):
        register(f"{'resnet' if _residual else 'plain'}{_depth}",
                 lambda n=_n, residual=_residual, **kw: _cifar(n, residual, **kw),
                 family="cifar", depth=_depth, residual=_residual, num_classes=10, default_shortcut="A")

_WIDE_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}


def _wide(depth: int, residual: bool, stem: str, num_classes: int, shortcut: str = "B") -> ResNet:
    block, counts = _WIDE_BLOCKS[depth]
    return ResNet(block, counts, [64, 128, 256, 512], num_classes, shortcut if residual else "none", stem)


for _depth in (18, 34):  # the seed report's CIFAR ResNet-18/34: 3x3 stem, projection shortcuts
    for _residual in (True, False):
        register(f"{'resnet' if _residual else 'plain'}{_depth}",
                 lambda depth=_depth, residual=_residual, **kw: _wide(depth, residual, "cifar", **kw),
                 family="cifar-wide", depth=_depth, residual=_residual, num_classes=10, default_shortcut="B")

# The paper's ImageNet nets (Table 1), each with the shortcuts the paper first trained it with: option A for the
# plain-vs-residual 18/34 comparison (Table 2, Fig. 4), option B for 50/101/152 (Sec. 4.1, deeper bottleneck
# architectures). Table 1's FLOPs are then theirs: ResNet-34's 3.64 G (3.66 G with B's projections).
for _depth in (18, 34, 50, 101, 152):
    _shortcut = "A" if _depth <= 34 else "B"
    for _residual in ((True, False) if _depth <= 34 else (True,)):
        register(f"imagenet-{'resnet' if _residual else 'plain'}{_depth}",
                 lambda depth=_depth, residual=_residual, shortcut=_shortcut, **kw:
                 _wide(depth, residual, "imagenet", shortcut=shortcut, **kw),
                 family="imagenet", depth=_depth, residual=_residual, num_classes=1000, default_shortcut=_shortcut)
