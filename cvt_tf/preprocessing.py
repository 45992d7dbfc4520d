"""The official CvT evaluation transform (microsoft/CvT `lib/dataset/transformas/build.py`) for Keras.

`preprocess_input` runs it with PIL as torchvision did (any Keras backend); `cvt_tf.preprocessing_layer`
runs the same arithmetic in TensorFlow ops.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cvt_spec import InputError
from cvt_tf.images import load_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TEST.CENTER_CROP: the shorter side is resized to int(size / 0.875), then the center size x size kept.
CROP_RATIO = 0.875
# The 384 experiment YAMLs set TEST.CENTER_CROP: False; the 224 ones keep the config default, True.
NO_CROP_SIZES = (384,)


def as_resolution(resolution: int | tuple) -> tuple[int, int]:
    """`224` -> (224, 224); `(97, 113)` stays (height, width)."""
    sizes = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(sizes) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise InputError(f"resolution must be a positive int or (height, width), got {resolution!r}")
    return sizes


def official_center_crop(height: int, width: int) -> bool:
    """Whether the official evaluation center-crops at this input size.

    True at 224 (and any square size but 384, the config default); False at 384 as in its YAMLs.
    Non-square sizes are resized without a crop, since the official crop is square.
    """
    return height == width and height not in NO_CROP_SIZES


@dataclass(frozen=True)
class EvalTransform:
    """The geometry of the official evaluation transform at one input size.

    center_crop: resize the shorter side to int(height / 0.875) with bicubic, then crop the center
        height x width (torchvision `Resize(int)` + `CenterCrop`); otherwise bicubic-resize the
        image to height x width (`Resize((h, w))`), changing its aspect ratio.
    """

    height: int
    width: int
    center_crop: bool

    def __post_init__(self):
        if self.center_crop and self.height != self.width:
            raise InputError(f"center_crop needs a square size, got {self.height}x{self.width}")

    @classmethod
    def official(cls, resolution: int | tuple, center_crop: bool | None = None) -> "EvalTransform":
        height, width = as_resolution(resolution)
        if center_crop is None:
            center_crop = official_center_crop(height, width)
        return cls(height, width, bool(center_crop))

    def describe(self) -> str:
        """One line for people, e.g. `bicubic resize of the shorter side to 256, center crop 224x224`."""
        size = f"{self.height}x{self.width}"
        if self.center_crop:
            return f"bicubic resize of the shorter side to {int(self.height / CROP_RATIO)}, center crop {size}"
        return f"bicubic resize to {size}, no crop"

    def resized_size(self, height, width, minimum=min) -> tuple:
        """(height, width) after the resize. Python ints, or tensors with `minimum=ops.minimum`.

        torchvision gives the longer side int(side * long / short), i.e. side * long // short.
        """
        if not self.center_crop:
            return self.height, self.width
        side = int(self.height / CROP_RATIO)
        short = minimum(height, width)
        return side * height // short, side * width // short

    def crop_offsets(self, height, width) -> tuple:
        """(top, left) of torchvision's center crop: int(round(excess / 2)), halves rounded to even."""
        return _half_rounded_to_even(height - self.height), _half_rounded_to_even(width - self.width)


def _half_rounded_to_even(excess):
    """round(excess / 2) for an integer excess, Python's rounding (ties to even); ints or tensors."""
    half = excess // 2
    return half + (excess % 2) * (half % 2)


def _as_images(images):
    """A list of PIL RGB images from a path, a PIL image, a uint8 array (H, W, 3) or (N, H, W, 3), or a list."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    elif isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = [images]
        elif images.ndim != 4:
            raise InputError(f"images must be (H, W, 3) or (N, H, W, 3), got shape {images.shape}")
    result = []
    for image in images:
        if isinstance(image, (str, Path)):
            image = load_image(image)
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise InputError(
                    "image arrays must be uint8 RGB (H, W, 3) with values 0-255, as the official loader "
                    f"reads them; got {image.dtype} {image.shape}"
                )
            image = Image.fromarray(image)
        elif isinstance(image, Image.Image):
            if image.mode != "RGB":
                raise InputError(f"PIL images must be RGB, got mode {image.mode}; use cvt_tf.load_image")
        else:
            raise InputError(f"expected a path, PIL image or uint8 array, got {type(image).__name__}")
        result.append(image)
    return result


def normalize_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> float32 as torchvision's ToTensor then Normalize: x / 255, - mean, / std."""
    scaled = pixels.astype(np.float32) / np.float32(255)
    return (scaled - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def resize_bicubic_pil(image: Image.Image, height: int, width: int) -> Image.Image:
    """PIL's bicubic resize with the horizontal pass first, as every Pillow before 13 ran it.

    Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height shrinks
    much more than the width, which moves some pixels by one level; two single-axis resizes keep
    the order the official evaluation had, on any Pillow.
    """
    return image.resize((width, image.height), Image.Resampling.BICUBIC).resize(
        (width, height), Image.Resampling.BICUBIC
    )


def preprocess_input(images, resolution: int | tuple = 224, center_crop: bool | None = None) -> np.ndarray:
    """Images -> the (N, H, W, 3) float32 batch the official evaluation feeds CvT at `resolution`.

    torchvision's `Resize` + `CenterCrop` + `ToTensor` + `Normalize` on PIL images, step for step,
    so the result equals the official tensor bit for bit (see tests/test_preprocessing.py).

    Args:
        images: a path, PIL RGB image, uint8 array (H, W, 3) or (N, H, W, 3), or a list of those.
        resolution: the model's input size, e.g. 224 or 384, or (height, width).
        center_crop: None follows the official experiments (`official_center_crop`).
    """
    transform = EvalTransform.official(resolution, center_crop)
    batch = []
    for image in _as_images(images):
        new_height, new_width = transform.resized_size(image.height, image.width)
        pixels = np.asarray(resize_bicubic_pil(image, new_height, new_width))
        if transform.center_crop:
            top, left = transform.crop_offsets(new_height, new_width)
            pixels = pixels[top : top + transform.height, left : left + transform.width]
        batch.append(normalize_pixels(pixels))
    return np.stack(batch)
