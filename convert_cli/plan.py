"""Turning the conversion options into a `Conversion` job, checking every input first.

Runs before torch and TensorFlow are imported, so bad input fails fast with one line.
"""

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from convert_cli.errors import BadInput
from convert_cli.inputs import check_artifact_name, check_checkpoint_file, check_output_dir, require_pytorch
from cvt_spec import (
    PUBLISHED_AT,
    VARIANTS,
    InputError,
    RecognitionError,
    SpecError,
    check_input_size,
    find_official,
    variant_spec,
)
from cvt_spec.files import read_spec_file
from cvt_spec.recognize import recognize, resolution_from_name, version_from_name

if TYPE_CHECKING:  # the module itself is imported only once the input is valid
    from converter.pipeline import Conversion

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
# The parity check runs both models at --res, batch 2: stage 1 attention memory grows with the
# 4th power of the side (about 8 GB at 1024 for the official SPECs).
MAX_RESOLUTION = 1024


def parse_resolution(ctx, param, value: str | None) -> tuple | None:
    """`384` -> (384, 384); `97x113` -> (97, 113)."""
    if value is None:
        return None
    parts = value.lower().split("x")
    if len(parts) in (1, 2) and all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        sizes = [int(p) for p in parts]
        if max(sizes) > MAX_RESOLUTION:
            raise click.BadParameter(f"at most {MAX_RESOLUTION} per side, got {value!r}")
        return (sizes[0], sizes[-1])
    raise click.BadParameter(f"expected a positive integer or HxW (e.g. 384 or 97x113), got {value!r}")


