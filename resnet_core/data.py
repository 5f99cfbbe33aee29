"""CIFAR-10: read zips, PNG folders or torchvision pickles, cache as safetensors, augment batches on the device."""

import hashlib
import io
import os
import pickle
import re
import struct
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from tqdm import tqdm

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, on the 0..1 scale
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
ZIPS = {"train": [f"train-{i}.zip" for i in range(1, 6)], "test": ["test.zip"]}
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
PNG_NAME = re.compile(r"([a-z]+)/(\d+)\.png")  # "<class>/<index>.png", the tail of every PNG's path
BATCH_ROWS = 10_000  # images in each of torchvision's batch files
CACHE_VERSION = 2  # part of every cache's fingerprint: raise it when a change here alters the decoded tensors
# Seeds run from 0 to below this: each epoch's plan seeds torch's generator with seed * 1_000_003 + epoch, which must
# stay within its 64 bits (augmentation_plan)
SEED_LIMIT = 2 ** 32
CROP_PAD = 4  # zero pixels on each side before the random 32x32 crop (the paper's Sec. 4.2); part of every epoch's plan


class DatasetError(ValueError):
    """The CIFAR-10 source is missing, incomplete or corrupt."""


class Source(NamedTuple):
    kind: str  # "zip", "png" or "pickle"
    root: Path  # folder the file names are relative to
    files: list  # present zips / PNGs / batch files, as Paths
    missing: list  # names of expected zips / batch files that are absent


def resolve_data_dir(data_dir: str | None = None, splits=tuple(SPLIT_SIZES)) -> Path:
    """The folder named (data_dir, else $CIFAR10_DIR), as it is: loading it says what is wrong with it. Else the
    first of ./data, the repo's data/ and ../shared/datasets/cifar10 that holds all of `splits` (default both)
    whole, so that an empty or partial ./data (an interrupted copy) does not hide the shared copy; where none does,
    the first that has some of each, for its reading to say what is missing."""
    named = data_dir or os.environ.get("CIFAR10_DIR")
    if named:
        return Path(named).expanduser().resolve()
    tried, partial = [], None
    candidates = (Path("data"), REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "datasets" / "cifar10")
    # Run from the repo root, ./data is the repo's data/: look (and report) once.
    for path in dict.fromkeys(path.resolve() for path in candidates):
        lacking = [split for split in splits if next(_sources(path, split), None) is None]
        if not lacking and all(_complete(path, split) for split in splits):
            return path
        partial = partial or (None if lacking else path)
        tried.append(f"{path} ({'no such folder' if not path.is_dir() else 'no ' + ' or '.join(lacking) + ' split'})")
    if partial is not None:
        return partial
    raise DatasetError(f"no CIFAR-10 folder found: tried {', '.join(tried)}. Pass --data-dir or set CIFAR10_DIR; "
                       "on a connected machine, `python train.py --download` fetches it into ./data.")


def _complete(data_dir: Path, split: str) -> bool:
    """Whether a layout under data_dir promises all of `split` (by its file names: reading checks the rest)."""
    return any(_holds(source, split, SPLIT_SIZES[split]) for source in _sources(data_dir, split))


def download_cifar10(root) -> Path:
    """On a connected machine: torchvision's CIFAR-10 archive, fetched into root/cifar-10-batches-py and checked
    against torchvision's MD5. Nothing is fetched where root already holds both splits in a layout this module
    reads (the shared zips, say), or torchvision's intact batches. Only downloaded and unpacked here: the batches
    are read later by this module's restricted unpickler, never by torchvision's plain one."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    root = Path(root).expanduser().resolve()
    if all(_complete(root, split) for split in SPLIT_SIZES):
        return root
    folder = root / CIFAR10.base_folder
    if not all(check_integrity(str(folder / name), md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list):
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    return root


def load_cifar10(data_dir, split, limit=None, cache_dir=None):
    """The first `limit` (default all) images of `split` by index: (N, 32, 32, 3) uint8 and (N,) int64 labels."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a count of images (0 or more) or None for all, not {limit!r}")
    need = SPLIT_SIZES[split] if limit is None else min(limit, SPLIT_SIZES[split])
    source = find_source(Path(data_dir), split, need)
    fingerprint = _fingerprint(source, split, limit)
    cache_dir = Path(cache_dir or os.environ.get("RESNET_CACHE_DIR") or Path.home() / ".cache" / "resnet-explorer")
    cache = cache_dir / f"cifar10-{split}-{fingerprint[:16]}.safetensors"
    cached = _read_cache(cache, fingerprint, need)
    if cached is not None:
        return cached
    read = _read_pickles if source.kind == "pickle" else _read_pngs
    images, labels = read(source, split, need)
    _write_cache(cache, images, labels, fingerprint)
    return images, labels


