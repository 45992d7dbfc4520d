"""The parity checker: the PyTorch reference and the Keras port on the same seeded inputs.

Compares every stage's output grid, the pooled features and the logits, and channels_first input.
"""

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_ATOL = 1e-4


@dataclass
class OutputDiff:
    output: str
    shape: tuple
    max_abs: float
    max_rel: float  # max abs diff over the largest reference magnitude


@dataclass
class ParityReport:
    atol: float
    batch: int
    seed: int
    resolution: tuple
    images_per_call: int = None  # None: the whole batch in one call
    attention_query_rows: int = None  # the Keras attention's query chunk; None: all queries at once
    diffs: list = field(default_factory=list)

    @property
    def passed(self):
        return all(d.max_abs <= self.atol for d in self.diffs)

    @property
    def worst(self):
        return max(self.diffs, key=lambda d: d.max_abs)

    def to_dict(self):
        return {
            "atol": self.atol, "batch": self.batch, "seed": self.seed,
            "resolution": list(self.resolution), "images_per_call": self.images_per_call,
            "attention_query_rows": self.attention_query_rows,
            "passed": self.passed,
            "outputs": {
                d.output: {"shape": list(d.shape), "max_abs": d.max_abs, "max_rel": d.max_rel}
                for d in self.diffs
            },
        }

    def table(self):
        lines = [f"{'output':<26}{'shape':<22}{'max abs':>12}{'max rel':>12}  ok"]
        for d in self.diffs:
            ok = "yes" if d.max_abs <= self.atol else "NO"
            shape = "x".join(str(s) for s in d.shape)
            lines.append(f"{d.output:<26}{shape:<22}{d.max_abs:>12.3e}{d.max_rel:>12.3e}  {ok}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"parity {verdict}: worst {self.worst.output} {self.worst.max_abs:.3e} (atol {self.atol:g})")
        return "\n".join(lines)


def parity_inputs(height, width, batch=2, seed=0, in_chans=3):
    """Seeded NCHW float32 inputs, roughly normalized-image statistics."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (batch, in_chans, height, width)).astype(np.float32)


def _diff(name, actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: Keras shape {actual.shape} != PyTorch shape {expected.shape}")
    # In float64, one image at a time: a whole batch of stage-0 grids in float64 is 110 MB of
    # temporaries for cvt-w24 at 384, the conversion's peak before (measured).
    max_abs = max(float(np.max(np.abs(np.subtract(a, e, dtype=np.float64)))) for a, e in zip(actual, expected))
    scale = float(np.max(np.abs(expected)))
    return OutputDiff(name, expected.shape, max_abs, max_abs / scale if scale else max_abs)


def _in_calls(run, inputs, images_per_call):
    """`run` ({name: array} of a batch) over `inputs` in slices of `images_per_call`, rejoined.

    One image per call bounds the activations' memory (cvt-w24 at 384: stage 0 attention scores
    are 255 MB per image); None runs the whole batch at once.
    """
    step = images_per_call or len(inputs)
    parts = [run(inputs[start:start + step]) for start in range(0, len(inputs), step)]
    return {name: np.concatenate([np.asarray(part[name]) for part in parts]) for name in parts[0]}


def reference_outputs(torch_model, inputs_nchw, images_per_call=None):
    """The reference's outputs as numpy, stage grids moved to NHWC."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch_model.eval()

    def run(images):
        with torch.inference_mode():
            outputs = torch_model.forward_stages(torch.from_numpy(images))
        return {
            name: (value.permute(0, 2, 3, 1) if value.ndim == 4 else value).numpy()
            for name, value in outputs.items()
        }

    return _in_calls(run, inputs_nchw, images_per_call)


def _keras_in_calls(run, inputs, images_per_call, query_rows):
    from cvt_tf.layers import attention_in_query_chunks  # here: importing parity does not import TF

    with attention_in_query_chunks(query_rows):
        return _in_calls(run, inputs, images_per_call)


def compare_outputs(
    expected, keras_model, inputs_nchw, atol=DEFAULT_ATOL, seed=0, images_per_call=None, query_rows=None
):
    """A `ParityReport` of the Keras model's outputs against the reference's `expected` ones.

    `images_per_call` and `query_rows` (`cvt_tf.layers.attention_in_query_chunks`) bound memory.
    """
    actual = _keras_in_calls(
        lambda images: keras_model.forward_stages(images, training=False),
        np.transpose(inputs_nchw, (0, 2, 3, 1)), images_per_call, query_rows,
    )
    batch, _, height, width = inputs_nchw.shape
    report = ParityReport(atol, batch, seed, (height, width), images_per_call, query_rows)
    for name, value in expected.items():
        report.diffs.append(_diff(name, actual[name], value))
    return report


def add_channels_first(report, expected, channels_first_model, inputs_nchw):
    """Adds `logits[channels_first]` (or features): the NCHW inputs through a channels_first model.

    Runs in the report's images per call and attention query rows.
    """
    final = "logits" if "logits" in expected else "features"
    twin = _keras_in_calls(
        lambda images: {final: channels_first_model(images, training=False)},
        inputs_nchw, report.images_per_call, report.attention_query_rows,
    )
    report.diffs.append(_diff(f"{final}[channels_first]", twin[final], expected[final]))


@contextlib.contextmanager
def channels_first_view(model):
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


def check_parity(torch_model, keras_model, inputs_nchw, atol=DEFAULT_ATOL, seed=0, channels_first_model=None):
    """Runs both models and returns a `ParityReport` over every output.

    Args:
        channels_first_model: a `data_format="channels_first"` twin of `keras_model` with the
            same weights; its logits are compared as `logits[channels_first]`.
    """
    expected = reference_outputs(torch_model, inputs_nchw)
    report = compare_outputs(expected, keras_model, inputs_nchw, atol, seed)
    if channels_first_model is not None:
        add_channels_first(report, expected, channels_first_model, inputs_nchw)
    return report
