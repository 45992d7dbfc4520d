"""Fine-tuning data: a seeded validation split of a labelled image set, the official training augmentation.

Every random draw is seeded by (seed, epoch, image), so a run gives the same batches on one device, on
many, and after a resume; each input pipeline of a `tf.distribute` strategy reads its share of the batch.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cvt_spec import InputError
from cvt_tf.datasets import ImageSet
from cvt_tf.images import load_image
from cvt_tf.preprocessing import normalize_pixels, preprocess_input

VALIDATION_FRACTION = 0.2
# The official training transform (microsoft/CvT lib/dataset/transformas/build.py with its defaults,
# AUG.SCALE, AUG.RATIO, AUG.INTERPOLATION 2 = bilinear): torchvision's RandomResizedCrop, then a flip.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class Split:
    """Training and validation examples: ((relative path, class index), ...) each, in a fixed order."""

    train: tuple
    validation: tuple


def split_image_set(images: ImageSet, seed: int, fraction: float = VALIDATION_FRACTION) -> Split:
    """Per class, a seeded `fraction` of the images (at least one) for validation, the rest for training.

    Raises:
        InputError: a class has fewer than two images (one to train on, one to validate); names its folder.
    """
    by_class: dict[int, list] = {}
    for item in images.items:
        by_class.setdefault(item[1], []).append(item)
    train, validation = [], []
    for label in sorted(by_class):
        items = by_class[label]
        if len(items) < 2:
            raise InputError(
                f"{images.root / items[0][0].rpartition('/')[0]}: class {label} has {len(items)} image; "
                "the validation split needs at least 2 per class (one to train on, one to validate)"
            )
        order = np.random.default_rng([seed, label]).permutation(len(items))
        held = max(1, round(len(items) * fraction))
        validation += [items[i] for i in sorted(order[:held])]
        train += [items[i] for i in sorted(order[held:])]
    return Split(tuple(train), tuple(validation))


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) as torchvision's RandomResizedCrop.get_params draws them."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(CROP_ATTEMPTS):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        crop_w, crop_h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1)), crop_w, crop_h
    # The fallback: the center crop of the whole image, its ratio clamped to the range.
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        crop_w, crop_h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        crop_w, crop_h = round(height * CROP_RATIO[1]), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def augment(image: Image.Image, resolution: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """RandomResizedCrop to `resolution` (bilinear) and a horizontal flip with probability 1/2, normalized."""
    left, top, crop_w, crop_h = crop_box(image.width, image.height, rng)
    height, width = resolution
    crop = image.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(crop)
    if rng.uniform() < 0.5:
        pixels = pixels[:, ::-1]
    return normalize_pixels(pixels)


@dataclass(frozen=True)
class TrainingBatches:
    """The training batches of every epoch: which images, in which order, augmented how.

    Attributes:
        root: the data folder.
        examples: ((relative path, class index), ...) to train on.
        resolution: (height, width) of the model's input.
        global_batch: images per step over all replicas.
        seed: seeds the epoch orders and every augmentation.
    """

    root: object
    examples: tuple
    resolution: tuple
    global_batch: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        """Whole global batches per epoch (the remainder is left out, as every replica needs a full share)."""
        return len(self.examples) // self.global_batch

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def example(self, epoch: int, index: int) -> tuple[np.ndarray, int]:
        """The augmented image and class of training example `index` in `epoch`."""
        path, label = self.examples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        return augment(load_image(self.root / path), self.resolution, rng), label

    def share(self, epoch: int, step: int, pipeline: int, pipelines: int) -> np.ndarray:
        """The example indices of one input pipeline's consecutive share of a step's global batch."""
        order = self.epoch_order(epoch)[step * self.global_batch:(step + 1) * self.global_batch]
        size = self.global_batch // pipelines
        return order[pipeline * size:(pipeline + 1) * size]

    def dataset(self, input_context, first_epoch: int, epochs: int):
        """A `tf.data.Dataset` of per-replica batches from `first_epoch` on, for `distribute_datasets_from_function`.

        A pipeline feeding several replicas (MirroredStrategy) yields their slices of each global batch in
        replica order; with one pipeline per worker (MultiWorkerMirroredStrategy) each reads its own share.
        """
        import tensorflow as tf

        replicas, pipelines = input_context.num_replicas_in_sync, input_context.num_input_pipelines
        pipeline = input_context.input_pipeline_id

        def generate():
            for epoch in range(first_epoch, epochs):
                for step in range(self.steps_per_epoch):
                    for index in self.share(epoch, step, pipeline, pipelines):
                        yield self.example(epoch, int(index))

        height, width = self.resolution
        signature = (tf.TensorSpec((height, width, 3), tf.float32), tf.TensorSpec((), tf.int32))
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return dataset.batch(self.global_batch // replicas, drop_remainder=True).prefetch(2)


def validation_arrays(root, examples: tuple, resolution: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the validation examples through the official evaluation transform."""
    images = preprocess_input([load_image(root / path) for path, _ in examples], resolution)
    return images, np.asarray([label for _, label in examples], np.int32)


def check_batch(global_batch: int, train_images: int, replicas: int) -> None:
    """Raises InputError unless the batch splits evenly over the replicas and one batch of images exists."""
    if global_batch % replicas:
        raise InputError(f"--batch {global_batch} does not split evenly over {replicas} replicas")
    if train_images < global_batch:
        raise InputError(f"--batch {global_batch}: the split leaves {train_images} training images, "
                         "fewer than one batch; give more images or a smaller --batch")
