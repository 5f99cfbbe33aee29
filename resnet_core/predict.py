"""Classify any image a user uploads: open defensively, show what the model sees, return top-k classes."""
from __future__ import annotations

import io
import math
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .data import CIFAR10_MEAN, CIFAR10_STD, CLASSES
from .probes import eval_mode

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000  # a 50-megapixel photo is fine; a decompression bomb is not
# libwebp decodes into several canvases at once: a 49-megapixel WebP of 166 bytes took 750 MB, 4 times a PNG's
MAX_WEBP_PIXELS = 12_000_000
MAX_SIDE = 65_535  # JPEG's own limit: a 1 x 50,000,000 strip is within MAX_PIXELS, yet costs Pillow 8 bytes a row
# The formats Image.open may try, whatever the file is called: what the page asks for, TIFF and netpbm for 16-bit
# and float images (JPEG opens a camera's MPO too). Never EPS (it would run Ghostscript on the upload), nor formats
# that decode a whole embedded image before its size is known (ICO) or that Pillow reads only in part (DDS, BLP).
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
# The first bytes of the formats the app opens, where they are long enough to be unmistakable: a file that starts so
# and still cannot be opened is one of them, damaged or of a kind the decoder lacks (a float64 TIFF), and is told so
# rather than "not an image"
SIGNATURES = {
    "PNG": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "JPEG": lambda data: data.startswith(b"\xff\xd8\xff"),
    "GIF": lambda data: data[:6] in (b"GIF87a", b"GIF89a"),
    "TIFF": lambda data: data[:4] in (b"II*\x00", b"MM\x00*"),
    "WebP": lambda data: data[:4] == b"RIFF" and data[8:12] == b"WEBP",
}
# Pillow parses headers, and some formats whole (BMP's RLE, plain netpbm, TIFF strip lists), in Python, a step at a
# time: a crafted file can keep it busy for a minute (17 MB of JPEG padding took 16 s; 28 KB of RLE BMP, 12 s;
# 19 MB of PNG colour profiles, 52 s). Opening an upload may take this many Python-level calls, and this much of
# the CPU: a photo takes a few thousand calls, a 50-megapixel WebP about 20,000, a TIFF of 10,000 strips about
# 50,000; a 50-megapixel PNG takes 0.7 to 1.7 s.
MAX_DECODE_CALLS = 1_000_000
MAX_DECODE_CPU_S = 5.0
DECODE_BLOCK = 4096  # bytes a C decoder is handed per call (Pillow's default, 64 KB, took a crafted JPEG 3.5 s)
# A progressive JPEG is stored in about 10 scans, each a pass over the whole image in libjpeg (7 ms at 50 MP):
# 200 thousand 98-byte scans kept it busy for 3.5 minutes. libjpeg-turbo's own tools stop at 500.
MAX_JPEG_SCANS = 200
STORED_SIZE = "stored_size"  # key in a loaded image's info: its upright size in the file (see stored_size)
FRAME = (190, 194, 201)  # the 1-pixel line round shown images, so that a white one stands out from the page
# Right after decoding, a large image is averaged down to no less than this on its short side: 8 times the 32 the
# nets see and twice the 128 of a preview, so both come out as from the full image, in a fraction of the memory.
WORKING_SIDE = 256
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # 16-bit and float greyscale, scaled to 0..255 by _to_rgb
# EXIF orientation -> the turn that shows the image upright, as ImageOps.exif_transpose turns it (which needs the
# EXIF on the image it turns: a shrunk image has none)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


class ImageRejected(ValueError):
    """An upload this module refuses, with a message written for the user: what is wrong, and what to do."""


class OutOfMemory(ImageRejected):
    """Refused for want of memory at that moment: the same file may load once the server has more free."""