def find_source(data_dir, split, need=None):
    """Which of the three layouts under data_dir holds `split`: the first (zips, then a PNG folder, then pickles)
    whose file names promise the first `need` images (default all), so that a zip left beside a complete unpacked
    folder does not hide it; if none does, the first present, whose reading then says what is missing."""
    data_dir = Path(data_dir)
    need = SPLIT_SIZES[split] if need is None else need
    first = None
    for source in _sources(data_dir, split):
        if _holds(source, split, need):
            return source
        first = first or source
    if first is not None:
        return first
    zip_names = "train-1.zip..train-5.zip" if split == "train" else "test.zip"
    raise DatasetError(
        f"CIFAR-10 {split} split not found in {data_dir}: expected {zip_names} (the layout of ../shared/datasets/cifar10), "
        f"a cifar10/{split}/<class>/*.png folder, or torchvision's cifar-10-batches-py/. Pass --data-dir."
    )


def _sources(data_dir, split):
    """Each layout present under data_dir for `split`, best first; lazily, so PNGs are listed only if asked for."""
    zips = [data_dir / name for name in ZIPS[split] if (data_dir / name).is_file()]
    if zips:
        yield Source("zip", data_dir, zips, [name for name in ZIPS[split] if not (data_dir / name).is_file()])
    for root in (data_dir / "cifar10" / split, data_dir / split):
        if root.is_dir():
            yield Source("png", root, sorted(p for c in CLASSES for p in (root / c).glob("*.png")), [])
            break
    for root in (data_dir / "cifar-10-batches-py", data_dir):
        present = [root / name for name in BATCHES[split] if (root / name).is_file()]
        if present:
            yield Source("pickle", root, present, [name for name in BATCHES[split] if not (root / name).is_file()])
            break


def _holds(source, split, need) -> bool:
    """Whether the file names promise images 0..need-1; reading tells whether the files keep that promise."""
    if source.kind == "zip":  # which indices a lone zip holds shows only inside it
        return not source.missing
    if source.kind == "png":
        indices = {int(p.stem) for p in source.files if p.stem.isdigit()}
        return all(i in indices for i in range(need))
    leading = next((i for i, name in enumerate(BATCHES[split]) if name in source.missing), len(BATCHES[split]))
    return leading * BATCH_ROWS >= need  # batches are read in order, up to the first missing one


def _fingerprint(source, split, limit):
    """Hash of what the images come from and of this code's version: any rename, resize or touch of a source file
    changes it, and for zips any change to a member's name or CRC-32, even one that keeps the zip's size and date."""
    h = hashlib.sha256(repr((CACHE_VERSION, str(source.root.resolve()), source.kind, split, limit)).encode())
    for path in source.files:
        st = path.stat()
        h.update(f"{path.relative_to(source.root)} {st.st_size} {st.st_mtime_ns}\n".encode())
        if source.kind == "zip":
            h.update(_zip_directory(path))
    return h.hexdigest()


