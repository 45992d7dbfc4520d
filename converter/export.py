"""Exporting a converted artifact: official-layout `.pth`, TFLite, SavedModel, a keras-hub preset and an
OpenVINO IR, each checked from disk.

An export never overwrites an existing output unless forced, and is recorded in the artifact's manifest.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converter.manifest import library_versions
from converter.parity import DEFAULT_ATOL, ParityRun, check_parity
from converter.reverse import official_state_dict
from cvt_spec import ArtifactError, CheckFailed, InputError
from cvt_spec.artifacts import (
    DIRECTORY_FORMATS,
    EXPORT_FORMATS,
    OPENVINO_FLOAT32,
    artifact_paths,
    default_export_path,
    load_manifest,
    path_sha256,
    path_size,
    read_manifest,
)
from cvt_spec.atomic import write_text_file, writing
from cvt_tf import load_artifact
from cvt_tf.tf_formats import (
    logits_agreement,
    run_openvino,
    run_saved_model,
    run_tflite,
    tflite_flatbuffer,
    write_openvino,
    write_saved_model,
)
from official_ref import load_reference


class ExportError(InputError):
    """An export that cannot start: bad artifact, bad options, or an output already there."""


class ExportParityError(CheckFailed):
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

    def parity_run(self, manifest: dict) -> ParityRun:
        resolution = tuple(self.resolution or manifest["resolution"])
        return ParityRun(resolution, self.atol, batch=self.samples, seed=self.seed)


def record_export(manifest_path: Path, file_name: str, entry: dict | None) -> None:
    """Sets the manifest's `exports` entry for `file_name` to `entry` (None: removes it), atomically.

    The manifest file behind `manifest_path` (a link into the artifact's current version) is rewritten;
    without an entry to remove, nothing is written.
    """
    manifest_path = Path(manifest_path)
    behind = manifest_path.resolve()
    manifest = load_manifest(behind)
    exports = [e for e in manifest.get("exports", []) if e.get("file") != file_name]
    if entry is None and len(exports) == len(manifest.get("exports", [])):
        return
    manifest["exports"] = exports if entry is None else [*exports, entry]
    with writing(behind, naming=manifest_path) as staged:
        write_text_file(staged, json.dumps(manifest, indent=2) + "\n")


def _check_pth(staged, model, manifest, run):
    state_dict = torch.load(staged, map_location="cpu", weights_only=True)
    reference = load_reference(manifest["spec"], manifest["num_classes"], state_dict)
    report = check_parity(reference, model, run)
    return {"against": "official_ref", "strict_load": True, **report.to_dict()}, report.passed


def _check_logits(actual, model, inputs, run, gated):
    expected = np.asarray(model(np.transpose(inputs, (0, 2, 3, 1)), training=False))
    figures = logits_agreement(actual, expected)
    passed = figures["logits_max_abs"] <= run.atol if gated else None
    return {"against": "keras", "seed": run.seed, "atol": run.atol if gated else None, "passed": passed,
            **figures}, passed is not False


def _write_and_check(staged, model, manifest, run, job, progress):
    """Writes the export to `staged` and runs it back from disk; returns (parity figures, passed)."""
    if job.format == "pth":
        progress("writing the official-layout state dict")
        if "torch_layout" not in manifest:
            progress("note: the manifest has no torch_layout entry: float32 tensors, num_batches_tracked 0")
        torch.save(official_state_dict(model, manifest.get("torch_layout")), staged)
        progress("loading it into official_ref (strict=True) for parity")
        return _check_pth(staged, model, manifest, run)
    if job.format == "keras-hub":
        return _write_and_check_preset(staged, model, job, run, progress)
    inputs = run.inputs()
    nhwc = np.transpose(inputs, (0, 2, 3, 1))
    if job.format == "saved_model":
        progress("writing the SavedModel (any resolution)")
        write_saved_model(model, staged)
        return _check_logits(run_saved_model(staged, nhwc), model, inputs, run, gated=True)
    height, width = run.resolution
    if job.format == "openvino":
        progress(f"converting to an OpenVINO IR at {height}x{width} (float32 weights)")
        write_openvino(model, staged, height, width)
        progress("running it in OpenVINO's CPU plugin, float32 forced")
        return _check_logits(run_openvino(staged, nhwc), model, inputs, run, gated=True)
    progress(f"converting to TFLite at {height}x{width} (quantize: {job.quantize})")
    staged.write_bytes(tflite_flatbuffer(model, height, width, job.quantize))
    progress("running it in the LiteRT interpreter")
    return _check_logits(run_tflite(staged, nhwc), model, inputs, run, gated=job.quantize == "none")


def _write_and_check_preset(staged, model, job, run, progress):
    """A keras-hub preset, run back by keras-hub's own loader on raw images against the artifact's transform."""
    from cvt_tf import preprocess_input
    from cvt_tf.hub import classifier_from_artifact, predict_with_preset, raw_images

    progress("writing the keras-hub preset (backbone, classifier head, the official evaluation transform)")
    classifier_from_artifact(job.artifact, run.resolution).save_to_preset(str(staged))
    progress("loading it with keras_hub.models.ImageClassifier.from_preset for parity, on raw uint8 images")
    images = raw_images(run.resolution, count=run.batch, seed=run.seed)
    expected = np.asarray(model(preprocess_input(list(images), run.resolution), training=False))
    figures = logits_agreement(predict_with_preset(staged, images), expected)
    passed = figures["logits_max_abs"] <= run.atol
    return {"against": "keras", "inputs": "raw uint8 images", "seed": run.seed, "atol": run.atol,
            "passed": passed, **figures}, passed


def _output_path(job, weights_path, manifest_path):
    if job.format not in EXPORT_FORMATS:
        raise ExportError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {job.format!r}")
    if job.quantize != "none" and job.format != "tflite":
        raise ExportError(f"--quantize {job.quantize} applies to --format tflite only, got --format {job.format}")
    out = Path(job.out) if job.out is not None else default_export_path(weights_path, job.format, job.quantize)
    if out.resolve() in (weights_path.resolve(), manifest_path.resolve()):
        raise ExportError(f"--out {out}: that is the artifact itself")
    if (out.exists() or out.is_symlink()) and not job.force:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir() != (job.format in DIRECTORY_FORMATS) and out.exists():
        raise ExportError(f"{out} is a {'directory' if out.is_dir() else 'file'}; cannot write a {job.format} there")
    return out


def _manifest_file_name(out, manifest_path):
    """The export's path relative to the artifact's directory (where `NAME.json` is, not behind its link)."""
    out, directory = Path(os.path.abspath(out)), Path(os.path.abspath(manifest_path.parent))
    return out.relative_to(directory).as_posix() if out.is_relative_to(directory) else str(out)


def _worst(parity):
    if "logits_max_abs" in parity:
        return parity["logits_max_abs"]
    return max(output["max_abs"] for output in parity["outputs"].values())


def run_export(job: ExportJob, progress=print) -> tuple[Path, dict]:
    """Exports an artifact; returns (output path, the manifest entry written).

    Raises:
        ExportError: unreadable artifact, bad options, or the output exists without `force`.
        ExportParityError: the written file differs from Keras above `atol`; nothing is left behind.
        OutputError: the output cannot be written.
    """
    started = time.perf_counter()
    weights_path, manifest_path = artifact_paths(job.artifact)
    try:
        manifest = read_manifest(job.artifact)
    except ArtifactError as error:
        raise ExportError(f"{job.artifact}: not a readable artifact ({error})") from None
    out = _output_path(job, weights_path, manifest_path)
    run = job.parity_run(manifest)
    progress(f"loading {weights_path}")
    model = load_artifact(weights_path)
    with writing(out) as staged:
        parity, passed = _write_and_check(staged, model, manifest, run, job, progress)
        if not passed:
            raise ExportParityError(
                f"the {job.format} export, run back from disk, differs from {parity['against']} by "
                f"{_worst(parity):.3e} > atol {job.atol:g}; nothing written"
            )
        entry = {
            "format": job.format, "quantize": job.quantize if job.format == "tflite" else None,
            "file": _manifest_file_name(out, manifest_path), "sha256": path_sha256(staged),
            "size": path_size(staged), "resolution": list(run.resolution), "parity": parity,
            "versions": library_versions(),
            "run": {"command": job.command, "seconds": round(time.perf_counter() - started, 1)},
        }
        if job.format == "openvino":  # the IR cannot carry it; its parity figures hold with it
            entry["compile_config"] = OPENVINO_FLOAT32
        # The old entry goes before the rename and the new one after: a kill in between leaves the
        # export unrecorded, never recorded with another file's sha256.
        record_export(manifest_path, entry["file"], None)
    record_export(manifest_path, entry["file"], entry)
    return out, entry
