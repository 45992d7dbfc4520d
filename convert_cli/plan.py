"""Turning the conversion options into a `Conversion` job, checking every input first.

Runs before torch and TensorFlow are imported, so bad input fails fast with one line.
"""

import math
from pathlib import Path

import click

from convert_cli.errors import BadInput
from convert_cli.inputs import check_artifact_name, check_checkpoint_file, check_output_dir
from cvt_spec import PUBLISHED_AT, SpecError, check_input_size, find_official, variant_spec
from cvt_spec.files import read_spec_file

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
# The parity check runs both models at --res, batch 2: stage 1 attention memory grows with the
# 4th power of the side (about 8 GB at 1024 for the official SPECs).
MAX_RESOLUTION = 1024


def parse_resolution(ctx, param, value):
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


def check_atol(ctx, param, value):
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
    except ValueError as error:
        raise BadInput(f"{error}; pass --checkpoint PATH or --synthetic for another combination") from None
    path = DEFAULT_CHECKPOINT_DIR / official.file_name
    if not path.is_file():
        raise BadInput(
            f"{path} not found: download {official.file_name} from {PUBLISHED_AT} into "
            f"{DEFAULT_CHECKPOINT_DIR}/, pass --checkpoint PATH, or try without it: --synthetic"
        )
    return path


def plan_conversion(options, command=""):
    """A `Conversion` from the parsed CLI options (a dict), or BadInput naming the option.

    Every file and value is checked here, before torch or TensorFlow is imported.
    """
    config, spec_path = options["config"], options["spec"]
    if (config is None) == (spec_path is None):
        raise BadInput("give exactly one of --config (cvt-13, cvt-21, cvt-w24) and --spec FILE")
    if options["synthetic"] and options["checkpoint"] is not None:
        raise BadInput("--synthetic and --checkpoint exclude each other")
    if options["name"] is not None:
        check_artifact_name(options["name"])
    resolution = options["res"]
    num_classes = options["num_classes"]
    if config is not None:
        try:
            spec = variant_spec(config)
        except ValueError as error:
            raise BadInput(f"--config: {error}") from None
        if resolution is None:
            resolution = (384, 384) if config == "cvt-w24" else (224, 224)
        version = options["version"]
        name = options["name"] or f"{config}-{resolution[0]}x{resolution[1]}_{version}"
        checkpoint = _official_checkpoint_path(
            config, resolution, version, options["checkpoint"],
            options["synthetic"] or options.get("show_mapping", False),
        )
    else:
        try:
            spec_file = read_spec_file(spec_path)
        except SpecError as error:
            raise BadInput(f"--spec {error}") from None
        spec = spec_file.spec
        resolution = resolution or spec_file.image_size
        if resolution is None:
            raise BadInput(f"--res is needed: {spec_path} has no TRAIN.IMAGE_SIZE")
        num_classes = num_classes if num_classes is not None else spec_file.num_classes
        if num_classes is None:
            raise BadInput(f"--num-classes is needed: {spec_path} has no MODEL.NUM_CLASSES")
        if options["checkpoint"] is None and not (options["synthetic"] or options.get("show_mapping")):
            raise BadInput("--spec needs --checkpoint PATH (or --synthetic)")
        checkpoint = Path(options["checkpoint"]) if options["checkpoint"] is not None else None
        name = options["name"] or Path(spec_path).stem
        check_artifact_name(name, source="--name" if options["name"] else f"the --spec file name {spec_path}")
    try:
        check_input_size(spec, *resolution)
    except SpecError as error:
        raise BadInput(f"--res {resolution[0]}x{resolution[1]}: {error}") from None
    if checkpoint is not None:
        check_checkpoint_file(checkpoint)
    if not options.get("show_mapping"):
        check_output_dir(options["out"])

    from converter.pipeline import Conversion

    return Conversion(
        spec=spec,
        num_classes=1000 if num_classes is None else num_classes,
        resolution=resolution,
        name=name,
        out_dir=Path(options["out"]),
        checkpoint=checkpoint,
        configuration=config,
        seed=options["seed"],
        atol=options["atol"],
        parity=not options["no_parity"],
        command=command,
    )
