"""Loss landscapes (Li et al., NeurIPS 2018): training loss along filter-normalised random directions."""
from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm import tqdm

from .checkpoint import (atomic_write_json, default_checkpoints_dir, is_number, is_number_or_null, load_pretrained,
                         read_json, resolve_checkpoint)
from .cli import COUNT, DATA_DIR_HELP, POSITIVE, SEED, unwritable  # a bad value: refused here, not after the data loads
from .data import load_cifar10, normalize, resolve_data_dir
from .probes import autocast_for, eval_mode, input_stats
from .trainer import device_name, pick_device

AXES = ("alpha", "beta")  # record keys of the first and second direction's coefficient
DIRECTION = "filter-normalised gaussian, BN and biases zeroed"
FILE = "landscape.json"


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _text(x) -> bool:
    return isinstance(x, str)


# What each setting must be where a file records it (absent or null: not recorded, as in a file older than it).
SETTINGS = {**dict.fromkeys(("points", "grid", "seed"), (_whole, "a whole number")),
            **dict.fromkeys(("span", "wall_time_s", "center_loss", "center_error"), (is_number, "a number")),
            **dict.fromkeys(("model", "direction", "bn", "augmentation", "precision", "device", "torch_version",
                             "weights_sha256"), (_text, "a string"))}


def random_direction(model, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A Gaussian direction shaped like the model's parameters, each filter d[i] rescaled to the norm of the
    trained filter w[i] so that every filter moves in proportion to its own scale (Li et al., Sec. 4). 1-D
    parameters (BN weights and biases, fc bias) are zeroed: the paper keeps them fixed. Drawn on the
    generator's device, so a CPU generator gives the same direction whatever device the model is on."""
    direction = {}
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, device=generator.device).to(w.device, w.dtype)
        w_norm = w.detach().flatten(1).norm(dim=1)  # (out_channels,)
        d_norm = d.flatten(1).norm(dim=1)  # (out_channels,)
        direction[name] = d * (w_norm / (d_norm + 1e-10)).view(-1, *[1] * (w.dim() - 1))
    return direction


def grid_values(steps: int, span: float) -> list[float]:
    """`steps` evenly spaced values in [-span, span]; the middle of an odd grid is exactly 0 (the trained weights)."""
    return [span * (2 * i - (steps - 1)) / max(steps - 1, 1) for i in range(steps)]


@torch.no_grad()
def evaluate_points(model, images_u8: torch.Tensor, labels: torch.Tensor, mean, std, directions: list[dict],
                     points: list[tuple[float, ...]], batch_size: int = 2000, amp: bool = False) -> list[dict]:
    """Mean cross-entropy and top-1 error (%) at weights = trained + sum_k c_k * directions[k] for each point
    (c_1, c_2, ...), BN in eval mode, no augmentation; images (N, 32, 32, 3) uint8 and labels on the model's
    device. The model is never written to: each point's weights go in through functional_call."""
    device = images_u8.device
    trained = {name: p.detach() for name, p in model.named_parameters()}
    # Normalise once: every point sees the same batches. (N, 3, 32, 32) float32, about 12 KB per image.
    batches = [(normalize(images_u8[s:s + batch_size], mean, std), labels[s:s + batch_size])
               for s in range(0, len(labels), batch_size)]
    records = []
    with eval_mode(model):
        for point in tqdm(points, desc=f"{len(directions)}-D landscape", unit="pt", file=sys.stderr):
            weights = {}
            for name, w in trained.items():
                weights[name] = w.clone()
                for c, d in zip(point, directions):
                    weights[name].add_(d[name], alpha=c)
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            wrong = torch.zeros((), device=device, dtype=torch.long)
            for x, y in batches:
                with autocast_for(device, amp):
                    logits = functional_call(model, weights, (x,)).float()  # (B, num_classes)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                wrong += (logits.argmax(dim=1) != y).sum()
            # One host sync per point, after all its batches are queued.
            records.append(dict(zip(AXES, point), loss=float(loss_sum) / len(labels),
                                error=100.0 * int(wrong) / len(labels)))
    return records


