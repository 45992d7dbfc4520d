"""Re-checking a written artifact: its weights read back from disk against the checkpoint they came from.

The reference runs on the manifest's SPEC, resolution and parity seed, so a sound artifact reproduces
the figures its manifest recorded.
"""

from converter.checkpoint import load_checkpoint
from converter.parity import DEFAULT_ATOL, compare_outputs, parity_inputs, reference_outputs
from converter.pipeline import reference_model, release_memory
from converter.synthetic import content_sha256, synthetic_state_dict
from converter.validate import validate_state_dict
from cvt_tf.artifact import file_sha256, load_artifact, read_manifest


class VerifyError(ValueError):
    """The artifact cannot be checked as asked; the message says what is missing."""


def _state_dict(manifest, checkpoint, progress):
    """The checkpoint's arrays and whether they are the source the manifest records."""
    source = manifest["source"]
    if checkpoint is None:
        if not source.get("synthetic"):
            raise VerifyError(f"the artifact was converted from {source.get('file')}: pass --checkpoint FILE")
        progress(f"regenerating the synthetic checkpoint (seed {source['seed']})")
        state_dict = synthetic_state_dict(manifest["spec"], manifest["num_classes"], source["seed"])
        return state_dict, content_sha256(state_dict) == source.get("content_sha256")
    progress(f"loading {checkpoint}")
    return load_checkpoint(checkpoint), file_sha256(checkpoint) == source.get("sha256")


def verify_artifact(path, checkpoint=None, atol=None, progress=print):
    """Parity of the artifact at `path`, loaded from disk, against `checkpoint`.

    Args:
        checkpoint: the source checkpoint file; None regenerates the synthetic one the manifest records.
        atol: tolerance; the manifest's by default.

    Returns:
        (ParityReport, whether the checkpoint is the manifest's recorded source).

    Raises:
        FileNotFoundError, ValueError: artifact missing or its sha256 differs from the manifest's.
        CheckpointError, MappingError, VerifyError: the checkpoint cannot be read or does not fit.
    """
    manifest = read_manifest(path)
    spec, num_classes = manifest["spec"], manifest["num_classes"]
    recorded = manifest.get("parity") or {}
    atol = atol or recorded.get("atol") or DEFAULT_ATOL
    seed, batch = recorded.get("seed", 0), recorded.get("batch", 2)
    # As the conversion ran them, so that the figures are the same.
    images_per_call, query_rows = recorded.get("images_per_call"), recorded.get("attention_query_rows")
    state_dict, same_source = _state_dict(manifest, checkpoint, progress)
    weights, _ = validate_state_dict(state_dict, spec, num_classes)
    del state_dict
    inputs = parity_inputs(*manifest["resolution"], batch=batch, seed=seed)
    progress(f"running the PyTorch reference at {inputs.shape[2]}x{inputs.shape[3]}, batch {batch}")
    expected = reference_outputs(reference_model(spec, num_classes, weights), inputs, images_per_call)
    del weights
    release_memory()
    progress(f"loading the artifact {path}")
    model = load_artifact(path)
    return compare_outputs(expected, model, inputs, atol, seed, images_per_call, query_rows), same_source
