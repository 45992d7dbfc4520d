"""Bench worker for Keras on its other backends (JAX, PyTorch): `model.predict` of the artifact.

Run with KERAS_BACKEND set; imports no TensorFlow (cvt_tf does not under these backends).
"""

import os

import keras
import numpy as np

import cvt_tf
from bench.timing import read_job, time_batches


def set_threads(job: dict) -> dict:
    """PyTorch's intra-op threads to the bench's count; JAX's XLA CPU client uses the cores it sees (2 here)."""
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(job["threads"])
        return {"torch.get_num_threads": torch.get_num_threads(), "KERAS_BACKEND": "torch"}
    return {"KERAS_BACKEND": keras.backend.backend(), "cpu_count": os.cpu_count()}


def time_predict(job: dict) -> None:
    threads = set_threads(job)
    model = cvt_tf.load_artifact(job["artifact"])

    def make_run(batch, inputs):
        x = np.ascontiguousarray(np.transpose(inputs, (0, 2, 3, 1)))
        return lambda: model.predict(x, batch_size=batch, verbose=0)

    time_batches(job, make_run, threads)


if __name__ == "__main__":
    time_predict(read_job())
