"""Exporting a converted artifact: official-layout `.pth`, TFLite and SavedModel, each checked from disk.

An export never overwrites an existing output unless forced, and is recorded in the artifact's manifest.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converter.export import library_versions
from converter.litert import logits_agreement, run_saved_model, run_tflite, tflite_flatbuffer, write_saved_model
from converter.parity import DEFAULT_ATOL, check_parity, parity_inputs
from converter.reverse import official_state_dict
from converter.safe_write import fsync_dir, make_dirs, remove_empty_dirs, temp_path
from cvt_tf.artifact import MANIFEST_SUFFIX, artifact_paths, file_sha256, load_artifact, read_manifest
from official_ref.model import ConvolutionalVisionTransformer

FORMATS = ("pth", "tflite", "saved_model")


class ExportError(ValueError):
    """An export that cannot start: bad artifact, bad options, or an output already there."""


class ExportParityError(RuntimeError):
    """The exported file, run back from disk, differs from the Keras model above the tolerance."""


@dataclass
class ExportJob:
    artifact: Path
    format: str
    out: Path = None  # None: beside the artifact, named after it
    quantize: str = "none"
    force: bool = False
    resolution: tuple = None  # (height, width); None: the manifest's
    samples: int = 8  # parity inputs, seeded like the conversion's
    seed: int = 0
    atol: float = DEFAULT_ATOL
    command: str = ""


def default_output(weights_path, export_format, quantize="none"):
    """`<name>.pth`, `<name>.tflite`, `<name>.int8.tflite` or `<name>.saved_model` beside the weights."""
    name = weights_path.name.removesuffix(".weights.h5")
    suffix = {"pth": ".pth", "saved_model": ".saved_model"}.get(
        export_format, ".int8.tflite" if quantize == "dynamic" else ".tflite"
    )
    return weights_path.with_name(name + suffix)


def path_sha256(path):
    """sha256 of a file, or of a directory: over its sorted relative paths and their files' sha256."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{member.relative_to(path).as_posix()}\0{file_sha256(member)}\n".encode())
    return digest.hexdigest()


def path_size(path):
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _place(staged, out):
    """Renames the checked `staged` output to `out`, replacing what is there (the caller allowed it)."""
    if out.is_dir() and not out.is_symlink():
        retired = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, retired)
        os.replace(staged, out)
        shutil.rmtree(retired)
    else:
        os.replace(staged, out)


