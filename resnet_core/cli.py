"""Argparse types shared by the command-line tools (train.py, resnet_core.landscape, bench/): a bad number is
refused before any work starts, with argparse's one-line error naming the option."""
from __future__ import annotations

import argparse
import math


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
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < low or (strictly and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not {'above' if strictly else 'at least'} {low}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"{text} is not below {below}")
        return value
    return parse


COUNT, NONNEGATIVE, POSITIVE, RATE = number(int, 1), number(int, 0), number(float, 0, strictly=True), number(float, 0)
FRACTION = number(float, 0, below=1)  # momentum: at 1 or above, SGD's velocity never decays