def _zip_directory(path) -> bytes:
    """The zip's central directory as stored: every member's name, CRC-32, sizes and date. Read raw, in about a
    millisecond: zipfile's parse takes 0.13 s per 10,000 members, where a hit on the whole train split's cache
    takes 15 ms."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 22 - 65_535))  # the end record: 22 bytes and a comment of up to 64 KiB
            tail = f.read()
            end = tail.rfind(b"PK\x05\x06")
            if end >= 0 and len(tail) - end >= 22:
                length, offset = struct.unpack_from("<II", tail, end + 12)
                if offset + length <= size:  # else a zip64 (offset 0xFFFFFFFF) or a damaged end record
                    f.seek(offset)
                    directory = f.read(length)
                    if directory.startswith(b"PK\x01\x02"):
                        return directory
        with zipfile.ZipFile(path) as zf:  # any other zip: zipfile reads it, or says what is wrong
            return "".join(f"{m.filename} {m.CRC} {m.file_size}\n" for m in zf.infolist()).encode()
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot open {path}: {e}") from e


def _check_found(source, split, need, found, first_missing=None):
    if found < need:
        hint = f"missing {', '.join(source.missing)}" if source.missing else f"first missing index: {first_missing}"
        raise DatasetError(
            f"CIFAR-10 {split} split incomplete: found {found:,} of {need:,} {split} images in {source.root} ({hint})"
        )


MAX_PNG_BYTES = 64 * 1024  # 32x32 RGB stored raw is 3,072 bytes: any real PNG of one is far below this


def _read_pngs(source, split, need):
    """Decode the first `need` PNGs by index, from the zips or the folder, on a thread pool.

    Only PIL's C decoder runs without the GIL (about a quarter of the time per image), so threads help modestly.
    """
    with ExitStack() as stack:
        entries = {}  # index -> (label, name for errors, function returning the PNG bytes)
        for path in source.files:
            if source.kind == "png":
                if (size := path.stat().st_size) > MAX_PNG_BYTES:
                    raise DatasetError(f"{path} is {size:,} bytes; a 32x32 PNG is a few kB (over {MAX_PNG_BYTES:,} "
                                       f"bytes: not a CIFAR-10 image)")
                members = [(path.relative_to(source.root).as_posix(), str(path), path.read_bytes)]
            else:
                try:
                    zf = stack.enter_context(zipfile.ZipFile(path))
                except (OSError, zipfile.BadZipFile) as e:
                    raise DatasetError(f"cannot open {path}: {e}") from e
                prefix = f"cifar10/{split}/"
                # only the PNGs, as the folder layout lists them: a .DS_Store or a folder's own entry is no image
                infos = [m for m in zf.infolist() if m.filename.startswith(prefix) and m.filename.endswith(".png")]
                if big := next((m for m in infos if m.file_size > MAX_PNG_BYTES), None):
                    raise DatasetError(f"{path}:{big.filename} unpacks to {big.file_size:,} bytes; a 32x32 PNG is a "
                                       f"few kB (over {MAX_PNG_BYTES:,} bytes: not a CIFAR-10 image)")
                members = [(m.filename[len(prefix):], f"{path}:{m.filename}", partial(zf.read, m)) for m in infos]
            for tail, name, read in members:
                match = PNG_NAME.fullmatch(tail)
                if match is None or match[1] not in CLASSES or int(match[2]) >= SPLIT_SIZES[split]:
                    expected = f"<class>/<index>.png with index < {SPLIT_SIZES[split]:,}"
                    raise DatasetError(f"unexpected file {name}: expected {expected}")
                index = int(match[2])
                if index in entries:
                    raise DatasetError(f"{split} image {index} appears twice: {entries[index][1]} and {name}")
                entries[index] = (CLASSES.index(match[1]), name, read)
        missing = [i for i in range(need) if i not in entries]
        _check_found(source, split, need, need - len(missing), missing[0] if missing else None)

        images = np.empty((need, 32, 32, 3), np.uint8)  # (N, 32, 32, 3) uint8, filled by the workers

        def decode(chunk):
            for i in chunk:
                _, name, read = entries[i]
                images[i] = _decode_png(name, read)
            return len(chunk)

        # chunks of 256: one task per image would cost more in executor overhead than the decode itself
        chunks = [range(i, min(i + 256, need)) for i in range(0, need, 256)]
        bar = tqdm(total=need, desc=f"decoding {split} PNGs", unit="img")
        with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool, bar:
            for done in pool.map(decode, chunks):  # map cancels the queued chunks when one raises
                bar.update(done)
    labels = torch.tensor([entries[i][0] for i in range(need)], dtype=torch.int64)
    return torch.from_numpy(images), labels


def _decode_png(name, read):
    """One PNG's pixels as (32, 32, 3) uint8; anything else is a DatasetError naming the file."""
    try:
        with Image.open(io.BytesIO(read()), formats=["PNG"]) as im:
            if im.size == (32, 32) and im.mode == "RGB":
                return np.asarray(im)
            problem = f"it is {im.size[0]}x{im.size[1]} {im.mode}"
    except Exception as e:  # zipfile and PIL raise many types for a broken file
        problem = f"{type(e).__name__}: {e}"
    raise DatasetError(f"{name} is not a readable 32x32 RGB PNG ({problem})")


