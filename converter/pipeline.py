"""One conversion end to end: load, map, port, check parity, write the artifact.

Library functions only; `convert.py` parses arguments and calls `convert`.
"""

import ctypes
import gc
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from converter.checkpoint import load_checkpoint
from converter.hf_layout import to_official_layout
from converter.mapping import mapping_rows
from converter.parity import (
    DEFAULT_ATOL,
    add_channels_first,
    channels_first_view,
    compare_outputs,
    parity_inputs,
    reference_outputs,
)
from converter.port import build_ported
from converter.reverse import torch_layout_facts
from converter.synthetic import content_sha256, synthetic_state_dict
from converter.validate import validate_state_dict
from cvt_spec.artifact_files import file_sha256
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
    # Both bound the parity run's memory: for cvt-w24 at 384 the Keras pass added 0.85 GB with whole
    # attention, 0.36 GB with 1024-query chunks (measured). Whole batches and unchunked attention
    # have their own parity tests.
    parity_images_per_call: int = 1
    parity_query_rows: int = 1024
    command: str = ""
    spec_source: str = None  # how the SPEC was chosen, e.g. "--config cvt-21", for the manifest


def _source(job, state_dict):
    if job.checkpoint is None:
        return {"synthetic": True, "seed": job.seed, "content_sha256": content_sha256(state_dict)}
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
    """official_ref holding the same arrays (shared memory, no copy), loaded with strict=True.

    Built on the meta device: no memory or time goes into random weights that are replaced at once.
    """
    with torch.device("meta"):
        model = ConvolutionalVisionTransformer(spec, num_classes)
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20
TF_SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: the allocator returns memory on its own schedule


def return_large_blocks_at_once():
    """Makes freed weight- and activation-sized blocks go back to the system at once.

    glibc gives every block of 1 MB or more its own mapping, returned when freed. By default it
    raises that threshold each time such a block is freed (up to 32 MB), after which weight-sized
    blocks come from the heap and stay there: porting cvt-w24 then peaked at 3.34 GB instead of
    2.35 GB (measured).

    TensorFlow, if not imported yet, allocates through glibc too instead of its oneDNN pool, which
    keeps the largest working set it has seen: the cvt-w24 conversion peaked at 2628 MiB with the
    pool and 2454 MiB without, for 10 % more time (measured). Set the variable to 0 to keep the pool.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    os.environ.setdefault(TF_SYSTEM_ALLOCATOR, "1")


def release_memory():
    """Collects dropped tensors and hands glibc's free heap back to the system (elsewhere a no-op)."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def parameter_count(model):
    return int(sum(np.prod(variable.shape) for variable in model.weights))


def convert(job, progress=print):
    """Converts one checkpoint; returns (weights path, manifest path, parity report or None).

    The checkpoint is loaded and checked before TensorFlow is imported. Order keeps one full copy
    of the weights alive at a time: the reference runs first on the checkpoint's arrays, each array
    is dropped as the Keras variable made from it is created, and the channels_first check runs on
    the same variables.

    Raises:
        CheckpointError, MappingError: bad input, nothing written.
        ParityError: the port differs from the reference; nothing written.
    """
    return_large_blocks_at_once()
    started = time.perf_counter()
    run = {"command": job.command, "started": datetime.now(UTC).isoformat(timespec="seconds")}
    notes, layout = [], "official"
    if job.checkpoint is None:
        progress(f"generating synthetic checkpoint (seed {job.seed})")
        state_dict = synthetic_state_dict(job.spec, job.num_classes, job.seed)
    else:
        progress(f"loading {job.checkpoint}")
        state_dict = load_checkpoint(job.checkpoint, dtype_notes=notes)
        state_dict, layout = to_official_layout(state_dict, job.spec, job.num_classes)
        if layout != "official":
            progress(f"renamed the {layout} layout to the official one")
    weights, widened = validate_state_dict(state_dict, job.spec, job.num_classes)
    source = {**_source(job, state_dict), "layout": layout}  # the checkpoint as given, before widening
    torch_layout = torch_layout_facts(state_dict)  # the source dtypes, before widening
    notes += widened
    for note in notes[:3]:
        progress(f"note: {note}")
    if len(notes) > 3:
        progress(f"note: ... and {len(notes) - 3} more (all in the manifest's dtype_notes)")
    del state_dict
    rows = mapping_rows(job.spec, job.num_classes)

    report = None
    if job.parity:
        inputs = parity_inputs(*job.resolution, batch=job.parity_batch, seed=job.seed)
        progress(f"running the PyTorch reference at {job.resolution[0]}x{job.resolution[1]}, batch {job.parity_batch}")
        expected = reference_outputs(
            reference_model(job.spec, job.num_classes, weights), inputs, job.parity_images_per_call
        )
    progress(f"porting {len(rows)} tensors to Keras")
    model = build_ported(weights, lambda: build_keras_model(job.spec, job.num_classes), rows)
    del weights
    release_memory()
    if job.parity:
        progress("checking parity (channels_last, then channels_first)")
        report = compare_outputs(
            expected, model, inputs, job.atol, job.seed, job.parity_images_per_call, job.parity_query_rows
        )
        release_memory()
        with channels_first_view(model) as channels_first_model:
            add_channels_first(report, expected, channels_first_model, inputs)
        progress(report.table())
        if not report.passed:
            raise ParityError(report)

    from converter.export import library_versions, write_artifact  # not at the top: keeps TF out of imports

    # Everything but `run` depends only on the inputs, so two conversions give equal manifests.
    manifest = {
        "configuration": job.configuration,
        "spec_source": job.spec_source,
        "spec": job.spec,
        "num_classes": job.num_classes,
        "resolution": list(job.resolution),
        "parameters": parameter_count(model),
        "source": source,
        "tolerance": {"atol": job.atol} if job.parity else None,
        "parity": report.to_dict() if report else None,
        "dtype_notes": notes,
        "torch_layout": torch_layout,
        "versions": library_versions(),
    }
    progress(f"writing {job.out_dir / job.name}.weights.h5")
    manifest["run"] = {**run, "seconds": round(time.perf_counter() - started, 1)}
    weights_path, manifest_path = write_artifact(model, job.out_dir, job.name, manifest)
    return weights_path, manifest_path, report
