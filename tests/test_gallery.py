"""python -m resnet_core.gallery: missing data in one line, and files replaced whole (the app reads them)."""
import numpy as np

from resnet_core import gallery


def test_missing_data_is_one_line(tmp_path, capsys):
    assert gallery.main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1
    assert err.startswith(f"error: CIFAR-10 test split not found in {tmp_path / 'nowhere'}: ")


def test_rebuilding_replaces_each_file_whole(shared_cifar, tmp_path):
    """Each file written beside and renamed over the old one (a new inode), never rewritten in place: the app,
    reading it meanwhile, finds the old file or the new one, never half of one."""
    png, meta = tmp_path / "grid.png", tmp_path / "grid.json"
    gallery.build_gallery(shared_cifar, png, meta)
    first = {path: path.stat().st_ino for path in (png, meta)}
    gallery.build_gallery(shared_cifar, png, meta)
    assert all(path.stat().st_ino != inode for path, inode in first.items())
    assert sorted(tmp_path.iterdir()) == [meta, png]  # no temp file left
    for rebuilt, shipped in zip(gallery.load_gallery(png, meta), gallery.load_gallery()):
        assert np.array_equal(rebuilt, shipped)
