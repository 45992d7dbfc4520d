"""Compiling and shipping the Keras CvT: tf.function, XLA, SavedModel export, any input size.

Compiled and exported outputs are compared with eager Keras; resized inputs with the PyTorch reference.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from converter.parity import reference_outputs
from cvt_tf import CvT
from tests.conftest import keras_twin, ported_pair, tiny_spec

COMPILED_ATOL = 1e-5


def _images(size, batch=2, seed=4):
    return np.random.default_rng(seed).normal(size=(batch, *size, 3)).astype(np.float32)


def _reference_logits(reference, x_nhwc):
    return reference_outputs(reference, np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2))))["logits"]


def _max_abs(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize(("method", "size"), [("dw_bn", (97, 113)), ("avg", (97, 113)), ("linear", (64, 64))])
def test_tf_function_and_xla_equal_eager(method, size):
    _, model = ported_pair(tiny_spec(QKV_PROJ_METHOD=method), num_classes=10)
    x = _images(size)
    eager = np.asarray(model(x))
    graph = np.asarray(tf.function(model)(x))
    xla = np.asarray(tf.function(model, jit_compile=True)(x))
    assert _max_abs(graph, eager) <= COMPILED_ATOL
    assert _max_abs(xla, eager) <= COMPILED_ATOL
    assert np.abs(eager).max() > 0.1  # the logits are not flat


def test_compile_with_jit_compile_predicts_like_eager():
    _, model = ported_pair(tiny_spec(), num_classes=10)
    model = keras_twin(model, classifier_activation="softmax")
    model.compile(jit_compile=True)
    x = _images((64, 64), batch=4)
    assert _max_abs(model.predict(x, batch_size=4, verbose=0), model(x)) <= COMPILED_ATOL


def test_predict_on_arrays_equals_keras_predict_batch_by_batch(capsys):
    """In-memory images skip Keras' per-call tf.data pipeline; the logits, batches and progress bar stay."""
    reference, model = ported_pair(tiny_spec(), num_classes=10)
    x = _images((48, 48), batch=5)
    ours = model.predict(x, batch_size=2, verbose=1)
    assert "3/3" in capsys.readouterr().out  # three batches: 2, 2 and the last 1
    keras_predict = keras.Model.predict(model, x, batch_size=2, verbose=0)  # Keras' own, through tf.data
    assert ours.shape == (5, 10) and _max_abs(ours, keras_predict) <= COMPILED_ATOL
    assert _max_abs(ours, _reference_logits(reference, x)) <= 1e-4
    assert _max_abs(model.predict(tf.constant(x), verbose=0), ours) <= COMPILED_ATOL  # a tensor, one batch
    assert capsys.readouterr().out == ""
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(3)  # not in memory: Keras' path
    assert _max_abs(model.predict(dataset, verbose=0), ours) <= COMPILED_ATOL


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(live model built for any size, its SavedModel directory)."""
    _, model = ported_pair(tiny_spec(QKV_PROJ_METHOD=["dw_bn", "avg", "dw_bn"]), num_classes=10)
    model = keras_twin(model, input_shape=(None, None, 3))
    directory = tmp_path_factory.mktemp("saved") / "cvt"
    model.export(directory, verbose=False)
    return model, directory


def test_saved_model_serves_the_live_logits_at_any_size(exported):
    model, directory = exported
    served = tf.saved_model.load(str(directory))
    for size in [(64, 64), (97, 113), (33, 71)]:
        x = _images(size)
        assert _max_abs(served.serve(tf.constant(x)), model(x)) <= COMPILED_ATOL


def test_saved_model_loads_without_cvt_tf_or_keras(exported, tmp_path):
    model, directory = exported
    x = _images((61, 75))
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "served = tf.saved_model.load(sys.argv[1])\n"
        "np.save(sys.argv[3], served.serve(tf.constant(np.load(sys.argv[2]))).numpy())\n"
        "assert 'cvt_tf' not in sys.modules and 'torch' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(directory), str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _max_abs(np.load(tmp_path / "out.npy"), model(x)) <= COMPILED_ATOL


@pytest.mark.parametrize("method", ["dw_bn", "avg"])
def test_a_model_built_for_any_size_equals_fixed_size_models(method):
    reference, base = ported_pair(tiny_spec(QKV_PROJ_METHOD=method), num_classes=10)
    dynamic = keras_twin(base, input_shape=(None, None, 3))
    serve_any = tf.function(dynamic, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for size in [(224, 224), (384, 384), (97, 113)]:
        x = _images(size, batch=1)
        fixed = keras_twin(base, input_shape=(*size, 3))
        serve_fixed = tf.function(fixed, input_signature=[tf.TensorSpec((None, *size, 3), tf.float32)])
        expected = np.asarray(serve_fixed(x))
        assert _max_abs(serve_any(x), expected) <= COMPILED_ATOL, size
        assert _max_abs(expected, _reference_logits(reference, x)) <= 1e-4, size


def test_fine_tuning_a_model_built_at_224_at_384(tmp_path):
    reference, base = ported_pair(tiny_spec(), num_classes=10)
    base.save_weights(tmp_path / "at224.weights.h5")
    model = CvT(spec=tiny_spec(), num_classes=10, input_shape=(224, 224, 3))
    model.load_weights(tmp_path / "at224.weights.h5")
    x = _images((384, 384), batch=2)
    assert _max_abs(model(x), _reference_logits(reference, x)) <= 1e-4

    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    head_before = np.array(model.head.kernel)
    history = model.fit(x, np.array([1, 7]), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(np.array(model.head.kernel) - head_before).max() > 0
    assert model(_images((224, 224), batch=1)).shape == (1, 10)


@pytest.mark.slow
def test_xla_training_step_runs():
    _, model = ported_pair(tiny_spec(DROP_PATH_RATE=[0.1, 0.1, 0.1], DROP_RATE=[0.1, 0.1, 0.1]), num_classes=3)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    before = np.array(model.head.kernel)
    history = model.fit(_images((32, 32), batch=4), np.array([0, 1, 2, 0]), batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(np.array(model.head.kernel) - before).max() > 0


@pytest.mark.slow
def test_cvt13_full_size_compiled_exported_resized_and_mixed(tmp_path):
    """The real variant, synthetic weights: every way of running it against eager float32 Keras."""
    from cvt_spec import variant_spec
    from tests.test_keras_model_training import MIXED_TOLERANCE

    reference, base = ported_pair(variant_spec("cvt-13"), num_classes=1000)
    dynamic = keras_twin(base, input_shape=(None, None, 3))
    serve_any = tf.function(dynamic, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    dynamic.export(tmp_path / "cvt13", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "cvt13"))
    rows = []
    for size in [(224, 224), (384, 384), (225, 227)]:
        x = _images(size)
        eager = np.asarray(dynamic(x))
        fixed = keras_twin(base, input_shape=(*size, 3))
        serve_fixed = tf.function(fixed, input_signature=[tf.TensorSpec((None, *size, 3), tf.float32)])
        figures = {
            "eager vs PyTorch reference": _max_abs(eager, _reference_logits(reference, x)),
            "tf.function any size vs eager": _max_abs(serve_any(x), eager),
            "tf.function fixed size vs any size": _max_abs(serve_fixed(x), serve_any(x)),
            "XLA vs eager": _max_abs(tf.function(dynamic, jit_compile=True)(x), eager),
            "SavedModel vs eager": _max_abs(served.serve(tf.constant(x)), eager),
        }
        for name, value in figures.items():
            assert value <= (1e-4 if "PyTorch" in name else COMPILED_ATOL), (size, name, value)
        for policy, tolerance in sorted(MIXED_TOLERANCE.items()):
            keras.mixed_precision.set_global_policy(policy)
            try:
                mixed = keras_twin(base)(x)
            finally:
                keras.mixed_precision.set_global_policy("float32")
            assert mixed.dtype == "float32"
            figures[f"{policy} vs float32"] = value = _max_abs(mixed, eager)
            assert value <= tolerance * np.abs(eager).max(), (size, policy, value)
        rows += [f"{size[0]}x{size[1]}  {name:<36}{value:.3e}" for name, value in figures.items()]
    print(f"cvt-13, synthetic weights, max |logit| {np.abs(eager).max():.2f}", *rows, sep="\n")
