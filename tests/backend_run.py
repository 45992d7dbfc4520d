"""Run under KERAS_BACKEND=jax or torch by tests/test_backends.py: parity, training and artifacts there.

    python -m tests.backend_run parity|train|artifact [ARTIFACT]

Prints one JSON line: the figures the test asserts on, and which heavy modules the process imported.
"""

import json
import sys

import keras
import numpy as np

from converter.parity import ParityRun, check_parity, parity_inputs, reference_outputs
from converter.steps import build_keras_model
from converter.synthetic import synthetic_state_dict
from cvt_spec import normalize_spec
from cvt_spec.artifacts import read_manifest
from official_ref import load_reference
from tests.conftest import ported_pair, tiny_spec
from tests.test_parity import CASES


def parity() -> dict:
    """Every SPEC option of tests/test_parity.py: max abs diff of every output, channels_last and first."""
    worst = {}
    for case, spec in CASES.items():
        reference, model = ported_pair(spec)
        twin = build_keras_model(normalize_spec(spec), 10, "channels_first")
        twin.set_weights(model.get_weights())
        report = check_parity(reference, model, ParityRun((64, 64)), channels_first_model=twin)
        worst[case] = {d.output: d.max_abs for d in report.diffs}
    return {"parity": worst}


def train() -> dict:
    """Three epochs of fit on a toy batch: the losses, and the weights that did not move."""
    _, model = ported_pair(tiny_spec())
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 48, 48, 3)).astype(np.float32)
    labels = np.arange(8) % 10
    before = {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.weights}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    history = model.fit(images, labels, batch_size=4, epochs=3, verbose=0, shuffle=False)
    unmoved = [v.path for v in model.weights if np.array_equal(keras.ops.convert_to_numpy(v), before[v.path])]
    return {"loss": history.history["loss"], "weights": len(before), "unmoved": unmoved}


def artifact(path: str) -> dict:
    """An artifact written under TensorFlow, loaded here: its logits against the reference's, and predict's."""
    import cvt_tf

    model = cvt_tf.load_artifact(path)
    manifest = read_manifest(path)
    spec, num_classes, seed = manifest["spec"], manifest["num_classes"], manifest["source"]["seed"]
    reference = load_reference(spec, num_classes, synthetic_state_dict(spec, num_classes, seed))
    inputs = parity_inputs(*manifest["resolution"], batch=2, seed=5)
    expected = reference_outputs(reference, inputs)["logits"]
    nhwc = np.transpose(inputs, (0, 2, 3, 1))
    eager = np.asarray(keras.ops.convert_to_numpy(model(nhwc, training=False)))
    predicted = model.predict(nhwc, batch_size=2, verbose=0)
    try:
        cvt_tf.inference_function  # noqa: B018  (TensorFlow only: refused, naming the backend)
        refusal = None
    except cvt_tf.BackendError as error:
        refusal = str(error)
    return {"call": float(np.max(np.abs(eager - expected))), "predict": float(np.max(np.abs(predicted - expected))),
            "inference_function": refusal}


if __name__ == "__main__":
    task = sys.argv[1]
    result = {"parity": parity, "train": train}[task]() if task != "artifact" else artifact(sys.argv[2])
    result.update(backend=keras.backend.backend(), tensorflow_imported="tensorflow" in sys.modules)
    print(json.dumps(result))
