"""`convert.py inspect ARTIFACT`: the manifest, every stored variable with its shape, the sha256 check.

Reads with json and h5py only: importing cvt_tf would pull in Keras and TensorFlow.
"""

import json
import math
import re

import click

from convert_cli.errors import BadInput
from cvt_spec.artifacts import check_artifact_files, check_weights_digest, load_manifest


def _natural(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def stored_variables(weights_path, names: dict) -> list[tuple[str, tuple, str]]:
    """[(variable path, shape, dtype)] of every array in a `.weights.h5`, in natural order of path.

    `names` ({h5 path: variable path}, the manifest's `artifact.variables`) gives the path that
    `--show-mapping` prints (e.g. `stage2/block0/attn/proj_q/kernel`); an array it does not name
    (a manifest from before it was recorded) shows Keras' own h5 path.
    """
    import h5py

    found = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            found.append((names.get(name, name), tuple(item.shape), str(item.dtype)))

    try:
        with h5py.File(weights_path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise BadInput(f"{weights_path}: not a readable HDF5 weights file ({error})") from None
    return sorted(found, key=lambda entry: _natural(entry[0]))


@click.command("inspect")
@click.argument("artifact", type=click.Path())
def inspect_command(artifact: str) -> None:
    """Print an artifact's manifest and stored variables, and check its sha256 (no TensorFlow needed).

    ARTIFACT is NAME.weights.h5, NAME.json or DIR/NAME. Variables are named as --show-mapping names them.
    """
    weights_path, manifest_path = check_artifact_files(artifact)
    manifest = load_manifest(manifest_path)
    names = manifest["artifact"].get("variables") or {}
    shown = {**manifest, "artifact": {k: v for k, v in manifest["artifact"].items() if k != "variables"}}
    click.echo(f"manifest {manifest_path} (artifact.variables: the names listed below):")
    click.echo(json.dumps(shown, indent=2))
    variables = stored_variables(weights_path, names)
    click.echo(f"variables in {weights_path}:")
    for path, shape, dtype in variables:
        click.echo(f"  {path} {list(shape)} {dtype}")
    parameters = sum(math.prod(shape) for _, shape, _ in variables)
    click.echo(f"{len(variables)} variables, {parameters:,} parameters")
    digest = check_weights_digest(weights_path, manifest)
    if "parameters" in manifest and manifest["parameters"] != parameters:
        raise BadInput(f"{weights_path}: holds {parameters:,} parameters, the manifest says {manifest['parameters']:,}")
    click.echo(f"sha256 {digest} matches the manifest")