def _too_many_pixels(size: str, limit: int = MAX_PIXELS, kind: str = "") -> ImageRejected:
    return ImageRejected(f"the image is {size}, more than the {limit // 1_000_000} megapixels allowed{kind}: shrink "
                         "it (the nets see only 32x32 pixels) and upload it again")


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise ImageRejected(f"expected image bytes or a PIL image, got {type(image).__name__}")
    data = bytes(image)
    if not data:
        raise ImageRejected("the file is empty: save the image again and upload the new file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageRejected(f"the file is {len(data) / 2**20:.1f} MB, more than the {MAX_UPLOAD_BYTES // 2**20} MB "
                            "allowed: save the image smaller (as a JPEG, say) and upload it again")
    if data.startswith(b"\xff\xd8") and data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # 0xFF in scan data is 0xFF00
        raise _TooMuchWork
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels: load_image's own, lower limit says it with the image's size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        if kind := next((name for name, test in SIGNATURES.items() if test(data)), None):
            raise ImageRejected(f"this file starts as a {kind} does, but the rest cannot be read: it is damaged, or "
                                f"stores its pixels in an unusual way (such as 64-bit floats): save it again as an "
                                f"ordinary 8-bit PNG or JPEG and upload that") from None
        raise ImageRejected("this file is not an image the app can read: upload a PNG, JPEG, WebP, BMP, GIF, "
                            "TIFF or PPM") from None
    except Image.DecompressionBombError:  # over twice Pillow's limit, refused before the size can be read
        raise _too_many_pixels(f"over {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None


class _TooMuchWork(BaseException):
    """Raised inside Pillow by _work_budget; not an Exception, so that no `except Exception` of Pillow's swallows it."""


@contextmanager
def _work_budget():
    """Stop the code inside (in this thread) with _TooMuchWork once it has made MAX_DECODE_CALLS Python-level calls
    (C functions included) or spent MAX_DECODE_CPU_S of this thread's CPU time, checked at each call: a profile
    function counts them. Where a profiler is already running (cProfile, a developer's), it stands aside: a C
    profiler cannot be put back once replaced."""
    if sys.getprofile() is not None:
        yield
        return
    calls, deadline = 0, time.thread_time() + MAX_DECODE_CPU_S

    def count(frame, event, arg):
        nonlocal calls
        calls += 1
        if calls > MAX_DECODE_CALLS or time.thread_time() > deadline:
            sys.setprofile(None)  # once: the unwinding's own calls are not counted
            raise _TooMuchWork

    sys.setprofile(count)
    try:
        yield
    finally:
        sys.setprofile(None)


def load_image(image) -> Image.Image:
    """Bytes or a PIL image -> an RGB PIL image, upright (EXIF), first frame, transparency over white. A large image
    comes back shrunk (see _shrunk; a JPEG is even decoded at a fraction of its size), and `stored_size` gives the
    size in the file. Anything unreadable, truncated, absurdly large or too much work to decode (see
    MAX_DECODE_CALLS) raises ValueError with a message for the user."""
    Image.init()  # every plugin registered (open() looks each of FORMATS up): imports, outside the budget
    try:
        with _work_budget():
            return _load_image(image)
    except _TooMuchWork:
        raise ImageRejected("the file makes the decoder do far more work than any image needs (padding, metadata or "
                            "pixel data written the long way), so it was not read: open it in an image editor, save "
                            "it as a new PNG or JPEG and upload that") from None


def _load_image(image) -> Image.Image:
    try:
        img = _open(image)
        w, h = img.size  # as stored: the draft below may decode fewer pixels
        if w < 1 or h < 1:
            raise ImageRejected("the image is 0 pixels wide or tall: save it again and upload the new file")
        if w * h > MAX_PIXELS:
            raise _too_many_pixels(f"{w}x{h} pixels ({w * h / 1e6:.0f} megapixels)")
        if img.format == "WEBP" and w * h > MAX_WEBP_PIXELS:
            raise _too_many_pixels(f"{w}x{h} pixels ({w * h / 1e6:.0f} megapixels)", MAX_WEBP_PIXELS,
                                   " for a WebP (its decoder needs several times the memory of other formats)")
        if max(w, h) > MAX_SIDE:
            raise ImageRejected(f"the image is {w}x{h} pixels, longer than the {MAX_SIDE:,} pixels allowed on a side: "
                                "crop or shrink it (the nets see only its centre square) and upload it again")
        with warnings.catch_warnings():
            # A frame larger than the header said (GIF) only makes Pillow warn: treat it as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)  # first frame of an animation
            img.decodermaxblock = DECODE_BLOCK
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (max(64, w // 8), max(64, h // 8)))  # decode large JPEGs at reduced size
            img.load()
        orientation = _orientation(img)
        # 16-bit images keep their scale, as 8-bit ones do (65535 is white), netpbm's too (Pillow opens them as I,
        # on that scale); float and 32-bit ones have none, so their real range is stretched to 0..255, taken before
        # averaging narrows it
        sixteen_bit = img.mode.startswith("I;16") or (img.format == "PPM" and img.mode == "I")
        value_range = (0.0, 65535.0) if sixteen_bit else _value_range(img) if img.mode in WIDE_MODES else None
        # Shrunk before anything else, so that no turn, conversion or compositing ever copies the full-size image.
        img = _shrunk(img)
        if orientation in UPRIGHT:  # any other value (text, out of range) leaves the image as it is
            img = img.transpose(UPRIGHT[orientation])
        img = _to_rgb(img, value_range)
        img.info[STORED_SIZE] = (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # 5 to 8 swap width and height
        return img
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(f"over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels once decoded") from None
    except MemoryError:
        raise OutOfMemory("the server ran out of memory decoding this image: upload a smaller one") from None
    except ValueError as e:  # Pillow's own guards (PNG text past MAX_TEXT_CHUNK or MAX_TEXT_MEMORY), or a bad field
        bomb = re.search("too large|too much memory", str(e), re.IGNORECASE)  # one text chunk, or all of them
        why = ("holds a block of data that would unpack to far more than an image needs, so it was not read" if bomb
               else "does not hold what its format promises, so it cannot be read")
        raise ImageRejected(f"the file {why}: open it in an image editor, save it as a new PNG or JPEG and upload "
                            "that") from None
    except Exception:  # OSError, SyntaxError, EOFError, struct.error, NotImplementedError...: whatever a decoder
        # raises on a file it cannot read is the file's fault, said to the user; never a traceback on the page
        raise ImageRejected("the image data is cut short or damaged, so it cannot be decoded: download or export "
                            "the image again and upload the new file") from None


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation, or None where there is none or the EXIF block is damaged (the image is still good)."""
    try:
        return img.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a truncated EXIF block raises struct.error, among others
        return None


def stored_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of a load_image result as the file stores it, upright: what the user uploaded, even where
    the decode was at reduced size. Any other image: its own size."""
    return img.info.get(STORED_SIZE, img.size)


def _shrunk(img: Image.Image) -> Image.Image:
    """`img` averaged down by a whole factor to no less than WORKING_SIDE on its short side (each pixel the mean of a
    factor x factor box, as Image.reduce does it), or as it is if it is not twice that. Strip by strip, each strip
    converted first where its mode cannot be averaged (palette indices, 1-bit, 16-bit): apart from the decoded
    image itself, only a strip is ever held at full resolution, never a full-size copy (a 7000x7000 RGBA PNG is
    196 MB decoded; converting and compositing it at full size took 1.3 GB)."""
    factor = min(img.size) // WORKING_SIDE
    if factor < 2:
        return img
    w, h = img.size
    # Strips start at multiples of factor, so the boxes are those of one reduce over the whole image; with
    # factor <= h / WORKING_SIDE, a strip holds at most w * h / 16 pixels.
    rows = 16 * factor
    strips = [_averageable(img.crop((0, top, w, min(top + rows, h)))).reduce(factor) for top in range(0, h, rows)]
    small = Image.new(strips[0].mode, (-(-w // factor), -(-h // factor)))
    for i, strip in enumerate(strips):
        small.paste(strip, (0, i * rows // factor))
    return small


def _value_range(img: Image.Image, pixels: int = 1 << 22) -> tuple[float, float]:
    """The lowest and highest finite value of a 16-bit or float image (NaN and infinities left out; (0, 0) if none
    is finite), read `pixels` at a time: Pillow's getextrema takes a NaN first pixel or an infinity for the range,
    which turns the rest black, and refuses the byte-order modes I;16B/L."""
    w, h = img.size
    lo, hi, rows = math.inf, -math.inf, max(1, pixels // max(w, 1))
    for top in range(0, h, rows):
        a = np.asarray(img.crop((0, top, w, min(top + rows, h))), dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _averageable(img: Image.Image) -> Image.Image:
    """`img` in a mode whose pixels Image.reduce can average (it averages RGBA and LA weighted by alpha): palette,
    grey and RGB images with a transparent colour (PNG's tRNS, GIF's) become RGBA, other palette and 1-bit ones
    RGB; premultiplied grey and alpha LA; 16-bit images 32-bit."""
    if img.mode == "PA" or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return img
    if img.mode in WIDE_MODES:
        return img.convert("I")
    if img.mode == "La":  # a TIFF's associated alpha: Pillow unpremultiplies it to LA, and converts it to nothing else
        return img.convert("LA")
    return img.convert("RGB")  # P, 1, CMYK, YCbCr...


def _to_rgb(img: Image.Image, value_range: tuple[float, float] | None) -> Image.Image:
    if img.mode in WIDE_MODES:
        # 16-bit and float greyscale: value_range (65535 for 16-bit; else the lowest and highest finite value) to
        # 0..255 rather than clipping it; NaN reads black, +inf white and -inf black.
        raw = np.asarray(img, dtype=np.float64)
        lo, hi = map(float, value_range)
        # A flat image has no range to stretch: its value keeps its place on 0..1 (floats' usual scale), else grey
        a = (raw - lo) / (hi - lo) * 255 if hi > lo else raw - lo + (255 * lo if 0 <= lo <= 1 else 127.5)
        a = np.where(np.isposinf(raw), 255.0, np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    img = _averageable(img)  # any transparency as RGBA or LA
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def to_model_input(image, size: int = 32) -> Image.Image:
    """What the model sees: the centre square of the image, resized to size x size."""
    return _centre_square(load_image(image), size)


def _centre_square(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)


@dataclass(frozen=True)
class Upload:
    """One uploaded image as the Predict page shows it, every part of it small enough to keep in a cache."""
    model_input: Image.Image  # what the nets see: size x size RGB
    preview: Image.Image  # the whole image, framed (see preview)
    stored_size: tuple[int, int]  # (width, height), upright, as the file stores it
    notes: list[str]  # see input_notes


def read_upload(image, size: int = 32) -> Upload:
    """All the page shows of one upload (bytes or PIL), from one decode: load_image, then each part from its result.
    Raises ValueError as load_image does."""
    img = load_image(image)
    return Upload(_centre_square(img, size), preview(img), stored_size(img), input_notes(img, size))


def preview(img: Image.Image, size: int = 128, background=(240, 242, 246)) -> Image.Image:
    """The whole image fitted into a size x size square, letterboxed and framed: any shape, even 4000x1, shows
    without becoming zero pixels wide or tall, and a small one is enlarged by a whole factor with visible pixels
    (nearest neighbour), so that a 1x1 image is a square, not a dot."""
    factor = size // max(img.size)
    if factor > 1:
        fitted = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    else:
        fitted = img.copy()
        fitted.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), background)
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return framed(canvas)


def framed(img: Image.Image) -> Image.Image:
    """`img` with a 1-pixel FRAME round it (2 pixels wider and taller): a white image stays visible on the page."""
    return ImageOps.expand(img, border=1, fill=FRAME)


def input_notes(img: Image.Image, size: int = 32) -> list[str]:
    """What the user should know about how `img` becomes the model's input: upscaled, or cropped hard."""
    w, h = stored_size(img)
    notes = []
    if min(w, h) < size:
        notes.append(f"The image is {w}x{h} pixels, smaller than the {size}x{size} the nets see: it is scaled up, "
                     "so the nets see a blur of it.")
    if max(w, h) > 2 * min(w, h):
        kept = 100 * min(w, h) / max(w, h)
        share = f"{kept:.0f} %" if kept >= 1 else "under 1 %"  # a 4000x10 strip keeps 0.25 %, not "0 %"
        notes.append(f"The image is {w}x{h} pixels: the nets see only its centre square, {share} of it.")
    return notes


def image_tensor(img32: Image.Image, normalization: dict | None = None) -> torch.Tensor:
    """A 32x32 RGB PIL image -> normalised float tensor (1, 3, 32, 32)."""
    norm = normalization or {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    x = torch.from_numpy(np.asarray(img32, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(norm["mean"]).view(3, 1, 1)
    std = torch.tensor(norm["std"]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


@torch.no_grad()
def predict(model: torch.nn.Module, image, top_k: int = 5, classes=CLASSES) -> list[tuple[str, float]]:
    """Top-k (class name, probability) for an uploaded image (bytes or PIL), highest first.
    Uses the checkpoint's normalisation (`model.normalization`, set by load_pretrained)."""
    x = image_tensor(to_model_input(image), getattr(model, "normalization", None))
    device = next(model.parameters()).device
    with eval_mode(model):  # BN on its running statistics; the model's own mode given back
        probs = torch.softmax(model(x.to(device)).float(), dim=1)[0].cpu()
    top = probs.topk(min(top_k, len(classes)))
    return [(classes[i], float(p)) for p, i in zip(top.values, top.indices)]