def _landscape(dims: int, model, images_u8, labels, mean, std, steps, span, seed, batch_size, amp) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    # Drawn in order from one seed: the 1-D slice is the beta = 0 row of the 2-D surface with the same seed.
    directions = [random_direction(model, generator) for _ in range(dims)]
    points = list(itertools.product(grid_values(steps, span), repeat=dims))
    return evaluate_points(model, images_u8, labels, mean, std, directions, points, batch_size, amp)


def landscape_1d(model, images_u8, labels, mean, std, steps: int = 21, span: float = 1.0, seed: int = 0,
                 batch_size: int = 2000, amp: bool = False) -> list[dict]:
    """Records {alpha, loss, error} along one random direction, alpha in [-span, span] (`steps` values)."""
    return _landscape(1, model, images_u8, labels, mean, std, steps, span, seed, batch_size, amp)


def landscape_2d(model, images_u8, labels, mean, std, steps: int = 21, span: float = 1.0, seed: int = 0,
                 batch_size: int = 2000, amp: bool = False) -> list[dict]:
    """Records {alpha, beta, loss, error} on the steps x steps plane of two random directions."""
    return _landscape(2, model, images_u8, labels, mean, std, steps, span, seed, batch_size, amp)


def weights_digest(folder: Path) -> str | None:
    """sha256 of the checkpoint's model.safetensors (None without one): which weights a landscape was measured on."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        return None
    with open(weights, "rb") as f:  # in chunks: a file of gigabytes costs time, never its size in memory
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_landscape(checkpoint) -> dict | None:
    """The landscape.json of a checkpoint (name or folder), or None if it has none. A damaged file (a setting of
    the wrong type, records that are not numbers), or one measured on other weights than the checkpoint's (it was
    retrained since), raises a ValueError naming it."""
    folder = resolve_checkpoint(checkpoint)
    path = folder / FILE
    if not path.is_file():
        return None
    data = read_json(path)
    where = [] if folder.parent == default_checkpoints_dir() else ["--checkpoints", str(folder.parent)]
    again = ("recompute it with `"
             + shlex.join(["python", "-m", "resnet_core.landscape", "--model", folder.name, *where, "--overwrite"]) + "`")
    wrong = [f"{key} is {data[key]!r}, not {what}" for key, (ok, what) in SETTINGS.items()
             if data.get(key) is not None and not ok(data[key])]
    if wrong:
        raise ValueError(f"{path}: {'; '.join(wrong)}; {again}")
    parts = {key: data[key] for key in ("slice_1d", "surface_2d") if key in data}
    if not parts or not all(isinstance(r, list) and all(isinstance(x, dict) for x in r) for r in parts.values()):
        raise ValueError(f"{path}: no slice_1d or surface_2d records; {again}")
    for key, records in parts.items():
        axes = AXES[:1] if key == "slice_1d" else AXES
        for r in records:  # coefficients are numbers; a loss or error may be null (it overflowed)
            if not (all(is_number(r.get(a)) for a in axes)
                    and all(k in r and is_number_or_null(r[k]) for k in ("loss", "error"))):
                raise ValueError(f"{path}: a {key} record that is not {', '.join(axes)}, loss and error as numbers "
                                 f"({r}); {again}")
    measured_on, now = data.get("weights_sha256"), weights_digest(folder)
    if measured_on and now and measured_on != now:  # files from before the digest was recorded cannot be checked
        raise ValueError(f"{path} was measured on other weights than the checkpoint's model.safetensors holds "
                         f"now (retrained since, or the file damaged or cut short: if `load_pretrained` fails on it, "
                         f"copy the checkpoint again); {again}")
    return data


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m resnet_core.landscape",
                                description=__doc__ + " Writes landscape.json beside the checkpoint.")
    p.add_argument("--model", required=True, help="checkpoint name (e.g. plain56) or folder")
    p.add_argument("--checkpoints", type=Path, help="folder holding the checkpoints (default: $RESNET_CHECKPOINTS or checkpoints/)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--points", type=COUNT, default=2000, help="the first N training images (default %(default)s)")
    p.add_argument("--grid", type=int, default=21, help="values per axis; odd, so the trained weights are a grid point (default %(default)s)")
    p.add_argument("--span", type=POSITIVE, default=1.0, help="coefficients in [-span, span] (default %(default)s: a filter-sized step)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random directions, 0 to 2**64 - 1 (default %(default)s)")
    p.add_argument("--dims", type=int, nargs="+", choices=[1, 2], default=[1, 2], help="the 1-D slice, the 2-D surface or both")
    p.add_argument("--batch-size", type=COUNT, default=2000, help="images per forward pass (default %(default)s)")
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--no-amp", action="store_true", help="fp32 on the GPU instead of bf16 autocast")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint's landscape.json if it has one; without it the command refuses to "
                        "start (a landscape on the CPU takes up to half an hour)")
    args = p.parse_args(argv)
    if args.grid < 3 or args.grid % 2 == 0:
        p.error(f"--grid must be odd and at least 3, not {args.grid}")
    try:  # a GPU this machine lacks: one line here, not a traceback from torch after the data has loaded
        args.device = pick_device(args.device)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device  # a torch.device, checked by parse_args
    amp = device.type == "cuda" and not args.no_amp
    torch.backends.cudnn.benchmark = device.type == "cuda"  # thousands of passes of one shape
    try:
        path = resolve_checkpoint(args.checkpoints / args.model if args.checkpoints else args.model)
        if (path / FILE).exists() and not args.overwrite:  # a quick trial must not replace minutes of CPU work
            raise ValueError(f"{path / FILE} exists; pass --overwrite to replace it")
        if why := unwritable(path / FILE):  # found now, not after up to half an hour of CPU work
            raise ValueError(f"cannot write {path / FILE} ({why}); measure a copy of the checkpoint in a folder "
                             "that can be written (--checkpoints)")
        model = load_pretrained(path, device)
        images, labels = load_cifar10(resolve_data_dir(args.data_dir, splits=("train",)), "train", limit=args.points)
    except ValueError as e:  # CheckpointError and DatasetError say what is wrong and what to do; so does ours
        print(f"error: {e}", file=sys.stderr)
        return 2
    images, labels = images.to(device), labels.to(device)
    mean, std = input_stats(model, device)
    settings = dict(steps=args.grid, span=args.span, seed=args.seed, batch_size=args.batch_size, amp=amp)
    start = time.perf_counter()
    result = dict(model=read_json(path / "config.json")["model"], points=len(labels), grid=args.grid, span=args.span,
                  seed=args.seed, direction=DIRECTION, bn="eval", augmentation="none", device=device_name(device),
                  precision="bf16 autocast" if amp else "fp32", torch_version=torch.__version__,
                  weights_sha256=weights_digest(path))
    if 1 in args.dims:
        result["slice_1d"] = landscape_1d(model, images, labels, mean, std, **settings)
    if 2 in args.dims:
        result["surface_2d"] = landscape_2d(model, images, labels, mean, std, **settings)
    result["wall_time_s"] = time.perf_counter() - start
    records = result.get("slice_1d", []) + result.get("surface_2d", [])
    centre = next(r for r in records if not any(r.get(axis) for axis in AXES))  # alpha (and beta) exactly 0
    result["center_loss"], result["center_error"] = centre["loss"], centre["error"]
    try:
        atomic_write_json(path / FILE, result)
    except OSError as e:  # the disk filled up, or the folder was taken away, while it computed
        print(f"error: could not write {path / FILE} ({e.strerror or e})", file=sys.stderr)
        return 2
    finite = [r["loss"] for r in records if math.isfinite(r["loss"])]  # a point whose loss overflowed is nan or inf
    overflowed = f" ({len(records) - len(finite)} not finite)" if len(finite) < len(records) else ""
    print(f"{path.name}: {len(labels):,} training images, grid {args.grid} in [-{args.span:g}, {args.span:g}], "
          f"centre loss {centre['loss']:.4f} (error {centre['error']:.2f} %), "
          f"max loss {max(finite, default=math.nan):.4f}{overflowed}, {len(records)} points in "
          f"{result['wall_time_s']:.1f} s on {result['device']} -> {path / FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
