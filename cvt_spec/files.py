"""Reading input files safely, and a SPEC from an official experiment YAML or a JSON/YAML of SPEC keys.

Returns plain Python; no framework import, so the CLI checks its inputs before loading torch.
"""

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvt_spec.errors import InputFileError, SpecError
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


def read_spec_file(path) -> SpecFile:
    """Reads MODEL.SPEC, MODEL.NUM_CLASSES and the image size, or a bare SPEC mapping.

    Raises:
        SpecError: unreadable file, not a mapping, or an invalid SPEC; names the file.
    """
    path = Path(path)
    try:
        check_input_file(path, kind="spec")
        text = path.read_text()
    except InputFileError as error:
        raise SpecError(str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read spec file ({error})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0]
        raise SpecError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'} ({first_line})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of SPEC keys or an experiment YAML")
    model = data.get("MODEL")
    if isinstance(model, dict) and "SPEC" in model:
        spec, num_classes = model["SPEC"], model.get("NUM_CLASSES", 1000)
        # The inference size; the official YAMLs give the same under TRAIN.
        image_size = (data.get("TEST") or {}).get("IMAGE_SIZE") or (data.get("TRAIN") or {}).get("IMAGE_SIZE")
        if image_size is not None:
            # The official config stores width * height; CvT's YAMLs are square.
            image_size = (int(image_size[1]), int(image_size[0]))
    else:
        spec, num_classes, image_size = data, None, None
    try:
        return SpecFile(normalize_spec(spec), num_classes, image_size)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
