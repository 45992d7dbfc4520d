"""Bench worker for the baseline: the official-layout PyTorch CvT in eager mode under inference_mode.

Also writes the seeded synthetic checkpoints the bench converts. Never imports TensorFlow.
"""

import os

import torch

from bench.timing import read_job, time_batches, write_result
from converter.checkpoint import load_checkpoint
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import variant_spec
from official_ref.model import ConvolutionalVisionTransformer


def write_checkpoint(job):
    """A synthetic checkpoint in the official layout: what `convert.py --checkpoint` reads."""
    spec = variant_spec(job["variant"])
    save_checkpoint(synthetic_state_dict(spec, 1000, job["seed"]), job["checkpoint"])
    write_result(job, {"bytes": os.path.getsize(job["checkpoint"])})


def load_reference(job):
    model = ConvolutionalVisionTransformer(variant_spec(job["variant"]), 1000)
    tensors = {key: torch.from_numpy(value) for key, value in load_checkpoint(job["checkpoint"]).items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def time_reference(job):
    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    model = load_reference(job)

    def make_run(batch, inputs):
        x = torch.from_numpy(inputs)

        def run():
            with torch.inference_mode():
                return model(x).numpy()

        return run

    threads = {"torch.get_num_threads": torch.get_num_threads(),
               "torch.get_num_interop_threads": torch.get_num_interop_threads(),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    time_batches(job, make_run, threads)


if __name__ == "__main__":
    job = read_job()
    {"checkpoint": write_checkpoint, "time": time_reference}[job["task"]](job)