def record_export(manifest_path, entry):
    """Adds `entry` to the manifest's `exports` list (replacing one for the same file), atomically.

    The new manifest is written under converter/safe_write.py's temporary name and renamed into place.
    """
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    exports = [e for e in manifest.get("exports", []) if e.get("file") != entry["file"]]
    manifest["exports"] = [*exports, entry]
    temp = temp_path(manifest_path.parent, manifest_path.name.removesuffix(MANIFEST_SUFFIX), MANIFEST_SUFFIX)
    try:
        with open(temp, "w") as handle:
            handle.write(json.dumps(manifest, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, manifest_path)
        fsync_dir(manifest_path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _check_pth(staged, model, manifest, inputs, job):
    spec, num_classes = manifest["spec"], manifest["num_classes"]
    reference = ConvolutionalVisionTransformer(spec, num_classes)
    reference.load_state_dict(torch.load(staged, map_location="cpu", weights_only=True), strict=True)
    report = check_parity(reference.eval(), model, inputs, job.atol, job.seed)
    return {"against": "official_ref", "strict_load": True, **report.to_dict()}, report.passed


def _check_logits(actual, model, inputs, job, gated):
    expected = np.asarray(model(np.transpose(inputs, (0, 2, 3, 1)), training=False))
    figures = logits_agreement(actual, expected)
    passed = figures["logits_max_abs"] <= job.atol if gated else None
    return {"against": "keras", "seed": job.seed, "atol": job.atol if gated else None, "passed": passed,
            **figures}, passed is not False


def _write_and_check(staged, model, manifest, inputs, job, progress):
    """Writes the export to `staged` and runs it back from disk; returns (parity figures, passed)."""
    height, width = inputs.shape[2:]
    if job.format == "pth":
        progress("writing the official-layout state dict")
        if "torch_layout" not in manifest:
            progress("note: the manifest has no torch_layout entry: float32 tensors, num_batches_tracked 0")
        state_dict = official_state_dict(model, manifest.get("torch_layout"))
        torch.save(state_dict, staged)
        progress("loading it into official_ref (strict=True) for parity")
        return _check_pth(staged, model, manifest, inputs, job)
    nhwc = np.transpose(inputs, (0, 2, 3, 1))
    if job.format == "saved_model":
        progress("writing the SavedModel (any resolution)")
        write_saved_model(model, staged)
        return _check_logits(run_saved_model(staged, nhwc), model, inputs, job, gated=True)
    progress(f"converting to TFLite at {height}x{width} (quantize: {job.quantize})")
    staged.write_bytes(tflite_flatbuffer(model, height, width, job.quantize))
    progress("running it in the LiteRT interpreter")
    return _check_logits(run_tflite(staged, nhwc), model, inputs, job, gated=job.quantize == "none")


def _output_path(job, weights_path, manifest_path):
    if job.quantize != "none" and job.format != "tflite":
        raise ExportError(f"--quantize {job.quantize} applies to --format tflite only, got --format {job.format}")
    out = Path(job.out) if job.out is not None else default_output(weights_path, job.format, job.quantize)
    if out.resolve() in (weights_path.resolve(), manifest_path.resolve()):
        raise ExportError(f"--out {out}: that is the artifact itself")
    if (out.exists() or out.is_symlink()) and not job.force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir() != (job.format == "saved_model") and out.exists():
        raise ExportError(f"{out} is a {'directory' if out.is_dir() else 'file'}; cannot write a {job.format} there")
    return out


def _manifest_file_name(out, manifest_path):
    try:
        return out.resolve().relative_to(manifest_path.resolve().parent).as_posix()
    except ValueError:
        return str(out.resolve())


def run_export(job, progress=print):
    """Exports an artifact; returns (output path, the manifest entry written).

    Raises:
        ExportError: unreadable artifact, bad options, or the output exists without `force`.
        ExportParityError: the written file differs from Keras above `atol`; nothing is left behind.
    """
    started = time.perf_counter()
    weights_path, manifest_path = artifact_paths(job.artifact)
    try:
        manifest = read_manifest(job.artifact)
    except (OSError, ValueError, KeyError) as error:
        raise ExportError(f"{job.artifact}: not a readable artifact ({error})") from None
    if job.format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {job.format!r}")
    out = _output_path(job, weights_path, manifest_path)
    resolution = tuple(job.resolution or manifest["resolution"])

    progress(f"loading {weights_path}")
    model = load_artifact(weights_path)
    inputs = parity_inputs(*resolution, batch=job.samples, seed=job.seed)
    created = make_dirs(out.parent)
    staged = out.with_name(f".{out.name}.tmp{os.getpid()}")
    placed = False
    try:
        parity, passed = _write_and_check(staged, model, manifest, inputs, job, progress)
        if not passed:
            raise ExportParityError(
                f"the {job.format} export, run back from disk, differs from {parity['against']} by "
                f"{_worst(parity):.3e} > atol {job.atol:g}; nothing written"
            )
        entry = {
            "format": job.format, "quantize": job.quantize if job.format == "tflite" else None,
            "file": _manifest_file_name(out, manifest_path), "sha256": path_sha256(staged),
            "size": path_size(staged), "resolution": list(resolution), "parity": parity,
            "versions": library_versions(),
            "run": {"command": job.command, "seconds": round(time.perf_counter() - started, 1)},
        }
        _place(staged, out)
        placed = True
    finally:
        if staged.exists() or staged.is_symlink():
            _remove(staged)
        if not placed:
            remove_empty_dirs(created)
    record_export(manifest_path, entry)
    return out, entry


def _worst(parity):
    if "logits_max_abs" in parity:
        return parity["logits_max_abs"]
    return max(output["max_abs"] for output in parity["outputs"].values())
