"""ImageNet-1k class names shipped in cvt_tf, checked against torchvision's and timm's lists."""

from pathlib import Path

import numpy as np
import pytest
import timm.data
from torchvision.models._meta import _IMAGENET_CATEGORIES

from cvt_tf import decode_predictions
from cvt_tf.imagenet import imagenet_classes


def test_classes_are_torchvision_names_with_timm_wordnet_ids_in_index_order():
    synsets = (Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt").read_text().split()
    classes = imagenet_classes()
    assert [name for _, name in classes] == list(_IMAGENET_CATEGORIES)
    assert [wnid for wnid, _ in classes] == synsets
    assert classes[0] == ("n01440764", "tench") and classes[999] == ("n15075141", "toilet tissue")


def test_decode_predictions_ranks_each_row():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [281, 285, 967]] = [5.0, 4.0, 3.0]
    preds[1, [812, 0]] = [0.5, 0.25]
    decoded = decode_predictions(preds, top=3)
    assert decoded[0] == [("n02123045", "tabby", 5.0), ("n02124075", "Egyptian cat", 4.0),
                          ("n07920052", "espresso", 3.0)]
    # Ties (the zeros) keep the lower class index first.
    assert decoded[1] == [("n04266014", "space shuttle", 0.5), ("n01440764", "tench", 0.25),
                          ("n01443537", "goldfish", 0.0)]
    assert [len(row) for row in decode_predictions(preds)] == [5, 5]


@pytest.mark.parametrize(
    ("preds", "top", "fragment"),
    [
        (np.zeros((2, 10)), 5, r"shape \(batch, 1000\), got \(2, 10\)"),
        (np.zeros(1000), 5, r"got \(1000,\)"),
        (np.zeros((1, 1000)), 0, "got 0"),
        (np.zeros((1, 1000)), True, "got True"),
    ],
)
def test_decode_predictions_names_bad_arguments(preds, top, fragment):
    with pytest.raises(ValueError, match=fragment):
        decode_predictions(preds, top=top)
