"""How one inference call runs: independent streams, attention in query chunks, weights frozen for tracing.

Passed explicitly as `options=` from `CvT.call` down to the layers that read it; no global state.
"""

from dataclasses import dataclass, replace

from cvt_spec import InputError

# Independent parts per graph-mode inference call: one per core of the machines we measured (2).
DEFAULT_INFERENCE_STREAMS = 2


def check_count(name: str, value, allow_none: bool = False) -> None:
    """Refuses anything but an int >= 1 (or None when allowed), naming the argument."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class InferenceOptions:
    """Settings of an inference call (`training=False`); every one leaves the result the same.

    Attributes:
        streams: independent parts that TensorFlow's inter-op threads run side by side. A batch of
            at least `streams` images runs as `streams` batch slices; a smaller batch runs each block
            on `streams` slices of its token rows, joined only where attention needs them all (the
            conv projections, the keys and values). 1 computes in one piece. See README "Streams".
        query_chunk: attention computes its scores this many queries at a time (None: all at once).
            Each softmax row stays whole; the scores' memory shrinks from all queries to the chunk.
        frozen_weights: the trace is for a frozen weight snapshot (`cvt_tf.inference_function`), so
            folds that rescale weights (QuickGELU's slope into the MLP) are made once by constant folding.
        dense_bias_before_reshape: the token-wise linear layers, 2-D matmuls over the batch's tokens,
            add their bias before the reshape back to (batch, tokens, units), where TensorFlow's oneDNN
            fuses it into the matmul; False adds it after, where OpenVINO fuses it into the matmul with
            the activation that follows (the OpenVINO export).
    """

    streams: int = 1
    query_chunk: int | None = None
    frozen_weights: bool = False
    dense_bias_before_reshape: bool = True

    def __post_init__(self):
        check_count("streams", self.streams)
        check_count("query_chunk", self.query_chunk, allow_none=True)

    def in_one_stream(self) -> "InferenceOptions":
        return replace(self, streams=1)


WHOLE = InferenceOptions()
