"""Reading input files safely, and a SPEC from an official experiment YAML or a JSON/YAML of SPEC keys.

Returns plain Python; no framework import, so the CLI checks its inputs before loading torch.
"""

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvt_spec.errors import InputFileError, SpecError, shown
from cvt_spec.spec import normalize_spec


@dataclass(frozen=True)
class SpecFile:
    spec: dict
    num_classes: int = None  # MODEL.NUM_CLASSES when the file is an experiment YAML
    image_size: tuple = None  # TEST.IMAGE_SIZE (else TRAIN.IMAGE_SIZE) as (height, width)


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input_file(path, kind: str = "checkpoint") -> int:
    """Checks that `path` is a non-empty regular file this process can read; returns its size.

    FIFOs and devices are refused before opening: reading one could block forever or never end.

    Raises:
        InputFileError: missing, a directory, not a regular file, empty, or unreadable.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InputFileError(f"{path}: no such file") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(f"{path}: is a directory, expected a {kind} file")
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "not a regular file")
        raise InputFileError(f"{path}: is {what}, expected a regular {kind} file")
    if info.st_size == 0:
        raise InputFileError(f"{path}: file is empty, expected a {kind} file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None
    return info.st_size


# An official experiment YAML is about 3 kB; a SPEC file may hold this much and expand to this many values.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 10_000
MAX_SPEC_DEPTH = 32


def _check_bounded(data, path):
    """Refuses a document that expands to more than MAX_SPEC_VALUES values, nests deeper than
    MAX_SPEC_DEPTH, or refers to itself; YAML aliases are counted as often as they are used, without
    expanding them (a DAG of shared lists, as PyYAML builds it, is walked once per object)."""
    sizes, depths, stack = {}, {}, [(data, False)]
    while stack:
        value, children_done = stack.pop()
        children = list(value.values()) + list(value) if isinstance(value, dict) else value \
            if isinstance(value, list) else []
        if not children_done:
            if sizes.get(id(value)) == -1:  # an ancestor of itself
                raise SpecError(f"{path}: a YAML alias refers to itself")
            if id(value) in sizes:  # shared (an alias), already counted
                continue
            sizes[id(value)] = -1  # on the current path
            stack.append((value, True))
            stack.extend((child, False) for child in children if isinstance(child, (dict, list)))
            continue
        sizes[id(value)] = 1 + sum(sizes.get(id(child), 1) for child in children)
        depths[id(value)] = 1 + max((depths.get(id(child), 0) for child in children), default=0)
        if sizes[id(value)] > MAX_SPEC_VALUES or depths[id(value)] > MAX_SPEC_DEPTH:
            raise SpecError(
                f"{path}: holds more than {MAX_SPEC_VALUES} values or nests deeper than {MAX_SPEC_DEPTH} "
                "levels once its YAML aliases are expanded; a SPEC has a few dozen"
            )


def _parse(path, text):
    """The document in `text`, JSON for a `.json` file, else YAML (safe: no Python objects)."""
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        return json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0]
        raise SpecError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'} ({first_line})") from None
    except RecursionError:
        raise SpecError(f"{path}: nests deeper than {kind} can be read here") from None
    except ValueError as error:  # an integer of more than 4300 digits (Python's int parsing limit)
        raise SpecError(f"{path}: not a usable {kind} value ({shown(str(error))})") from None


def _image_size(data, path):
    """TEST.IMAGE_SIZE (else TRAIN.IMAGE_SIZE) of an experiment YAML as (height, width), or None."""
    for section in ("TEST", "TRAIN"):
        block = data.get(section)
        size = block.get("IMAGE_SIZE") if isinstance(block, dict) else None
        if size is None:
            continue
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
            raise SpecError(f"{path}: {section}.IMAGE_SIZE must be [width, height] in pixels, got {shown(size)}")
        return size[1], size[0]  # the official config stores width, height; CvT's YAMLs are square
    return None


def read_spec_file(path) -> SpecFile:
    """Reads MODEL.SPEC, MODEL.NUM_CLASSES and the image size, or a bare SPEC mapping.

    Raises:
        SpecError: unreadable, too large, not a mapping, or an invalid SPEC; names the file.
    """
    path = Path(path)
    try:
        size = check_input_file(path, kind="spec")
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size} bytes; a SPEC file holds at most {MAX_SPEC_BYTES} (a few kB is usual)")
        text = path.read_text(encoding="utf-8")
    except InputFileError as error:
        raise SpecError(str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read spec file ({error})") from None
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of SPEC keys or an experiment YAML")
    _check_bounded(data, path)
    model = data.get("MODEL")
    if isinstance(model, dict) and "SPEC" in model:
        spec, num_classes = model["SPEC"], model.get("NUM_CLASSES", 1000)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise SpecError(f"{path}: MODEL.NUM_CLASSES must be an integer >= 0, got {shown(num_classes)}")
        image_size = _image_size(data, path)
    else:
        spec, num_classes, image_size = data, None, None
    try:
        return SpecFile(normalize_spec(spec), num_classes, image_size)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