# A CIFAR batch is a pickle, and a pickle is a program: its globals could run code, and even numpy's own
# (dtype, _reconstruct) build arrays from whatever state the file gives them, such as a dtype whose field lies past
# the end of its buffer (a read outside it, a crash of the server). So no numpy object is built from the file: the
# pickle's few globals resolve to the inert stand-ins below, which only record their arguments, and the batch is
# accepted only in its one known shape, its pixels and labels copied out with np.frombuffer.
class _Stub:
    """What the pickle calls or builds: the call's arguments and any __setstate__ state, nothing more."""

    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


class _Dtype(_Stub):
    pass


class _Array(_Stub):
    pass


def _reconstruct(cls, shape, dtype_code):  # numpy's protocol-2 array: the pixels arrive by __setstate__
    return _Array(None)


def _frombuffer(buffer, dtype, shape, order):  # numpy's protocol-5 array
    return _Array(buffer, dtype, shape, order)


def _encode(text, encoding="utf-8"):  # bytes written by python3 at protocol 2
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("bytes in an encoding other than latin-1")
    return text.encode("latin-1")


UINT8_STATE = (3, "|", None, None, None, -1, -1, 0)  # np.dtype("u1").__reduce__()'s state: no fields, no subarray


def _pixels(value, rows_max):
    """The batch's data: an (n, 3072) uint8 array, C order, every byte present; else ValueError."""
    if not isinstance(value, _Array):
        raise ValueError(f"data is a {type(value).__name__}, not an array")
    if value.args[0] is None:  # _reconstruct, then __setstate__((version, shape, dtype, fortran, raw))
        state = value.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise ValueError("data is an array of unknown layout")
        _, shape, dtype, fortran, raw = state
    else:
        raw, dtype, shape, order = value.args
        fortran = order != "C"
    if isinstance(raw, str):  # python2's str, read with encoding="latin1"
        raw = raw.encode("latin-1")
    if not (isinstance(dtype, _Dtype) and dtype.args[:1] == ("u1",) and dtype.state in (None, UINT8_STATE)):
        raise ValueError("data is not of dtype uint8")
    if fortran is not False or not isinstance(raw, (bytes, bytearray)):
        raise ValueError("data is not a C-ordered array of bytes")
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(type(n) is int for n in shape) and shape[1] == 3072
            and 0 <= shape[0] <= rows_max):
        raise ValueError(f"data of shape {shape}, not (n <= {rows_max:,}, 3072)")
    if len(raw) != shape[0] * 3072:
        raise ValueError(f"data holds {len(raw):,} bytes, not {shape[0] * 3072:,}")
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR batch through the stand-ins above; any other global is refused, unrun."""

    STANDINS = {
        ("numpy", "ndarray"): _Stub,
        ("numpy", "dtype"): _Dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # protocol 2, as in the original python2 batches
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _encode,
    }

    def find_class(self, module, name):
        if (module, name) not in self.STANDINS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR-10 batch")
        return self.STANDINS[module, name]


def _read_pickles(source, split, need):
    """Concatenate batch files in order until `need` images; a missing batch ends the run, as later indices are unknown."""
    images, labels, found = [], [], 0
    for name in BATCHES[split]:
        path = source.root / name
        if found >= need or not path.is_file():
            break
        if found % BATCH_ROWS:  # a short batch before this one: its images would get the wrong indices
            raise DatasetError(f"{previous} holds {found % BATCH_ROWS:,} images, not {BATCH_ROWS:,}: a CIFAR-10 "
                               f"batch is whole; replace it with the original")
        try:
            with open(path, "rb") as f:
                batch = _BatchUnpickler(f, encoding="latin1").load()
            if not isinstance(batch, dict):
                raise ValueError(f"a {type(batch).__name__}, not a dict")
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            data = _pixels(batch.get("data"), BATCH_ROWS)  # (n, 3072) uint8, each row CHW
            label = batch.get("labels")
            if not (isinstance(label, list) and len(label) == len(data) and all(type(v) is int for v in label)):
                raise ValueError(f"labels are not a list of {len(data):,} whole numbers")
            if any(not 0 <= v <= 9 for v in label):
                raise ValueError("labels outside 0..9")
            label = np.array(label, dtype=np.int64)
        except Exception as e:  # unpickling a damaged file raises anything
            raise DatasetError(f"{path} is not a CIFAR-10 batch ({type(e).__name__}: {e})") from e
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (n, 32, 32, 3)
        labels.append(label)
        found, previous = found + len(data), path
    _check_found(source, split, need, min(found, need), found)
    if not images:  # need is 0
        return torch.empty((0, 32, 32, 3), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64)
    images = np.ascontiguousarray(np.concatenate(images)[:need])
    return torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)[:need])


def _read_cache(path, fingerprint, n):
    """The cached (images, labels) if the file is there, matches the source and looks sane; else None (and say why)."""
    if not path.exists():
        print(f"building CIFAR-10 cache {path} (none yet)", file=sys.stderr)
        return None
    try:
        with safe_open(path, framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                raise ValueError("made from a different source")
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        got = (images.dtype, tuple(images.shape), labels.dtype, tuple(labels.shape))
        if got != (torch.uint8, (n, 32, 32, 3), torch.int64, (n,)):
            raise ValueError(f"unexpected tensors {got}")
        if n and (labels.min() < 0 or labels.max() > 9):
            raise ValueError("labels outside 0..9")
        return images, labels
    except Exception as e:  # a damaged file can raise anything while being read
        print(f"rebuilding CIFAR-10 cache {path} ({type(e).__name__}: {e})", file=sys.stderr)
        return None


_unwritable_dirs = set()  # cache folders already warned about


def _write_cache(path, images, labels, fingerprint):
    """Atomically (temp file + rename, so a crash never leaves a half file under the real name); skipped if unwritable."""
    from .checkpoint import atomic_save_tensors  # here: checkpoint imports this module

    try:
        metadata = {"fingerprint": fingerprint, "count": str(len(labels))}
        atomic_save_tensors(path, {"images": images, "labels": labels}, metadata=metadata)
    except Exception as e:  # the cache only saves time: never fail a load over it
        if path.parent not in _unwritable_dirs:
            _unwritable_dirs.add(path.parent)
            print(f"warning: not caching CIFAR-10 in {path.parent} ({type(e).__name__}: {e})", file=sys.stderr)


def augmentation_plan(n, epoch, seed, device):
    """Order, crop offsets and flips for one epoch; a function of (seed, epoch) only, so a resumed run repeats it exactly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)  # (n,) int64
    offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=g)  # (n, 2) int64 (row, col) into the padded image, per image
    flips = torch.randint(0, 2, (n,), generator=g).bool()  # (n,) bool, per image
    return perm.to(device), offsets.to(device), flips.to(device)


