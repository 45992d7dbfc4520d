"""The steps of a conversion, each usable alone: load a checkpoint, run the reference, port, check.

`convert` runs them all and writes an artifact; `verify`, `predict` and `export` reuse the steps they need.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from converter.checkpoint import load_checkpoint
from converter.hf_layout import to_official_layout
from converter.layout import OfficialWeights, check_state_dict
from converter.mapping import mapping_rows
from converter.parity import ParityReport, ParityRun, add_channels_first, channels_first_view, compare_outputs
from converter.parity import reference_outputs as run_reference_model
from converter.reverse import torch_layout_facts
from converter.synthetic import content_sha256, synthetic_state_dict
from cvt_spec.artifacts import file_sha256
from official_ref import load_reference

if TYPE_CHECKING:  # imported when porting: the steps before run without TensorFlow
    from cvt_tf import CvT


@dataclass
class Source:
    """A checkpoint checked against the official layout, with what the manifest records of it.

    Attributes:
        weights: the float32 arrays the reference and the port both read.
        record: the manifest's `source` entry: file name, sha256 and size, or the synthetic seed and
            content digest; and the layout it came in (`official` or `transformers`).
        torch_layout: the source's dtypes and BatchNorm step counters, for an exact `.pth` export.
    """

    weights: OfficialWeights
    record: dict
    torch_layout: dict

    def is_recorded_in(self, manifest: dict) -> bool:
        """Whether this is the checkpoint the manifest says the artifact was converted from.

        A synthetic source is recorded by the digest of its content: compared on the weights, which
        must not have been ported (consumed) yet.
        """
        recorded = manifest.get("source") or {}
        if "content_sha256" in recorded:
            digest = self.record.get("content_sha256") or content_sha256(self.weights.arrays)
            return digest == recorded["content_sha256"]
        return self.record.get("sha256") == recorded.get("sha256")


def load_source(checkpoint: Path | None, spec: dict, num_classes: int, seed: int = 0, progress=print,
                target: str = "the model", again: bool = False) -> Source:
    """Step 1: a checkpoint file (or, for None, the seeded synthetic one), checked and widened to float32.

    Args:
        target: what the checkpoint must fit, for messages.
        again: the synthetic checkpoint is made again (to verify an artifact), as the progress line says.

    Raises:
        CheckpointError: the file cannot be read as a state dict.
        LayoutError, HeadMismatch: it does not fit `spec` and `num_classes` (see `check_state_dict`).
    """
    notes, source_name, layout = [], "", "official"
    if checkpoint is None:
        progress(f"regenerating the synthetic checkpoint (seed {seed})" if again
                 else f"generating synthetic checkpoint (seed {seed})")
        state_dict = synthetic_state_dict(spec, num_classes, seed)
        record = {"synthetic": True, "seed": seed, "content_sha256": content_sha256(state_dict)}
    else:
        checkpoint, source_name = Path(checkpoint), str(checkpoint)
        progress(f"loading {checkpoint}")
        state_dict = load_checkpoint(checkpoint, dtype_notes=notes)
        state_dict, layout = to_official_layout(state_dict, spec, num_classes, source_name)
        if layout != "official":
            progress(f"renamed the {layout} layout to the official one")
        record = {"file": checkpoint.name, "sha256": file_sha256(checkpoint), "size": checkpoint.stat().st_size}
    torch_layout = torch_layout_facts(state_dict)  # the source dtypes, before widening
    weights = check_state_dict(state_dict, spec, num_classes, source_name, target)
    weights.notes[:0] = notes
    return Source(weights, {**record, "layout": layout}, torch_layout)


def run_reference(spec: dict, num_classes: int, weights: OfficialWeights, run: ParityRun, progress=print) -> dict:
    """Step 2: the official-layout PyTorch model's outputs on the run's seeded inputs (NHWC grids)."""
    height, width = run.resolution
    progress(f"running the PyTorch reference at {height}x{width}, batch {run.batch}")
    reference = load_reference(spec, num_classes, weights.arrays)
    return run_reference_model(reference, run.inputs(), run.images_per_call)


def build_keras_model(spec: dict, num_classes: int, data_format: str = "channels_last") -> "CvT":
    """A `cvt_tf.CvT` of `spec`, built for any image size."""
    from cvt_tf import CvT  # here: the steps before porting run without TensorFlow

    return CvT(spec=spec, num_classes=num_classes, data_format=data_format).build_for_any_size()


def port(weights: OfficialWeights, spec: dict, num_classes: int, progress=print) -> "CvT":
    """Step 3: a Keras model created holding the weights; `weights.arrays` is consumed."""
    from converter.port import build_ported  # here: the steps before porting run without TensorFlow

    rows = mapping_rows(spec, num_classes)
    progress(f"porting {len(rows)} tensors to Keras")
    return build_ported(weights, lambda: build_keras_model(spec, num_classes), rows)


def check(expected: dict, model, run: ParityRun, channels_first: bool = True, progress=print) -> ParityReport:
    """Step 4: the Keras model against the reference's `expected` outputs, then (optionally) NCHW input."""
    progress("checking parity (channels_last, then channels_first)" if channels_first else "checking parity")
    inputs = run.inputs()
    report = compare_outputs(expected, model, inputs, run)
    if channels_first:
        with channels_first_view(model) as channels_first_model:
            add_channels_first(report, expected, channels_first_model, inputs)
    return report
