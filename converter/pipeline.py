"""One conversion end to end: load, map, port, check parity, write the artifact.

Library functions only; `convert.py` parses arguments and calls `convert`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converter.checkpoint import load_checkpoint
from converter.mapping import mapping_rows
from converter.parity import DEFAULT_ATOL, check_parity, parity_inputs
from converter.port import port_weights
from converter.synthetic import content_sha256, synthetic_state_dict
from converter.validate import validate_state_dict
from official_ref.model import ConvolutionalVisionTransformer


class ParityError(RuntimeError):
    """The Keras model differs from the reference above the tolerance."""

    def __init__(self, report):
        worst = report.worst
        super().__init__(
            f"parity failed: {worst.output} differs by {worst.max_abs:.3e} > atol {report.atol:g}"
        )
        self.report = report


@dataclass
class Conversion:
    spec: dict
    num_classes: int
    resolution: tuple  # (height, width) of the parity inputs and the manifest
    name: str
    out_dir: Path
    checkpoint: Path = None  # None: a synthetic checkpoint of `seed`
    configuration: str = None
    seed: int = 0
    atol: float = DEFAULT_ATOL
    parity: bool = True
    parity_batch: int = 2
    command: str = ""


def _source(job, state_dict):
    if job.checkpoint is None:
        return {"synthetic": True, "seed": job.seed, "content_sha256": content_sha256(state_dict)}
    from cvt_tf.artifact import file_sha256

    return {
        "file": job.checkpoint.name, "sha256": file_sha256(job.checkpoint),
        "size": job.checkpoint.stat().st_size,
    }


def build_keras_model(spec, num_classes, data_format="channels_last"):
    from cvt_tf import CvT

    model = CvT(spec=spec, num_classes=num_classes, data_format=data_format)
    model.build((None, 3, None, None) if data_format == "channels_first" else (None, None, None, 3))
    return model


def reference_model(spec, num_classes, state_dict):
    """official_ref loaded with strict=True from the same arrays (shared memory, no copy)."""
    model = ConvolutionalVisionTransformer(spec, num_classes)
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def convert(job, progress=print):
    """Converts one checkpoint; returns (weights path, manifest path, parity report or None).

    The checkpoint is loaded and checked before TensorFlow is imported.

    Raises:
        CheckpointError, MappingError: bad input, nothing written.
        ParityError: the port differs from the reference; nothing written.
    """
    started = time.perf_counter()
    notes = []
    if job.checkpoint is None:
        progress(f"generating synthetic checkpoint (seed {job.seed})")
        state_dict = synthetic_state_dict(job.spec, job.num_classes, job.seed)
    else:
        progress(f"loading {job.checkpoint}")
        state_dict = load_checkpoint(job.checkpoint, dtype_notes=notes)
    state_dict, widened = validate_state_dict(state_dict, job.spec, job.num_classes)
    notes += widened
    for note in notes[:3]:
        progress(f"note: {note}")
    if len(notes) > 3:
        progress(f"note: ... and {len(notes) - 3} more (all in the manifest's dtype_notes)")
    source = _source(job, state_dict)

    rows = mapping_rows(job.spec, job.num_classes)
    progress(f"porting {len(rows)} tensors to Keras")
    model = build_keras_model(job.spec, job.num_classes)
    port_weights(state_dict, model, rows)

    report = None
    if job.parity:
        progress(f"checking parity at {job.resolution[0]}x{job.resolution[1]}, batch {job.parity_batch}")
        reference = reference_model(job.spec, job.num_classes, state_dict)
        twin = build_keras_model(job.spec, job.num_classes, "channels_first")
        twin.set_weights(model.get_weights())
        inputs = parity_inputs(*job.resolution, batch=job.parity_batch, seed=job.seed)
        report = check_parity(reference, model, inputs, job.atol, job.seed, channels_first_model=twin)
        del reference, twin
        progress(report.table())
        if not report.passed:
            raise ParityError(report)

    from converter.export import library_versions, write_artifact  # not at the top: keeps TF out of imports

    manifest = {
        "configuration": job.configuration,
        "spec": job.spec,
        "num_classes": job.num_classes,
        "resolution": list(job.resolution),
        "source": source,
        "dtype_notes": notes,
        "parity": report.to_dict() if report else None,
        "versions": library_versions(),
        "run": {"command": job.command, "seconds": round(time.perf_counter() - started, 1)},
    }
    progress(f"writing {job.out_dir / job.name}.weights.h5")
    weights_path, manifest_path = write_artifact(model, job.out_dir, job.name, manifest)
    return weights_path, manifest_path, report
