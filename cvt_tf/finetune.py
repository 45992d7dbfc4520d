"""Fine-tuning a converted CvT on tf.distribute: the strategy, the model with a new head, the epoch's end.

TensorFlow backend only. `converter.finetune.run_finetune` runs a whole job and writes what it makes.
"""

import json
import os
from collections.abc import Callable

import keras
import numpy as np

from cvt_spec import InputError
from cvt_tf.artifact import load_artifact
from cvt_tf.layers.common import trunc_normal_initializer
from cvt_tf.layers.options import WHOLE
from cvt_tf.model import CvT

STRATEGIES = ("auto", "one", "mirrored", "multi-worker")
PRECISIONS = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
HEAD_STD = trunc_normal_initializer().stddev  # the official head init, trunc_normal_(std=0.02)


def _cluster_workers() -> int:
    """How many workers TF_CONFIG names (0 without TF_CONFIG)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise InputError("TF_CONFIG is not a JSON object with a `cluster` entry") from None
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def local_devices() -> list[str]:
    """The local devices a MirroredStrategy spreads over: every GPU, else every (logical) CPU device."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def make_strategy(name: str):
    """The `tf.distribute` strategy of `--strategy`.

    `one`: OneDeviceStrategy on the first GPU, else the CPU; `mirrored`: MirroredStrategy over every local
    device; `multi-worker`: MultiWorkerMirroredStrategy from TF_CONFIG (create it before any other TensorFlow
    call: its collectives are configured at startup); `auto`: that when TF_CONFIG names more than one worker,
    mirrored when there is more than one local device, else one.

    Raises:
        InputError: unknown name, or `multi-worker` without a TF_CONFIG cluster.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    workers = _cluster_workers()
    if name == "auto":
        name = "multi-worker" if workers > 1 else "mirrored" if len(local_devices()) > 1 else "one"
    if name == "multi-worker":
        if not workers:
            raise InputError('--strategy multi-worker: TF_CONFIG names no workers; set it on every worker, e.g. '
                             '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
                             '"index": 0}}')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    return tf.distribute.OneDeviceStrategy(local_devices()[0])


def strategy_name(strategy) -> str:
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi-worker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "one"


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: the chief, else worker 0, or the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def new_head(num_features: int, num_classes: int, seed: int) -> list[np.ndarray]:
    """[kernel, bias] of a fresh head: the official init from `seed`, the same in every process."""
    kernel = np.random.default_rng(seed).normal(0.0, HEAD_STD, (num_features, num_classes))
    return [kernel.astype(np.float32), np.zeros(num_classes, np.float32)]


def finetune_model(artifact, num_classes: int, freeze_stages: int = 0, precision: str | None = None,
                   seed: int = 0) -> CvT:
    """A CvT holding an artifact's weights but its head, a new `num_classes` head, BatchNorm synchronized.

    Build it inside the strategy's scope. Args:
        freeze_stages: the first stages keep their weights (their BatchNorms then use moving statistics).
        precision: None (float32), `bf16` or `fp16` (the mixed policies; the variables stay float32).

    Raises:
        ArtifactError: the artifact is missing or damaged.
        InputError: `freeze_stages` above the SPEC's stage count, or an unknown precision.
    """
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    pretrained = load_artifact(artifact, include_top=False)
    stages = pretrained.spec["NUM_STAGES"]
    if not 0 <= freeze_stages <= stages:
        raise InputError(f"--freeze-stages {freeze_stages}: the SPEC has {stages} stages (0..{stages})")
    model = CvT(spec=pretrained.spec, num_classes=num_classes, synchronized_batch_norm=True,
                dtype=PRECISIONS.get(precision), name=pretrained.name).build_for_any_size()
    values = {variable.path: variable for variable in pretrained.weights}
    for variable in model.weights:
        if variable.path.startswith(f"{model.name}/head/"):
            continue
        variable.assign(values.pop(variable.path))
    if values:
        raise RuntimeError(f"the fine-tuning model has no variable for {sorted(values)[:3]}")  # a bug
    model.head.set_weights(new_head(model.num_features, num_classes, seed))
    for stage in model.stages[:freeze_stages]:
        stage.trainable = False
    return model


def compile_for_finetuning(model: CvT, learning_rate: float, total_steps: int) -> None:
    """AdamW (Keras defaults) with the rate cosine-decayed over the run, built for the trainable variables.

    Call it in the strategy's scope. `compile` attaches the optimizer, so `save_weights` / `load_weights`
    carry its state; the loss is `cvt_tf.finetune_loop.TrainStep`'s. Under `mixed_float16` Keras wraps the
    optimizer in a LossScaleOptimizer.
    """
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(total_steps, 1))
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule))
    model.optimizer.build(model.trainable_variables)  # before a checkpoint's optimizer state is loaded


class Top1:
    """The validation top-1 of a model: the fraction of `images` whose largest logit is their label.

    One traced inference function per instance, in one piece (streams would only make the graph bigger
    to trace), run by this process alone: no collective, under multi-worker every worker scores it all.
    """

    def __init__(self, model: CvT, images: np.ndarray, labels: np.ndarray, batch: int = 32):
        import tensorflow as tf

        self.images, self.labels, self.batch = images, labels, batch
        signature = [tf.TensorSpec((None, *images.shape[1:]), tf.float32)]
        self.predicted = tf.function(
            lambda x: tf.argmax(model(x, training=False, options=WHOLE), axis=-1, output_type=tf.int32),
            input_signature=signature,
        )

    def __call__(self) -> float:
        hits = sum(int(np.sum(self.predicted(self.images[i:i + self.batch]).numpy() == self.labels[i:i + self.batch]))
                   for i in range(0, len(self.images), self.batch))
        return hits / len(self.images)


class EpochRecorder:
    """`recorder(epoch, logs)` at each epoch's end: the validation top-1 into the logs, the history row, then
    `save(epochs_done, rows)`.

    Args:
        top1: the model's validation scorer.
        rows: the history of the epochs already done (a resumed run's).
        save: writes the checkpoint and the history; called on the chief only.
    """

    def __init__(self, top1: Top1, rows: list, save: Callable[[int, list], None] | None):
        self.top1, self.rows, self.save = top1, rows, save

    def __call__(self, epoch: int, logs: dict) -> None:
        logs["val_top1"] = self.top1()
        self.rows.append({"epoch": epoch + 1, **{key: float(value) for key, value in logs.items()}})
        if self.save is not None:
            self.save(epoch + 1, self.rows)
