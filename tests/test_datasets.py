"""Labelled image folders: the class comes from the folder's name or the labels file, never its position."""

import pytest
from PIL import Image

from cvt_tf.datasets import DatasetError, read_image_set
from cvt_tf.imagenet import imagenet_classes


def _image(path, size=(5, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def test_index_folders_give_their_integer_not_their_sorted_position(tmp_path):
    for name in ("2", "10", "100"):
        _image(tmp_path / name / "a.png")
    _image(tmp_path / "10" / "deeper" / "b.jpg")
    (tmp_path / "10" / "notes.txt").write_text("not an image")
    images = read_image_set(tmp_path)
    assert images.layout == "imagenet-v2" and "named by integers" in images.reason
    # Sorted by name, "10" < "100" < "2": a position-based mapping would give 0, 1, 2.
    assert images.items == (("10/a.png", 10), ("10/deeper/b.jpg", 10), ("100/a.png", 100), ("2/a.png", 2))


def test_wordnet_folders_give_the_official_index(tmp_path):
    classes = imagenet_classes()
    for index in (0, 7, 999):
        _image(tmp_path / classes[index][0] / f"{index}.JPEG")
    images = read_image_set(tmp_path)
    assert images.layout == "imagefolder"
    assert [label for _, label in images.items] == [0, 7, 999]


def test_a_labels_file_with_a_header_and_nested_paths(tmp_path):
    _image(tmp_path / "x" / "1.png")
    _image(tmp_path / "y.webp")
    (tmp_path / "labels.csv").write_text("path,class\nx/1.png,5\ny.webp,0\n")
    images = read_image_set(tmp_path, labels=tmp_path / "labels.csv")
    assert images.layout == "labels" and images.items == (("x/1.png", 5), ("y.webp", 0))


@pytest.mark.parametrize(
    ("make", "arguments", "fragment"),
    [
        (lambda root: _image(root / "1000" / "a.png"), {}, "1000: class 1000 does not exist for a 1000-class head"),
        (lambda root: _image(root / "3" / "a.png"), {"num_classes": 3}, "class 3 does not exist for a 3-class head"),
        (lambda root: (_image(root / "cats" / "a.png"), _image(root / "7" / "b.png")), {},
         "fit no layout: neither all class indices (0, 1, ...) nor all WordNet ids (n01440764, ...); saw ['cats']"),
        (lambda root: root.joinpath("5").mkdir(), {}, "holds no images in the imagenet-v2 layout"),
        (lambda root: None, {}, "holds no class folders"),
        (lambda root: _image(root / "n99999999" / "a.png"), {"layout": "imagefolder"},
         "n99999999 is not one of the 1000 ImageNet-1k WordNet ids"),
    ],
)
def test_folders_that_do_not_fit_are_refused_naming_what_was_seen(tmp_path, make, arguments, fragment):
    make(tmp_path)
    with pytest.raises(DatasetError) as error:
        read_image_set(tmp_path, **arguments)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a.png,1\nmissing.png,2\n", "labels.csv:2: {root}/missing.png does not exist"),
        ("a.png,one\n", "labels.csv:1: class 'one' is not a non-negative integer"),
        ("a.png,-1\n", "labels.csv:1: class '-1' is not a non-negative integer"),
        ("a.png\n", "labels.csv:1: expected `relative/path,class`"),
        ("../outside.png,1\n", "labels.csv:1: '../outside.png' is outside the data folder"),
    ],
)
def test_a_labels_file_naming_a_missing_file_or_a_bad_class_names_the_line(tmp_path, text, fragment):
    root = tmp_path / "data"
    _image(root / "a.png")
    _image(tmp_path / "outside.png")
    (root / "labels.csv").write_text(text)
    with pytest.raises(DatasetError) as error:
        read_image_set(root, labels=root / "labels.csv")
    assert fragment.format(root=root) in str(error.value)
