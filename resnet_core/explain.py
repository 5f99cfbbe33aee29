"""Where the model looks (Grad-CAM, input saliency) and what it gets most confidently wrong."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .checkpoint import atomic_write_json, load_pretrained, read_checkpoint, stored_precision
from .cli import DATA_DIR_HELP
from .data import CLASSES, load_cifar10, normalize, resolve_data_dir
from .probes import eval_mode, input_stats

RECORDED_MISTAKES = 24  # kept in metrics.json by the trainer; the app shows the first 12

# matplotlib's inferno at 0, 1/4, 1/2, 3/4, 1: dark = no evidence, bright yellow = strongest.
INFERNO = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


def _unit_range(t: torch.Tensor) -> torch.Tensor:
    """Min-max scaled to [0, 1]; a flat map becomes all zeros rather than 0/0 = NaN."""
    t = t.detach().float().cpu()
    low, high = t.min(), t.max()
    return (t - low) / (high - low) if high > low else torch.zeros_like(t)


def _class_score(logits: torch.Tensor, target: int | None) -> tuple[torch.Tensor, int]:
    index = int(logits[0].argmax()) if target is None else int(target)
    return logits[0, index], index


def grad_cam(model, x: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, int]:
    """Grad-CAM (Selvaraju et al., 2017) on the last stage's output for one normalised image x (1, 3, H, W):
    the feature maps weighted by the spatial mean of d score / d map, summed, ReLU'd, upsampled to (H, W)
    and scaled to [0, 1]. Target: the predicted class if None. Returns (cam, class index). Gradients are
    taken with autograd.grad, so no hooks are added and no parameter's .grad is touched."""
    x = x.detach().requires_grad_(True)  # the graph then exists even if the parameters are frozen
    with eval_mode(model), torch.enable_grad():
        features = model.forward_features(x)  # (1, C, h, w)
        score, index = _class_score(model.forward_head(features), target)
        (grad,) = torch.autograd.grad(score, features)  # (1, C, h, w)
    channel_weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = F.relu((channel_weights * features.detach()).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (1, 1, H, W)
    return _unit_range(cam[0, 0]), index


def input_saliency(model, x: torch.Tensor, target: int | None = None) -> torch.Tensor:
    """|d score / d pixel| (Simonyan et al., 2014), max over colour channels, scaled to [0, 1]: (H, W). `x` is the
    normalised image, so its gradient is divided by each channel's std: the gradient with respect to the pixel
    values themselves, as the paper takes it, where a channel of small std would otherwise weigh more."""
    x = x.detach().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        score, _ = _class_score(model(x), target)
        (grad,) = torch.autograd.grad(score, x)  # (1, 3, H, W), per normalised value
    std = input_stats(model, grad.device)[1].to(grad.dtype)
    return _unit_range((grad[0] / std.view(3, 1, 1)).abs().amax(dim=0))  # per pixel value: x = (pixel - mean) / std


def colormap(heat: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB float32 (..., 3) in 0..255, interpolated through INFERNO."""
    stops = np.linspace(0.0, 1.0, len(INFERNO))
    heat = np.clip(heat, 0.0, 1.0)
    return np.stack([np.interp(heat, stops, INFERNO[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def overlay(image, heat, scale: int = 8, alpha: float = 0.5) -> Image.Image:
    """The (H, W, 3) uint8 image (numpy or PIL) enlarged `scale` times with visible pixels (nearest), blended
    with `heat` (h, w) in [0, 1] (numpy or tensor, any size: resized bilinearly) through the colour map."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1).astype(np.float32)  # (H*scale, W*scale, 3)
    size = (pixels.shape[1], pixels.shape[0])  # PIL sizes are (width, height)
    heat = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR))
    blended = (1 - alpha) * pixels + alpha * colormap(heat)
    return Image.fromarray(np.clip(blended, 0, 255).round().astype(np.uint8), "RGB")


