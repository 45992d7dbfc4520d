"""SavedModel, TFLite (LiteRT) and OpenVINO files of a Keras CvT, and running them back for parity figures.

TensorFlow's TFLiteConverter writes the flatbuffer (builtin ops only); the ai-edge-litert interpreter runs it.
OpenVINO's TensorFlow frontend reads the inference graph; its CPU plugin runs the IR, in float32.
"""

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cvt_spec import InputError
from cvt_spec.artifacts import OPENVINO_FLOAT32, OPENVINO_XML, QUANTIZATIONS
from cvt_tf.layers.options import DEFAULT_INFERENCE_STREAMS, InferenceOptions


def _signature(model, height, width):
    return [tf.TensorSpec((None, height, width, model.in_chans), tf.float32, name="images")]


def write_saved_model(model, path, height: int | None = None, width: int | None = None,
                      streams: int = DEFAULT_INFERENCE_STREAMS) -> None:
    """A SavedModel whose `serve` endpoint (also `serving_default`) maps NHWC float32 images to logits.

    Height and width stay open (any resolution) unless given; the batch always does. The graph runs
    in `streams` independent parts (`cvt_tf.InferenceOptions`).
    """
    options = InferenceOptions(streams=streams)

    def serve(images):
        return model(images, training=False, options=options)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=_signature(model, height, width))
    archive.write_out(str(path), verbose=False)


def tflite_flatbuffer(model, height: int, width: int, quantize: str = "none") -> bytes:
    """The TFLite model at a fixed resolution and open batch, as bytes.

    Args:
        quantize: `none` keeps float32; `dynamic` stores int8 weights (dynamic-range quantization,
            float activations), no calibration data needed.
    """
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    with tempfile.TemporaryDirectory(prefix="cvt-tflite-") as saved_model:
        # One stream: the interpreter runs one op at a time, with XNNPack's threads inside each op.
        write_saved_model(model, saved_model, height, width, streams=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def write_openvino(model, directory, height: int, width: int) -> None:
    """The OpenVINO IR (`model.xml` + float32 `model.bin`) at a fixed resolution and open batch, in `directory`.

    Converted by `openvino.convert_model` from the inference graph over the live variables (one stream),
    which OpenVINO's TensorFlow frontend reads without TensorFlow freezing them: OpenVINO folds BatchNorm
    and the attention scale into the weights itself, and fuses QuickGELU into a Swish. Against the frozen
    graph (measured): the same speed, half the conversion time, and cvt-w24's whole export in 33 s at
    5.0 GB peak RSS instead of 85 s at 15.5 GB. The linear layers add their bias after the reshape to
    tokens, where OpenVINO fuses it into the matmul with the activation. The weights stay float32
    (`save_model` would store float16).
    """
    import openvino

    options = InferenceOptions(streams=1, frozen_weights=False, dense_bias_before_reshape=False)
    call = tf.function(lambda images: model(images, training=False, options=options),
                       input_signature=_signature(model, height, width)).get_concrete_function()
    # Only the logits: over live variables, the graph still holds the shape reads Keras left unused,
    # which the frontend would otherwise turn into outputs of their own.
    converted = openvino.convert_model(call, output=[tensor.name for tensor in call.outputs])
    converted.outputs[0].get_tensor().set_names({"logits"})
    Path(directory).mkdir(exist_ok=True)
    openvino.save_model(converted, str(Path(directory) / OPENVINO_XML), compress_to_fp16=False)


def run_openvino(directory, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of an exported OpenVINO IR on a batch of NHWC images, in float32 on the CPU."""
    import openvino

    core = openvino.Core()
    ir = core.read_model(str(Path(directory) / OPENVINO_XML))
    ir.reshape([*images_nhwc.shape])
    request = core.compile_model(ir, "CPU", OPENVINO_FLOAT32).create_infer_request()
    return request.infer({0: np.ascontiguousarray(images_nhwc, np.float32)})[0].copy()


def run_tflite(path, images_nhwc: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Logits of a `.tflite` file on a batch of NHWC images (the batch axis is resized to fit)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    (source,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(source["index"], images_nhwc.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], np.ascontiguousarray(images_nhwc, np.float32))
    interpreter.invoke()
    (target,) = interpreter.get_output_details()
    return interpreter.get_tensor(target["index"])


def run_saved_model(path, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of a SavedModel written by `write_saved_model`, loaded back from disk."""
    loaded = tf.saved_model.load(str(path))
    return loaded.serve(tf.constant(images_nhwc, tf.float32)).numpy()


def _top_k(logits, k):
    return np.argsort(-logits, axis=-1, kind="stable")[:, :k]


def logits_agreement(actual, expected) -> dict:
    """Max abs difference and top-1 / top-5 agreement of two (batch, classes) logits arrays.

    Top-5 agreement counts the samples whose five highest classes are the same set in both.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"exported logits have shape {actual.shape}, Keras gives {expected.shape}")
    k = min(5, expected.shape[-1])
    same_top_k = [set(a) == set(e) for a, e in zip(_top_k(actual, k), _top_k(expected, k), strict=True)]
    return {
        "samples": int(expected.shape[0]),
        "logits_max_abs": float(np.max(np.abs(actual - expected))),
        "top1_agreement": float(np.mean(_top_k(actual, 1)[:, 0] == _top_k(expected, 1)[:, 0])),
        "top5_agreement": float(np.mean(same_top_k)),
    }
