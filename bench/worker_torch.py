"""Bench worker for the baseline: the official-layout PyTorch CvT in eager mode under inference_mode.

Also writes the seeded synthetic checkpoints the bench converts. Never imports TensorFlow.
"""

import os

import torch

from bench.timing import read_job, time_batches, write_result
from converter.checkpoint import load_checkpoint
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import variant_spec
from official_ref import load_reference


def write_checkpoint(job: dict) -> None:
    """A synthetic checkpoint in the official layout: what `convert.py --checkpoint` reads."""
    spec = variant_spec(job["variant"])
    save_checkpoint(synthetic_state_dict(spec, 1000, job["seed"]), job["checkpoint"])
    write_result(job, {"bytes": os.path.getsize(job["checkpoint"])})


def time_reference(job: dict) -> None:
    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    model = load_reference(variant_spec(job["variant"]), 1000, load_checkpoint(job["checkpoint"]))

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
