"""Probes: pure functions of (model, batch) that return plain numbers and tidy records; no Streamlit here."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from .data import CIFAR10_MEAN, CIFAR10_STD, normalize


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled (BN stays in float, as autocast keeps it); callers decide
    where it pays (trainer.uses_bf16). The weight cast cache is off because CUDA graph capture requires it
    (the casts are then recorded in the graph)."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


@contextmanager
def eval_mode(model):
    """The model in eval mode (BN on running statistics, left untouched) inside, its old mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model, images_u8: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             batch_size: int = 1000, amp: bool = False, num_classes: int = 10) -> dict:
    """Loss, top-1/top-5 error (%) and confusion matrix (rows: true class, columns: predicted) of a
    model in eval mode on a whole split; images (N, 32, 32, 3) uint8 and labels already on the device."""
    device = images_u8.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.long)
    for start in range(0, len(labels), batch_size):
        x = normalize(images_u8[start:start + batch_size], mean, std)
        y = labels[start:start + batch_size]
        with autocast_for(device, amp), eval_mode(model):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        k = min(5, num_classes)
        topk = logits.topk(k, dim=1).indices  # (B, k)
        top1 += (topk[:, 0] == y).sum()
        top5 += (topk == y[:, None]).any(dim=1).sum()
        # index_add_, not bincount: on CUDA bincount reads the min and max back to the host (two syncs a batch)
        confusion.index_add_(0, y * num_classes + topk[:, 0], torch.ones_like(y))
    n = len(labels)
    return dict(test_loss=float(loss_sum) / n, test_error=100.0 * (1 - int(top1) / n),
                test_top5_error=100.0 * (1 - int(top5) / n),
                confusion_matrix=confusion.view(num_classes, num_classes).cpu().tolist())


def per_class_accuracy(confusion: list[list[int]]) -> list[float]:
    """Accuracy (%) per true class from a confusion matrix (rows: true class)."""
    return [100.0 * row[i] / max(1, sum(row)) for i, row in enumerate(confusion)]


@torch.no_grad()
def response_std(model, x: torch.Tensor, batch_size: int = 100) -> list[dict]:
    """Paper Fig. 7: std of each 3x3 layer's response (its BN output, before ReLU/addition) over all of `x`, in layer
    order, model in eval mode, in the two ways the paper's "std of layer responses" can be read (it does not say
    which, and the two can rank a plain and a residual net differently): `std`, the sample std of every value of the
    layer (all channels, positions and images pooled, as torch.std gives it), which also counts how far apart the
    channels' means lie (BN's learned offsets); `channel_std`, each channel's sample std over images and positions,
    averaged over the layer's channels. Records: {layer, index, std, channel_std}. Runs `batch_size` images at a
    time and merges each batch's per-channel means and squared deviations into the layer's in float64 inside its
    hook (Chan et al.'s pairwise update), so that only one layer's output for one batch is held at a time: a
    1202-layer net's responses to 1,000 images would be about 50 GB. The pooled std comes from the same per-channel
    moments (every channel counts as many values)."""
    layers = model.conv3x3_layers()
    counts = [0] * len(layers)  # values per channel so far
    # Per layer, (channels, 2): each channel's mean and sum of squared deviations, allocated once and updated in
    # place: a new small tensor per layer and batch, kept, would pin the freed outputs' memory between them (the heap
    # grew by a GB on ResNet-1202)
    moments = [torch.zeros(bn.num_features, 2, dtype=torch.float64, device=x.device) for _, _, bn in layers]

    def merge(k, out):  # out: (B, C, H, W)
        var, mean = torch.var_mean(out.detach().double(), dim=(0, 2, 3), correction=0)  # (C,) each
        n, count = out.numel() // out.shape[1], counts[k]
        total = count + n
        delta = mean - moments[k][:, 0]
        moments[k][:, 0] += delta * (n / total)
        moments[k][:, 1] += var * n + delta.square() * (count * n / total)
        counts[k] = total

    hooks = [bn.register_forward_hook(lambda _m, _i, out, k=k: merge(k, out)) for k, (_, _, bn) in enumerate(layers)]
    try:
        with eval_mode(model):
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
    records = []
    for k, ((name, _, _), layer, n) in enumerate(zip(layers, moments, counts)):
        mean, squares = layer[:, 0], layer[:, 1]  # (C,) each
        # pooled: the channels' squared deviations about their own means plus those of their means about the layer's
        pooled = (squares.sum() + n * (mean - mean.mean()).square().sum()) / (n * len(mean) - 1)
        per_channel = (squares / (n - 1)).sqrt().mean()
        records.append(dict(layer=name, index=k + 1, std=float(pooled.sqrt()), channel_std=float(per_channel)))
    return records


def input_stats(model, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std (3 values each, fp32 on `device`) `model`'s inputs are normalised with: load_pretrained's
    model.normalization, from its config.json, else CIFAR-10's (a bare net is trained as ours are)."""
    norm = getattr(model, "normalization", None) or dict(mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return tuple(torch.tensor(norm[k], dtype=torch.float32, device=device) for k in ("mean", "std"))


def gradient_norms(model, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """One forward/backward of the mean cross-entropy in train mode (BN on batch statistics, as in
    training); the L2 norm of each conv/fc weight's gradient, in forward order. No side effects:
    .grad fields and BN running statistics stay as they were. Records: {layer, index, grad_norm}."""
    layers = model.weight_layers()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad():  # a caller under torch.no_grad gets the norms too
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), [w for _, w in layers])
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    return [dict(layer=name, index=i + 1, grad_norm=float(g.norm())) for i, ((name, _), g) in enumerate(zip(layers, grads))]


def first_epoch_reaching(records: list[dict], accuracy: float) -> int | None:
    """The first epoch whose test accuracy (100 - error) reaches `accuracy` %, or None."""
    for r in records:
        if r.get("test_error") is not None and 100.0 - r["test_error"] >= accuracy:
            return r["epoch"]
    return None
