"""Top-1 and top-5 of a classifier on a labelled image set, with the official evaluation transform.

Images are decoded and transformed in a thread pool ahead of the model; a second classifier (the
PyTorch reference, from outside cvt_tf) may classify the very same tensors beside it.
"""

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cvt_tf.datasets import ImageSet
from cvt_tf.evaluation_log import ImageResult, ResultsLog
from cvt_tf.imagenet import top_classes
from cvt_tf.images import ImageError, load_image
from cvt_tf.preprocessing import EvalTransform, preprocess_input

TOP = 5
# Batches decoded ahead of the one the model runs on.
PREFETCH_BATCHES = 2

Classifier = Callable[[np.ndarray], np.ndarray]  # (n, H, W, 3) float32 -> (n, classes) logits


class StrictError(ImageError):
    """An unusable image under `--strict`."""


def keras_classifier(model, batch: int, transform: EvalTransform) -> Classifier:
    """The model on the fast path (`cvt_tf.inference_function`, streams) for batches of at most `batch`.

    A shorter last batch is padded with zeros to the function's fixed shape, and the padding's rows dropped.
    """
    import tensorflow as tf

    from cvt_tf.inference import inference_function

    function = inference_function(model, (batch, transform.height, transform.width, 3))

    def classify(images: np.ndarray) -> np.ndarray:
        count = len(images)
        if count < batch:
            images = np.concatenate([images, np.zeros((batch - count, *images.shape[1:]), images.dtype)])
        return function(tf.constant(images)).numpy()[:count]

    return classify


def decode(root: Path, path: str, transform: EvalTransform) -> tuple[np.ndarray | None, str | None]:
    """(the (H, W, 3) tensor of one image, None), or (None, why it cannot be used)."""
    try:
        image = load_image(root / path)
    except ImageError as error:
        return None, str(error).removeprefix(f"{root / path}: ")
    return preprocess_input([image], (transform.height, transform.width), transform.center_crop)[0], None


def decoded_batches(root: Path, items: list, transform: EvalTransform, batch: int,
                    workers: int) -> Iterator[list[tuple]]:
    """Batches of [((path, label), tensor or None, reason or None)], decoded by `workers` threads ahead.

    Pillow releases the GIL while it decodes and resizes, so the threads run beside the model.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    pending: deque = deque()
    remaining = iter(items)
    try:
        while True:
            while len(pending) < batch * (PREFETCH_BATCHES + 1) and (item := next(remaining, None)) is not None:
                pending.append((item, pool.submit(decode, root, item[0], transform)))
            if not pending:
                return
            chunk = [pending.popleft() for _ in range(min(batch, len(pending)))]
            yield [(item, *future.result()) for item, future in chunk]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def classify_batch(decoded: list[tuple], keras: Classifier, reference: Classifier | None) -> list[ImageResult]:
    """The results of one decoded batch: each usable image through both classifiers, the others skipped."""
    usable = [(item, tensor) for item, tensor, _ in decoded if tensor is not None]
    outcomes = {}
    if usable:
        tensors = np.stack([tensor for _, tensor in usable])
        keras_logits = np.asarray(keras(tensors), np.float64)
        reference_logits = None if reference is None else np.asarray(reference(tensors), np.float64)
        for row, ((path, label), _) in enumerate(usable):
            theirs = None if reference_logits is None else reference_logits[row]
            outcomes[path] = ImageResult(
                path, label, tuple(int(i) for i in top_classes(keras_logits[row], TOP)),
                None if theirs is None else tuple(int(i) for i in top_classes(theirs, TOP)),
                None if theirs is None else float(np.max(np.abs(keras_logits[row] - theirs))),
            )
    return [outcomes.get(path) or ImageResult(path, label, skipped=reason) for (path, label), _, reason in decoded]


def evaluate(image_set: ImageSet, keras: Classifier, transform: EvalTransform, batch: int, log: ResultsLog,
             reference: Classifier | None = None, limit: int | None = None, strict: bool = False,
             workers: int = 2, on_batch: Callable[[list[ImageResult]], None] = lambda _: None) -> list[ImageResult]:
    """Classifies every image of `image_set` (the first `limit`) not already in `log`; returns all their results.

    Each batch's results are appended to `log` before `on_batch` sees them, so a kill loses at most
    the batch in flight.

    Raises:
        StrictError: with `strict`, the first image that cannot be used (its file and why).
    """
    selected = list(image_set.items[:limit])
    todo = [item for item in selected if item[0] not in log.done]
    for decoded in decoded_batches(image_set.root, todo, transform, batch, workers):
        if strict and (bad := next(((path, reason) for (path, _), _, reason in decoded if reason), None)):
            raise StrictError(f"--strict: {image_set.root / bad[0]}: {bad[1]}")
        results = classify_batch(decoded, keras, reference)
        log.append(results)
        on_batch(results)
    return [log.done[path] for path, _ in selected]
