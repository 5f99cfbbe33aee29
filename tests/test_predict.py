"""predict() on ordinary, odd, large and hostile uploads: a result or a ValueError fit for a user, nothing else."""
import importlib
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_core import CLASSES, build_model, predict
from resnet_core.predict import (FRAME, ImageRejected, framed, input_notes, load_image, preview, read_upload,
                                 stored_size, to_model_input)

predict_module = importlib.import_module("resnet_core.predict")  # `resnet_core.predict` is the function
REPO = Path(__file__).resolve().parents[1]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


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
def test_preview_of_any_shape_is_a_framed_square_with_the_image_in_it(kind):
    image = load_image(ODD_IMAGES[kind]())
    shown = preview(image)
    assert shown.size == (130, 130) and shown.mode == "RGB"  # 128x128 and a 1-pixel frame
    assert {shown.getpixel((x, y)) for x, y in [(0, 0), (129, 65), (65, 129), (0, 65)]} == {FRAME}
    w, h = image.size
    if w > 4 * h:  # a wide strip: letterboxed, so the rows above and below it are the background
        column = [shown.getpixel((65, y)) for y in range(1, 129)]
        assert column[0] == column[-1] == (240, 242, 246)
        assert any(pixel != (240, 242, 246) for pixel in column)  # the strip itself, at least one row of it


@pytest.mark.parametrize("side, shown", [(1, 128), (33, 99), (64, 128), (100, 100), (500, 128)])
def test_preview_enlarges_small_images_with_visible_pixels(side, shown):
    """A 1x1 image fills the square instead of showing as a dot; a small one grows by a whole factor, nearest
    neighbour (33x33 by 3); one over half the square stays as it is, a large one shrinks."""
    checker = np.indices((side, side)).sum(axis=0) % 2 * 255  # alternate black and white pixels
    image = Image.fromarray(np.stack([checker] * 3, axis=-1).astype(np.uint8))
    a = np.asarray(preview(image))[1:-1, 1:-1]  # inside the frame
    margin = (128 - shown) // 2
    inside = a[margin:margin + shown, margin:margin + shown]
    assert (a[:margin] == (240, 242, 246)).all() and (a[margin + shown:] == (240, 242, 246)).all()
    if shown % side == 0:  # enlarged (or kept) by a whole factor: every source pixel a square of one colour
        factor = shown // side
        assert (inside == np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)).all()


def test_white_images_are_framed():
    white = Image.new("RGB", (128, 128), (255, 255, 255))
    shown = np.asarray(framed(white))
    assert shown.shape == (130, 130, 3) and (shown[1:-1, 1:-1] == 255).all()
    for edge in (shown[0], shown[-1], shown[:, 0], shown[:, -1]):
        assert (edge == FRAME).all()
    assert (np.asarray(preview(load_image(encode(white, "PNG"))))[0] == FRAME).all()


def test_large_jpegs_report_the_size_they_were_uploaded_at():
    """Decoded at an eighth of the size (Pillow's draft), a 6000x4000 JPEG still says 6000x4000, turned upright."""
    data = encode(halves(6000, 4000), "JPEG", quality=80)
    image = load_image(data)
    assert image.size == (750, 500) and stored_size(image) == (6000, 4000)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    upright = load_image(encode(halves(6000, 2000), "JPEG", exif=exif, quality=80))
    assert stored_size(upright) == (2000, 6000) and upright.size[0] < upright.size[1]
    assert input_notes(upright) == ["The image is 2000x6000 pixels: the nets see only its centre square, 33 % of it."]
    assert stored_size(Image.new("RGB", (20, 10))) == (20, 10)  # any other image: its own size
    exif[0x0112] = 9  # out of range: the image is shown as stored, and says so
    image = load_image(encode(halves(4000, 10), "JPEG", exif=exif, quality=80))
    assert stored_size(image) == (4000, 10) and image.size[0] > image.size[1]
    # stored as text, "6" (one TIFF entry, type 2 = ASCII): read, as Pillow itself reads it, not refused as damaged
    entry = struct.pack("<HHI", 0x0112, 2, 2) + b"6\x00\x00\x00"
    text = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    assert stored_size(load_image(encode(halves(120, 60), "JPEG", exif=text))) == (120, 60)


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
    model.train()  # a shared model in train mode: predicted on running statistics, and left as it was
    try:
        assert predict(model, halves(), top_k=10) == top and model.training
    finally:
        model.eval()


NORMALIZATION = {"mean": [0.2, 0.5, 0.7], "std": [0.1, 0.3, 0.6]}  # not CIFAR-10's: predict must use the model's


@pytest.fixture(scope="module")
def normalized_model():
    """A small net carrying a checkpoint's normalisation, as load_pretrained sets it."""
    torch.manual_seed(1)
    net = build_model("resnet20").eval()
    net.normalization = NORMALIZATION
    return net


def trainer_probabilities(net, pixels: np.ndarray) -> torch.Tensor:
    """softmax(net(x)) with x made from a (32, 32, 3) uint8 image as the trainer and the evaluation make it."""
    from resnet_core.data import normalize

    x = normalize(torch.from_numpy(np.ascontiguousarray(pixels))[None], NORMALIZATION["mean"], NORMALIZATION["std"])
    with torch.no_grad():
        return torch.softmax(net(x), dim=1)[0]


