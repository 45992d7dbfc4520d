"""Training the Keras CvT: fit, BatchNorm statistics, dropout and stochastic depth, mixed precision.

BatchNorm in training mode is checked against the PyTorch reference in train mode.
"""

import keras
import numpy as np
import pytest
import torch

from converter.mapping import mapping_rows
from cvt_spec import normalize_spec
from cvt_tf import CvT
from cvt_tf.layers import DropPath
from tests.conftest import keras_twin, ported_pair, tiny_spec

DROPPY_SPEC = tiny_spec(DROP_RATE=[0.2, 0.2, 0.2], ATTN_DROP_RATE=[0.2, 0.2, 0.2], DROP_PATH_RATE=[0.0, 0.3, 0.3],
                        DEPTH=[1, 2, 3])


def _images(batch=4, size=(64, 64), seed=3):
    return np.random.default_rng(seed).normal(size=(batch, *size, 3)).astype(np.float32)


def _moving_statistics(model):
    return {v.path: np.array(v) for v in model.non_trainable_weights if "moving" in v.path}


def _toy_task(samples=32, size=32, seed=0):
    """Noise images whose class (0, 1, 2) is the channel made one unit brighter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, samples)
    images = rng.normal(size=(samples, size, size, 3)).astype(np.float32)
    images[np.arange(samples), :, :, labels] += 1.0
    return images, labels


def test_eval_calls_are_deterministic_and_training_calls_are_not():
    model = CvT(spec=DROPPY_SPEC, num_classes=10, input_shape=(64, 64, 3))
    x = _images()
    first, second = np.asarray(model(x, training=False)), np.asarray(model(x))
    np.testing.assert_array_equal(first, second)
    # predict runs in streams (smaller matmuls, other rounding); dropout would move it by far more.
    np.testing.assert_allclose(model.predict(x, verbose=0), first, atol=1e-6, rtol=0)
    trained_a, trained_b = np.asarray(model(x, training=True)), np.asarray(model(x, training=True))
    assert np.abs(trained_a - trained_b).max() > 1e-3
    assert np.abs(trained_a - first).max() > 1e-3


def test_droppath_drops_whole_samples_and_rescales_the_rest():
    layer = DropPath(0.25, seed=7)
    x = np.ones((400, 5, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(400, -1)
    assert set(np.unique(per_sample)) == {0.0, np.float32(1 / 0.75)}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()  # a sample is kept or dropped whole
    kept = (per_sample[:, 0] > 0).mean()
    assert 0.68 < kept < 0.82  # keep probability 0.75; 400 samples give a standard deviation of 0.022


def test_training_forward_and_batchnorm_update_match_the_reference_in_train_mode():
    spec = tiny_spec()
    reference, model = ported_pair(spec, num_classes=10)
    x = _images(batch=2)
    before = _moving_statistics(model)
    inputs = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: inputs.__setitem__(name, args[0].shape))
        for name, module in reference.named_modules() if isinstance(module, torch.nn.BatchNorm2d)
    ]
    reference.train()
    with torch.no_grad():
        expected_logits = reference(torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))).numpy()
    for hook in hooks:
        hook.remove()
    logits = np.asarray(model(x, training=True))
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)  # batch statistics normalize both

    after = _moving_statistics(model)
    state = reference.state_dict()
    rows = {row.keras_path: row.torch_key for row in mapping_rows(normalize_spec(spec), 10)}
    checked = 0
    for path, value in after.items():
        torch_key = rows[path.removeprefix("cvt/")]
        torch_value = state[torch_key].numpy()
        if path.endswith("moving_variance"):
            # torch updates running_var with the unbiased batch variance, Keras with the biased one:
            # the batch term differs by n / (n - 1), n = batch * height * width at that BatchNorm.
            shape = inputs[torch_key.rsplit(".", 1)[0]]
            n = shape[0] * shape[2] * shape[3]
            torch_value = 0.9 * before[path] + (torch_value - 0.9 * before[path]) * (n - 1) / n
        np.testing.assert_allclose(value, torch_value, atol=1e-5, err_msg=path)
        assert np.abs(value - before[path]).max() > 1e-4, path
        checked += 1
    assert checked == 2 * 3 * 4  # mean and variance of q/k/v BatchNorms in 4 blocks


def test_inference_leaves_batchnorm_statistics_and_fit_updates_them():
    _, model = ported_pair(tiny_spec(), num_classes=3)
    model = keras_twin(model, classifier_activation="softmax")
    images, labels = _toy_task(samples=8)
    before = _moving_statistics(model)
    model(images, training=False)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    model.evaluate(images, labels, verbose=0)
    for path, value in _moving_statistics(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    history = model.fit(images, labels, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "sparse_top_k_categorical_accuracy"}
    after = _moving_statistics(model)
    assert all(np.abs(after[path] - before[path]).max() > 1e-4 for path in before)


def test_loss_decreases_on_a_learnable_toy_task():
    keras.utils.set_random_seed(0)
    model = CvT(spec=tiny_spec(), num_classes=3, classifier_activation="softmax", input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images, labels = _toy_task()
    loss_before, _ = model.evaluate(images, labels, verbose=0)
    model.fit(images, labels, batch_size=8, epochs=3, verbose=0)
    loss_after, accuracy_after = model.evaluate(images, labels, verbose=0)
    assert loss_after < 0.75 * loss_before, (loss_before, loss_after)
    assert accuracy_after > 0.5  # chance is 1/3


@pytest.fixture
def set_policy():
    """keras.mixed_precision.set_global_policy, with the previous policy restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


