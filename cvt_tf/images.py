"""Reading image files as the official evaluation did: torchvision's ImageFolder loader, PIL `convert("RGB")`.

Files that loader would choke on or misread are refused with an `ImageError` naming the file.
"""

import warnings
from pathlib import Path

from PIL import Image

from cvt_spec import InputError

# PIL's decompression-bomb threshold (about 89.5 million pixels, e.g. 9459x9459).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# One channel wider than 8 bits: PIL's convert("RGB") clips every value above 255, so the
# official loader would see a mostly white image.
WIDE_GRAYSCALE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


class ImageError(InputError):
    """An image file that cannot be read, or would be misread by the official loader."""


def open_image(path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The decoded image at `path` in its own PIL mode (first frame of an animation).

    Raises:
        ImageError: missing, unreadable, not an image, truncated, or more than `max_pixels` pixels.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} is {width * height} pixels, more than the limit of "
                    f"{max_pixels}; downscale it first"
                )
            image.load()
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: too large to decode safely ({error}); downscale it first") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except DECODE_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ImageError(f"{path}: cannot read the image ({reason})") from None
    return image


def to_rgb(image: Image.Image, path="image") -> Image.Image:
    """8-bit RGB as the official loader makes it: PIL `convert("RGB")` (alpha dropped, not composited).

    Raises:
        ImageError: a 16-bit or float single-channel image, which that conversion would clip at 255.
    """
    if image.mode in WIDE_GRAYSCALE_MODES:
        raise ImageError(
            f"{path}: single-channel image with more than 8 bits (PIL mode {image.mode}); the official "
            "loader's convert('RGB') clips it at 255: save it as 8-bit first"
        )
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image at `path` as the 8-bit RGB PIL image the official evaluation would have seen.

    Grayscale, palette, CMYK and RGBA files are converted like the official loader converts them;
    16-bit RGB(A) files are read at 8 bits by PIL; EXIF orientation is ignored, as there.

    Raises:
        ImageError: see `open_image` and `to_rgb`; the message names the file.
    """
    return to_rgb(open_image(path, max_pixels), path)
