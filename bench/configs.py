"""What `make bench` measures: the configurations, the systems, the inputs and the work per image.

Plain Python and numpy: the orchestrator imports neither PyTorch nor TensorFlow.
"""

from dataclasses import dataclass

import numpy as np

from cvt_spec import variant_spec

TORCH = "pytorch"
EAGER = "tf-eager"
GRAPH = "tf-function"
LIVE = "tf-live"
XLA = "tf-xla"
TFLITE = "tflite"
SYSTEMS = (TORCH, EAGER, GRAPH, LIVE, XLA, TFLITE)
TF_SYSTEMS = (EAGER, GRAPH, LIVE, XLA)
SYSTEM_LABELS = {
    TORCH: "PyTorch eager (official_ref, inference_mode) - baseline",
    EAGER: "cvt_tf eager Keras call",
    GRAPH: "default inference path: cvt_tf.inference_function (tf.function, fixed signature, frozen folds)",
    LIVE: "tf.function over the live variables (model.predict, SavedModel export)",
    XLA: "tf.function(jit_compile=True)",
    TFLITE: "TFLite, XNNPack",
}


@dataclass(frozen=True)
class Group:
    """One converted model (variant at a resolution) and the batch sizes timed on it."""

    variant: str
    resolution: int
    batches: tuple
    skip: tuple = ()  # (system, reason) pairs

    @property
    def name(self):
        return f"{self.variant}@{self.resolution}"

    def skipped(self, system):
        return dict(self.skip).get(system)


W24_TFLITE_SKIP = (
    TFLITE,
    "converting cvt-w24 to TFLite freezes the graph and needs more than 24 GB of RAM (measured, "
    "see shared TRAPS); skipped to keep the bench within the machine",
)

FULL = (
    Group("cvt-13", 224, (1, 8)),
    Group("cvt-21", 384, (1, 8)),
    Group("cvt-w24", 384, (1,), skip=(W24_TFLITE_SKIP,)),
)
QUICK = (Group("cvt-13", 112, (1,)),)


def bench_inputs(batch, resolution, seed=0):
    """Seeded NCHW float32 inputs shared by every worker (channels_last systems transpose once)."""
    rng = np.random.default_rng(seed + 1000 * batch + resolution)
    return rng.normal(0.0, 1.0, (batch, 3, resolution, resolution)).astype(np.float32)


def _conv_out(n, kernel, stride, padding):
    return (n + 2 * padding - kernel) // stride + 1


def _projection_out(n, method, kernel, stride, padding):
    if method == "dw_bn":
        return _conv_out(n, kernel, stride, padding)
    if method == "avg":
        return -(-(n + 2 * padding - kernel) // stride) + 1  # ceil mode; the dropped-window case is rare
    return n


def multiply_adds(variant, resolution, num_classes=1000):
    """Multiply-accumulates of one image: convolutions, linear layers and the two attention matmuls.

    Element-wise work (norms, softmax, activations) is left out, as in the paper's FLOPs column.
    """
    spec = variant_spec(variant)
    size, channels, total = resolution, 3, 0
    for i in range(spec["NUM_STAGES"]):
        dim, k = spec["DIM_EMBED"][i], spec["PATCH_SIZE"][i]
        size = _conv_out(size, k, spec["PATCH_STRIDE"][i], spec["PATCH_PADDING"][i])
        total += size * size * dim * channels * k * k
        cls = int(spec["CLS_TOKEN"][i])
        method, kernel = spec["QKV_PROJ_METHOD"][i], spec["KERNEL_QKV"][i]
        q_method = "linear" if method == "avg" else method
        q_size = _projection_out(size, q_method, kernel, spec["STRIDE_Q"][i], spec["PADDING_Q"][i])
        kv_size = _projection_out(size, method, kernel, spec["STRIDE_KV"][i], spec["PADDING_KV"][i])
        dw = kernel * kernel * dim if method == "dw_bn" else 0
        q_tokens, kv_tokens = q_size * q_size + cls, kv_size * kv_size + cls
        hidden = int(dim * spec["MLP_RATIO"][i])
        block = (
            dw * (q_size * q_size + 2 * kv_size * kv_size)
            + (q_tokens + 2 * kv_tokens) * dim * dim  # proj_q, proj_k, proj_v
            + 2 * q_tokens * kv_tokens * dim  # q k^T and attention @ v
            + (size * size + cls) * dim * dim  # proj
            + 2 * (size * size + cls) * dim * hidden  # fc1, fc2
        )
        total += spec["DEPTH"][i] * block
        channels = dim
    return total + channels * num_classes


def gflop_per_image(variant, resolution):
    return 2 * multiply_adds(variant, resolution) / 1e9