def check_atol(ctx, param, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive finite number, got {value}")
    return value


def _official_checkpoint_path(config, resolution, version, checkpoint, synthetic):
    """The checkpoint path of an official variant, or None for --synthetic."""
    if synthetic:
        return None
    if checkpoint is not None:
        return Path(checkpoint)
    if resolution[0] != resolution[1]:
        raise BadInput(
            f"--res {resolution[0]}x{resolution[1]}: official checkpoints are square; "
            "pass --checkpoint or --synthetic"
        )
    try:
        official = find_official(config, resolution[0], version)
    except InputError as error:
        raise BadInput(f"{error}; pass --checkpoint PATH or --synthetic for another combination") from None
    path = DEFAULT_CHECKPOINT_DIR / official.file_name
    if not path.is_file():
        raise BadInput(
            f"{path} not found: download {official.file_name} from {PUBLISHED_AT} into "
            f"{DEFAULT_CHECKPOINT_DIR}/, pass --checkpoint PATH, or try without it: --synthetic"
        )
    return path


def checkpoint_shapes(path) -> dict:
    """{key: shape} of a checkpoint file, transformers keys under their official names."""
    require_pytorch("recognising a checkpoint")
    from converter.checkpoint import load_checkpoint
    from converter.hf_layout import official_key_names

    shapes = {key: tuple(value.shape) for key, value in load_checkpoint(path).items()}
    names = official_key_names(shapes)  # a transformers checkpoint is recognised under official names
    return {names.get(key, key): shape for key, shape in shapes.items()}


def _from_name(read, checkpoint):
    """What `read` (resolution_from_name or version_from_name) finds in the checkpoint's file name."""
    if checkpoint is None:
        return None
    try:
        return read(Path(checkpoint).name)
    except RecognitionError as error:
        raise BadInput(f"--checkpoint: {error}") from None


def _config_fields(options, config):
    try:
        spec = variant_spec(config)
    except SpecError as error:
        raise BadInput(f"--config: {error}") from None
    checkpoint = options["checkpoint"]
    resolution = options["res"] or _from_name(resolution_from_name, checkpoint)
    if resolution is None:
        resolution = (384, 384) if config == "cvt-w24" else (224, 224)
    version = options["version"] or _from_name(version_from_name, checkpoint) or "1k"
    return {
        "spec": spec, "num_classes": options["num_classes"], "resolution": resolution,
        "name": options["name"] or f"{config}-{resolution[0]}x{resolution[1]}_{version}",
        "checkpoint": _official_checkpoint_path(
            config, resolution, version, checkpoint, options["synthetic"] or options.get("show_mapping", False),
        ),
        "configuration": config, "spec_source": f"--config {config}",
    }


def _spec_file_fields(options, spec_path):
    try:
        spec_file = read_spec_file(spec_path)
    except SpecError as error:
        raise BadInput(f"--spec {error}") from None
    resolution = options["res"] or spec_file.image_size or _from_name(resolution_from_name, options["checkpoint"])
    if resolution is None:
        raise BadInput(f"--res is needed: {spec_path} has no TEST.IMAGE_SIZE or TRAIN.IMAGE_SIZE")
    num_classes = options["num_classes"] if options["num_classes"] is not None else spec_file.num_classes
    if num_classes is None:
        raise BadInput(f"--num-classes is needed: {spec_path} has no MODEL.NUM_CLASSES")
    if options["checkpoint"] is None and not (options["synthetic"] or options.get("show_mapping")):
        raise BadInput("--spec needs --checkpoint PATH (or --synthetic)")
    if options["name"] is None:
        check_artifact_name(Path(spec_path).stem, source=f"the --spec file name {spec_path}")
    return {
        "spec": spec_file.spec, "num_classes": num_classes, "resolution": resolution,
        "name": options["name"] or Path(spec_path).stem,
        "checkpoint": Path(options["checkpoint"]) if options["checkpoint"] is not None else None,
        # An official experiment YAML of a predefined variant names it in the manifest.
        "configuration": next((name for name in VARIANTS if variant_spec(name) == spec_file.spec), None),
        "spec_source": f"--spec {Path(spec_path).name}",
    }


def _recognized_fields(options, checkpoint):
    path = Path(checkpoint)
    check_checkpoint_file(path)  # before checkpoint_shapes imports torch
    try:
        recognized = recognize(path.name, checkpoint_shapes(path), options["res"], options["version"])
    except RecognitionError as error:
        raise BadInput(f"{path}: {error}") from None
    num_classes = options["num_classes"]
    if num_classes is not None and num_classes != recognized.num_classes:
        raise BadInput(f"--num-classes {num_classes}: {path} has a head of {recognized.num_classes} classes")
    return {
        "spec": recognized.spec, "num_classes": recognized.num_classes, "resolution": recognized.resolution,
        "name": options["name"] or recognized.name, "checkpoint": path,
        "configuration": recognized.variant, "spec_source": f"recognised from the weights of {path.name}",
    }


def plan_conversion(options: dict, command: str = "") -> "Conversion":
    """A `Conversion` from the parsed CLI options (a dict), or BadInput naming the option.

    The model comes from --config, from --spec, or else is recognised from --checkpoint's weights.
    Every file and value is checked before TensorFlow is imported, and before torch unless the
    model has to be recognised from the checkpoint's weights.
    """
    config, spec_path, checkpoint = options["config"], options["spec"], options["checkpoint"]
    if config is not None and spec_path is not None:
        raise BadInput("give exactly one of --config (cvt-13, cvt-21, cvt-w24) and --spec FILE")
    if options["synthetic"] and checkpoint is not None:
        raise BadInput("--synthetic and --checkpoint exclude each other")
    if options["name"] is not None:
        check_artifact_name(options["name"])
    if config is not None:
        fields = _config_fields(options, config)
    elif spec_path is not None:
        fields = _spec_file_fields(options, spec_path)
    elif checkpoint is not None:
        fields = _recognized_fields(options, checkpoint)
    else:
        raise BadInput(
            "nothing to convert: give --config NAME, --spec FILE, --checkpoint FILE (recognised from its "
            "weights) or --all"
        )
    resolution = fields["resolution"]
    try:
        check_input_size(fields["spec"], *resolution)
    except SpecError as error:
        raise BadInput(f"--res {resolution[0]}x{resolution[1]}: {error}") from None
    if fields["checkpoint"] is not None:
        check_checkpoint_file(fields["checkpoint"])
    if not options.get("show_mapping"):
        check_output_dir(options["out"])
    num_classes = fields.pop("num_classes")
    require_pytorch("converting a checkpoint")
    from converter.pipeline import Conversion  # PyTorch and TensorFlow load only once the input is valid

    return Conversion(
        **fields,
        num_classes=1000 if num_classes is None else num_classes,
        out_dir=Path(options["out"]),
        seed=options["seed"],
        atol=options["atol"],
        parity=not options["no_parity"],
        command=command,
    )
