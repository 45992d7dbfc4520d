"""One conversion end to end: load, reference, port, check, write (the steps of `converter.steps`).

Library functions only; `convert.py` parses arguments and calls `convert`.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from converter import steps
from converter.artifact import write_artifact
from converter.manifest import conversion_manifest
from converter.memory import release_memory
from converter.parity import DEFAULT_ATOL, ParityError, ParityReport, ParityRun


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
    # Both bound the parity run's memory (figures in the README, "Releases"); whole batches and
    # unchunked attention have their own parity tests.
    parity_images_per_call: int = 1
    parity_query_rows: int = 1024
    command: str = ""
    spec_source: str = None  # how the SPEC was chosen, e.g. "--config cvt-21", for the manifest

    @property
    def parity_run(self) -> ParityRun:
        return ParityRun(self.resolution, self.atol, self.parity_batch, self.seed,
                         self.parity_images_per_call, self.parity_query_rows)


def _print_notes(notes, progress):
    for note in notes[:3]:
        progress(f"note: {note}")
    if len(notes) > 3:
        progress(f"note: ... and {len(notes) - 3} more (all in the manifest's dtype_notes)")


def convert(job: Conversion, progress=print) -> tuple[Path, Path, ParityReport | None]:
    """Converts one checkpoint; returns (weights path, manifest path, parity report or None).

    The checkpoint is loaded and checked before TensorFlow is imported. Order keeps one full copy
    of the weights alive at a time: the reference runs first on the checkpoint's arrays, each array
    is dropped as the Keras variable made from it is created, and the channels_first check runs on
    the same variables.

    Raises:
        CheckpointError, LayoutError: bad input, nothing written.
        ParityError: the port differs from the reference; nothing written.
        OutputError: the artifact cannot be written; nothing left behind.
    """
    started = time.perf_counter()
    run = {"command": job.command, "started": datetime.now(UTC).isoformat(timespec="seconds")}
    source = steps.load_source(job.checkpoint, job.spec, job.num_classes, job.seed, progress)
    _print_notes(source.weights.notes, progress)
    expected = None
    if job.parity:
        expected = steps.run_reference(job.spec, job.num_classes, source.weights, job.parity_run, progress)
    model = steps.port(source.weights, job.spec, job.num_classes, progress)
    release_memory()
    report = None
    if job.parity:
        report = steps.check(expected, model, job.parity_run, progress=progress)
        release_memory()
        progress(report.table())
        if not report.passed:
            raise ParityError(report, str(job.checkpoint) if job.checkpoint is not None else "")

    manifest = conversion_manifest(job, model, source, report)
    progress(f"writing {job.out_dir / job.name}.weights.h5")
    manifest["run"] = {**run, "seconds": round(time.perf_counter() - started, 1)}
    weights_path, manifest_path = write_artifact(model, job.out_dir, job.name, manifest)
    return weights_path, manifest_path, report
