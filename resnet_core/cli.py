"""What train.py, python -m resnet_core.* and bench/ share: argparse types, --data-dir help, a check before writing."""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def number(kind, low, strictly: bool = False, below: float | None = None):
    """An argparse type: a finite `kind` at least `low` (above it if `strictly`; under `below` if given), else
    argparse's one-line error naming the option. A 0 or a negative count is a mistake, never "the default" or "no
    limit"."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if kind is float and not math.isfinite(value):  # an int is finite (and may be too large for a float)
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < low or (strictly and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not {'above' if strictly else 'at least'} {low}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"{text} is not below {below}")
        return value
    return parse


COUNT, NONNEGATIVE, POSITIVE, RATE = number(int, 1), number(int, 0), number(float, 0, strictly=True), number(float, 0)
FRACTION = number(float, 0, below=1)  # momentum: at 1 or above, SGD's velocity never decays
# resnet_core.data.resolve_data_dir's search, for the tools' --data-dir help
DATA_DIR_HELP = ("CIFAR-10 folder (default: $CIFAR10_DIR, else the first of ./data, the repository's data/ and "
                 "shared/datasets/cifar10 beside the repository that holds the split whole)")
SEED = number(int, 0, below=2 ** 64)  # what torch.manual_seed takes: refused at the start, not after the data loads


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (as the atomic writes do: a temp file beside it, then renamed over
    it), or None: asked before the work, so that a tool refuses at the start rather than failing after it."""
    if path.is_dir():
        return "it is a folder"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("")
        tmp.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None