@torch.no_grad()
def confident_mistakes(model, images_u8: torch.Tensor, labels: torch.Tensor, mean, std, k: int = 12,
                       batch_size: int = 500) -> list[dict]:
    """The k wrong predictions made with the highest probability, highest first (ties: lower index first);
    images whose probabilities are not finite (a net whose logits overflowed) are left out, having no ranking.
    Images (N, 32, 32, 3) uint8 and labels on the model's device. Records: {index, true, predicted,
    probability (of the predicted class), true_probability}, classes by name. Ranked by the log-probability in
    float64: a trained net's surest mistakes have 1 - p below 1e-7, where fp32's softmax rounds them all to 1.0
    and would leave their order to the image index."""
    with eval_mode(model):
        log_probs = torch.cat([torch.log_softmax(model(normalize(images_u8[s:s + batch_size], mean, std)).double(),
                                                 dim=1)
                               for s in range(0, len(labels), batch_size)])  # (N, num_classes)
    confidence, predicted = log_probs.max(dim=1)  # (N,), (N,)
    finite = torch.isfinite(log_probs).all(dim=1)  # (N,)
    wrong = ((predicted != labels) & finite).nonzero().squeeze(1)  # (M,) indices of the mistakes
    order = torch.sort(confidence[wrong], descending=True, stable=True).indices[:k]
    return [dict(index=int(i), true=CLASSES[int(labels[i])], predicted=CLASSES[int(predicted[i])],
                 probability=float(confidence[i].exp()), true_probability=float(log_probs[i, labels[i]].exp()))
            for i in wrong[order].tolist()]


def record_mistakes(name_or_path, images_u8: torch.Tensor, labels: torch.Tensor) -> dict:
    """Add a published checkpoint's confident mistakes on the given test images to its metrics.json, measured
    with its stored weights on the CPU (the trainer records them itself; this is for checkpoints published
    before it did). Returns the updated metrics."""
    info = read_checkpoint(name_or_path)
    # both read model.safetensors: damaged or not this net's, a CheckpointError naming it, before any work is done
    model, stored = load_pretrained(info.path), stored_precision(info.path)
    found = confident_mistakes(model, images_u8, labels, *input_stats(model), k=RECORDED_MISTAKES)
    metrics = dict(info.metrics, confident_mistakes=found, confident_mistakes_from=(
        f"its published weights ({stored}) in fp32 on the CPU after it was published, over "
        f"{len(labels):,} test images"))
    atomic_write_json(info.path / "metrics.json", metrics)
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Record in each checkpoint's metrics.json the test images it gets wrong most confidently, "
                    "which the Classes page shows without classifying the test set again. The trainer does this "
                    "when it publishes; this is for checkpoints published before it did.")
    parser.add_argument("checkpoints", nargs="+",
                        help="checkpoint folders, or names in $RESNET_CHECKPOINTS (default: checkpoints/)")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    args = parser.parse_args(argv)
    problems = []
    for name in args.checkpoints:  # every name checked before the test set loads: a typo costs a line, changes nothing
        try:
            read_checkpoint(name)
        except ValueError as e:  # CheckpointError: the folder it looked in and what to do
            problems.append(str(e))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        images, labels = load_cifar10(resolve_data_dir(args.data_dir, splits=("test",)), "test")
    except ValueError as e:  # DatasetError says where it looked and what to do
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for name in tqdm(args.checkpoints, unit="checkpoint", desc="recording mistakes"):
        start = time.perf_counter()
        try:
            found = record_mistakes(name, images, labels)["confident_mistakes"]
        except (ValueError, OSError) as e:  # CheckpointError names the file; OSError: a read-only folder, a full disk
            why = f"{name}: metrics.json not written ({e.strerror or e})" if isinstance(e, OSError) else e
            tqdm.write(f"error: {why}", file=sys.stderr)
            failed += 1
            continue
        top = f"the most confident: {found[0]['predicted']} at {100 * found[0]['probability']:.1f} %" if found else ""
        tqdm.write(f"{name}: {len(found)} mistakes recorded of {len(labels):,} test images, {top} "
                   f"({time.perf_counter() - start:.1f} s)")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
