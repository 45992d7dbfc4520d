"""The same artifact and the same numbers under Keras' JAX and PyTorch backends, without TensorFlow.

Each check runs `tests/backend_run.py` in a subprocess under KERAS_BACKEND (a process has one backend).
"""

import json
import os
import subprocess
import sys

import pytest

from converter.pipeline import Conversion, convert
from cvt_spec import normalize_spec, variant_spec
from tests.conftest import REPO, tiny_spec

BACKENDS = ["jax", "torch"]


def run_under(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "tests.backend_run", *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["backend"] == backend and not figures["tensorflow_imported"], figures
    return figures


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_spec_option_matches_the_reference(backend):
    figures = run_under(backend, "parity")["parity"]
    # Every case: each stage, the features, the logits and the channels_first logits (a single stage: 4).
    assert len(figures) >= 13 and all(len(outputs) >= 4 for outputs in figures.values())
    worst = max(value for outputs in figures.values() for value in outputs.values())
    assert worst <= 1e-4, figures


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_training_run_learns(backend):
    figures = run_under(backend, "train")
    assert figures["loss"][-1] < figures["loss"][0] and all(loss == loss for loss in figures["loss"])
    # As under TensorFlow (tests/test_keras_model_training.py): the k biases get no gradient (softmax ignores
    # a shift shared by all keys), nor the last block's q projection (only its cls token reaches the head),
    # and some scales near 1 move by less than float32 resolves: 16 of 170 stay put.
    assert figures["weights"] > 100 and len(figures["unmoved"]) <= 0.15 * figures["weights"], figures["unmoved"]
    assert not [path for path in figures["unmoved"] if "/mlp/" in path or "/head/" in path]


def _artifact(directory, spec, resolution, name):
    job = Conversion(spec=normalize_spec(spec), num_classes=10 if name == "tiny" else 1000, resolution=resolution,
                     name=name, out_dir=directory, seed=3)
    return convert(job, progress=lambda _: None)[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_artifact_written_under_tensorflow_loads_and_predicts(backend, tmp_path):
    weights = _artifact(tmp_path, tiny_spec(), (56, 56), "tiny")
    figures = run_under(backend, "artifact", weights)
    assert figures["call"] <= 1e-4 and figures["predict"] <= 1e-4, figures
    assert figures["inference_function"].startswith(
        f"cvt_tf.inference_function needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs "
        f"Keras on {backend}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_cvt13_full_size_under_the_backend(backend, tmp_path):
    weights = _artifact(tmp_path, variant_spec("cvt-13"), (224, 224), "cvt-13")
    figures = run_under(backend, "artifact", weights)
    assert figures["call"] <= 1e-4 and figures["predict"] <= 1e-4, figures
    print(backend, figures)
