"""`make bench-quick` keeps working: one small config through every system, table and JSON written.

Asserts what was measured and how, never how fast: timings depend on the machine.
"""

import json
import subprocess
import sys

import pytest

from bench.configs import ADVISED, HABITS, LITERT_SYSTEMS, PEERS, SYSTEMS, gflop_per_image, multiply_adds
from tests.conftest import REPO

# Published multiply-adds (the paper's "FLOPs" column), in G.
PAPER_GMACS = {("cvt-13", 224): 4.5, ("cvt-21", 224): 7.1, ("cvt-13", 384): 16.3, ("cvt-21", 384): 24.9,
               ("cvt-w24", 384): 193.2}


@pytest.mark.parametrize(("variant", "resolution"), sorted(PAPER_GMACS))
def test_work_per_image_matches_the_paper(variant, resolution):
    assert multiply_adds(variant, resolution) / 1e9 == pytest.approx(PAPER_GMACS[(variant, resolution)], rel=0.02)
    assert gflop_per_image(variant, resolution) == pytest.approx(2 * multiply_adds(variant, resolution) / 1e9)


@pytest.mark.slow
def test_quick_bench_writes_table_json_and_chart(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "vs torch" in result.stdout and "max|diff|" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").stat().st_size > 0
    assert results["threads"] == 2 and len(results["machine"]["loadavg_start"]) == 3
    rows = {row["system"]: row for row in results["rows"]}
    assert set(rows) == set(SYSTEMS)
    for system, row in rows.items():
        assert row["config"] in result.stdout and system in result.stdout
        assert len(row["round_medians_s"]) == results["rounds"]
        assert row["images_per_s"] > 0 and row["pct_of_peak"] > 0
        # Every path computes the same logits as the official model on the timed inputs.
        assert row["max_abs_diff_vs_pytorch"] < 1e-4, system
    assert rows["pytorch"]["ratio_vs_pytorch"] == 1.0
    group = results["groups"]["cvt-13@112"]
    assert group["conversion"]["exit_code"] == 0 and group["conversion"]["peak_rss_mb"] > 0
    assert group["xnnpack_in_log"] == {"tflite": True, "litert-torch": True}
    assert group["conversion"]["peers"]["exit_code"] == 0
    assert group["threads"]["pytorch"]["torch.get_num_threads"] == 2
    # Graphs: one intra-op thread per op, 2 inter-op threads running 2 streams; eager: 2 intra-op threads.
    tf_function, eager = group["threads"]["tf-function"], group["threads"]["tf-eager"]
    assert (tf_function["tf.intra_op"], tf_function["tf.inter_op"], tf_function["cvt_tf.streams"]) == (1, 2, 2)
    assert (eager["tf.intra_op"], eager["tf.inter_op"], eager["cvt_tf.streams"]) == (2, 2, 1)
    # By habit: TensorFlow's own defaults (0) and the model's own streams; advised: set_cpu_threads(2).
    for habit in HABITS:
        assert (group["threads"][habit]["tf.intra_op"], group["threads"][habit]["tf.inter_op"]) == (0, 0)
        assert group["threads"][habit]["cvt_tf.streams"] == 2
    for advised in ADVISED:
        assert (group["threads"][advised]["tf.intra_op"], group["threads"][advised]["tf.inter_op"]) == (1, 2)
    # The peers' settings, read back from each runtime: OpenVINO computes in f32, not bf16.
    for system, input_shape in (("openvino", [1, 3, 112, 112]), ("openvino-export", [1, 112, 112, 3])):
        openvino, = group["threads"][system].values()
        assert "float32" in openvino["INFERENCE_PRECISION_HINT"] and openvino["INFERENCE_NUM_THREADS"] == "2"
        assert openvino["input_shape"] == input_shape, system
    assert group["conversion"]["openvino"]["exit_code"] == 0
    onnxruntime, = group["threads"]["onnxruntime"].values()
    assert onnxruntime["intra_op_num_threads"] == 2 and onnxruntime["providers"] == ["CPUExecutionProvider"]
    for system in LITERT_SYSTEMS:
        interpreter, = group["threads"][system].values()
        assert interpreter == {**interpreter, "interpreter": "ai_edge_litert", "num_threads": 2}
    # Our TFLite export has an open batch, litert-torch's is fixed; both run at batch 1 here.
    assert group["threads"]["tflite"]["1"]["input_shape"] == [1, 112, 112, 3]
    assert group["threads"]["litert-torch"]["1"]["input_shape"] == [1, 3, 112, 112]
    fastest = min(PEERS, key=lambda system: rows[system]["median_s"])
    assert all(row["fastest_peer"] == fastest for row in rows.values())
    assert rows[fastest]["ratio_vs_fastest_peer"] == 1.0
    assert "vs peer" in result.stdout and f"fastest peer runtime of each config ({fastest})" in result.stdout
