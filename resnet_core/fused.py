"""Several CIFAR 6n+2 nets of one depth trained as one network ("fused"), for the GPU: FusedNet."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import BasicBlock, ResNet, ZeroPadShortcut


class FuseError(ValueError):
    """The nets cannot be fused: not CIFAR 6n+2 nets of one shape (the message says what differs)."""


def fusable(model: nn.Module) -> str | None:
    """None if `model` can be a member of a fused net, else why not (in words)."""
    if not isinstance(model, ResNet):
        return f"{type(model).__name__} is not one of this package's ResNets"
    c = model.config
    if c["block"] != "BasicBlock" or c["stem"] != "cifar" or c["shortcut"] not in ("A", "none"):
        return f"only CIFAR nets of basic blocks with option A shortcuts or none fuse, not {c}"
    return None


def shape_key(model: ResNet) -> tuple:
    """Nets with equal keys have layers of equal shapes, so they can be fused (plain and residual alike)."""
    c = model.config
    return c["block"], tuple(c["blocks_per_stage"]), tuple(c["widths"]), c["num_classes"], c["stem"]


class _BN:
    """One BatchNorm over the members' channels, stacked: the members' BN modules alias its slices."""

    def __init__(self, fused: "FusedNet", name: str, bns: list[nn.BatchNorm2d]):
        first = bns[0]
        if any((bn.eps, bn.momentum, bn.affine, bn.track_running_stats) != (first.eps, first.momentum, True, True)
               for bn in bns):
            raise FuseError("the members' BatchNorm layers differ in eps, momentum or affinity")
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = fused.stack_parameter(f"{name}.weight", [bn.weight for bn in bns])
        self.bias = fused.stack_parameter(f"{name}.bias", [bn.bias for bn in bns])
        self.running_mean = fused.stack_buffer(f"{name}.running_mean", bns, "running_mean")
        self.running_var = fused.stack_buffer(f"{name}.running_var", bns, "running_var")
        fused.counters += [bn.num_batches_tracked for bn in bns]

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training, self.momentum,
                            self.eps)


class FusedNet(nn.Module):
    """K CIFAR nets of one shape as one network: forward(x) -> logits of shape (batch, K, classes).

    On a GPU the small CIFAR nets are bound by how many kernels they launch, not by arithmetic: a 16-channel 3x3
    convolution at batch 128 leaves most of an H200's SMs idle, and two such nets side by side launch twice the
    kernels. Fused, K nets of one depth (plain and residual alike) run as a single network whose every layer is K
    times as wide:

    - each convolution is a grouped convolution (groups=K: member k's filters see only member k's channels), except
      the first, a dense convolution from the 3 input channels to K x 16 (every member reads the same image);
    - each BatchNorm is one BatchNorm over K x C channels (its statistics are per channel, so per member);
    - the shortcut is added through a 0/1 mask per channel (1 where the member is residual, 0 where it is plain),
      and option A's zero-padding pads each member's channels on their own;
    - the head averages each member's channels and applies each member's fc (one batched matrix product).

    Nothing mixes across members, so the forward and backward passes compute what the K nets would compute apart,
    up to floating-point rounding, and the members' summed losses give each member exactly its own gradients.

    The members (plain or residual, option A) must have layers of the same shapes. They keep their own modules:
    their weights are copied in, and then every parameter and BN buffer of member k is a view into the fused
    tensors (its slice of channels), so a member's model evaluates, saves and publishes the fused training's
    weights as they are, with no copying back; and writing into a member's tensors (loading a saved state) writes
    into the fused net. A member's num_batches_tracked is counted on in each training forward, as its own BN would.
    `member_grads(k)` gives member k's gradients, in the order of its parameters(), as views into the fused
    gradients after a backward pass."""

    def __init__(self, members: list[ResNet]):
        super().__init__()
        if not members:
            raise FuseError("no nets to fuse")
        for m in members:
            if why := fusable(m):
                raise FuseError(why)
        if len({shape_key(m) for m in members}) > 1:
            raise FuseError("the nets differ in depth or width: " + ", ".join(str(shape_key(m)) for m in members))
        self.k = k = len(members)
        self.counters: list[torch.Tensor] = []
        # id(member parameter) -> (fused parameter's name, member index, stacked along a new dim 0 (fc) or not)
        self._slices: dict[int, tuple[str, int, bool]] = {}
        self.stem_conv = self.stack_parameter("stem_conv", [m.stem.conv.weight for m in members])
        self.stem_bn = _BN(self, "stem_bn", [m.stem.bn for m in members])
        self.plan = []
        for i, blocks in enumerate(zip(*(m.blocks() for m in members))):
            b0: BasicBlock = blocks[0]
            conv1, conv2 = b0.residual.conv1, b0.residual.conv2
            step = dict(stride=conv1.stride[0],
                        conv1=self.stack_parameter(f"block{i}.conv1", [b.residual.conv1.weight for b in blocks]),
                        bn1=_BN(self, f"block{i}.bn1", [b.residual.bn1 for b in blocks]),
                        conv2=self.stack_parameter(f"block{i}.conv2", [b.residual.conv2.weight for b in blocks]),
                        bn2=_BN(self, f"block{i}.bn2", [b.residual.bn2 for b in blocks]),
                        extra=conv2.out_channels - conv1.in_channels, mask=None)
            kinds = [_shortcut_kind(b) for b in blocks]
            step["shortcut"] = "none" if all(s == "none" for s in kinds) else next(s for s in kinds if s != "none")
            if "none" in kinds and step["shortcut"] != "none":  # plain and residual members together: a 0/1 mask
                mask = torch.tensor([float(s != "none") for s in kinds], device=self.stem_conv.device)
                mask = mask.repeat_interleave(conv2.out_channels)  # on the members' device: this net never moves
                # one per dtype the net may compute in (autocast's two, and float64 for exact comparisons), made up front
                for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
                    self.register_buffer(f"block{i}_mask_{str(dtype)[6:]}", mask.view(1, -1, 1, 1).to(dtype),
                                         persistent=False)
                step["mask"] = f"block{i}_mask_"
            self.plan.append(step)
        self.fc_weight = self.stack_parameter("fc_weight", [m.fc.weight for m in members], stack=True)
        self.fc_bias = self.stack_parameter("fc_bias", [m.fc.bias for m in members], stack=True)
        self.member_params = [list(m.parameters()) for m in members]
        missing = [p for ps in self.member_params for p in ps if id(p) not in self._slices]
        if missing:  # a parameter the plan above does not know of: fusing would silently not train it
            raise FuseError(f"{len(missing)} member parameters have no place in the fused net")
        self.members = members  # plain list: not submodules (their tensors are this net's views)

    # -- building: stack, then alias -----------------------------------------------------------------
    def stack_parameter(self, name: str, tensors: list[torch.Tensor], stack: bool = False) -> nn.Parameter:
        """The members' tensors concatenated along dim 0 (a conv's filters, a BN's channels), or stacked along a
        new dim 0 (`stack`: the fc layers); each member's parameter then aliases its slice."""
        with torch.no_grad():
            joined = torch.stack(tensors) if stack else torch.cat(tensors)
            if tensors[0].dim() == 4 and tensors[0].is_contiguous(memory_format=torch.channels_last):
                joined = joined.contiguous(memory_format=torch.channels_last)
        fused = nn.Parameter(joined)
        setattr(self, name.replace(".", "_"), fused)
        for i, t in enumerate(tensors):
            t.data = _part(fused.data, i, len(tensors), stack)
            self._slices[id(t)] = (name.replace(".", "_"), i, stack)
        return fused

    def stack_buffer(self, name: str, bns: list[nn.BatchNorm2d], attr: str) -> torch.Tensor:
        with torch.no_grad():
            joined = torch.cat([getattr(bn, attr) for bn in bns])
        self.register_buffer(name.replace(".", "_"), joined)
        joined = getattr(self, name.replace(".", "_"))
        for i, bn in enumerate(bns):
            getattr(bn, attr).data = _part(joined, i, len(bns), False)
        return joined

    def _apply(self, fn, recurse=True):
        raise RuntimeError("a FusedNet stays where its members were built: move the members, then fuse them")

    # -- the pass ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        if self.training:
            with torch.no_grad():
                torch._foreach_add_(self.counters, 1)
        x = F.relu(self.stem_bn(F.conv2d(x, self.stem_conv, padding=1), self.training))
        for step in self.plan:
            out = F.conv2d(x, step["conv1"], stride=step["stride"], padding=1, groups=k)
            out = F.relu(step["bn1"](out, self.training))
            out = step["bn2"](F.conv2d(out, step["conv2"], padding=1, groups=k), self.training)
            if step["shortcut"] != "none":
                shortcut = x if step["extra"] == 0 and step["stride"] == 1 else \
                    _zero_pad_each(x, k, step["stride"], step["extra"])
                if step["mask"] is None:
                    out = out + shortcut
                else:
                    out = torch.addcmul(out, shortcut, getattr(self, step["mask"] + str(out.dtype)[6:]))
            x = F.relu(out)
        h = x.mean((2, 3)).view(x.shape[0], k, -1)  # (batch, K, channels): each member's global average pool
        return torch.baddbmm(self.fc_bias.unsqueeze(1), h.transpose(0, 1), self.fc_weight.transpose(1, 2)) \
            .transpose(0, 1)  # (K, batch, classes) -> (batch, K, classes)

    def member_grads(self, k: int) -> list[torch.Tensor]:
        """Member k's gradients, in the order of its parameters(): views into the fused gradients."""
        out = []
        for p in self.member_params[k]:
            name, i, stack = self._slices[id(p)]
            grad = getattr(self, name).grad
            out.append(_part(grad, i, self.k, stack))
        return out


def _part(t: torch.Tensor, i: int, k: int, stack: bool) -> torch.Tensor:
    """Member i's slice of a fused tensor of K members."""
    if stack:
        return t[i]
    n = t.shape[0] // k
    return t[i * n:(i + 1) * n]


def _shortcut_kind(block: BasicBlock) -> str:
    s = block.shortcut
    if s is None:
        return "none"
    if isinstance(s, nn.Identity):
        return "identity"
    if isinstance(s, ZeroPadShortcut):
        return "A"
    raise FuseError(f"a {type(s).__name__} shortcut does not fuse (option A or none only)")


def _zero_pad_each(x: torch.Tensor, k: int, stride: int, extra: int) -> torch.Tensor:
    """Option A on each member's channels: subsample by `stride`, then zero channels half before, half after, as
    ZeroPadShortcut does for one net."""
    x = x[:, :, ::stride, ::stride]
    b, c, h, w = x.shape
    x = F.pad(x.reshape(b, k, c // k, h, w), (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x.reshape(b, k * (c // k + extra), h, w)
