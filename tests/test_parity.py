"""Parity of the Keras port with the PyTorch reference for every SPEC option.

Each case converts a seeded synthetic checkpoint and compares every stage, the features and
the logits (channels_last and channels_first) at 1e-4.
"""

import itertools

import numpy as np
import pytest
import torch

from tests.conftest import assert_parity, ported_pair, tiny_spec

CASES = {
    "dw_bn": tiny_spec(),
    "avg": tiny_spec(QKV_PROJ_METHOD="avg"),
    "linear": tiny_spec(QKV_PROJ_METHOD="linear"),
    "mixed_methods": tiny_spec(QKV_PROJ_METHOD=["linear", "avg", "dw_bn"]),
    "cls_every_stage": tiny_spec(CLS_TOKEN=[True, True, True]),
    "cls_no_stage": tiny_spec(CLS_TOKEN=[False, False, False]),
    "cls_middle_only_avg": tiny_spec(CLS_TOKEN=[False, True, False], QKV_PROJ_METHOD="avg"),
    "no_qkv_bias": tiny_spec(QKV_BIAS=[False, True, False]),
    "per_stage_mlp_ratio": tiny_spec(MLP_RATIO=[1.0, 2.5, 3.0]),
    "deeper": tiny_spec(DEPTH=[2, 2, 3]),
    "even_kernels_wide_padding": tiny_spec(
        PATCH_SIZE=[4, 2, 5], PATCH_STRIDE=[3, 2, 1], PATCH_PADDING=[3, 2, 2],
        KERNEL_QKV=[5, 3, 5], PADDING_Q=[2, 1, 2], PADDING_KV=[0, 2, 1], STRIDE_KV=[3, 1, 2],
    ),
    "avg_even_kernel_ceil_overhang": tiny_spec(
        QKV_PROJ_METHOD="avg", KERNEL_QKV=[2, 4, 3], PADDING_KV=[1, 2, 0], STRIDE_KV=[3, 3, 2],
    ),
    "single_stage": {
        **{k: v[:1] for k, v in tiny_spec().items() if isinstance(v, list)},
        "NUM_STAGES": 1, "CLS_TOKEN": [True],
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_option_parity(case):
    assert_parity(CASES[case])


@pytest.mark.parametrize(("size", "batch"), [((64, 64), 1), ((97, 113), 2), ((48, 48), 1), ((33, 71), 1)])
@pytest.mark.parametrize("method", ["dw_bn", "avg"])
def test_odd_and_non_square_sizes(size, batch, method):
    assert_parity(tiny_spec(QKV_PROJ_METHOD=method), size=size, batch=batch)


@pytest.mark.parametrize("num_classes", [0, 1, 10])
def test_head_sizes(num_classes):
    report = assert_parity(tiny_spec(), num_classes=num_classes, batch=1)
    final = {d.output: d.shape for d in report.diffs}
    assert final["features"] == (1, 48)
    assert ("logits" in final) == (num_classes > 0)


def test_batch_one_keeps_its_axis_in_both_models():
    reference, keras_model = ported_pair(tiny_spec(), num_classes=10)
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        assert tuple(reference(torch.from_numpy(x)).shape) == (1, 10)
    assert tuple(keras_model(np.transpose(x, (0, 2, 3, 1))).shape) == (1, 10)


def test_logits_are_not_flat():
    """A mapping bug must be visible: the synthetic logits spread widely across classes."""
    report = assert_parity(tiny_spec(), num_classes=10)
    reference, _ = ported_pair(tiny_spec(), num_classes=10)
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        logits = reference(torch.from_numpy(x)).numpy()
    assert logits.std(axis=1).min() > 0.1
    assert report.worst.max_abs < 1e-4


@pytest.mark.parametrize(
    ("n", "kernel", "stride", "padding"),
    [
        (n, k, s, p)
        for n, k, s in itertools.product([1, 2, 5, 7, 12, 13], [1, 2, 3, 4], [1, 2, 3])
        for p in range(k // 2 + 1)
        if n + 2 * p >= k  # torch refuses a kernel larger than the padded input
    ],
)
def test_torch_avg_pool_semantics(n, kernel, stride, padding):
    """TorchAvgPool2D equals torch AvgPool2d(ceil_mode=True, count_include_pad=True)."""
    from cvt_tf.layers import TorchAvgPool2D

    x = np.random.default_rng(n * 100 + kernel).normal(size=(2, 3, n, n + 1)).astype(np.float32)
    pool = torch.nn.AvgPool2d(kernel, stride=stride, padding=padding, ceil_mode=True)
    expected = pool(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy()
    actual = np.asarray(TorchAvgPool2D(kernel, stride, padding)(np.transpose(x, (0, 2, 3, 1))))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_avg_pools_a_grid_of_12_to_7():
    from cvt_tf.layers import TorchAvgPool2D

    x = np.ones((1, 12, 12, 1), np.float32)
    assert tuple(TorchAvgPool2D(3, 2, 1)(x).shape) == (1, 7, 7, 1)
