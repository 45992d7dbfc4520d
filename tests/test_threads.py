"""TensorFlow's threads: the graph of a CvT warns once when it runs on TensorFlow's defaults, names the
call that fixes it, and stays quiet once that call was made; open-batch graphs compute no shapes."""

import subprocess
import sys

import cvt_tf
from cvt_tf.tf_formats import tflite_flatbuffer
from tests.conftest import REPO, TINY_SPEC

TRACE_THREE_WAYS = """
import os, warnings
import numpy as np
import tensorflow as tf
import cvt_tf
if {set_threads}:
    cvt_tf.set_cpu_threads(2)
warnings.simplefilter("default")
model = cvt_tf.CvT(spec={spec!r}, num_classes=4, input_shape=(48, 48, 3))
images = np.zeros((2, 48, 48, 3), np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    model.predict(images, verbose=0)
    tf.function(lambda x: model(x, training=False))(images)
    cvt_tf.inference_function(model, (2, 48, 48, 3))(images)
print("WARNINGS", len(caught))
for warning in caught:
    print(warning.category.__name__, warning.message)
"""


def _warnings(set_threads: bool) -> list[str]:
    script = TRACE_THREE_WAYS.format(set_threads=set_threads, spec=TINY_SPEC)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("WARNINGS"))
    return [line for line in lines[start + 1:] if line.startswith("ThreadingWarning")]


def test_default_threads_warn_once_naming_the_call():
    # model.predict, a tf.function over model(x) and inference_function: three traces, one warning.
    warnings = _warnings(set_threads=False)
    assert len(warnings) == 1, warnings
    assert "cvt_tf.set_cpu_threads(os.cpu_count()) right after importing cvt_tf" in warnings[0]


def test_no_warning_after_set_cpu_threads():
    assert _warnings(set_threads=True) == []


def test_the_open_batch_tflite_export_computes_no_shapes(tmp_path):
    """Shape ops split the XNNPack delegate into pieces (cvt-13 @ 224 had 185 of them, in 82 pieces);
    at a fixed resolution only the cls token's broadcast to the batch needs one."""
    from ai_edge_litert.interpreter import Interpreter

    model = cvt_tf.CvT(spec=TINY_SPEC, num_classes=4, input_shape=(48, 48, 3))
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tflite_flatbuffer(model, 48, 48))
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops.count("SHAPE") <= 1, ops
    assert "FULLY_CONNECTED" in ops or "DELEGATE" in ops  # a real graph was read