# Largest |mixed - float32| on the logits, as a fraction of the largest |float32 logit|.
# Measured on the tiny SPEC's synthetic weights: 3.1e-3 (bfloat16), 5.7e-4 (float16).
MIXED_TOLERANCE = {"mixed_bfloat16": 2e-2, "mixed_float16": 4e-3}


@pytest.mark.parametrize("policy", sorted(MIXED_TOLERANCE))
def test_mixed_precision_builds_trains_and_infers_close_to_float32(set_policy, policy):
    _, float32_model = ported_pair(tiny_spec(), num_classes=10)
    x = _images()
    float32_logits = np.asarray(float32_model(x))
    set_policy(policy)
    model = keras_twin(float32_model)
    half = policy.removeprefix("mixed_")
    assert model.stages[0].blocks[0].attn.proj_q.compute_dtype == half
    assert all(v.dtype == "float32" for v in model.weights)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.LayerNormalization)]
    assert len(norms) == 3 + 2 * 4 + 1 and all(layer.compute_dtype == "float32" for layer in norms)
    assert model.head.compute_dtype == "float32"

    logits = model(x)
    assert logits.dtype == "float32"
    difference = np.abs(np.asarray(logits) - float32_logits).max()
    assert difference <= MIXED_TOLERANCE[policy] * np.abs(float32_logits).max(), difference

    images, labels = _toy_task(samples=8, size=32)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    before = [np.array(v) for v in model.trainable_weights]
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [np.array(v) for v in model.trainable_weights]
    assert all(np.isfinite(value).all() for value in after)
    # 101 of 117 change, as in float32: the k biases get no gradient (softmax ignores a shift shared by all
    # keys), nor does the last block's q projection (only its cls token reaches the head), and two SGD
    # steps are below float32 resolution on some LayerNorm and BatchNorm scales near 1.
    changed = [np.abs(value - b).max() > 0 for value, b in zip(after, before, strict=True)]
    assert sum(changed) >= 0.8 * len(changed), sum(changed)
    assert all(np.abs(value - b).max() > 0 for value, b in zip(after[-2:], before[-2:], strict=True))  # the head
    predictions = model.predict(x, verbose=0)
    assert predictions.dtype == np.float32 and np.isfinite(predictions).all()


@pytest.mark.parametrize("policy", sorted(MIXED_TOLERANCE))
def test_the_model_policy_reaches_every_sublayer(policy):
    """`CvT(dtype=...)` alone (no global policy): every layer computes in it but LayerNorm and the head."""
    model = CvT(spec=tiny_spec(), num_classes=10, dtype=policy)
    model.build((None, 48, 48, 3))
    kept_float32 = [layer for layer in model._flatten_layers(include_self=False)
                    if isinstance(layer, keras.layers.LayerNormalization) or layer is model.head]
    others = [layer for layer in model._flatten_layers(include_self=False) if layer not in kept_float32]
    assert len(kept_float32) == 3 + 2 * 4 + 1 + 1 and len(others) > 60
    assert all(layer.dtype_policy.name == "float32" for layer in kept_float32)
    assert {layer.dtype_policy.name for layer in others} == {policy}, [
        layer.path for layer in others if layer.dtype_policy.name != policy]
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing global was set
    logits = model(_images())
    assert logits.dtype == "float32"
