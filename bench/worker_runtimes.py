"""Bench worker for the runtimes: ONNX Runtime, OpenVINO, and the LiteRT interpreter (XNNPack).

The LiteRT interpreter runs both .tflite files, ours and litert-torch's, with the same threads; OpenVINO
runs both its inputs, the ONNX file of official_ref and our IR, with the same settings. Imports neither
PyTorch nor TensorFlow; inputs stay NCHW except for our NHWC exports.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.configs import EXPORTS, LITERT_TORCH, ONNXRUNTIME, OPENVINO, OPENVINO_EXPORT, TFLITE, export_file
from bench.timing import read_job, time_batches
from cvt_spec.artifacts import OPENVINO_FLOAT32, OPENVINO_XML


def onnxruntime_session(path: str, threads: int, batch: int) -> tuple[Callable, dict]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    settings = {"onnxruntime": onnxruntime.__version__, "intra_op_num_threads": options.intra_op_num_threads,
                "inter_op_num_threads": options.inter_op_num_threads, "providers": session.get_providers()}
    return lambda x: session.run(None, {"images": x})[0], settings


def openvino_model(path: str, threads: int, batch: int) -> tuple[Callable, dict]:
    """f32 forced: on a CPU with AMX, OpenVINO would otherwise compute in bf16. Settings read back.

    `path`: the ONNX file (fixed batch), or our export's directory (open batch, reshaped to `batch`).
    """
    import openvino

    core = openvino.Core()
    model = core.read_model(str(Path(path) / OPENVINO_XML) if Path(path).is_dir() else path)
    batch_dim, *image_dims = model.inputs[0].get_partial_shape()
    if batch_dim.is_dynamic:
        model.reshape([batch, *image_dims])
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, **OPENVINO_FLOAT32, "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    settings = {"openvino": openvino.__version__, "input_shape": list(compiled.inputs[0].get_shape()),
                **{key: str(compiled.get_property(key)) for key in
                   ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS")}}
    return lambda x: request.infer({0: x})[0].copy(), settings


def litert_interpreter(path: str, threads: int, batch: int) -> tuple[Callable, dict]:
    """Our export has an open batch (resized here); litert-torch's is fixed at `batch`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    source, = interpreter.get_input_details()
    if source["shape"][0] != batch:
        interpreter.resize_tensor_input(source["index"], [batch, *source["shape"][1:]])
    interpreter.allocate_tensors()
    source, = interpreter.get_input_details()
    target, = interpreter.get_output_details()

    def run(x):
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    return run, {"interpreter": "ai_edge_litert", "num_threads": threads, "input_shape": source["shape"].tolist()}


RUNTIMES = {ONNXRUNTIME: onnxruntime_session, OPENVINO: openvino_model, OPENVINO_EXPORT: openvino_model,
            TFLITE: litert_interpreter, LITERT_TORCH: litert_interpreter}


def time_runtime(job: dict) -> None:
    system = job["system"]
    runtime = RUNTIMES[system]
    settings = {}

    def make_run(batch, inputs):
        run, settings[batch] = runtime(export_file(job["workdir"], job["group"], system, batch), job["threads"], batch)
        x = np.ascontiguousarray(np.transpose(inputs, (0, 2, 3, 1)) if system in EXPORTS else inputs)
        return lambda: run(x)

    time_batches(job, make_run, settings)


if __name__ == "__main__":
    time_runtime(read_job())
