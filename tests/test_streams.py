"""Inference in independent streams (`InferenceOptions(streams=...)`): same logits, really split.

A batch of at least `streams` images runs as `streams` batch slices; a smaller batch runs each
block on `streams` slices of its token rows. Both against the PyTorch reference.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import cvt_tf
from converter.parity import parity_inputs, reference_outputs
from cvt_tf.layers import Block, InferenceOptions
from cvt_tf.model import CvT
from tests.conftest import REPO, ported_pair, tiny_spec

CASES = {
    "cls_last_stage": tiny_spec(),
    "no_cls_odd_rows": tiny_spec(CLS_TOKEN=[False, False, False]),
    "avg_cls_everywhere": tiny_spec(QKV_PROJ_METHOD="avg", CLS_TOKEN=[True, True, True]),
    "linear_no_bias": tiny_spec(QKV_PROJ_METHOD=["dw_bn", "linear", "dw_bn"], QKV_BIAS=[False, True, False]),
}


@pytest.fixture
def streams_seen(monkeypatch):
    """Records the row counts of each block run in slices, and the batch of each forward pass."""
    seen = {"row_slices": [], "batches": []}
    in_parts, forward = Block.call_in_parts, CvT.forward_stages

    def spy_in_parts(self, parts, height, width, options):
        seen["row_slices"].append([part.shape[1] for part in parts])
        return in_parts(self, parts, height, width, options)

    def spy_forward(self, inputs, training=None, options=None):
        seen["batches"].append(inputs.shape[0])
        return forward(self, inputs, training=training, options=options)

    monkeypatch.setattr(Block, "call_in_parts", spy_in_parts)
    monkeypatch.setattr(CvT, "forward_stages", spy_forward)
    return seen


def _nhwc(inputs):
    return np.transpose(inputs, (0, 2, 3, 1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_slices_give_every_stage_output_of_whole_rows(case, streams_seen):
    reference, model = ported_pair(CASES[case], seed=4)
    inputs = parity_inputs(61, 75, batch=1, seed=6)
    expected = reference_outputs(reference, inputs)
    whole = model.forward_stages(_nhwc(inputs), training=False)

    sliced = model.forward_stages(_nhwc(inputs), training=False, options=InferenceOptions(streams=2))

    for name, value in sliced.items():
        # The synthetic attention is soft, so a misplaced query row moves a stage by ~1e-4 only:
        # the slices are held to the whole computation at 1e-5 as well.
        np.testing.assert_allclose(value, whole[name], atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(value, expected[name], atol=1e-4, rtol=0, err_msg=name)
    # Every block ran on two row slices that cover its tokens (15x19 at stage 0).
    slices = streams_seen["row_slices"]
    assert len(slices) == 4 and all(len(rows) == 2 for rows in slices)
    assert sum(slices[0]) == 15 * 19 + (1 if CASES[case]["CLS_TOKEN"][0] else 0)


@pytest.mark.parametrize("streams", [2, 3])
@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "live"])
def test_inference_function_at_batch_one_matches_reference(freeze, streams, streams_seen):
    reference, model = ported_pair(tiny_spec(), seed=4)
    inputs = parity_inputs(61, 75, batch=1, seed=6)
    infer = cvt_tf.inference_function(model, (1, 61, 75, 3), freeze=freeze, streams=streams)

    actual = infer(_nhwc(inputs)).numpy()

    np.testing.assert_allclose(actual, reference_outputs(reference, inputs)["logits"], atol=1e-4, rtol=0)
    assert {len(rows) for rows in streams_seen["row_slices"]} == {streams}


@pytest.mark.parametrize("streams", [2, 3])
def test_a_batch_runs_in_batch_slices_and_matches_reference(streams, streams_seen):
    reference, model = ported_pair(tiny_spec(), seed=1)
    inputs = parity_inputs(64, 56, batch=5, seed=2)
    infer = cvt_tf.inference_function(model, (5, 64, 56, 3), streams=streams)

    actual = infer(_nhwc(inputs)).numpy()

    np.testing.assert_allclose(actual, reference_outputs(reference, inputs)["logits"], atol=1e-4, rtol=0)
    expected_slices = {2: [2, 3], 3: [1, 2, 2]}[streams]
    assert streams_seen["batches"] == expected_slices and streams_seen["row_slices"] == []


def test_an_open_batch_runs_in_row_slices(streams_seen):
    reference, model = ported_pair(tiny_spec(), seed=3)
    infer = cvt_tf.inference_function(model, (None, 48, 48, 3), streams=2)
    for batch in (1, 3):
        inputs = parity_inputs(48, 48, batch=batch, seed=batch)
        expected = reference_outputs(reference, inputs)["logits"]
        np.testing.assert_allclose(infer(_nhwc(inputs)).numpy(), expected, atol=1e-4, rtol=0)
    assert streams_seen["row_slices"] and streams_seen["batches"] == [None]


def test_predict_runs_in_streams_and_training_does_not(streams_seen):
    reference, model = ported_pair(tiny_spec(), seed=5)
    inputs = parity_inputs(48, 48, batch=3, seed=1)

    predicted = model.predict(_nhwc(inputs), batch_size=3, verbose=0)

    np.testing.assert_allclose(predicted, reference_outputs(reference, inputs)["logits"], atol=1e-4, rtol=0)
    assert streams_seen["row_slices"] or len(streams_seen["batches"]) > 1
    streams_seen["row_slices"].clear()
    streams_seen["batches"].clear()
    model(_nhwc(inputs), training=True, options=InferenceOptions(streams=2))
    assert streams_seen == {"row_slices": [], "batches": [3]}


def test_the_streams_setting_holds_for_its_call_only(streams_seen):
    _, model = ported_pair(tiny_spec(), seed=5)
    inputs = _nhwc(parity_inputs(48, 48, batch=1, seed=1))
    model(inputs, training=False, options=InferenceOptions(streams=4))
    assert streams_seen["row_slices"] and {len(rows) for rows in streams_seen["row_slices"]} == {4}
    streams_seen["row_slices"].clear()
    model(inputs, training=False)
    assert streams_seen["row_slices"] == []  # the next call runs whole: no setting outlives its call


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_stream_and_core_counts_must_be_positive_integers(bad):
    _, model = ported_pair(tiny_spec())
    with pytest.raises(ValueError, match=rf"streams must be an integer >= 1, got {re.escape(repr(bad))}"):
        cvt_tf.inference_function(model, (1, 32, 32, 3), streams=bad)
    with pytest.raises(ValueError, match=rf"streams must be an integer >= 1, got {re.escape(repr(bad))}"):
        InferenceOptions(streams=bad)
    with pytest.raises(ValueError, match=rf"cores must be an integer >= 1, got {re.escape(repr(bad))}"):
        cvt_tf.set_cpu_threads(bad)


def test_set_cpu_threads_before_and_after_tensorflow_starts():
    script = (
        "import json, cvt_tf, tensorflow as tf\n"
        "before = cvt_tf.set_cpu_threads(3)\n"
        "tf.constant(1.0) + 1.0\n"
        "try:\n"
        "    cvt_tf.set_cpu_threads(2)\n"
        "except RuntimeError as error:\n"
        "    print(json.dumps({'before': before, 'error': str(error)}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["before"] == {"intra_op": 1, "inter_op": 3}
    assert "must run before TensorFlow runs its first op" in result["error"]
