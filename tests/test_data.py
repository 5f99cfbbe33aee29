"""Tests for resnet_core.data: the three source layouts, their errors, the cache, and on-device augmentation."""

import io
import os
import pickle
import re
import time
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import CIFAR10, NO_CIFAR10
from resnet_core import checkpoint, data
from resnet_core.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DatasetError,
    augment_batch,
    augmentation_plan,
    load_cifar10,
    normalize,
)

# CIFAR-10 where the project finds it (conftest); the tests that unpack PNGs or count their decodes need it as zips.
ZIPPED = CIFAR10 is not None and all((CIFAR10 / name).is_file() for name in ("test.zip", "train-1.zip"))
needs_cifar = pytest.mark.skipif(CIFAR10 is None, reason=NO_CIFAR10)
needs_zips = pytest.mark.skipif(not ZIPPED, reason=NO_CIFAR10 or f"the CIFAR-10 in {CIFAR10} is not zips "
                                                                  f"(test.zip, train-1.zip..), which these tests unpack")


@pytest.fixture(scope="module")
def zip_test50(tmp_path_factory):
    """The first 50 test images and labels (from the zips where CIFAR-10 comes as zips)."""
    return load_cifar10(CIFAR10, "test", limit=50, cache_dir=tmp_path_factory.mktemp("cache"))


def extract_pngs(dest, n):
    """Unpack the first n test PNGs of test.zip under dest/cifar10/test/<class>/."""
    with zipfile.ZipFile(CIFAR10 / "test.zip") as zf:
        for member in zf.namelist()[:n]:
            zf.extract(member, dest)
    return dest


def made_images(n, seed=0):
    """n random (32, 32, 3) uint8 images: for the tests that need no real CIFAR-10."""
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def png_bytes(image):
    out = io.BytesIO()
    Image.fromarray(image.numpy()).save(out, format="PNG")
    return out.getvalue()


def write_zip(path, split, members):
    """A zip in the shared layout: members (class name, index, image) as cifar10/<split>/<class>/<index>.png."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, index, image in members:
            zf.writestr(f"cifar10/{split}/{name}/{index:05d}.png", png_bytes(image))


def count_decodes(monkeypatch):
    """Wrap the PNG decoder so a test can tell a cache hit (no decodes) from a rebuild."""
    calls = []
    decode = data._decode_png
    monkeypatch.setattr(data, "_decode_png", lambda name, read: calls.append(name) or decode(name, read))
    return calls


# ---- the three layouts


@needs_zips
def test_zip_layout(zip_test50):
    images, labels = zip_test50
    assert images.shape == (50, 32, 32, 3) and images.dtype == torch.uint8
    assert labels.shape == (50,) and labels.dtype == torch.int64
    assert labels[0] == 3 and labels[1] == 8 and labels[3] == 0  # cat/00000, ship/00001, airplane/00003
    assert images.float().std() > 10  # real pixels, not a zero buffer


@needs_zips
def test_zip_layout_train_spans_zips(tmp_path):
    images, labels = load_cifar10(CIFAR10, "train", limit=3, cache_dir=tmp_path)
    assert images.shape == (3, 32, 32, 3)
    assert labels.tolist()[:2] == [6, 9]  # train/frog/00000.png, train/truck/00001.png


@needs_zips
def test_unpacked_layout_matches_zip(tmp_path, zip_test50):
    extract_pngs(tmp_path / "pngs", 20)
    for data_dir in (tmp_path / "pngs", tmp_path / "pngs" / "cifar10"):
        images, labels = load_cifar10(data_dir, "test", limit=20, cache_dir=tmp_path / "cache")
        assert torch.equal(images, zip_test50[0][:20]) and torch.equal(labels, zip_test50[1][:20])


def write_batch(folder, name, images, labels, protocol=pickle.HIGHEST_PROTOCOL):
    """A torchvision-style batch file: rows of 3072 bytes, CHW, with bytes keys as in the original python2 pickles."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = images.permute(0, 3, 1, 2).reshape(len(images), 3072).numpy()  # (N, 3072) uint8
    with open(folder / name, "wb") as f:
        batch = {b"batch_label": b"testing batch 1 of 1", b"data": rows, b"labels": labels.tolist()}
        pickle.dump(batch, f, protocol=protocol)


