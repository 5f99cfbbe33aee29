"""predict() on ordinary, odd and hostile uploads: a result or a ValueError fit for a user, nothing else."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_core import CLASSES, build_model, predict
from resnet_core.predict import input_notes, load_image, preview, to_model_input


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet20").eval()


def halves(w=64, h=48) -> Image.Image:
    """Left half red, right half blue: orientation is visible after any rotation."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(a)


ODD_IMAGES = {
    "png-rgb": lambda: encode(halves(), "PNG"),
    "png-rgba": lambda: encode(halves().convert("RGBA"), "PNG"),
    "png-palette": lambda: encode(halves().convert("P"), "PNG"),
    "png-grey16": lambda: encode(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"),
    "png-1bit": lambda: encode(halves().convert("1"), "PNG"),
    "png-1x1": lambda: encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    "png-1000x1": lambda: encode(Image.new("RGB", (1000, 1), (9, 9, 9)), "PNG"),
    "jpeg": lambda: encode(halves(), "JPEG", quality=90),
    "jpeg-cmyk": lambda: encode(halves().convert("CMYK"), "JPEG"),
    "jpeg-large": lambda: encode(halves(3000, 2000), "JPEG"),
    "webp": lambda: encode(halves(), "WEBP"),
    "bmp": lambda: encode(halves(), "BMP"),
    "gif-animated": lambda: encode(halves(), "GIF", save_all=True, append_images=[halves().rotate(90)], loop=0),
    "tiff-float": lambda: encode(Image.fromarray(np.random.rand(40, 40).astype(np.float32)), "TIFF"),
}


@pytest.mark.parametrize("kind", sorted(ODD_IMAGES))
def test_predict_odd_images(model, kind):
    data = ODD_IMAGES[kind]()
    top = predict(model, data, top_k=5)
    assert len(top) == 5 and {c for c, _ in top} <= set(CLASSES)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    seen = to_model_input(data)
    assert seen.size == (32, 32) and seen.mode == "RGB"


@pytest.mark.parametrize("kind", sorted(ODD_IMAGES))
def test_preview_of_any_shape_is_a_square_with_the_image_in_it(kind):
    image = load_image(ODD_IMAGES[kind]())
    shown = preview(image)
    assert shown.size == (128, 128) and shown.mode == "RGB"
    w, h = image.size
    if w > 4 * h:  # a wide strip: letterboxed, so the rows above and below it are the background
        column = [shown.getpixel((64, y)) for y in range(128)]
        assert column[0] == column[-1] == (240, 242, 246)
        assert any(pixel != (240, 242, 246) for pixel in column)  # the strip itself, at least one row of it


def test_input_notes_say_when_the_nets_see_a_blur_or_a_crop():
    assert input_notes(Image.new("RGB", (64, 48))) == []
    small, = input_notes(Image.new("RGB", (20, 30)))
    assert "20x30" in small and "scaled up" in small
    strip = input_notes(Image.new("RGB", (4000, 10)))
    assert len(strip) == 2 and strip[1].endswith("its centre square, under 1 % of it.")  # 10 of 4000 columns
    assert input_notes(Image.new("RGB", (400, 100)))[0].endswith("its centre square, 25 % of it.")


def test_predict_accepts_pil_and_all_classes(model):
    top = predict(model, halves(), top_k=10)
    assert sorted(c for c, _ in top) == sorted(CLASSES)
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-4)


def test_exif_rotation_is_applied():
    img = halves(64, 32)  # landscape: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the upright image is portrait, red on top
    upright = load_image(encode(img, "JPEG", exif=exif, quality=95))
    assert upright.size == (32, 64)
    top, bottom = np.asarray(upright)[2, 16], np.asarray(upright)[-3, 16]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_transparency_goes_over_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(load_image(encode(img, "PNG"))).min() == 255


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


HOSTILE = {
    "empty": (b"", "empty"),
    "text": (b"hello, I am not an image\n" * 10, "not an image"),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "not an image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not an image"),
    "random": (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
    "truncated-png": (encode(halves(256, 256), "PNG")[:400], "truncated or corrupt"),
    "truncated-jpeg": (encode(halves(256, 256), "JPEG")[:300], "truncated or corrupt"),
    "bomb-png": (png_header_only(100_000, 100_000), "too large"),
    "wide-bomb": (png_header_only(60_000, 1_000), "megapixels"),
    "zero-width": (png_header_only(0, 10), "no pixels|not an image|truncated or corrupt"),
    "text-chunk-bomb": (encode(halves(8, 8), "PNG")[:33] + png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 50_000_000))
                        + encode(halves(8, 8), "PNG")[33:], "could not be read safely"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_uploads_raise_value_error(model, kind):
    data, message = HOSTILE[kind]
    with pytest.raises(ValueError, match=message):
        predict(model, data)


def test_oversized_upload_and_wrong_type(model):
    with pytest.raises(ValueError, match="limit is 20 MB"):
        predict(model, b"\x89PNG" + b"\x00" * (21 * 2**20))
    with pytest.raises(ValueError, match="expected image bytes"):
        predict(model, "cat.png")
