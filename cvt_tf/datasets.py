"""Labelled image folders: ImageNet-V2 (class index folders), ImageFolder (WordNet id folders), a labels CSV.

Pure Python over paths (PIL only for the list of formats it reads); `read_image_set` says which
layout it chose and why, and refuses a folder that fits none, naming what it saw.
"""

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cvt_spec import InputError
from cvt_spec.errors import shown
from cvt_tf.imagenet import imagenet_classes

LAYOUTS = ("auto", "imagenet-v2", "imagefolder", "labels")
WNID = re.compile(r"n\d{8}")
INDEX = re.compile(r"0|[1-9]\d*")


class DatasetError(InputError):
    """A data folder or labels file that cannot be read as labelled images; names the file and line."""


@dataclass(frozen=True)
class ImageSet:
    """Images with their class indices, in a fixed order (sorted by relative path)."""

    root: Path
    layout: str
    reason: str  # why `auto` chose the layout, or that it was asked for
    items: tuple  # ((relative path, class index), ...)

    def __len__(self) -> int:
        return len(self.items)


def image_suffixes() -> frozenset:
    """The file name endings of the formats Pillow can open, lower case (`.jpeg`, `.png`, ...)."""
    Image.init()
    return frozenset(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def _images_below(folder: Path) -> list[Path]:
    suffixes = image_suffixes()
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root}: holds no class folders (and no --labels file was given)")
    return folders


def _check_index(index, num_classes, where):
    if not 0 <= index < num_classes:
        raise DatasetError(f"{where}: class {index} does not exist for a {num_classes}-class head "
                           f"(classes are 0..{num_classes - 1})")


def _from_folders(root, folders, class_of, num_classes):
    items = []
    for folder in folders:
        index = class_of(folder.name)
        _check_index(index, num_classes, folder)
        items += [(image.relative_to(root).as_posix(), index) for image in _images_below(folder)]
    return tuple(sorted(items))


def _index_folders(root, num_classes):
    """ImageNet-V2: the class is int(folder name), never the folder's position (`10` sorts before `2`)."""
    return _from_folders(root, _class_folders(root), int, num_classes)


def _wnid_folders(root, num_classes):
    """ImageNet's own layout: the class is the WordNet id's index in the official class order."""
    index_of = {wnid: index for index, (wnid, _) in enumerate(imagenet_classes())}

    def class_of(name):
        if name not in index_of:
            raise DatasetError(f"{root / name}: {name} is not one of the 1000 ImageNet-1k WordNet ids")
        return index_of[name]

    return _from_folders(root, _class_folders(root), class_of, num_classes)


def _from_labels(root, labels, num_classes):
    """A CSV of `relative/path,class` lines (a header line `path,class` may come first)."""
    items = []
    try:
        with open(labels, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{labels}: cannot read the labels file ({error})") from None
    for number, row in enumerate(rows, 1):
        where = f"{labels}:{number}"
        if number == 1 and [cell.strip().lower() for cell in row] == ["path", "class"] or not row:
            continue
        if len(row) != 2:
            raise DatasetError(f"{where}: expected `relative/path,class`, got {shown(','.join(row))}")
        path, label = row[0].strip(), row[1].strip()
        if not INDEX.fullmatch(label):
            raise DatasetError(f"{where}: class {shown(label)} is not a non-negative integer")
        _check_index(int(label), num_classes, where)
        if not (root / path).resolve().is_relative_to(root.resolve()):
            raise DatasetError(f"{where}: {shown(path)} is outside the data folder {root}")
        if not (root / path).is_file():
            raise DatasetError(f"{where}: {root / path} does not exist")
        items.append((Path(path).as_posix(), int(label)))
    return tuple(sorted(items))


def _auto(root, labels):
    """(layout, reason) from what the data folder holds."""
    if labels is not None:
        return "labels", f"a labels file was given ({labels})"
    names = [folder.name for folder in _class_folders(root)]
    if all(INDEX.fullmatch(name) for name in names):
        return "imagenet-v2", f"its {len(names)} class folders are named by integers ({names[0]}, ...)"
    if all(WNID.fullmatch(name) for name in names):
        return "imagefolder", f"its {len(names)} class folders are named by WordNet ids ({names[0]}, ...)"
    others = [name for name in names if not (INDEX.fullmatch(name) or WNID.fullmatch(name))]
    raise DatasetError(
        f"{root}: its folders fit no layout: neither all class indices (0, 1, ...) nor all WordNet ids "
        f"(n01440764, ...); saw {shown(others[:5])}; pass --labels FILE for another layout"
    )


def read_image_set(data, layout: str = "auto", labels=None, num_classes: int = 1000) -> ImageSet:
    """The labelled images of a data folder.

    Args:
        data: the folder; images may lie anywhere below a class folder (any format Pillow reads).
        layout: one of LAYOUTS; `auto` decides from the folder names (or a labels file).
        labels: the CSV of `relative/path,class` (relative to `data`) for the `labels` layout.
        num_classes: the head's size; a class index at or above it is refused.

    Raises:
        DatasetError: the folder is missing or empty, fits no layout, or names a class or file that
            does not exist; the message names the folder, or the labels file and line.
    """
    root = Path(data)
    if layout not in LAYOUTS:
        raise DatasetError(f"--layout must be one of {', '.join(LAYOUTS)}, got {shown(layout)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    reason = f"asked for with --layout {layout}"
    if layout == "auto":
        layout, reason = _auto(root, labels)
    if layout == "labels":
        if labels is None:
            raise DatasetError("--layout labels needs --labels FILE (a CSV of relative/path,class)")
        items = _from_labels(root, Path(labels), num_classes)
    else:
        items = (_index_folders if layout == "imagenet-v2" else _wnid_folders)(root, num_classes)
    if not items:
        raise DatasetError(f"{root}: holds no images in the {layout} layout")
    return ImageSet(root, layout, reason, items)
