"""The parity checker: the PyTorch reference and the Keras port on the same seeded inputs.

Compares every stage's output grid, the pooled features and the logits, and channels_first input.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from cvt_spec import CheckFailed

DEFAULT_ATOL = 1e-4


@dataclass(frozen=True)
class ParityRun:
    """How a parity check runs; recorded in the manifest, so `verify` can run it again the same way.

    Attributes:
        images_per_call: images per model call (None: the whole batch at once); bounds the activations.
        query_rows: the Keras attention's query chunk (None: all queries at once); bounds the scores.
    """

    resolution: tuple
    atol: float = DEFAULT_ATOL
    batch: int = 2
    seed: int = 0
    images_per_call: int | None = None
    query_rows: int | None = None

    @classmethod
    def recorded(cls, manifest: dict, atol: float | None = None) -> "ParityRun":
        """The run a manifest's parity section records (its defaults where it has none); `atol` overrides."""
        parity = manifest.get("parity") or {}
        return cls(
            resolution=tuple(manifest["resolution"]), atol=atol or parity.get("atol") or DEFAULT_ATOL,
            batch=parity.get("batch", 2), seed=parity.get("seed", 0),
            images_per_call=parity.get("images_per_call"), query_rows=parity.get("attention_query_rows"),
        )

    def inputs(self, in_chans: int = 3) -> np.ndarray:
        return parity_inputs(*self.resolution, batch=self.batch, seed=self.seed, in_chans=in_chans)


@dataclass
class OutputDiff:
    output: str
    shape: tuple
    max_abs: float
    max_rel: float  # max abs diff over the largest reference magnitude


@dataclass
class ParityReport:
    run: ParityRun
    diffs: list = field(default_factory=list)

    @property
    def atol(self) -> float:
        return self.run.atol

    @property
    def passed(self) -> bool:
        return all(d.max_abs <= self.atol for d in self.diffs)

    @property
    def worst(self) -> OutputDiff:
        return max(self.diffs, key=lambda d: d.max_abs)

    def to_dict(self) -> dict:
        run = self.run
        return {
            "atol": run.atol, "batch": run.batch, "seed": run.seed, "resolution": list(run.resolution),
            "images_per_call": run.images_per_call, "attention_query_rows": run.query_rows,
            "passed": self.passed,
            "outputs": {
                d.output: {"shape": list(d.shape), "max_abs": d.max_abs, "max_rel": d.max_rel}
                for d in self.diffs
            },
        }

    def table(self) -> str:
        lines = [f"{'output':<26}{'shape':<22}{'max abs':>12}{'max rel':>12}  ok"]
        for d in self.diffs:
            ok = "yes" if d.max_abs <= self.atol else "NO"
            shape = "x".join(str(s) for s in d.shape)
            lines.append(f"{d.output:<26}{shape:<22}{d.max_abs:>12.3e}{d.max_rel:>12.3e}  {ok}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"parity {verdict}: worst {self.worst.output} {self.worst.max_abs:.3e} (atol {self.atol:g})")
        return "\n".join(lines)


class ParityError(CheckFailed):
    """The Keras model differs from the reference above the tolerance."""

    def __init__(self, report: ParityReport, source: str = ""):
        worst = report.worst
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}parity failed: {worst.output} differs by {worst.max_abs:.3e} > atol {report.atol:g}")
        self.report = report


def parity_inputs(height: int, width: int, batch: int = 2, seed: int = 0, in_chans: int = 3) -> np.ndarray:
    """Seeded NCHW float32 inputs, roughly normalized-image statistics."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (batch, in_chans, height, width)).astype(np.float32)


def output_diff(name: str, actual, expected) -> OutputDiff:
    """Max abs and relative difference of one output, in float64 one image at a time."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: Keras shape {actual.shape} != PyTorch shape {expected.shape}")
    # One image at a time: a whole batch of stage-0 grids in float64 is 110 MB of temporaries for
    # cvt-w24 at 384.
    images = zip(actual, expected, strict=True)
    max_abs = max(float(np.max(np.abs(np.subtract(a, e, dtype=np.float64)))) for a, e in images)
    scale = float(np.max(np.abs(expected)))
    return OutputDiff(name, expected.shape, max_abs, max_abs / scale if scale else max_abs)


