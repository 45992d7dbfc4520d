"""A converted artifact on disk: its file names, digests, manifest, and the export formats beside it.

Plain Python (json, hashlib): `convert.py inspect` and the CLI's checks use it without Keras or torch.
"""

import hashlib
import json
from pathlib import Path

from cvt_spec.errors import ArtifactError, ArtifactNotFound
from cvt_spec.spec import normalize_spec

WEIGHTS_SUFFIX = ".weights.h5"
MANIFEST_SUFFIX = ".json"
MANIFEST_FORMAT = "cvt-convert artifact v1"

EXPORT_FORMATS = ("pth", "tflite", "saved_model", "keras-hub", "openvino")
DIRECTORY_FORMATS = ("saved_model", "keras-hub", "openvino")
QUANTIZATIONS = ("none", "dynamic")
# The IR inside an `export --format openvino` directory (model.xml names model.bin beside it).
OPENVINO_XML = "model.xml"
# On a CPU with AMX or AVX-512 BF16, OpenVINO computes in bfloat16 unless told otherwise (2.9e-2 off the
# float32 logits, measured at cvt-13 @ 224); the IR cannot carry this setting, so whoever compiles it passes it.
OPENVINO_FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}


def artifact_paths(path) -> tuple[Path, Path]:
    """(weights, manifest) paths of an artifact given either file or their common stem."""
    path = Path(path)
    stem = path.name
    for suffix in (WEIGHTS_SUFFIX, MANIFEST_SUFFIX):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(stem + WEIGHTS_SUFFIX), path.with_name(stem + MANIFEST_SUFFIX)


def artifact_name(path) -> str:
    """The artifact's name: its weights file's name without `.weights.h5`."""
    return artifact_paths(path)[0].name.removesuffix(WEIGHTS_SUFFIX)


def file_sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def path_sha256(path) -> str:
    """sha256 of a file, or of a directory: over its sorted relative paths and their files' sha256."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{member.relative_to(path).as_posix()}\0{file_sha256(member)}\n".encode())
    return digest.hexdigest()


def path_size(path) -> int:
    """Bytes of a file, or of every file under a directory."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_artifact_files(path) -> tuple[Path, Path]:
    """(weights, manifest) paths, both existing regular files.

    Raises:
        ArtifactNotFound: naming every file of the pair that is missing.
    """
    paths = artifact_paths(path)
    missing = [f"{required}: artifact file not found" for required in paths if not required.is_file()]
    if missing:
        raise ArtifactNotFound("; ".join(missing))
    return paths


def load_manifest(manifest_path) -> dict:
    """The JSON of a manifest file, without checking it against its weights.

    Raises:
        ArtifactError: unreadable, not JSON, or without the `artifact` entry every manifest has.
    """
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{manifest_path}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifact"), dict):
        raise ArtifactError(f"{manifest_path}: not a cvt-convert manifest (no `artifact` entry)")
    return manifest


def check_weights_digest(weights_path, manifest) -> str:
    """The weights file's sha256, which must be the manifest's; returns it.

    Raises:
        ArtifactError: the digests differ (the file is damaged or was replaced).
    """
    expected = manifest["artifact"].get("sha256")
    actual = file_sha256(weights_path)
    if actual != expected:
        raise ArtifactError(
            f"{weights_path}: sha256 {actual} differs from the manifest's {expected}; "
            "the file is damaged or was replaced"
        )
    return actual


def read_manifest(path) -> dict:
    """The manifest of an artifact, checked against its weights file (both must exist, sha256 equal).

    Raises:
        ArtifactError: a file is missing, the manifest is unreadable, or the weights' sha256 differs.
    """
    weights_path, manifest_path = check_artifact_files(path)
    manifest = load_manifest(manifest_path)
    check_weights_digest(weights_path, manifest)
    return manifest


def check_artifact_fits(manifest: dict, spec: dict, num_classes: int, has_head: bool, source) -> None:
    """Checks that an artifact's weights fit a model of `spec` with a `num_classes` head.

    Args:
        has_head: False when the model has no head (include_top=False, num_classes=0); the
            artifact's head then goes unread.

    Raises:
        ArtifactError: the SPEC or the head size differs; names `source`.
    """
    stored = normalize_spec(manifest["spec"])
    differing = sorted(key for key in stored if stored[key] != spec.get(key))
    if differing:
        raise ArtifactError(
            f"{source} was converted for another SPEC: "
            + "; ".join(f"{key} {stored[key]} (model: {spec.get(key)})" for key in differing)
        )
    if has_head and manifest["num_classes"] != num_classes:
        raise ArtifactError(
            f"{source} has a {manifest['num_classes']}-class head, the model num_classes={num_classes}; "
            f"use num_classes={manifest['num_classes']}, or include_top=False to put your own head on the features"
        )


def default_export_path(weights_path: Path, export_format: str, quantize: str = "none") -> Path:
    """`<name>.pth`, `.tflite`, `.int8.tflite`, `.saved_model`, `.keras-hub` (a preset) or `.openvino` (an IR
    directory) beside the weights."""
    suffix = {"pth": ".pth", "saved_model": ".saved_model", "keras-hub": ".keras-hub", "openvino": ".openvino"}.get(
        export_format, ".int8.tflite" if quantize == "dynamic" else ".tflite"
    )
    return weights_path.with_name(artifact_name(weights_path) + suffix)
