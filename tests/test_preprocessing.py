"""The official evaluation transform in Keras against torchvision's, on scikit-image's real photos.

The torchvision side is microsoft/CvT `build_transforms(cfg, is_train=False)` with the YAMLs' values.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from cvt_tf import EvalPreprocessing, EvalTransform, preprocess_input
from tests.conftest import REPO, ported_pair, tiny_spec

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
RESOLUTIONS = (224, 384)


def photo(name):
    """A scikit-image sample photo, or a variant shaped to reach a corner of the transform."""
    if name == "chelsea-300x402":  # 256 x 343 after resizing: crop offset round(59.5) = 60, not 59
        return skimage.data.chelsea()[:, :402]
    if name == "rocket-portrait":
        return np.ascontiguousarray(skimage.data.rocket().transpose(1, 0, 2))
    if name == "coffee-37x50":  # upsampled by both transforms
        return skimage.data.coffee()[100:137, 200:250]
    return getattr(skimage.data, name)()


ALL_PHOTOS = PHOTOS + ("chelsea-300x402", "rocket-portrait", "coffee-37x50")


def official_transform(resolution):
    """torchvision's evaluation transform as the official code builds it (TEST.INTERPOLATION: 3)."""
    assert Image.Resampling.BICUBIC == 3  # the YAMLs' code 3, the PIL constant torchvision received
    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    if resolution == 224:  # TEST.CENTER_CROP: True (config default)
        steps = [T.Resize(int(224 / 0.875), interpolation=InterpolationMode.BICUBIC), T.CenterCrop(224)]
    else:  # the 384 YAMLs: TEST.CENTER_CROP: False
        steps = [T.Resize((resolution, resolution), interpolation=InterpolationMode.BICUBIC)]
    return T.Compose([*steps, T.ToTensor(), normalize])


ONE_LEVEL = 1 / (255 * 0.224) + 1e-6  # one 8-bit level after the widest normalisation


def torchvision_nhwc(pixels, resolution):
    return official_transform(resolution)(Image.fromarray(pixels)).permute(1, 2, 0).numpy()


def torchvision_horizontal_first_nhwc(pixels, resolution):
    """The official transform with its resize split into torchvision resizes of one axis each.

    That is the pass order of every Pillow before 13, which the official evaluation ran on;
    Pillow 13 sometimes resizes vertically first (python-pillow/Pillow#9549).
    """
    image = Image.fromarray(pixels)
    resize, *rest = official_transform(resolution).transforms
    width, height = resize(image).size
    steps = [T.Resize((image.height, width), interpolation=InterpolationMode.BICUBIC),
             T.Resize((height, width), interpolation=InterpolationMode.BICUBIC), *rest]
    return T.Compose(steps)(image).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("name", PHOTOS)
def test_preprocess_input_equals_torchvision(name, resolution):
    pixels = photo(name)
    actual = preprocess_input(pixels, resolution)
    assert actual.shape == (1, resolution, resolution, 3) and actual.dtype == np.float32
    np.testing.assert_array_equal(actual[0], torchvision_nhwc(pixels, resolution))


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_preprocess_input_keeps_the_official_pass_order(name, resolution):
    """Bit-exact against the horizontal-first order, whatever order this Pillow picks itself.

    Pillow 13.0.0 goes vertical first only for rocket-portrait at 384 here: 7 levels at most,
    mean 1.7e-3, on 9.6% of the values (about 1e-3 on the logits of a synthetic cvt-13).
    """
    pixels = photo(name)
    actual = preprocess_input(pixels, resolution)[0]
    np.testing.assert_array_equal(actual, torchvision_horizontal_first_nhwc(pixels, resolution))
    own_order = np.abs(actual - torchvision_nhwc(pixels, resolution))
    assert np.max(own_order) <= 8 * ONE_LEVEL and np.mean(own_order) <= 2e-3


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_layer_equals_preprocess_input_eager_and_in_a_graph(resolution):
    layer = EvalPreprocessing(resolution)
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)])
    for name in ALL_PHOTOS:
        pixels = photo(name)
        expected = torchvision_horizontal_first_nhwc(pixels, resolution)
        np.testing.assert_array_equal(np.asarray(layer(pixels[None]))[0], expected, err_msg=name)
        np.testing.assert_array_equal(graph(pixels[None]).numpy()[0], expected, err_msg=name)


