"""Parameter and multiply-add counts of any registered model, per layer and in total."""
from __future__ import annotations

import torch
import torch.nn as nn

from .probes import eval_mode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_table(model: nn.Module, input_size: tuple[int, int] = (32, 32)) -> list[dict]:
    """One record per leaf module that holds weights or changes the shape: name, type, output
    shape, parameters and multiply-adds (the paper's "FLOPs" in Table 1 count multiply-adds of
    convolutions and fc layers; BN, ReLU, pooling and additions are left out, as there)."""
    records: list[dict] = []

    def hook(module, inputs, output, name):
        macs = 0
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = output.numel() * module.in_features
        records.append(dict(layer=name, type=type(module).__name__, output_shape=tuple(output.shape[1:]),
                            params=sum(p.numel() for p in module.parameters(recurse=False)), macs=macs))

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children()) and not isinstance(m, nn.Identity)]
    handles = [m.register_forward_hook(lambda mod, i, o, name=n: hook(mod, i, o, name)) for n, m in leaves]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, *input_size))
    finally:
        for h in handles:
            h.remove()
    return records


def count_macs(model: nn.Module, input_size: tuple[int, int] = (32, 32)) -> int:
    """Multiply-adds of one forward pass on one image."""
    return sum(r["macs"] for r in layer_table(model, input_size))
