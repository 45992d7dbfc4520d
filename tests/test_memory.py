"""What bounds the conversion's memory: attention in query chunks, diffs one image at a time."""

import numpy as np
import pytest

from converter.parity import ParityRun, compare_outputs, output_diff, parity_inputs, reference_outputs
from cvt_tf.layers import ConvAttention, InferenceOptions
from tests.conftest import ported_pair, tiny_spec

CASES = {
    "cls_last_stage": tiny_spec(),
    "no_cls": tiny_spec(CLS_TOKEN=[False, False, False]),
    "avg_cls_everywhere": tiny_spec(QKV_PROJ_METHOD="avg", CLS_TOKEN=[True, True, True]),
}


@pytest.fixture
def attention_calls(monkeypatch):
    """Counts `ConvAttention._attend` calls, i.e. score matrices computed."""
    calls = []
    attend = ConvAttention._attend

    def counted(self, q, keys, v, training):
        calls.append(q.shape[2])
        return attend(self, q, keys, v, training)

    monkeypatch.setattr(ConvAttention, "_attend", counted)
    return calls


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_in_query_chunks_gives_the_outputs_of_whole_attention(case, attention_calls):
    _, model = ported_pair(CASES[case], seed=2)
    images = np.transpose(parity_inputs(60, 52, batch=2, seed=5), (0, 2, 3, 1))
    whole = model.forward_stages(images, training=False)
    whole_calls = len(attention_calls)
    attention_calls.clear()

    chunked = model.forward_stages(images, training=False, options=InferenceOptions(query_chunk=7))

    assert len(attention_calls) > whole_calls and max(attention_calls) == 7  # chunks ran, 7 rows at most
    for name, value in whole.items():
        np.testing.assert_allclose(chunked[name], value, atol=1e-6, rtol=0, err_msg=name)


def test_the_query_chunk_setting_holds_for_its_call_only(attention_calls):
    _, model = ported_pair(tiny_spec(), seed=2)
    images = np.transpose(parity_inputs(56, 56, batch=1, seed=5), (0, 2, 3, 1))
    model.forward_stages(images, training=False, options=InferenceOptions(query_chunk=16))
    assert max(attention_calls) == 16
    attention_calls.clear()
    model.forward_stages(images, training=False)
    assert max(attention_calls) == 14 * 14  # the next call attends all of stage 0's queries at once


def test_the_parity_report_records_the_chunks_it_ran_with(attention_calls):
    reference, model = ported_pair(tiny_spec(), seed=1)
    inputs = parity_inputs(56, 56, batch=2, seed=0)
    run = ParityRun((56, 56), batch=2, seed=0, images_per_call=1, query_rows=50)
    report = compare_outputs(reference_outputs(reference, inputs), model, inputs, run)
    assert report.passed
    assert max(attention_calls) == 50
    assert report.to_dict()["attention_query_rows"] == 50 and report.to_dict()["images_per_call"] == 1


def test_the_diff_of_one_image_at_a_time_finds_the_worst_of_the_batch():
    expected = np.linspace(-3, 3, 2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    actual = expected.copy()
    actual[1, 3, 4] += 0.25
    actual[0, 0, 0] -= 0.125
    diff = output_diff("out", actual, expected)
    assert diff.max_abs == 0.25 and diff.shape == (2, 4, 5)
    assert diff.max_rel == pytest.approx(0.25 / 3)
    with pytest.raises(AssertionError, match=r"out: Keras shape \(1, 4, 5\) != PyTorch shape \(2, 4, 5\)"):
        output_diff("out", actual[:1], expected)
