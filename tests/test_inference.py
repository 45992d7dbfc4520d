"""The fast inference path (`cvt_tf.inference_function`) against the PyTorch reference.

Its folds (BatchNorm into the depthwise kernel, scale into q, QuickGELU as silu) must keep parity,
follow weight changes where they are live, and leave training untouched.
"""

import numpy as np
import pytest
import torch

import cvt_tf
from converter.parity import parity_inputs, reference_outputs
from converter.steps import build_keras_model
from cvt_spec import normalize_spec
from tests.conftest import ported_pair, tiny_spec

CASES = {
    "dw_bn": tiny_spec(),
    "avg": tiny_spec(QKV_PROJ_METHOD="avg"),
    "linear_cls_everywhere": tiny_spec(QKV_PROJ_METHOD="linear", CLS_TOKEN=[True, True, True]),
    "mixed_no_bias": tiny_spec(QKV_PROJ_METHOD=["dw_bn", "avg", "dw_bn"], QKV_BIAS=[False, True, False]),
    "no_cls": tiny_spec(CLS_TOKEN=[False, False, False], MLP_RATIO=[1.0, 2.5, 3.0]),
}


def _logits(torch_model, inputs):
    return reference_outputs(torch_model, inputs)["logits"]


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "live"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_function_matches_reference(case, freeze):
    reference, model = ported_pair(CASES[case])
    inputs = parity_inputs(61, 75, batch=2, seed=3)
    infer = cvt_tf.inference_function(model, (2, 61, 75, 3), freeze=freeze)
    actual = infer(np.transpose(inputs, (0, 2, 3, 1))).numpy()
    np.testing.assert_allclose(actual, _logits(reference, inputs), atol=1e-4, rtol=0)


def _biases_on_matmul_rows(model, options, shape) -> int:
    """Bias adds fed straight by a matmul in the traced inference graph of `model` under `options`."""
    import tensorflow as tf

    graph = tf.function(lambda x: model(x, training=False, options=options)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph
    return sum(op.type in ("AddV2", "BiasAdd") and op.inputs[0].op.type == "MatMul" for op in graph.get_operations())


@pytest.mark.parametrize("frozen_weights", [True, False], ids=["frozen-folds", "live-folds"])
@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_biases_after_the_reshape_give_every_stage_output(case, streams, frozen_weights):
    """`dense_bias_before_reshape=False` (the OpenVINO export's graph) moves every token-wise bias, same outputs."""
    reference, model = ported_pair(CASES[case], seed=5)
    inputs = parity_inputs(61, 75, batch=1, seed=8)
    nhwc = np.transpose(inputs, (0, 2, 3, 1))
    before = cvt_tf.InferenceOptions(streams=streams, frozen_weights=frozen_weights)
    after = cvt_tf.InferenceOptions(streams=streams, frozen_weights=frozen_weights, dense_bias_before_reshape=False)
    expected, whole = reference_outputs(reference, inputs), model.forward_stages(nhwc, training=False, options=before)
    for name, value in model.forward_stages(nhwc, training=False, options=after).items():
        np.testing.assert_allclose(value, whole[name], atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(value, expected[name], atol=1e-4, rtol=0, err_msg=name)
    # Only the head's bias (on the pooled features) stays on a matmul's rows.
    assert _biases_on_matmul_rows(model, before, (1, 61, 75, 3)) > 1
    assert _biases_on_matmul_rows(model, after, (1, 61, 75, 3)) == 1


def test_inference_function_channels_first_and_any_batch():
    spec = normalize_spec(tiny_spec())
    reference, model = ported_pair(spec)
    twin = build_keras_model(spec, 10, "channels_first")
    twin.set_weights(model.get_weights())
    infer = cvt_tf.inference_function(twin, (None, 3, 64, 64))
    for batch in (1, 3):
        inputs = parity_inputs(64, 64, batch=batch, seed=batch)
        np.testing.assert_allclose(infer(inputs).numpy(), _logits(reference, inputs), atol=1e-4, rtol=0)


def _perturb_batch_norms(torch_model, keras_model, rng):
    """Gives both models the same new BatchNorm statistics and scales."""
    keras_bn = {v.path: v for v in keras_model.weights if "/bn/" in v.path}
    for name, module in torch_model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            path = "cvt/" + name.replace(".blocks.", "/block").replace(".", "/")
            for torch_name, keras_name in (("running_var", "moving_variance"), ("weight", "gamma")):
                value = rng.uniform(0.3, 3.0, module.num_features).astype(np.float32)
                getattr(module, torch_name).data = torch.from_numpy(value)
                keras_bn[f"{path}/{keras_name}"].assign(value)


def test_live_folds_follow_weight_changes_and_frozen_ones_are_snapshots():
    reference, model = ported_pair(tiny_spec())
    inputs = parity_inputs(64, 64, batch=2, seed=5)
    nhwc = np.transpose(inputs, (0, 2, 3, 1))
    frozen = cvt_tf.inference_function(model, (2, 64, 64, 3))
    live = cvt_tf.inference_function(model, (2, 64, 64, 3), freeze=False)
    before = _logits(reference, inputs)
    np.testing.assert_allclose(frozen(nhwc).numpy(), before, atol=1e-4, rtol=0)

    _perturb_batch_norms(reference, model, np.random.default_rng(0))
    after = _logits(reference, inputs)
    assert np.abs(after - before).max() > 1e-3  # the change is visible, 10x the tolerance
    np.testing.assert_allclose(live(nhwc).numpy(), after, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model(nhwc, training=False).numpy(), after, atol=1e-4, rtol=0)
    # A frozen function keeps the weights it was built with; a new one takes the new weights.
    np.testing.assert_allclose(frozen(nhwc).numpy(), before, atol=1e-4, rtol=0)
    rebuilt = cvt_tf.inference_function(model, (2, 64, 64, 3))
    np.testing.assert_allclose(rebuilt(nhwc).numpy(), after, atol=1e-4, rtol=0)


def test_training_mode_is_not_folded():
    """training=True normalizes with batch statistics, as torch's train mode does."""
    reference, model = ported_pair(tiny_spec())
    inputs = parity_inputs(64, 64, batch=4, seed=7)
    reference.train()
    with torch.no_grad():
        expected = reference(torch.from_numpy(inputs)).numpy()
    actual = model(np.transpose(inputs, (0, 2, 3, 1)), training=True).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
    folded = model(np.transpose(inputs, (0, 2, 3, 1)), training=False).numpy()
    assert np.abs(folded - expected).max() > 1e-3  # inference statistics differ from batch ones