def predicted_probabilities(net, data) -> torch.Tensor:
    top = dict(predict(net, data, top_k=len(CLASSES)))
    return torch.tensor([top[c] for c in CLASSES])


def assert_same_probabilities(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float rounding, the small probabilities relative to their size: a different input moves them."""
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


def test_predict_feeds_the_net_what_training_fed_it(normalized_model):
    """An upload of a 32x32 image is classified from exactly its pixels, normalised as in training (the
    checkpoint's mean and std, channels in order, rows as rows); a non-square one from its centre square."""
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = trainer_probabilities(normalized_model, square)
    assert 0.2 < expected.max() < 0.9  # no class has it all: what the net is fed shows in every probability
    assert_same_probabilities(predicted_probabilities(normalized_model, encode(Image.fromarray(square), "PNG")),
                              expected)
    # Non-square, short side 32: the centre square is taken as it is (no resampling), so its pixels are known.
    wide = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)  # 48 wide: columns 8..39 are the centre
    tall = rng.integers(0, 256, (50, 32, 3), dtype=np.uint8)  # 50 tall: rows 9..40 are the centre
    for pixels, centre in ((wide, wide[:, 8:40]), (tall, tall[9:41])):
        assert_same_probabilities(predicted_probabilities(normalized_model, encode(Image.fromarray(pixels), "PNG")),
                                  trainer_probabilities(normalized_model, centre))


def test_predict_crops_the_centre_square_before_resizing(normalized_model):
    """A 100x60 image whose centre 60x60 square is one colour and whose sides another: resized to 32x32, the
    centre alone is a flat image of that colour; any of the sides in the crop would show at its edges."""
    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[:] = (0, 255, 0)
    pixels[:, 20:80] = (200, 30, 90)
    centre = np.zeros((32, 32, 3), np.uint8)
    centre[:] = (200, 30, 90)
    for image in (pixels, pixels.transpose(1, 0, 2)):  # wide, and tall
        data = encode(Image.fromarray(np.ascontiguousarray(image)), "PNG")
        assert (np.asarray(to_model_input(data)) == centre).all()
        assert_same_probabilities(predicted_probabilities(normalized_model, data),
                                  trainer_probabilities(normalized_model, centre))


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


@pytest.mark.parametrize("side", [40, 600])  # as it is, and shrunk first
@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_a_png_colour_key_goes_over_white(mode, key, side):
    """A grey or RGB PNG whose tRNS chunk makes one colour transparent: that colour is transparent, over white."""
    img = Image.new(mode, (side, side), key)
    img.paste(Image.new(mode, (side // 2, side), 128 if mode == "L" else (128, 128, 128)))  # left half opaque
    rgb = np.asarray(load_image(encode(img, "PNG", transparency=key)))
    assert (rgb[:, -rgb.shape[1] // 4:] == 255).all() and (rgb[:, :rgb.shape[1] // 4] == 128).all()


@pytest.mark.parametrize("side", [40, 600])
def test_premultiplied_grey_and_alpha_is_unpremultiplied_and_put_over_white(side):
    """A grey TIFF with associated (premultiplied) alpha, which Pillow opens as mode La: grey 64 at alpha 128 is
    grey 127 half covering white, about 191; not refused as a file that does not hold what its format promises."""
    data = encode(Image.new("LA", (side, side), (64, 128)), "TIFF")
    unassociated = struct.pack("<HHIH", 338, 3, 1, 2)  # the ExtraSamples entry Pillow writes: 2, unassociated alpha
    assert data.count(unassociated) == 1
    data = data.replace(unassociated, struct.pack("<HHIH", 338, 3, 1, 1))
    assert Image.open(io.BytesIO(data)).mode == "La"
    assert np.abs(np.asarray(load_image(data)).astype(int) - 191).max() <= 2


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


HOSTILE = {
    "empty": (b"", "the file is empty"),
    "text": (b"hello, I am not an image\n" * 10, "not an image the app can read"),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "not an image the app can read"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not an image the app can read"),
    "random": (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image the app can read"),
    "truncated-png": (encode(halves(256, 256), "PNG")[:400], "cut short or damaged"),
    "truncated-jpeg": (encode(halves(256, 256), "JPEG")[:300], "cut short or damaged"),
    "wide-bomb": (png_header_only(60_000, 1_000), r"is 60000x1000 pixels \(60 megapixels\), more than the 50"),
    # Over Pillow's warning threshold (89 megapixels), said the same way as any other image over the limit
    "hundred-megapixels": (png_header_only(10_000, 10_000),
                           r"is 10000x10000 pixels \(100 megapixels\), more than the 50"),
    # Over twice it: Pillow refuses to open it, so its size is not known
    "bomb-png": (png_header_only(100_000, 100_000), r"is over 178 megapixels, more than the 50"),
    "zero-width": (png_header_only(0, 10), "0 pixels wide or tall|starts as a PNG does|cut short or damaged"),
    "text-chunk-bomb": (encode(halves(8, 8), "PNG")[:33] + png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 50_000_000))
                        + encode(halves(8, 8), "PNG")[33:], "would unpack to far more than an image needs"),
}


def ico_holding(side: int) -> bytes:
    """An ICO that declares one 16x16 icon but embeds a side x side PNG (decoded whole when Pillow opens it)."""
    png = encode(Image.new("RGBA", (side, side)), "PNG", compress_level=9)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


HOSTILE.update({
    # formats Pillow knows but the app does not open, whatever the file is called: EPS would run Ghostscript on the
    # upload, ICO decodes its embedded image before any size check, DDS raised NotImplementedError
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n", "not an image the app can read"),
    "ico-bomb": (ico_holding(4000), "not an image the app can read"),
    "dds": (b"DDS " + struct.pack("<7I", 124, 0x1007, 8, 8, 0, 0, 0) + b"\0" * 44 + struct.pack("<2I", 32, 0)
            + b"\0" * 296, "not an image the app can read"),
    # within the megapixels, yet 8 bytes of Pillow's bookkeeping per row: 400 MB for this one
    "thin-strip": (png_header_only(1, 50_000_000), r"is 1x50000000 pixels, longer than the 65,535 pixels allowed"),
    # a known format's first bytes over what its decoder cannot read: said to be that format, not "not an image"
    "tiff-garbage": (b"II*\x00\x08\x00\x00\x00" + b"\xff" * 50, "starts as a TIFF does, but the rest cannot be read"),
    "gif-garbage": (b"GIF89a" + bytes(30), "starts as a GIF does, but the rest cannot be read"),
})
JARGON = re.compile(r"Error|Plugin|MAX_|Pillow|decompression bomb|chunk|\(\w+:")


def wide_tiff(mode: str, side: int, first=None) -> bytes:
    """A side x side ramp over the whole range of a 16-bit (big-endian or native) or float greyscale TIFF; a float
    one may have another `first` pixel (NaN, an infinity)."""
    ramp = np.linspace(0, 1, side * side).reshape(side, side)
    if mode == "F":
        ramp = (ramp * 1000).astype(np.float32)
        if first is not None:
            ramp[0, 0] = first
        img = Image.fromarray(ramp, "F")
    else:
        img = Image.frombytes(mode, (side, side), (ramp * 65535).astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    out = io.BytesIO()
    img.save(out, "TIFF")
    return out.getvalue()


@pytest.mark.parametrize("side", [40, 1200])  # as it is, and shrunk first
@pytest.mark.parametrize("mode, first", [("I;16B", None), ("I;16", None), ("F", None), ("F", np.nan), ("F", np.inf),
                                         ("F", -np.inf)])
def test_16_bit_and_float_ramps_come_out_over_the_whole_grey_range(mode, first, side):
    """A ramp over the whole range comes out a ramp over 0..255, mean about 127: not black where a pixel is NaN or
    infinite (Pillow's getextrema would take it for the range), not refused in the byte-order modes (it rejects
    them)."""
    img = np.asarray(load_image(wide_tiff(mode, side, first)), dtype=np.float64)
    assert img.mean() == pytest.approx(127.5, abs=2) and img.min() <= 1 and img.max() >= 254


@pytest.mark.parametrize("side", [40, 1200])
def test_16_bit_images_keep_their_scale_as_8_bit_ones_do(side):
    """A dark 16-bit picture stays as dark as the same picture in 8 bits (values over 65535, not stretched over
    its own range, which would brighten it), and an all-white one is white; float ones, which have no scale, are
    stretched, and +inf reads white even where no value is finite."""
    dark = (np.linspace(29, 76, side * side).reshape(side, side) * 257).astype("<u2")
    img = np.asarray(load_image(encode(Image.frombytes("I;16", (side, side), dark.tobytes()), "PNG")))
    eight_bit = np.asarray(load_image(encode(Image.fromarray((dark // 257).astype(np.uint8)), "PNG")))
    assert np.abs(img.astype(int) - eight_bit).max() <= 1 and img.max() <= 77
    white = np.full((side, side), 65535, "<u2")
    assert (np.asarray(load_image(encode(Image.frombytes("I;16", (side, side), white.tobytes()), "TIFF"))) == 255).all()
    infinite = Image.fromarray(np.full((side, side), np.inf, np.float32), "F")
    assert (np.asarray(load_image(encode(infinite, "TIFF"))) == 255).all()


@pytest.mark.parametrize("side", [40, 600])
def test_16_bit_netpbm_greys_keep_their_scale(side):
    """A 16-bit PGM (which Pillow opens as mode I, on the 0..65535 scale) is read as a 16-bit PNG is: all white
    stays white (not black, the stretch of a flat image) and a dark one dark (not stretched bright)."""
    def pgm(values: np.ndarray) -> bytes:
        return b"P5 %d %d 65535\n" % (side, side) + values.astype(">u2").tobytes()

    assert (np.asarray(load_image(pgm(np.full((side, side), 65535)))) == 255).all()
    dark = (np.linspace(29, 76, side * side).reshape(side, side) * 257).astype(np.uint16)
    eight_bit = np.asarray(load_image(encode(Image.fromarray((dark // 257).astype(np.uint8)), "PNG")))
    assert np.abs(np.asarray(load_image(pgm(dark))).astype(int) - eight_bit).max() <= 1


@pytest.mark.parametrize("value, grey", [(0.5, 127), (1.0, 255), (0.0, 0), (7.0, 127), (-3.0, 127)])
def test_a_flat_float_image_keeps_its_value_on_0_to_1_else_mid_grey(value, grey):
    """Uniform float images have no range to stretch: a value within 0..1 keeps its place there, any other reads
    mid-grey (not black), and a NaN pixel in one still reads black."""
    pixels = np.full((40, 40), value, np.float32)
    pixels[0, 0] = np.nan
    rgb = np.asarray(load_image(encode(Image.fromarray(pixels, "F"), "TIFF"))).astype(int)
    assert np.abs(rgb[1:] - grey).max() <= 1 and (rgb[0, 0] == 0).all()
    pfm = b"Pf\n40 40\n-1.0\n" + np.full((40, 40), value, "<f4").tobytes()  # netpbm's float greys
    assert np.abs(np.asarray(load_image(pfm)).astype(int) - grey).max() <= 1


def webp_canvas(side: int) -> bytes:
    """A 166-byte animated WebP whose header declares a side x side canvas (the frames are 16x16)."""
    frames = [Image.new("RGBA", (16, 16)), Image.new("RGBA", (16, 16), (1, 1, 1, 255))]
    data = bytearray(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    at = data.find(b"VP8X") + 12  # width - 1, then height - 1, 3 bytes each
    data[at:at + 6] = (side - 1).to_bytes(3, "little") * 2
    return bytes(data)


class Decoded(BaseException):
    """Raised where the decoder would start: past every size check (not an Exception, which load_image rewords)."""


def test_a_webp_is_refused_over_12_megapixels_before_decoding(monkeypatch):
    """libwebp holds several canvases (a 49-megapixel one took 750 MB): a WebP has a lower limit than the 50
    megapixels of other formats, said as such, and checked on the header, before anything is decoded."""
    from PIL import ImageFile, WebPImagePlugin

    def decoded(self):
        raise Decoded

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", decoded)
    with pytest.raises(ImageRejected, match=r"is 7001x7001 pixels \(49 megapixels\), more than the 12 megapixels "
                                            r"allowed for a WebP \(.*\): shrink it"):
        load_image(webp_canvas(7001))
    for data in (webp_canvas(3000), png_header_only(7001, 7001)):  # 9 megapixels; 49 in another format: decoded
        with pytest.raises(Decoded):
            load_image(data)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_uploads_raise_value_error(model, kind):
    data, message = HOSTILE[kind]
    with pytest.raises(ValueError, match=message) as raised:
        predict(model, data)
    # A plain sentence: what is wrong with the file, then what to do, without Pillow's or Python's words.
    text = str(raised.value)
    assert not JARGON.search(text) and ": " in text and "upload" in text.rpartition(": ")[2], text
    if "megapixels" in message:
        assert text.endswith("megapixels allowed: shrink it (the nets see only 32x32 pixels) and upload it again")


def with_blocks(data: bytes, at: int, block: bytes, count: int) -> bytes:
    """`data` with `count` copies of `block` inserted at byte `at`."""
    return data[:at] + block * count + data[at:]


def rle_bmp(side: int) -> bytes:
    """A side x side 8-bit RLE BMP of one pixel, then "end of line", a row: 28 KB at 7000, which Pillow's Python
    decoder pads out a pixel at a time (12 s)."""
    pixels = b"\x01\x05\x00\x00" * side + b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + 40 + 1024
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + bytes(1024) + pixels


def tiff_of_strips(count: int) -> bytes:
    """A 1x2 grey TIFF whose one pixel row is listed `count` times as a strip: Pillow lists the strips in Python."""
    entries = [(256, 1), (257, 2), (258, 8), (259, 1), (262, 1), (273, None), (278, 1), (279, None)]
    ifd_end = 8 + 2 + 12 * len(entries) + 4
    offsets, lengths = ifd_end + 2, ifd_end + 2 + 2 * count
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, 3, count if value is None else 1)
        + (struct.pack("<I", offsets if tag == 273 else lengths) if value is None else struct.pack("<HH", value, 0))
        for tag, value in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x80\x80" + struct.pack("<H", ifd_end) * count \
        + struct.pack("<H", 1) * count


_GIF, _JPEG, _PNG = encode(halves(8, 8), "GIF"), encode(halves(8, 8), "JPEG"), encode(halves(8, 8), "PNG")
_GIF_BLOCKS = 13 + (3 << ((_GIF[10] & 7) + 1) if _GIF[10] & 0x80 else 0)  # after the header and colour table
# What Pillow reads a step at a time in Python, each made just long enough to pass WORK_CALLS calls (a budget
# the tests set 20 times lower than MAX_DECODE_CALLS, so that each is refused in milliseconds, not a second)
WORK_CALLS = 50_000
HARD_WORK = {
    "png-many-chunks": with_blocks(_PNG, 33, png_chunk(b"tEXt", b"k\x00v"), 5_000),
    "jpeg-fill-bytes": with_blocks(_JPEG, 2, b"\xff", 30_000),
    "jpeg-markers-without-a-length": with_blocks(_JPEG, 2, b"\xff\xf0", 30_000),
    "jpeg-junk-after-its-end": with_blocks(_JPEG, 2, b"\xff\xd9" + b"\x00" * 30_000, 1),
    "gif-junk": with_blocks(_GIF, _GIF_BLOCKS, b"\x00", 30_000),
    # an extension ending at once, then sub-blocks: Pillow reads them as the extension's
    "gif-sub-blocks": with_blocks(_GIF, _GIF_BLOCKS, b"!\xf9\x00," + bytes(44) + b"\x01x" * 30_000 + b"\x00", 1),
    "netpbm-comment-in-the-header": b"P5 1 1 255#" + b"x" * 30_000 + b"\n\x00",
    "netpbm-plain-pixels": b"P3 1000 10 1\n" + b"0 " * 30_000,
    "tiff-many-strips": tiff_of_strips(10_000),
    "bmp-rle-rows": rle_bmp(2_000),
}


@pytest.mark.parametrize("kind", sorted(HARD_WORK))
def test_uploads_that_make_the_decoder_work_too_hard_are_refused(monkeypatch, kind):
    monkeypatch.setattr(predict_module, "MAX_DECODE_CALLS", WORK_CALLS)
    with pytest.raises(ValueError, match="makes the decoder do far more work than any image needs") as raised:
        load_image(HARD_WORK[kind])
    text = str(raised.value)
    assert not JARGON.search(text) and text.endswith("save it as a new PNG or JPEG and upload that")


def test_the_decoders_budget_holds_at_its_real_size_and_in_cpu_time(monkeypatch):
    """At MAX_DECODE_CALLS itself: 2 MB of JPEG padding (2 million steps) is refused, while a TIFF of 6,000 calls
    loads. Work done in C, a call at a time (a PNG of 20,000 colour profiles, 1 MB each once inflated: 52 s), is
    bounded by the thread's CPU time, checked at every call (with none allowed, even an image of a few hundred calls
    is refused), and C decoders get DECODE_BLOCK bytes a call, so that no call runs long between two checks."""
    with pytest.raises(ValueError, match="far more work"):
        load_image(with_blocks(_JPEG, 2, b"\xff", 2_000_000))
    assert load_image(wide_tiff("F", 1200)).size == (300, 300)
    reads = []

    class Recorded(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    monkeypatch.setattr(predict_module.io, "BytesIO", Recorded)
    assert load_image(encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8)),
                                    "PNG")).size == (300, 300)
    assert max(reads) == predict_module.DECODE_BLOCK == 4096
    monkeypatch.setattr(predict_module, "MAX_DECODE_CPU_S", 0.0)
    with pytest.raises(ValueError, match="far more work"):
        load_image(_PNG)


def test_the_budget_leaves_no_profiler_behind(monkeypatch):
    """The count runs as this thread's profile function during a decode only, whether the image loaded or was
    refused; where a profiler already runs (a developer's cProfile, which could not be put back once replaced), the
    budget stands aside and the profiler stays."""
    import cProfile

    monkeypatch.setattr(predict_module, "MAX_DECODE_CALLS", WORK_CALLS)
    load_image(_PNG)
    with pytest.raises(ValueError):
        load_image(HARD_WORK["jpeg-fill-bytes"])
    assert sys.getprofile() is None

    def users_profiler(frame, event, arg):
        return None

    profiler = cProfile.Profile()
    for install, expected in ((lambda: sys.setprofile(users_profiler), users_profiler),
                              (profiler.enable, profiler)):
        install()
        try:
            assert load_image(_PNG).size == (8, 8) and sys.getprofile() is expected
        finally:
            sys.setprofile(None)


def progressive_jpeg(extra_scans: int) -> bytes:
    """A 64x64 progressive JPEG (10 scans) with its last scan repeated `extra_scans` times."""
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    jpeg = encode(Image.fromarray(noise), "JPEG", progressive=True, quality=90)
    last_table = jpeg.rfind(b"\xff\xc4")  # the last scan's Huffman table, then the scan itself
    return jpeg[:-2] + jpeg[last_table:-2] * extra_scans + b"\xff\xd9"


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding():
    """libjpeg passes over the whole image once per scan (7 ms at 50 megapixels, in C): 200 thousand tiny scans
    took 3.5 minutes. A progressive JPEG of 10 scans, or 160, loads; one of over MAX_JPEG_SCANS (200) is refused."""
    assert predict_module.MAX_JPEG_SCANS == 200
    assert load_image(progressive_jpeg(0)).size == (64, 64) and load_image(progressive_jpeg(150)).size == (64, 64)
    with pytest.raises(ValueError, match="far more work"):
        load_image(progressive_jpeg(191))  # 201 scans


def test_ordinary_images_of_many_parts_load():
    """The budget refuses only what no encoder writes: a PNG whose pixels are cut into thousands of chunks, an
    animated PNG of 10,001 frames (only the first is read), a JPEG of many markers and a GIF of many frames load."""
    png = encode(halves(64, 64), "PNG")
    start = png.index(b"IDAT") - 4
    stream = zlib.compress(zlib.decompress(png[start + 8:start + 8 + struct.unpack(">I", png[start:start + 4])[0]]))
    idats = b"".join(png_chunk(b"IDAT", stream[i:i + 1]) for i in range(len(stream)))
    assert np.array_equal(np.asarray(load_image(png[:start] + idats + png_chunk(b"IEND", b""))),
                          np.asarray(load_image(png)))
    frames = [Image.new("L", (16, 16), i % 256) for i in range(10_001)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(apng)).max() == 0  # the first frame, black
    jpeg = encode(halves(), "JPEG", quality=95)
    assert np.array_equal(np.asarray(load_image(with_blocks(jpeg, 2, b"\xff\xfe\x00\x03c", 500))),
                          np.asarray(load_image(jpeg)))
    frames = [halves().rotate(3 * i) for i in range(40)]
    assert load_image(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], comment=b"c" * 5000)).size \
        == (64, 48)
    ppm = b"P6\n# made by hand\n2 1\n255\n" + bytes([255, 0, 0, 0, 0, 255])
    assert np.asarray(load_image(ppm)).tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_a_damaged_exif_block_is_ignored_and_the_image_loads():
    """A PNG whose eXIf chunk is cut short (struct.error inside Pillow's EXIF reader) still loads, unturned."""
    png = encode(halves(), "PNG")
    damaged = png[:33] + png_chunk(b"eXIf", b"MM\x00*\x00\x00") + png[33:]
    assert np.array_equal(np.asarray(load_image(damaged)), np.asarray(load_image(png)))


def test_any_decoder_failure_is_said_as_a_damaged_file(monkeypatch):
    """Whatever a decoder raises (NotImplementedError from an odd DDS or BLP, say) reaches the user as a sentence,
    never as a traceback on the page."""
    def unsupported(self, *args, **kwargs):
        raise NotImplementedError("Unknown pixel format flags 0")

    bmp = encode(halves(), "BMP")
    monkeypatch.setattr(Image.Image, "load", unsupported)
    with pytest.raises(ValueError, match="the image data is cut short or damaged, so it cannot be decoded"):
        load_image(bmp)


def test_a_camera_mpo_is_decoded_at_reduced_size_as_a_jpeg_is():
    image = load_image(encode(halves(6000, 4000), "MPO", quality=80))
    assert image.size == (750, 500) and stored_size(image) == (6000, 4000)


def test_oversized_upload_and_wrong_type(model):
    with pytest.raises(ValueError, match="the file is 21.0 MB, more than the 20 MB allowed: save the image smaller"):
        predict(model, b"\x89PNG" + b"\x00" * (21 * 2**20))
    with pytest.raises(ValueError, match="expected image bytes"):
        predict(model, "cat.png")


BIG = 6000  # a 6000x6000 RGBA PNG: 0.5 MB as a file, 144 MB decoded


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """One colour, half transparent: it compresses to nothing, yet every pixel must be decoded and composited."""
    return encode(Image.new("RGBA", (BIG, BIG), (10, 20, 30, 128)), "PNG", compress_level=1)


def count_opens(monkeypatch, files: list[bytes]) -> list[int]:
    """The position in `files` of each file Image.open is given, as it is given it (Streamlit opens images too)."""
    opened = []
    real_open = Image.open

    def counting(fp, *args, **kwargs):
        if isinstance(fp, io.BytesIO) and fp.getvalue() in files:
            opened.append(files.index(fp.getvalue()))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return opened


def test_a_large_upload_is_decoded_once_and_never_converted_at_full_size(monkeypatch, big_png):
    opened, converted = count_opens(monkeypatch, [big_png]), []
    real_convert, real_composite = Image.Image.convert, Image.alpha_composite
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: converted.append(self.size) or
                        real_convert(self, *a, **k))
    monkeypatch.setattr(Image, "alpha_composite", lambda under, over: converted.append(over.size) or
                        real_composite(under, over))
    upload = read_upload(big_png)
    assert opened == [0]
    # Nothing but strips of at most a sixteenth of the image is converted, and it is composited once small.
    assert converted and max(w * h for w, h in converted) <= BIG * BIG // 16, converted
    assert upload.stored_size == (BIG, BIG) and upload.notes == []
    # (10, 20, 30) at alpha 128 over white, as an 8x8 image of it comes out
    expected = np.asarray(to_model_input(encode(Image.new("RGBA", (8, 8), (10, 20, 30, 128)), "PNG")), np.int16)
    assert np.abs(np.asarray(upload.model_input, np.int16) - expected).max() <= 1
    assert upload.preview.size == (130, 130) and upload.preview.getpixel((65, 65)) == tuple(expected[0, 0])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_a_large_upload_takes_little_more_memory_than_its_decoded_pixels(tmp_path, big_png):
    """Peak memory in a fresh process (tracemalloc does not see Pillow's buffers, and a child's ru_maxrss starts at
    its parent's): decoding the PNG needs its 144 MB; before, decoding it twice and converting, compositing and
    cropping it at full size took 0.8 GB more."""
    path = tmp_path / "big.png"
    path.write_bytes(big_png)
    script = ("import sys\n"
              "from resnet_core.predict import read_upload\n"
              "def peak():\n"  # kilobytes
              "    return next(int(row.split()[1]) for row in open('/proc/self/status') if row.startswith('VmHWM:'))\n"
              "data = open(sys.argv[1], 'rb').read()\n"
              "try:\n"
              "    open('/proc/self/clear_refs', 'w').write('5')\n"  # forget the peak so far: it is the memory in use now
              "except OSError:\n"  # refused in some sandboxes
              "    sys.exit(print('no clear_refs'))\n"
              "before = peak()\n"
              "read_upload(data)\n"
              "print(peak() - before)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    if done.stdout.strip() == "no clear_refs":
        pytest.skip("this system refuses to reset the peak in /proc/self/clear_refs")
    decoded = BIG * BIG * 4
    assert int(done.stdout) * 1024 < 1.5 * decoded, f"peak {int(done.stdout) / 1024:.0f} MB more"


def photo(w: int, h: int) -> Image.Image:
    """Smooth colours, noise and a block with hard edges, a little like a photo."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([128 + 100 * np.sin(9 * x + 3 * y), 128 + 100 * np.cos(7 * y), 255 * x], axis=-1)
    a[h // 3: h // 2, w // 4: w // 2] = (250, 30, 30)
    a += np.random.default_rng(0).normal(0, 12, a.shape)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def with_alpha(img: Image.Image) -> Image.Image:
    """`img` transparent on the left, opaque on the right."""
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").rotate(90).resize(img.size))
    return rgba


def turned_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    return exif


def grey16_with_a_hot_pixel() -> Image.Image:
    a = np.asarray(photo(1200, 800).convert("L"), np.uint16) * 4 + 1000
    a[10, 10] = 60_000  # one pixel sets the top of the range that is stretched to 0..255
    return Image.fromarray(a)


LARGE_IMAGES = {  # short side 800: shrunk by 3 as soon as it is decoded
    "png-rgb": lambda: encode(photo(1200, 800), "PNG"),
    "png-rgba": lambda: encode(with_alpha(photo(1200, 800)), "PNG"),
    "png-la": lambda: encode(with_alpha(photo(1200, 800)).convert("LA"), "PNG"),
    "png-palette-transparent": lambda: encode(photo(1200, 800).quantize(64), "PNG", transparency=3),
    "png-1bit": lambda: encode(photo(1200, 800).convert("1"), "PNG"),
    "png-grey16": lambda: encode(grey16_with_a_hot_pixel(), "PNG"),
    "png-exif-turned": lambda: encode(photo(1200, 800), "PNG", exif=turned_exif()),
    "webp-rgba": lambda: encode(with_alpha(photo(1200, 800)), "WEBP", quality=95),
    "gif-animated": lambda: encode(photo(1200, 800), "GIF", save_all=True, append_images=[halves(1200, 800)]),
    "bmp-tall": lambda: encode(photo(800, 4000), "BMP"),
}


@pytest.mark.parametrize("kind", sorted(LARGE_IMAGES))
def test_large_images_shrunk_first_look_as_from_the_full_image(monkeypatch, kind):
    """What the nets see and the preview, from the shrunk image and from the full one (WORKING_SIDE out of reach):
    the same on average to a level or so (of 0 to 255), a few more at a hard edge, where the boxes averaged differ.
    The preview of a dithered 1-bit image differs most, by 1.2 on average."""
    data = LARGE_IMAGES[kind]()
    shrunk = read_upload(data)
    assert load_image(data).size[0] < 500  # it was shrunk
    monkeypatch.setattr(predict_module, "WORKING_SIDE", 10**6)
    full = read_upload(data)
    assert shrunk.stored_size == full.stored_size and shrunk.notes == full.notes
    for ours, theirs, mean, most in [(shrunk.model_input, full.model_input, 1, 10),
                                     (shrunk.preview, full.preview, 1.5, 16)]:
        difference = np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16))
        assert difference.mean() < mean and difference.max() <= most, (difference.mean(), difference.max())


def test_large_images_shrink_strip_by_strip_as_in_one_reduce():
    """The strips' boxes line up with those of one Image.reduce over the whole image, partial ones at the edges
    included, and the image is turned upright after shrinking."""
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1030, 1101, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(load_image(encode(img, "PNG"))), np.asarray(img.reduce(4)))
    upright = load_image(encode(halves(1200, 600), "PNG", exif=turned_exif()))
    assert upright.size == (300, 600) and stored_size(upright) == (600, 1200)
    top, bottom = np.asarray(upright)[2, 150], np.asarray(upright)[-3, 150]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top


def test_the_page_decodes_each_upload_once_whatever_is_clicked(monkeypatch, tiny_checkpoints, big_png):
    import streamlit as st

    from tests.test_app import open_app, plotted

    st.cache_data.clear()  # another test may have shown these very bytes
    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    files = [big_png, encode(halves(), "PNG")[:60]]
    opened = count_opens(monkeypatch, files)
    at.file_uploader[0].set_value([("big.png", files[0], "image/png"), ("cut.png", files[1], "image/png")]).run()
    assert not at.exception and len(plotted(at)) == 2  # big.png and the gallery image
    assert "cut short or damaged" in at.error[0].value
    assert opened == [0, 1]  # one decode per file, the damaged one included
    at.toggle(key="looks_upload_0").set_value(True).run()
    at.button(key="gallery-1").click().run()
    assert not at.exception and len(plotted(at)) == 2 and opened == [0, 1]  # reruns decode nothing


def test_the_page_shows_twenty_uploads_at_most_and_says_how_many_it_skipped(monkeypatch, tiny_checkpoints):
    from tests.test_app import open_app, png_bytes

    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    at.file_uploader[0].set_value([(f"photo{i}.png", png_bytes(color=(i, 90, 160)), "image/png")
                                   for i in range(23)]).run()
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == ["23 files uploaded, 20 at most are shown: the last 3 were skipped. "
                                             "Remove some files to see those."]
    shown = [m.value for m in at.markdown if m.value.startswith("**photo")]
    assert shown == [f"**photo{i}.png**" for i in range(20)]


def test_the_uploader_takes_every_format_the_decoder_opens_and_a_16_bit_tiff_is_classified(monkeypatch,
                                                                                              tiny_checkpoints):
    """The uploader's list of endings is the decoder's formats' (a scanner's .tif or .pgm was refused before it
    reached the decoder), and a 16-bit TIFF and PGM get a top-5 each, as a PNG does."""
    from tests.test_app import open_app, plotted

    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    accepted = {ending.lstrip(".") for ending in at.file_uploader[0].allowed_type}
    assert {"png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm"} <= accepted
    opens = {ext[1:]: fmt for ext, fmt in Image.registered_extensions().items()}
    assert accepted == {ext for ext, fmt in opens.items() if fmt in predict_module.FORMATS}  # all of them, no other
    ramp = Image.fromarray(np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16))
    at.file_uploader[0].set_value([("scan.tif", encode(ramp, "TIFF"), "image/tiff"),
                                   ("scan.pgm", encode(ramp, "PPM"), "image/x-portable-graymap")]).run()
    assert not at.exception and not at.error
    assert len(plotted(at)) == 3  # the two uploads and the gallery image


def test_a_file_name_is_shown_as_it_is_not_as_markdown(monkeypatch, tiny_checkpoints):
    """An uploaded file's name is the uploader's text: every markdown character in it is escaped (no bold, remote
    image, maths or HTML made of it), a colon cannot start an :icon: code, and it stays on one line."""
    from tests.test_app import open_app, png_bytes

    name = "a**b ![x](http://example.com/t.png) $x$ <i>:material/home: \\ line\nbreak_.png"
    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    at.file_uploader[0].set_value([(name, png_bytes(), "image/png")]).run()
    assert not at.exception and not at.error
    shown = [m.value for m in at.markdown if m.value.startswith("**a")]
    assert len(shown) == 1 and shown[0].startswith("**") and shown[0].endswith("**")
    inner = shown[0][2:-2]
    assert "\n" not in inner and ":material" not in inner and ":\u200bmaterial/home:\u200b" in inner
    assert not re.search(r"(?<!\\)[*_\[\]()!$<>`]", re.sub(r"\\\\", "", inner))  # each one escaped
    assert re.sub(r"\\(.)", r"\1", inner).replace("\u200b", "") == name.replace("\n", " ")


def test_a_long_or_reversing_file_name_is_shown_short_and_in_reading_order(monkeypatch, tiny_checkpoints):
    """A 5,000-character name shows its first 80 and last 39 characters around an ellipsis; a right-to-left override
    (which shows "photo\u202eexe.png", a PNG, as "photognp.exe") is dropped, so the name reads as it is."""
    from tests.test_app import open_app, png_bytes

    long, reversing = "x" * 2000 + "middle" + "y" * 2992 + ".png", "photo\u202eexe.png"
    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    at.file_uploader[0].set_value([(long, png_bytes(), "image/png"), (reversing, png_bytes(), "image/png")]).run()
    assert not at.exception and not at.error
    shown = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert "**" + "x" * 80 + "…" + "y" * 35 + ".png**" in shown and "**photoexe.png**" in shown


def test_two_checkpoints_of_different_lengths_are_said_to_differ_by_length(monkeypatch, tiny_checkpoints, tmp_path):
    """Predict lets any plain net meet any residual one; where they trained for different numbers of iterations it
    says that their answers differ by that as well, and says nothing for a pair trained as long."""
    from tests.test_app import open_app, with_a_long_copy

    at = open_app(monkeypatch, with_a_long_copy(tiny_checkpoints, tmp_path / "checkpoints"), "pages/predict.py")
    assert not at.exception and not at.warning  # the default pair: plain20-64k and resnet20-64k
    next(s for s in at.sidebar.selectbox if s.label == "Plain checkpoint").set_value("plain20").run()
    assert [w.value for w in at.warning] == [
        "plain20 for 8 iterations and resnet20-64k for 64,000 iterations: their answers differ by training length as "
        "well as by shortcuts. Pick two checkpoints trained as long to compare the nets."]
    next(s for s in at.sidebar.selectbox if s.label == "Residual checkpoint").set_value("resnet20").run()
    assert not at.warning and not at.exception


def test_running_out_of_memory_is_said_and_not_remembered(monkeypatch, tiny_checkpoints):
    """A file refused for want of memory at that moment loads on the next run: the refusal is shown, not cached."""
    import streamlit as st

    from tests.test_app import open_app, plotted, png_bytes

    library = importlib.import_module("resnet_core.predict")  # the module: resnet_core.predict is also a function
    st.cache_data.clear()
    real, calls = library.read_upload, []

    def short_of_memory_once(data, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise library.OutOfMemory("the server ran out of memory decoding this image: upload a smaller one")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(library, "read_upload", short_of_memory_once)
    at = open_app(monkeypatch, tiny_checkpoints, "pages/predict.py")
    at.file_uploader[0].set_value([("photo.png", png_bytes(color=(30, 90, 160)), "image/png")]).run()
    assert "ran out of memory" in at.error[0].value and len(plotted(at)) == 1  # the gallery image only
    at.run()
    assert not at.error and len(plotted(at)) == 2 and len(calls) == 2