@needs_cifar
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_torchvision_layout_matches_zip(tmp_path, zip_test50, protocol):
    write_batch(tmp_path / "cifar-10-batches-py", "test_batch", zip_test50[0][:8], zip_test50[1][:8], protocol)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        images, labels = load_cifar10(data_dir, "test", limit=8, cache_dir=tmp_path / "cache")
        assert torch.equal(images, zip_test50[0][:8]) and torch.equal(labels, zip_test50[1][:8])


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_forbidden_global_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit(marker), b"labels": [0]}, f)
    with pytest.raises(DatasetError, match="forbidden global"):
        load_cifar10(tmp_path, "test", limit=1, cache_dir=tmp_path / "cache")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_batches_of_every_pickle_protocol_read_the_same(tmp_path, protocol):
    """Protocol 2 (the original python2 batches: _reconstruct + __setstate__), 4 and 5 (_frombuffer) all yield the
    written pixels and labels, through the stand-ins that build nothing from the file."""
    pictures, labels = made_images(6, seed=protocol), torch.tensor([0, 9, 3, 3, 5, 1])
    write_batch(tmp_path, "test_batch", pictures, labels, protocol)
    images, got = load_cifar10(tmp_path, "test", limit=6, cache_dir=tmp_path / "cache")
    assert torch.equal(images, pictures) and torch.equal(got, labels)


_reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy's own, under whichever module name this numpy gives it


