"""The shipped gallery: 10 test images per class, pixel for pixel the CIFAR-10 test split's, and rebuildable."""
import numpy as np

from resnet_core.data import CLASSES, load_cifar10
from resnet_core.gallery import PER_CLASS, build_gallery, first_per_class, load_gallery


def test_gallery_has_the_first_ten_of_each_class():
    images, labels, indices = load_gallery()
    assert images.shape == (len(CLASSES) * PER_CLASS, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [PER_CLASS] * len(CLASSES)
    assert (np.diff(labels) >= 0).all(), "class by class"
    for c in range(len(CLASSES)):
        assert (np.diff(indices[labels == c]) > 0).all(), "by index within a class"


def test_shipped_asset_matches_the_test_zip(shared_cifar):
    images, labels, indices = load_gallery()
    source, source_labels = load_cifar10(shared_cifar, "test", limit=int(indices.max()) + 1)
    assert first_per_class(source_labels.numpy()) == indices.tolist()
    assert np.array_equal(source.numpy()[indices], images)
    assert np.array_equal(source_labels.numpy()[indices], labels)


def test_rebuilding_gives_the_same_pixels(shared_cifar, tmp_path):
    build_gallery(shared_cifar, tmp_path / "grid.png", tmp_path / "grid.json")
    rebuilt, shipped = load_gallery(tmp_path / "grid.png", tmp_path / "grid.json"), load_gallery()
    for a, b in zip(rebuilt, shipped):
        assert np.array_equal(a, b)
