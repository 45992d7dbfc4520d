"""Bench worker for the TensorFlow systems: eager Keras, tf.function, XLA and the habit paths.

Also converts the Keras model to TFLite and to an OpenVINO IR (timed by bench.worker_runtimes) and
measures the fp32 matmul peak. Never imports PyTorch.
"""

import os
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

import cvt_tf
from bench.configs import (
    ADVISED,
    EAGER,
    GRAPH,
    HABIT_FUNCTION,
    HABIT_PREDICT,
    HABITS,
    LIVE,
    OPENVINO_EXPORT,
    TFLITE,
    XLA,
    export_file,
)
from bench.timing import read_job, time_batches, write_result
from cvt_tf.model import GRAPH_OPTIONS
from cvt_tf.tf_formats import tflite_flatbuffer, write_openvino

MATMUL_SIZE = 2048
MATMUL_CALLS = 10
# Run in streams on one intra-op thread each; XLA's compiled CPU code parallelises inside its own ops.
STREAM_SYSTEMS = (GRAPH, LIVE, *ADVISED)


def set_threads(job: dict) -> dict:
    """The TF threads of the system `job` times, on `job["threads"]` cores.

    tf-function and tf-live run `cvt_tf.set_cpu_threads`: one intra-op thread per op and independent
    streams on `threads` inter-op threads. Eager Keras and XLA get `threads` of each and one stream:
    eager runs one op at a time, XLA parallelises inside its ops. The habit paths keep TensorFlow's own
    defaults (0: one pool per core count) and the model's own streams in graphs: no call of ours.
    """
    threads = job["threads"]
    if job.get("system") in STREAM_SYSTEMS:
        cvt_tf.set_cpu_threads(threads)
    elif job.get("system") not in HABITS:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {
        "tf.intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf.inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "cvt_tf.streams": stream_count(job),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def stream_count(job: dict) -> int:
    if job.get("system") in HABITS or job.get("system") in ADVISED:
        return GRAPH_OPTIONS.streams
    return job["threads"] if job.get("system") in STREAM_SYSTEMS else 1


def image_shape(job: dict, batch: int) -> tuple:
    return (batch, job["resolution"], job["resolution"], 3)


def make_keras_run(job: dict, model) -> Callable:
    """eager, tf.function and XLA: the model on NHWC inputs (transposed once, outside the timing)."""

    def make_run(batch, inputs):
        x = tf.constant(np.transpose(inputs, (0, 2, 3, 1)))
        if job["system"] == EAGER:
            return lambda: model(x, training=False).numpy()
        function = cvt_tf.inference_function(
            model, image_shape(job, batch), jit_compile=job["system"] == XLA,
            freeze=False if job["system"] == LIVE else "auto",
            streams=stream_count(job),
        )
        return lambda: function(x).numpy()

    return make_run


def make_habit_run(job: dict, model) -> Callable:
    """What a Keras user writes without reading our docs: tf.function, model.predict, a SavedModel."""
    habit = ADVISED.get(job["system"], job["system"])

    def make_run(batch, inputs):
        x = np.ascontiguousarray(np.transpose(inputs, (0, 2, 3, 1)))
        if habit == HABIT_FUNCTION:
            function = tf.function(lambda images: model(images, training=False))
            return lambda: function(tf.constant(x)).numpy()
        if habit == HABIT_PREDICT:
            return lambda: model.predict(x, batch_size=batch, verbose=0)
        path = os.path.join(job["workdir"], f"{job['group']}-pid{os.getpid()}.saved_model")
        model.export(path, verbose=False)
        loaded = tf.saved_model.load(path)  # held: the function's variables live as long as this object
        return lambda: loaded.serve(tf.constant(x)).numpy()

    return make_run


def time_tf(job: dict) -> None:
    threads = set_threads(job)
    model = cvt_tf.load_artifact(job["artifact"])
    habit = job["system"] in HABITS or job["system"] in ADVISED
    make_run = make_habit_run if habit else make_keras_run
    time_batches(job, make_run(job, model), threads)


def convert_tflite(job: dict) -> None:
    """Writes our TFLite export of each batch size: what `convert.py export --format tflite` writes."""
    set_threads(job)
    model = cvt_tf.load_artifact(job["artifact"])
    seconds, sizes = {}, {}
    for batch in job["batches"]:
        started = time.perf_counter()
        path = export_file(job["workdir"], job["group"], TFLITE, batch)
        with open(path, "wb") as handle:  # open batch: the interpreter is resized to `batch`
            handle.write(tflite_flatbuffer(model, job["resolution"], job["resolution"]))
        seconds[batch], sizes[batch] = time.perf_counter() - started, os.path.getsize(path)
    write_result(job, {"convert_s": seconds, "bytes": sizes})


def convert_openvino(job: dict) -> None:
    """Writes our OpenVINO IR (open batch): what `convert.py export --format openvino` writes."""
    set_threads(job)
    model = cvt_tf.load_artifact(job["artifact"])
    started = time.perf_counter()
    write_openvino(model, export_file(job["workdir"], job["group"], OPENVINO_EXPORT, 0), job["resolution"],
                   job["resolution"])
    write_result(job, {"convert_s": time.perf_counter() - started})


def matmul_peak(job: dict) -> None:
    """GFLOP/s of a large fp32 matmul with the bench's threads: the denominator of `% of peak`."""
    threads = set_threads(job)
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.normal(size=(MATMUL_SIZE, MATMUL_SIZE)).astype(np.float32)) for _ in range(2))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    for _ in range(3):
        matmul().numpy()
    times = []
    for _ in range(MATMUL_CALLS):
        started = time.perf_counter()
        matmul().numpy()
        times.append(time.perf_counter() - started)
    gflop = 2 * MATMUL_SIZE**3 / 1e9
    write_result(job, {"threads": threads, "size": MATMUL_SIZE, "gflops": gflop / float(np.median(times)),
                       "best_gflops": gflop / min(times)})


if __name__ == "__main__":
    job = read_job()
    {"time": time_tf, "tflite": convert_tflite, "openvino": convert_openvino, "matmul": matmul_peak}[job["task"]](job)
