"""What `make bench` measures: the configurations, the systems, the inputs and the work per image.

Plain Python and numpy: the orchestrator imports neither PyTorch nor TensorFlow.
"""

from dataclasses import dataclass

import numpy as np

from cvt_spec import stage_specs, variant_spec

TORCH = "pytorch"
EAGER = "tf-eager"
GRAPH = "tf-function"
LIVE = "tf-live"
XLA = "tf-xla"
TFLITE = "tflite"
OPENVINO_EXPORT = "openvino-export"
# What a Keras user writes by habit, with TensorFlow's own threading (no call of ours).
HABIT_FUNCTION = "habit-function"
HABIT_PREDICT = "habit-predict"
HABIT_SAVEDMODEL = "habit-savedmodel"
HABITS = (HABIT_FUNCTION, HABIT_PREDICT, HABIT_SAVEDMODEL)
HABIT_CALLS = {
    HABIT_FUNCTION: "tf.function(lambda x: model(x, training=False))",
    HABIT_PREDICT: "model.predict(x, verbose=0)",
    HABIT_SAVEDMODEL: "model.export() then tf.saved_model.load(...).serve(x)",
}
# The same three after the call the README's first example makes, cvt_tf.set_cpu_threads(cores).
ADVISED = {f"advised-{habit.removeprefix('habit-')}": habit for habit in HABITS}
KERAS_JAX = "keras-jax"
KERAS_TORCH = "keras-torch"
# The runtimes a user could pick instead, on exports of the official PyTorch model (official_ref).
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
LITERT_TORCH = "litert-torch"
PEERS = (ONNXRUNTIME, OPENVINO, LITERT_TORCH)
SYSTEMS = (TORCH, EAGER, GRAPH, LIVE, XLA, TFLITE, OPENVINO_EXPORT, *HABITS, *ADVISED, KERAS_JAX, KERAS_TORCH, *PEERS)
# Ours: every system that runs the converted artifact (the others are the baseline and the peers).
OURS = tuple(s for s in SYSTEMS if s != TORCH and s not in PEERS)
# The other Keras backends, each in a worker with KERAS_BACKEND set.
KERAS_BACKENDS = {KERAS_JAX: "jax", KERAS_TORCH: "torch"}
SYSTEM_LABELS = {
    TORCH: "PyTorch eager (official_ref, inference_mode) - baseline",
    EAGER: "cvt_tf eager Keras call",
    GRAPH: "default inference path: cvt_tf.inference_function (tf.function, fixed signature, frozen folds)",
    LIVE: "tf.function over the live variables (model.predict, SavedModel export)",
    XLA: "tf.function(jit_compile=True)",
    TFLITE: "our TFLite export (the SavedModel graph, one stream), LiteRT interpreter, XNNPack",
    OPENVINO_EXPORT: "our OpenVINO export (the inference graph, one stream), OpenVINO CPU, f32 forced",
    **{habit: f"by habit: {call}, TF default threads" for habit, call in HABIT_CALLS.items()},
    **{advised: f"{HABIT_CALLS[habit]} after cvt_tf.set_cpu_threads(cores)" for advised, habit in ADVISED.items()},
    KERAS_JAX: "model.predict under KERAS_BACKEND=jax",
    KERAS_TORCH: "model.predict under KERAS_BACKEND=torch",
    ONNXRUNTIME: "peer: ONNX Runtime (CPU provider) on torch.onnx.export of official_ref",
    OPENVINO: "peer: OpenVINO (f32 forced) on the same ONNX file",
    LITERT_TORCH: "peer: litert-torch .tflite of official_ref, LiteRT interpreter, XNNPack",
}
# Systems timed in the LiteRT interpreter (ai_edge_litert), in the runtimes worker with the peers.
LITERT_SYSTEMS = (TFLITE, LITERT_TORCH)
# Our exports, written by bench.worker_tf and timed by bench.worker_runtimes; they take NHWC inputs.
EXPORTS = (TFLITE, OPENVINO_EXPORT)


def export_file(workdir: str, group: str, system: str, batch: int) -> str:
    """Where the bench writes the file `system` runs for one config: a .tflite, the shared ONNX file, or
    our OpenVINO export's directory (open batch, one for every batch size)."""
    if system in (ONNXRUNTIME, OPENVINO):
        return f"{workdir}/{group}-b{batch}.onnx"
    if system == OPENVINO_EXPORT:
        return f"{workdir}/{group}.openvino"
    return f"{workdir}/{group}-{system}-b{batch}.tflite"


def worker_of(system: str) -> str:
    """The bench worker module (bench.worker_<name>) that times `system`."""
    if system == TORCH:
        return "torch"
    if system in KERAS_BACKENDS:
        return "keras"
    return "runtimes" if system in PEERS or system in EXPORTS else "tf"


@dataclass(frozen=True)
class Group:
    """One converted model (variant at a resolution) and the batch sizes timed on it."""

    variant: str
    resolution: int
    batches: tuple

    @property
    def name(self) -> str:
        return f"{self.variant}@{self.resolution}"


FULL = (
    Group("cvt-13", 224, (1, 8)),
    Group("cvt-21", 384, (1, 8)),
    Group("cvt-w24", 384, (1,)),
)
QUICK = (Group("cvt-13", 112, (1,)),)


def bench_inputs(batch: int, resolution: int, seed: int = 0) -> np.ndarray:
    """Seeded NCHW float32 inputs shared by every worker (channels_last systems transpose once)."""
    rng = np.random.default_rng(seed + 1000 * batch + resolution)
    return rng.normal(0.0, 1.0, (batch, 3, resolution, resolution)).astype(np.float32)


def multiply_adds(variant: str, resolution: int, num_classes: int = 1000) -> int:
    """Multiply-accumulates of one image: convolutions, linear layers and the two attention matmuls.

    Element-wise work (norms, softmax, activations) is left out, as in the paper's FLOPs column.
    """
    size, channels, total = resolution, 3, 0
    for stage in stage_specs(variant_spec(variant)):
        dim, k = stage.dim, stage.patch_size
        size = stage.grid_size(size)
        total += size * size * dim * channels * k * k
        cls = int(stage.cls_token)
        q_size, kv_size = stage.q_size(size), stage.kv_size(size)
        dw = stage.kernel_size**2 * dim if stage.has_projection_weights else 0
        q_tokens, kv_tokens = q_size * q_size + cls, kv_size * kv_size + cls
        block = (
            dw * (q_size * q_size + 2 * kv_size * kv_size)
            + (q_tokens + 2 * kv_tokens) * dim * dim  # proj_q, proj_k, proj_v
            + 2 * q_tokens * kv_tokens * dim  # q k^T and attention @ v
            + (size * size + cls) * dim * dim  # proj
            + 2 * (size * size + cls) * dim * stage.hidden_dim  # fc1, fc2
        )
        total += stage.depth * block
        channels = dim
    return total + channels * num_classes


def gflop_per_image(variant: str, resolution: int) -> float:
    return 2 * multiply_adds(variant, resolution) / 1e9