def python2_batch(rows: bytes, labels: list[int]) -> bytes:
    """A batch as python2's cPickle wrote the original CIFAR-10 files, opcode by opcode: str keys and pixel bytes
    (SHORT_BINSTRING, BINSTRING, read back as latin-1 text), numpy's _reconstruct then __setstate__ (no _codecs)."""
    def short(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text

    dtype = (b"cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R"  # dtype("u1", 0, 1)
             + b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # its state
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
             + b"(K\x01" + b"K" + bytes([len(rows) // 3072]) + b"M\x00\x0c\x86" + dtype + b"\x89"
             + b"T" + len(rows).to_bytes(4, "little") + rows + b"tb")
    listed = b"]" + b"".join(b"K" + bytes([v]) + b"a" for v in labels)
    return b"\x80\x02}(" + short(b"data") + array + short(b"labels") + listed + b"u."


def test_an_original_python2_batch_reads(tmp_path):
    pictures, labels = made_images(2, seed=7), torch.tensor([8, 2])
    rows = pictures.permute(0, 3, 1, 2).reshape(2, 3072).numpy().tobytes()
    (tmp_path / "test_batch").write_bytes(python2_batch(rows, labels.tolist()))
    images, got = load_cifar10(tmp_path, "test", limit=2, cache_dir=tmp_path / "cache")
    assert torch.equal(images, pictures) and torch.equal(got, labels)


class Crafted:
    """Pickles as `function(*args)` then `__setstate__(state)`: what a hostile batch file can say."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def crafted_array(shape, dtype, raw):
    return Crafted(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


# A dtype of 8 bytes whose one field lies 10^12 bytes past its start: numpy builds it from the pickled state, and
# reading it read far outside the array (the server crashed). Nothing is built from the file now, so it is refused.
FIELD_PAST_END = Crafted(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("<i8"), 10**12)}, 8, 1,
                                                         0x10))


@pytest.mark.parametrize("data, labels, problem", [
    (crafted_array((2, 3072), FIELD_PAST_END, bytes(16)), [0, 1], "data is not of dtype uint8"),
    (np.zeros((2, 3072), np.uint8), crafted_array((2,), FIELD_PAST_END, bytes(16)), "labels are not a list of 2"),
    (np.zeros((2, 3072), np.int64), [0, 1], "data is not of dtype uint8"),
    (np.zeros((2, 3072), np.uint8).T, [0, 1], "data is not a C-ordered array of bytes"),
    (crafted_array((2, 3072), np.dtype("u1"), bytes(100)), [0, 1], "data holds 100 bytes, not 6,144"),
    (np.zeros((10_001, 3072), np.uint8), [0] * 10_001, "data of shape (10001, 3072), not (n <= 10,000, 3072)"),
    (np.zeros((2, 3072), np.uint8), [0, 10], "labels outside 0..9"),
    (np.zeros((2, 3072), np.uint8), [0, True], "labels are not a list of 2 whole numbers"),
    ([[0] * 3072] * 2, [0, 1], "data is a list, not an array"),
])
def test_a_batch_outside_the_one_known_shape_is_refused_without_building_it(tmp_path, data, labels, problem):
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    with pytest.raises(DatasetError, match=re.escape(problem)):
        load_cifar10(tmp_path, "test", limit=2, cache_dir=tmp_path / "cache")


# ---- errors


def test_missing_dir(tmp_path):
    for data_dir in (tmp_path / "nope", tmp_path):
        with pytest.raises(DatasetError, match="expected train-1.zip..train-5.zip") as e:
            load_cifar10(data_dir, "train", cache_dir=tmp_path / "cache")
        assert "cifar-10-batches-py" in str(e.value)


@needs_zips
def test_incomplete_png_folder(tmp_path):
    extract_pngs(tmp_path, 5)
    with pytest.raises(DatasetError, match="found 5 of 10,000 test images"):
        load_cifar10(tmp_path, "test", cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="found 5 of 8 test images.*first missing index: 5"):
        load_cifar10(tmp_path, "test", limit=8, cache_dir=tmp_path / "cache")


def test_a_short_batch_before_another_is_refused_and_limit_zero_reads_nothing(tmp_path):
    """A batch of fewer than 10,000 images followed by another would give the later images the wrong indices."""
    pictures, labels = made_images(8), torch.arange(8) % 10
    write_batch(tmp_path, "data_batch_1", pictures[:4], labels[:4])
    write_batch(tmp_path, "data_batch_2", pictures[4:], labels[4:])
    with pytest.raises(DatasetError, match="data_batch_1 holds 4 images, not 10,000"):
        load_cifar10(tmp_path, "train", limit=6, cache_dir=tmp_path / "cache")
    images, got = load_cifar10(tmp_path, "train", limit=3, cache_dir=tmp_path / "cache")  # within the first batch
    assert torch.equal(images, pictures[:3]) and torch.equal(got, labels[:3])
    images, got = load_cifar10(tmp_path, "train", limit=0, cache_dir=tmp_path / "cache")
    assert images.shape == (0, 32, 32, 3) and images.dtype == torch.uint8 and got.shape == (0,)


@needs_cifar
def test_incomplete_pickles_name_missing_batches(tmp_path, zip_test50):
    write_batch(tmp_path, "data_batch_1", zip_test50[0][:4], zip_test50[1][:4])
    with pytest.raises(DatasetError, match=r"found 4 of 50,000 train images .*missing data_batch_2, data_batch_3"):
        load_cifar10(tmp_path, "train", cache_dir=tmp_path / "cache")


def test_whole_batches_join_in_order_and_a_missing_one_ends_the_run(tmp_path):
    """Images 10,000 on are data_batch_2's: with it missing, data_batch_3 is not read in its place (its images would
    get batch 2's indices); once it is there, the batches join in their order."""
    first, third = made_images(10_000, seed=1), made_images(2, seed=3)
    write_batch(tmp_path, "data_batch_1", first, torch.arange(10_000) % 10)
    write_batch(tmp_path, "data_batch_3", third, torch.tensor([4, 4]))
    with pytest.raises(DatasetError, match=r"found 10,000 of 10,002 train images .*missing data_batch_2"):
        load_cifar10(tmp_path, "train", limit=10_002, cache_dir=tmp_path / "cache")
    second = made_images(3, seed=2)
    write_batch(tmp_path, "data_batch_2", second, torch.tensor([7, 8, 9]))
    images, labels = load_cifar10(tmp_path, "train", limit=10_002, cache_dir=tmp_path / "cache")
    assert torch.equal(images[:10_000], first) and torch.equal(images[10_000:], second[:2])
    assert labels[9_999] == 9 and labels[10_000:].tolist() == [7, 8]


@needs_zips
def test_bad_pngs_are_named(tmp_path):
    extract_pngs(tmp_path, 3)
    broken = tmp_path / "cifar10" / "test" / "ship" / "00001.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="00001.png is not a readable 32x32 RGB PNG"):
        load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")
    Image.new("RGB", (16, 16)).save(broken)
    with pytest.raises(DatasetError, match="00001.png .*16x16 RGB"):
        load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")


def test_resolve_data_dir(tmp_path, monkeypatch):
    """The first folder holding both splits whole (or the splits asked for); an empty or partial ./data does not
    hide the shared copy. A folder the user names is taken as named, to be told what is wrong with it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    shared = tmp_path / "shared" / "datasets" / "cifar10"
    with pytest.raises(DatasetError, match="tried"):
        data.resolve_data_dir(None)
    (tmp_path / "data").mkdir()
    shared.mkdir(parents=True)
    (shared / "test.zip").touch()
    with pytest.raises(DatasetError) as e:
        data.resolve_data_dir(None)
    assert f"tried {tmp_path / 'data'} (no train or test split), {tmp_path / 'repo' / 'data'} (no such folder), " \
        f"{shared} (no train split)" in str(e.value)
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path)  # run from the repo root: ./data is the repo's data/, named once
    with pytest.raises(DatasetError) as e:
        data.resolve_data_dir(None)
    assert str(e.value).count(str(tmp_path / "data")) == 1
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    for name in data.ZIPS["train"]:
        (shared / name).touch()
    assert data.resolve_data_dir(None) == shared
    write_batch(tmp_path / "data", "data_batch_1", made_images(1), torch.tensor([3]))  # the test split still missing
    assert data.resolve_data_dir(None) == shared
    assert data.resolve_data_dir(None, splits=("test",)) == shared
    write_batch(tmp_path / "data", "test_batch", made_images(1), torch.tensor([3]))
    assert data.resolve_data_dir(None) == shared  # an interrupted copy in ./data does not hide a whole one
    assert data.resolve_data_dir(None, splits=("test",)) == tmp_path / "data"  # its test split is all there
    (shared / "train-3.zip").unlink()
    assert data.resolve_data_dir(None) == tmp_path / "data"  # none whole: the first with both, its reading says what lacks
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(None) == tmp_path / "env"
    assert data.resolve_data_dir(str(tmp_path / "given")) == tmp_path / "given"


def test_a_zip_left_beside_an_unpacked_folder_does_not_hide_it(tmp_path):
    """As a GPU session that carries one zip per call and unpacks it leaves data/: train-5.zip beside the unpacked
    train PNGs. The folder holds the images asked for, the lone zip does not; with neither whole, the zips say
    which are missing."""
    pictures, names = made_images(5), ["frog", "truck", "truck", "deer", "automobile"]
    for index, (name, image) in enumerate(zip(names, pictures)):
        (tmp_path / "cifar10" / "train" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / "train" / name / f"{index:05d}.png").write_bytes(png_bytes(image))
    write_zip(tmp_path / "train-5.zip", "train", [("cat", 40_000, made_images(1, seed=1)[0])])
    images, labels = load_cifar10(tmp_path, "train", limit=5, cache_dir=tmp_path / "cache")
    assert torch.equal(images, pictures) and labels.tolist() == [6, 9, 9, 4, 1]
    with pytest.raises(DatasetError, match="found 1 of 50,000 train images .*missing train-1.zip, train-2.zip"):
        load_cifar10(tmp_path, "train", cache_dir=tmp_path / "cache")


def test_an_image_file_far_larger_than_a_cifar_png_is_refused_unread(tmp_path, monkeypatch):
    """A zip member of a megabyte that packs to a kilobyte (a bomb's shape) or an outsized file in the folder is
    refused by its recorded size, before any of it is read."""
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / "test.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cifar10/test/cat/00000.png", png_bytes(made_images(1)[0]))
        zf.writestr("cifar10/test/dog/00001.png", bytes(2**20))
    assert (zipped / "test.zip").stat().st_size < 8 * 1024
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a: pytest.fail("a member was read"))
    with pytest.raises(DatasetError, match=re.escape("test.zip:cifar10/test/dog/00001.png unpacks to 1,048,576 bytes; "
                                                     "a 32x32 PNG is a few kB")):
        load_cifar10(zipped, "test", limit=1, cache_dir=tmp_path / "cache")
    folder = tmp_path / "folder" / "cifar10" / "test" / "cat"
    folder.mkdir(parents=True)
    (folder / "00000.png").write_bytes(png_bytes(made_images(1)[0]) + bytes(100_000))
    with pytest.raises(DatasetError, match=r"00000\.png is 103,\d{3} bytes; a 32x32 PNG is a few kB \(over 65,536 bytes"):
        load_cifar10(tmp_path / "folder", "test", limit=1, cache_dir=tmp_path / "cache")


# ---- cache


@needs_zips
def test_cache_hit_skips_decoding(tmp_path, monkeypatch, zip_test50):
    load_cifar10(CIFAR10, "test", limit=30, cache_dir=tmp_path)

    def fail(name, read):
        raise AssertionError("decoded despite a valid cache")

    monkeypatch.setattr(data, "_decode_png", fail)
    images, labels = load_cifar10(CIFAR10, "test", limit=30, cache_dir=tmp_path)
    assert torch.equal(images, zip_test50[0][:30]) and torch.equal(labels, zip_test50[1][:30])


@needs_zips
def test_corrupt_or_foreign_cache_is_rebuilt(tmp_path, monkeypatch, capsys, zip_test50):
    load_cifar10(CIFAR10, "test", limit=30, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("cifar10-test-*.safetensors")
    with safe_open(cache, framework="pt") as f:
        fingerprint = f.metadata()["fingerprint"]

    def rewrite(n, fingerprint, labels=None):
        labels = zip_test50[1][:n] if labels is None else labels
        save_file({"images": zip_test50[0][:n], "labels": labels}, cache, {"fingerprint": fingerprint})

    decodes = count_decodes(monkeypatch)
    for damage, reason in [
        (lambda: cache.write_bytes(b"garbage" * 100), "rebuilding"),
        (lambda: rewrite(30, "another source"), "different source"),
        (lambda: rewrite(29, fingerprint), "unexpected tensors"),
        (lambda: rewrite(30, fingerprint, torch.full((30,), 10, dtype=torch.int64)), "labels outside 0..9"),
    ]:
        damage()
        decodes.clear()
        capsys.readouterr()
        images, labels = load_cifar10(CIFAR10, "test", limit=30, cache_dir=tmp_path)
        assert reason in capsys.readouterr().err and len(decodes) == 30
        assert torch.equal(images, zip_test50[0][:30]) and torch.equal(labels, zip_test50[1][:30])


@needs_zips
def test_changed_source_rebuilds_cache(tmp_path, monkeypatch):
    extract_pngs(tmp_path, 10)
    load_cifar10(tmp_path, "test", limit=10, cache_dir=tmp_path / "cache")
    decodes = count_decodes(monkeypatch)
    load_cifar10(tmp_path, "test", limit=10, cache_dir=tmp_path / "cache")
    assert decodes == []
    png = tmp_path / "cifar10" / "test" / "cat" / "00000.png"
    pixels = np.asarray(Image.open(png)).copy()
    pixels[0, 0] = (1, 2, 3)
    Image.fromarray(pixels).save(png)
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))  # a distinct mtime even on a coarse clock
    images, _ = load_cifar10(tmp_path, "test", limit=10, cache_dir=tmp_path / "cache")
    assert len(decodes) == 10 and images[0, 0, 0].tolist() == [1, 2, 3]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # the new fingerprint names a new file


def write_pngs(root, split, members):
    """The unpacked layout: members (class name, index, image) as root/cifar10/<split>/<class>/<index>.png."""
    for name, index, image in members:
        (root / "cifar10" / split / name).mkdir(parents=True, exist_ok=True)
        (root / "cifar10" / split / name / f"{index:05d}.png").write_bytes(png_bytes(image))


def test_one_index_in_two_class_folders_is_refused(tmp_path):
    """cat/00001.png and dog/00001.png: which label image 1 has is unknowable, so neither is taken."""
    pictures = made_images(3)
    write_pngs(tmp_path, "test", [("cat", 0, pictures[0]), ("cat", 1, pictures[1]), ("dog", 1, pictures[2])])
    with pytest.raises(DatasetError, match=r"test image 1 appears twice: \S*/(cat|dog)/00001.png and "
                                           r"\S*/(cat|dog)/00001.png"):
        load_cifar10(tmp_path, "test", limit=2, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("layout, member", [("folder", "cat/10000.png"), ("zip", "cat/10000.png"),
                                             ("zip", "lion/00002.png"), ("zip", "cat/notes.png")])
def test_a_file_that_is_no_cifar_image_is_refused_by_name(tmp_path, layout, member):
    """An index past the split's 10,000, or in a zip a class CIFAR-10 does not have or a PNG's name of another
    shape: which image it would be, or its label, is unknowable, so the data are refused, naming the file and the
    layout expected. (An unpacked folder's reader lists only the ten classes' PNGs; other files there are not
    read.)"""
    pictures = made_images(2)
    members = [("cat", 0, pictures[0]), ("cat", 1, pictures[1])]
    if layout == "folder":
        write_pngs(tmp_path, "test", members)
        (tmp_path / "cifar10" / "test" / member).write_bytes(png_bytes(pictures[0]))
    else:
        write_zip(tmp_path / "test.zip", "test", members)
        with zipfile.ZipFile(tmp_path / "test.zip", "a") as zf:
            zf.writestr(f"cifar10/test/{member}", png_bytes(pictures[0]))
    with pytest.raises(DatasetError, match=rf"unexpected file \S*test/{re.escape(member)}: expected "
                                           r"<class>/<index>.png with index < 10,000"):
        load_cifar10(tmp_path, "test", limit=2, cache_dir=tmp_path / "cache")


def test_files_that_are_no_png_in_a_zip_are_skipped_as_in_a_folder(tmp_path):
    """A zip made on a Mac or by hand holds a .DS_Store, folder entries and notes beside the PNGs: they are not
    read, as the folder layout lists only PNGs, and the split loads."""
    pictures = made_images(2)
    write_zip(tmp_path / "test.zip", "test", [("cat", 0, pictures[0]), ("ship", 1, pictures[1])])
    with zipfile.ZipFile(tmp_path / "test.zip", "a") as zf:
        for name in ("cifar10/test/.DS_Store", "cifar10/test/cat/notes.txt"):
            zf.writestr(name, b"x")
        zf.mkdir("cifar10/test/dog")
    images, labels = load_cifar10(tmp_path, "test", limit=2, cache_dir=tmp_path / "cache")
    assert torch.equal(images, pictures) and labels.tolist() == [3, 8]


def test_a_source_touched_but_the_same_size_rebuilds_the_cache(tmp_path, monkeypatch):
    """Only the mtime changes (a file rewritten with other pixels of the same size would look the same): the
    fingerprint has it, so the cache is rebuilt."""
    write_pngs(tmp_path, "test", [("cat", i, image) for i, image in enumerate(made_images(3))])
    load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")
    png, decodes = tmp_path / "cifar10" / "test" / "cat" / "00001.png", count_decodes(monkeypatch)
    st = png.stat()
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")
    assert png.stat().st_size == st.st_size and len(decodes) == 3


def test_a_zip_changed_in_place_rebuilds_the_cache(tmp_path, monkeypatch):
    """An edit that keeps the zip's size and date (cp -p, rsync -a, unzip restoring times): here a member renamed
    from cat/ to dog/. Its central directory is in the cache's fingerprint, and so is the code's CACHE_VERSION."""
    pictures = made_images(3)
    write_zip(tmp_path / "test.zip", "test", [("cat", 0, pictures[0]), ("ship", 1, pictures[1]), ("ship", 2, pictures[2])])
    assert load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")[1].tolist() == [3, 8, 8]
    zipped, st = tmp_path / "test.zip", (tmp_path / "test.zip").stat()
    zipped.write_bytes(zipped.read_bytes().replace(b"cifar10/test/cat/", b"cifar10/test/dog/"))
    os.utime(zipped, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zipped.stat().st_size == st.st_size
    images, labels = load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")
    assert labels.tolist() == [5, 8, 8] and torch.equal(images, pictures)

    source = data.find_source(tmp_path, "test")
    fingerprint = data._fingerprint(source, "test", 3)
    monkeypatch.setattr(data, "CACHE_VERSION", data.CACHE_VERSION + 1)
    assert data._fingerprint(source, "test", 3) != fingerprint

    zipped.write_bytes(b"")  # nothing to read: said, naming the file
    with pytest.raises(DatasetError, match=f"cannot open {zipped}"):
        load_cifar10(tmp_path, "test", limit=3, cache_dir=tmp_path / "cache")


@needs_zips
def test_the_fingerprint_of_the_shared_zips_is_quick():
    """The whole train split's cache loads in about 15 ms: its key must not cost much more (zipfile's parse of the
    five central directories takes 0.7 s)."""
    source = data.find_source(CIFAR10, "train")
    start = time.perf_counter()
    data._fingerprint(source, "train", None)
    assert time.perf_counter() - start < 0.2


@needs_cifar
def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_CACHE_DIR", str(tmp_path / "env-cache"))
    load_cifar10(CIFAR10, "test", limit=2)
    assert len(list((tmp_path / "env-cache").glob("cifar10-test-*.safetensors"))) == 1


@needs_cifar
def test_unwritable_cache_dir_still_loads(tmp_path, capsys, zip_test50):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    images, _ = load_cifar10(CIFAR10, "test", limit=5, cache_dir=not_a_dir)
    assert torch.equal(images, zip_test50[0][:5])
    assert "not caching" in capsys.readouterr().err


@needs_cifar
def test_a_cache_write_that_fails_leaves_nothing_behind(tmp_path, capsys, monkeypatch, zip_test50):
    """A disk that fills while the cache is written: the load still succeeds, and neither a half file under the
    cache's name nor the temporary file is left (a later load decodes again and caches then)."""
    def fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", fail)
    images, _ = load_cifar10(CIFAR10, "test", limit=5, cache_dir=tmp_path / "cache")
    assert torch.equal(images, zip_test50[0][:5]) and "No space left on device" in capsys.readouterr().err
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    load_cifar10(CIFAR10, "test", limit=5, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("cifar10-test-*.safetensors"))) == 1


# ---- augmentation


def test_plan_is_deterministic_and_valid():
    perm, offsets, flips = augmentation_plan(1000, epoch=3, seed=7, device="cpu")
    again = augmentation_plan(1000, epoch=3, seed=7, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip((perm, offsets, flips), again))
    assert not torch.equal(perm, augmentation_plan(1000, epoch=4, seed=7, device="cpu")[0])
    assert not torch.equal(offsets, augmentation_plan(1000, epoch=3, seed=8, device="cpu")[1])
    assert perm.dtype == torch.int64 and torch.equal(perm.sort().values, torch.arange(1000))
    assert offsets.shape == (1000, 2) and offsets.dtype == torch.int64 and offsets.min() == 0 and offsets.max() == 8
    assert flips.dtype == torch.bool and 400 < flips.sum() < 600
    _, offsets, flips = augmentation_plan(10_000, epoch=0, seed=0, device="cpu")
    pairs = offsets[:, 0] * 9 + offsets[:, 1]  # each of the 81 crops, rows and columns drawn independently
    assert len(pairs.unique()) == 81 and 0.08 < (offsets[:, 0] == offsets[:, 1]).float().mean() < 0.14  # 1/9
    assert 0.4 < (flips == (offsets[:, 0] < 4)).float().mean() < 0.6  # flips independent of the crops too


@pytest.fixture
def images():
    return torch.randint(0, 256, (12, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def fixed_plan(n, offset, flip):
    return torch.tensor(offset).repeat(n, 1), torch.full((n,), flip)


def test_augment_centre_crop_is_identity(images):
    idx = torch.tensor([5, 0, 11])
    out = augment_batch(images, idx, *fixed_plan(12, (4, 4), False))
    assert out.shape == (3, 32, 32, 3) and out.dtype == torch.uint8
    assert torch.equal(out, images[idx])


def test_augment_flip_mirrors_width(images):
    idx = torch.tensor([2, 3])
    assert torch.equal(augment_batch(images, idx, *fixed_plan(12, (4, 4), True)), torch.flip(images[idx], dims=[2]))


def test_augment_corner_crop_shows_padding(images):
    idx = torch.tensor([1, 7])
    out = augment_batch(images, idx, *fixed_plan(12, (0, 0), False))
    assert (out[:, :4] == 0).all() and (out[:, :, :4] == 0).all()
    assert torch.equal(out[:, 4:, 4:], images[idx][:, :28, :28])


def test_augment_matches_pad_crop_flip_reference(images):
    perm, offsets, flips = augmentation_plan(12, epoch=0, seed=1, device="cpu")
    idx = perm[:8]
    padded = F.pad(images.permute(0, 3, 1, 2), (4, 4, 4, 4)).permute(0, 2, 3, 1)  # (12, 40, 40, 3)
    for out, i in zip(augment_batch(images, idx, offsets, flips), idx.tolist()):
        y, x = offsets[i].tolist()
        crop = padded[i, y : y + 32, x : x + 32]
        assert torch.equal(out, torch.flip(crop, dims=[1]) if flips[i] else crop)


def test_normalize_is_channels_last_and_standardizes():
    pixels = torch.tensor([10, 128, 250], dtype=torch.uint8)
    x = normalize(pixels.expand(4, 32, 32, 3), CIFAR10_MEAN, CIFAR10_STD)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (pixels / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), expected, atol=1e-6)


def test_download_is_not_skipped_for_empty_png_folders(tmp_path, monkeypatch):
    """Empty cifar10/train and cifar10/test folders (an unpacking that failed) hold no split: the archive is fetched."""
    from torchvision.datasets import utils

    for split in data.SPLIT_SIZES:
        (tmp_path / "cifar10" / split).mkdir(parents=True)
    fetched = []
    monkeypatch.setattr(utils, "check_integrity", lambda path, md5: False)
    monkeypatch.setattr(utils, "download_and_extract_archive", lambda url, root, **kw: fetched.append(root))
    assert data.download_cifar10(tmp_path) == tmp_path and fetched == [str(tmp_path)]
