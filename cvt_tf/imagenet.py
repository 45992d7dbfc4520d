"""The 1000 ImageNet-1k classes in the official index order, and `decode_predictions`.

`data/imagenet_classes.txt` holds `wnid<TAB>name` per line: WordNet ids from timm, names from torchvision.
"""

import functools
from importlib import resources

import numpy as np

from cvt_spec import InputError

NUM_IMAGENET_CLASSES = 1000


@functools.cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((wnid, name), ...) for class indices 0..999, read from the package data."""
    text = resources.files("cvt_tf").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    classes = tuple(tuple(line.split("\t")) for line in text.splitlines())
    if len(classes) != NUM_IMAGENET_CLASSES or any(len(entry) != 2 for entry in classes):
        raise RuntimeError("cvt_tf/data/imagenet_classes.txt is damaged: expected 1000 lines of wnid<TAB>name")
    return classes


def top_classes(scores, top: int = 5) -> np.ndarray:
    """Indices of the `top` highest scores of one row, highest first (ties keep the lower index)."""
    scores = np.asarray(scores)
    return np.argsort(-scores, kind="stable")[:top]


def decode_predictions(preds, top: int = 5) -> list[list[tuple]]:
    """The `top` ImageNet classes of each row of `preds`, as Keras applications decode them.

    Args:
        preds: (batch, 1000) logits or probabilities; scores are returned as given.
        top: how many classes per row.

    Returns:
        One list per row of (wnid, name, score) tuples, highest score first.
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != NUM_IMAGENET_CLASSES:
        raise InputError(f"preds must have shape (batch, {NUM_IMAGENET_CLASSES}), got {preds.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= NUM_IMAGENET_CLASSES:
        raise InputError(f"top must be an integer in 1..{NUM_IMAGENET_CLASSES}, got {top!r}")
    classes = imagenet_classes()
    return [
        [(*classes[index], float(row[index])) for index in top_classes(row, top)]
        for row in preds
    ]
