"""Reading image files as the official loader (torchvision ImageFolder: PIL convert("RGB")) does."""

import io
import struct
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cvt_tf.images import ImageError, load_image, open_image


def png_bytes(width, height, bit_depth, color_type, rows=None):
    """A PNG written by hand: any header, e.g. a huge size over a tiny payload."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    payload = zlib.compress(b"".join(b"\0" + row for row in (rows or [b"\0"])))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", payload) + chunk(b"IEND", b"")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1"])
def test_other_modes_become_rgb_as_the_official_loader_makes_them(tmp_path, mode):
    original = Image.fromarray(skimage.data.coffee()).convert(mode)
    path = tmp_path / f"coffee.{'jpg' if mode == 'CMYK' else 'png'}"
    original.save(path)
    expected = Image.open(path).convert("RGB")  # torchvision's pil_loader
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (600, 400)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[..., 0], pixels[..., 3] = 200, 0  # fully transparent red
    Image.fromarray(pixels, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png"))[0, 0].tolist() == [200, 0, 0]


def test_16_bit_rgb_is_read_at_8_bits(tmp_path):
    rows = [np.array([[0x1234, 0xFFFF, 0x0080]], ">u2").tobytes()]
    (tmp_path / "deep.png").write_bytes(png_bytes(1, 1, 16, 2, rows))
    assert np.asarray(load_image(tmp_path / "deep.png"))[0, 0].tolist() == [0x12, 0xFF, 0x00]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"hello", "not an image file PIL can read"),
        (b"", "not an image file PIL can read"),
        ("truncated", "cannot read the image (image file is truncated"),
        (png_bytes(2, 2, 16, 0, [b"\1\0\2\0", b"\3\0\4\0"]), "PIL mode I;16"),
        (png_bytes(10_000, 10_000, 1, 0), "10000x10000 is 100000000 pixels, more than the limit of 89478485"),
        (png_bytes(20_000, 20_000, 1, 0), "too large to decode safely"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path, content, fragment):
    if content == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(skimage.data.chelsea()).save(buffer, "JPEG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.img: ") as error:
        load_image(path)
    assert fragment in str(error.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        open_image(tmp_path)