def test_layer_takes_batches_and_any_number_type():
    layer = EvalPreprocessing(384)
    batch = np.stack([skimage.data.astronaut(), skimage.data.astronaut()[:, ::-1]])
    expected = preprocess_input(list(batch), 384)
    np.testing.assert_array_equal(np.asarray(layer(batch.astype(np.float32))), expected)
    assert layer.compute_output_shape((2, 512, 512, 3)) == (2, 384, 384, 3)
    clone = EvalPreprocessing.from_config(layer.get_config())
    assert clone.transform == layer.transform


def test_converted_model_gets_the_reference_logits_from_real_photos():
    """official_ref on torchvision's tensors vs the Keras port on ours: framework noise only.

    (`EvalPreprocessing` gives the same tensors bit for bit, tested above.)
    """
    reference, keras_model = ported_pair(tiny_spec(), num_classes=1000)
    for resolution in RESOLUTIONS:
        photos = [photo(name) for name in PHOTOS]
        official = torch.stack([official_transform(resolution)(Image.fromarray(p)) for p in photos])
        with torch.inference_mode():
            expected = reference(official).numpy()
        actual = np.asarray(keras_model(preprocess_input(photos, resolution)))
        assert np.max(np.abs(actual - expected)) < 1e-5
        np.testing.assert_array_equal(np.argsort(-actual)[:, :5], np.argsort(-expected)[:, :5])
    # The layer inside a functional model taking raw uint8 images of any size.
    pixels = keras.Input((None, None, 3), dtype="uint8")
    end_to_end = keras.Model(pixels, keras_model(EvalPreprocessing(224)(pixels)))
    rocket = photo("rocket")
    expected = keras_model.predict(preprocess_input(rocket), verbose=0)
    np.testing.assert_allclose(end_to_end.predict(rocket[None], verbose=0), expected, rtol=0, atol=1e-6)


def test_input_forms_give_the_same_batch(tmp_path):
    pixels = skimage.data.coffee()
    path = tmp_path / "coffee.png"
    Image.fromarray(pixels).save(path)
    expected = preprocess_input(pixels)
    for images in (path, str(path), Image.fromarray(pixels), pixels[None], [pixels], [path]):
        np.testing.assert_array_equal(preprocess_input(images), expected)
    assert preprocess_input([pixels, path], 384).shape == (2, 384, 384, 3)


def test_official_geometry():
    at_224, at_384 = EvalTransform.official(224), EvalTransform.official(384)
    assert at_224.center_crop and not at_384.center_crop
    assert at_224.describe() == "bicubic resize of the shorter side to 256, center crop 224x224"
    assert at_384.describe() == "bicubic resize to 384x384, no crop"
    assert at_224.resized_size(300, 451) == (256, 384)  # int(256 * 451 / 300) = 384
    assert at_224.resized_size(640, 427) == (383, 256)
    assert at_384.resized_size(300, 451) == (384, 384)
    assert [at_224.crop_offsets(256, 224 + excess)[1] for excess in (116, 117, 118, 119)] == [58, 58, 59, 60]
    assert not EvalTransform.official((97, 113)).center_crop


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: preprocess_input(np.zeros((8, 8, 3), np.float32)), "got float32 (8, 8, 3)"),
        (lambda: preprocess_input(np.zeros((8, 8), np.uint8)), "got shape (8, 8)"),
        (lambda: preprocess_input(np.zeros((8, 8, 3), np.uint8), resolution=0), "got 0"),
        (lambda: preprocess_input(Image.new("L", (8, 8))), "got mode L"),
        (lambda: preprocess_input([3]), "got int"),
        (lambda: EvalTransform.official((97, 113), center_crop=True), "got 97x113"),
    ],
)
def test_bad_arguments_name_the_value(call, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_cvt_tf_preprocessing_imports_no_torch():
    code = (
        "import sys, numpy as np, cvt_tf; "
        "x = cvt_tf.preprocess_input(np.zeros((40, 50, 3), np.uint8)); "
        "cvt_tf.EvalPreprocessing(224)(np.zeros((1, 40, 50, 3), np.uint8)); "
        "cvt_tf.decode_predictions(np.zeros((1, 1000))); "
        "assert 'torch' not in sys.modules and 'official_ref' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