def plan_fingerprint(n, seed) -> str:
    """SHA-256 (16 hex digits) of the first epoch's plan: which data orders and crops this torch's generator draws.
    Saved with a run's state, it tells a resume on another torch (the GPU machine's) whether the rest of the run
    sees the plans the first sitting would have."""
    h = hashlib.sha256()
    for t in augmentation_plan(n, 0, seed, "cpu"):
        h.update(t.to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


def augment_batch(images_u8, idx, offsets, flips):
    """Zero-padded random crop + horizontal flip of images_u8[idx] as a single gather: no loop, no host sync."""
    _, h, w, _ = images_u8.shape  # (N, 32, 32, 3) uint8, on the device
    off, flip = offsets[idx], flips[idx]  # (B, 2), (B,)
    rows = off[:, :1] - CROP_PAD + torch.arange(h, device=idx.device)  # (B, 32) rows of the source image, out of range = padding
    cols = torch.arange(w, device=idx.device)
    cols = off[:, 1:] - CROP_PAD + torch.where(flip[:, None], w - 1 - cols, cols)  # (B, 32), backwards for a flipped sample
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, 32, 32)
    out = images_u8[idx[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]  # (B, 32, 32, 3)
    return out.masked_fill_(~inside[..., None], 0)


def normalize(images_u8, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """(B, 32, 32, 3) uint8 -> (B, 3, 32, 32) float32 channels_last; mean/std as device tensors keep it CUDA-graph safe."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images_u8.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images_u8.device).view(1, 3, 1, 1)
    x = images_u8.permute(0, 3, 1, 2).float()  # NHWC storage viewed as NCHW is channels_last strides
    return ((x / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
