"""Reading a SPEC from a file: an official experiment YAML, or a JSON/YAML of SPEC keys alone.

Returns plain Python; no framework import.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvt_spec.spec import SpecError, normalize_spec


@dataclass(frozen=True)
class SpecFile:
    spec: dict
    num_classes: int = None  # MODEL.NUM_CLASSES when the file is an experiment YAML
    image_size: tuple = None  # TEST.IMAGE_SIZE (else TRAIN.IMAGE_SIZE) as (height, width)


def read_spec_file(path):
    """Reads MODEL.SPEC, MODEL.NUM_CLASSES and the image size, or a bare SPEC mapping.

    Raises:
        SpecError: unreadable file, not a mapping, or an invalid SPEC; names the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
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
