"""Bench worker for the baseline: the official-layout PyTorch CvT in eager mode under inference_mode.

Also writes the seeded synthetic checkpoints the bench converts, and the peers' files of the official
model: an ONNX export (ONNX Runtime, OpenVINO) and litert-torch's .tflite. Never imports TensorFlow.
"""

import os
import time

import torch

from bench.configs import LITERT_TORCH, ONNXRUNTIME, export_file
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


def reference(job: dict) -> torch.nn.Module:
    return load_reference(variant_spec(job["variant"]), 1000, load_checkpoint(job["checkpoint"]))


def export_peers(job: dict) -> None:
    """Per batch size: official_ref to ONNX (opset 17, the TorchScript exporter) and to litert-torch's .tflite."""
    import litert_torch

    model = reference(job)
    seconds = {}
    for batch in job["batches"]:
        x = torch.zeros(batch, 3, job["resolution"], job["resolution"])
        started = time.perf_counter()
        torch.onnx.export(model, (x,), export_file(job["workdir"], job["group"], ONNXRUNTIME, batch), opset_version=17,
                          input_names=["images"], output_names=["logits"], dynamo=False)
        onnx_s = time.perf_counter() - started
        litert_torch.convert(model, (x,)).export(export_file(job["workdir"], job["group"], LITERT_TORCH, batch))
        seconds[batch] = {"onnx_s": onnx_s, "litert_torch_s": time.perf_counter() - started - onnx_s}
    write_result(job, {"export_s": seconds})


def time_reference(job: dict) -> None:
    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    model = reference(job)

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
    {"checkpoint": write_checkpoint, "peers": export_peers, "time": time_reference}[job["task"]](job)