def _in_calls(run, inputs, images_per_call):
    """`run` ({name: array} of a batch) over `inputs` in slices of `images_per_call`, rejoined."""
    step = images_per_call or len(inputs)
    parts = [run(inputs[start:start + step]) for start in range(0, len(inputs), step)]
    return {name: np.concatenate([np.asarray(part[name]) for part in parts]) for name in parts[0]}


@contextlib.contextmanager
def exact_float32_matmuls() -> Iterator[None]:
    """torch's TF32 matmuls off while the block runs (a no-op on CPU), then as they were."""
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")
    saved = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, False)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, saved, strict=True):
            setattr(owner, name, value)


def reference_outputs(torch_model, inputs_nchw: np.ndarray, images_per_call: int | None = None) -> dict:
    """The reference's outputs as numpy, stage grids moved to NHWC."""
    torch_model.eval()

    def run(images):
        with torch.inference_mode(), exact_float32_matmuls():
            outputs = torch_model.forward_stages(torch.from_numpy(images))
        return {
            name: (value.permute(0, 2, 3, 1) if value.ndim == 4 else value).numpy()
            for name, value in outputs.items()
        }

    return _in_calls(run, inputs_nchw, images_per_call)


def _keras_in_calls(run, inputs, images_per_call, query_rows):
    # Imported here, when the Keras model runs: importing parity must not import Keras or TensorFlow.
    from keras import ops

    from cvt_tf.layers.options import InferenceOptions

    options = InferenceOptions(query_chunk=query_rows)

    def run_as_numpy(images):  # any backend's tensors (a torch tensor may require grad)
        return {name: ops.convert_to_numpy(value) for name, value in run(images, options).items()}

    return _in_calls(run_as_numpy, inputs, images_per_call)


def compare_outputs(expected: dict, keras_model, inputs_nchw: np.ndarray, run: ParityRun) -> ParityReport:
    """A `ParityReport` of the Keras model's outputs against the reference's `expected` ones."""
    actual = _keras_in_calls(
        lambda images, options: keras_model.forward_stages(images, training=False, options=options),
        np.transpose(inputs_nchw, (0, 2, 3, 1)), run.images_per_call, run.query_rows,
    )
    return ParityReport(run, [output_diff(name, actual[name], value) for name, value in expected.items()])


def add_channels_first(report: ParityReport, expected: dict, channels_first_model, inputs_nchw: np.ndarray) -> None:
    """Adds `logits[channels_first]` (or features): the NCHW inputs through a channels_first model."""
    final = "logits" if "logits" in expected else "features"
    twin = _keras_in_calls(
        lambda images, options: {final: channels_first_model(images, training=False, options=options)},
        inputs_nchw, report.run.images_per_call, report.run.query_rows,
    )
    report.diffs.append(output_diff(f"{final}[channels_first]", twin[final], expected[final]))


@contextlib.contextmanager
def channels_first_view(model) -> Iterator:
    """The model switched to its channels_first path while the block runs, on the same variables.

    A CvT's data format only decides whether inputs are transposed on entry, so this runs exactly
    what a channels_first CvT with these weights runs, without a second copy of them (1.1 GB for
    cvt-w24).
    """
    original = model.data_format
    model.data_format = "channels_first"
    try:
        yield model
    finally:
        model.data_format = original


def check_parity(torch_model, keras_model, run: ParityRun, channels_first_model=None) -> ParityReport:
    """Runs both models on `run`'s inputs and returns a `ParityReport` over every output.

    Args:
        channels_first_model: a `data_format="channels_first"` twin of `keras_model` with the
            same weights; its logits are compared as `logits[channels_first]`.
    """
    inputs = run.inputs()
    expected = reference_outputs(torch_model, inputs, run.images_per_call)
    report = compare_outputs(expected, keras_model, inputs, run)
    if channels_first_model is not None:
        add_channels_first(report, expected, channels_first_model, inputs)
    return report
