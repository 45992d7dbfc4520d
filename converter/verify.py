"""Re-checking a written artifact: its weights read back from disk against the checkpoint they came from.

The reference runs on the manifest's SPEC, resolution and parity settings, so a sound artifact
reproduces the figures its manifest recorded.
"""

from pathlib import Path

from converter import steps
from converter.memory import release_memory
from converter.parity import ParityReport, ParityRun
from cvt_spec import InputError
from cvt_spec.artifacts import read_manifest
from cvt_tf import load_artifact


class VerifyError(InputError):
    """The artifact cannot be checked as asked; the message says what is missing."""


def verify_artifact(path, checkpoint: Path | None = None, atol: float | None = None,
                    progress=print) -> tuple[ParityReport, bool]:
    """Parity of the artifact at `path`, loaded from disk, against `checkpoint`.

    Args:
        checkpoint: the source checkpoint file; None regenerates the synthetic one the manifest records.
        atol: tolerance; the manifest's by default.

    Returns:
        (ParityReport, whether the checkpoint is the manifest's recorded source).

    Raises:
        ArtifactError: artifact missing or its sha256 differs from the manifest's.
        CheckpointError, LayoutError, VerifyError: the checkpoint cannot be read or does not fit.
    """
    manifest = read_manifest(path)
    spec, num_classes, recorded = manifest["spec"], manifest["num_classes"], manifest["source"]
    if checkpoint is None and not recorded.get("synthetic"):
        raise VerifyError(f"the artifact was converted from {recorded.get('file')}: pass --checkpoint FILE")
    run = ParityRun.recorded(manifest, atol)
    source = steps.load_source(checkpoint, spec, num_classes, recorded.get("seed", 0), progress, again=True)
    expected = steps.run_reference(spec, num_classes, source.weights, run, progress)
    source.weights.arrays.clear()
    release_memory()
    progress(f"loading the artifact {path}")
    report = steps.check(expected, load_artifact(path), run, channels_first=False, progress=lambda _: None)
    return report, source.is_recorded_in(manifest)
