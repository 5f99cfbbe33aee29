"""A fixed sample of the CIFAR-10 test set shipped with the repo (10 per class), so the app works without the dataset."""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint import atomic_write_bytes, atomic_write_json
from .cli import DATA_DIR_HELP
from .data import CLASSES, load_cifar10, resolve_data_dir

ASSETS = Path(__file__).resolve().parent / "assets"
GRID_PNG = ASSETS / "cifar10_test_sample.png"
GRID_JSON = ASSETS / "cifar10_test_sample.json"
PER_CLASS = 10
TILE = 32


def load_gallery(png: Path = GRID_PNG, meta: Path = GRID_JSON) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(100, 32, 32, 3) uint8 images, (100,) labels, (100,) test-set indices; class by class, by index within a class."""
    info = json.loads(Path(meta).read_text())
    grid = np.asarray(Image.open(png).convert("RGB"))  # (rows*32, cols*32, 3): row = class, column = k-th image
    rows, cols = grid.shape[0] // TILE, grid.shape[1] // TILE
    tiles = grid.reshape(rows, TILE, cols, TILE, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, TILE, TILE, 3)
    labels, indices = np.asarray(info["labels"]), np.asarray(info["indices"])
    if len(labels) != len(tiles) or len(indices) != len(tiles):
        raise ValueError(f"{meta} lists {len(labels)} labels for {len(tiles)} tiles in {png}")
    return np.ascontiguousarray(tiles), labels, indices


def first_per_class(labels: np.ndarray) -> list[int]:
    """Indices of the first PER_CLASS images of each class, class by class."""
    return [int(i) for c in range(len(CLASSES)) for i in np.flatnonzero(labels == c)[:PER_CLASS]]


def build_gallery(data_dir=None, png: Path = GRID_PNG, meta: Path = GRID_JSON) -> list[int]:
    """Write the grid PNG (lossless) and its JSON from the CIFAR-10 test split, each whole or not at all (temp file +
    rename: the app reads them); returns the indices used."""
    images, labels = load_cifar10(resolve_data_dir(data_dir, splits=("test",)), "test")
    indices = first_per_class(labels.numpy())
    tiles = images.numpy()[indices].reshape(len(CLASSES), PER_CLASS, TILE, TILE, 3)
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(len(CLASSES) * TILE, PER_CLASS * TILE, 3)
    encoded = io.BytesIO()
    Image.fromarray(grid).save(encoded, format="PNG", optimize=True)
    atomic_write_bytes(png, encoded.getvalue())
    atomic_write_json(meta, {
        "source": "CIFAR-10 test split (test_batch): the first 10 images of each class by index",
        "classes": list(CLASSES), "tile": TILE, "layout": "row = class, column = k-th image of that class",
        "indices": indices, "labels": [int(labels[i]) for i in indices]})
    return indices


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_core.gallery",
                                     description="Rebuild the shipped gallery of CIFAR-10 test images.")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    args = parser.parse_args(argv)
    try:
        count = len(build_gallery(args.data_dir))
    except (ValueError, OSError) as e:  # DatasetError says where it looked and what to do; OSError: assets/ read-only
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {GRID_PNG} and {GRID_JSON} ({count} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
