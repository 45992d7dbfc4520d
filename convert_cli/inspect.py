"""`convert.py inspect ARTIFACT`: the manifest, every stored variable with its shape, the sha256 check.

Reads with json and h5py only: importing cvt_tf would pull in Keras and TensorFlow.
"""

import json
import math
import re

import click

from convert_cli.errors import BadInput
from cvt_spec.artifact_files import artifact_paths, file_sha256


def _natural(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def stored_variables(weights_path):
    """[(path, shape, dtype)] of every array in a Keras `.weights.h5`, in natural order of path."""
    import h5py

    found = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            found.append((name.replace("/vars/", "/"), tuple(item.shape), str(item.dtype)))

    try:
        with h5py.File(weights_path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise BadInput(f"{weights_path}: not a readable HDF5 weights file ({error})") from None
    return sorted(found, key=lambda entry: _natural(entry[0]))


def _read_manifest(manifest_path):
    try:
        return json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{manifest_path}: not a readable manifest ({error})") from None


@click.command("inspect")
@click.argument("artifact", type=click.Path())
def inspect_command(artifact):
    """Print an artifact's manifest and stored variables, and check its sha256 (no TensorFlow needed).

    ARTIFACT is NAME.weights.h5, NAME.json or DIR/NAME.
    """
    weights_path, manifest_path = artifact_paths(artifact)
    for required in (manifest_path, weights_path):
        if not required.is_file():
            raise BadInput(f"{required}: artifact file not found")
    manifest = _read_manifest(manifest_path)
    click.echo(f"manifest {manifest_path}:")
    click.echo(json.dumps(manifest, indent=2))
    variables = stored_variables(weights_path)
    click.echo(f"variables in {weights_path}:")
    for path, shape, dtype in variables:
        click.echo(f"  {path} {list(shape)} {dtype}")
    parameters = sum(math.prod(shape) for _, shape, _ in variables)
    click.echo(f"{len(variables)} variables, {parameters:,} parameters")

    recorded = manifest.get("artifact", {})
    actual = file_sha256(weights_path)
    if actual != recorded.get("sha256"):
        raise BadInput(
            f"{weights_path}: sha256 {actual} differs from the manifest's {recorded.get('sha256')}; "
            "the file is damaged or was replaced"
        )
    if "parameters" in manifest and manifest["parameters"] != parameters:
        raise BadInput(f"{weights_path}: holds {parameters:,} parameters, the manifest says {manifest['parameters']:,}")
    click.echo(f"sha256 {actual} matches the manifest")
