"""Exports out of an artifact: the official .pth round trip, fine-tuned weights back in official_ref,
TFLite, SavedModel and OpenVINO run back from disk, manifest entries, and no silent overwrite."""

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

from converter.artifact import write_artifact
from converter.export import ExportError, ExportJob, ExportParityError, run_export
from converter.parity import parity_inputs
from converter.pipeline import Conversion, convert
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec.artifacts import EXPORT_FORMATS, artifact_paths, default_export_path, path_sha256
from cvt_tf import load_artifact
from cvt_tf.tf_formats import run_saved_model, run_tflite
from official_ref.model import ConvolutionalVisionTransformer
from tests.conftest import REPO, run_cli


def quiet(_):
    pass


def _artifact(directory, state_dict, spec, name="tiny"):
    save_checkpoint(state_dict, directory / f"{name}.pth")
    job = Conversion(spec=spec, num_classes=10, resolution=(64, 64), name=name, out_dir=directory / "out",
                     checkpoint=directory / f"{name}.pth")
    weights_path, _, _ = convert(job, progress=quiet)
    return weights_path


@pytest.fixture(scope="module")
def source(spec):
    return synthetic_state_dict(spec, 10, seed=7)


@pytest.fixture(scope="module")
def built_artifact(tmp_path_factory, spec, source):
    return _artifact(tmp_path_factory.mktemp("artifact"), source, spec)


@pytest.fixture
def artifact(tmp_path, built_artifact):
    """A private copy of the module's artifact (as plain files, as `cp` copies them): exports change its manifest."""
    for path in artifact_paths(built_artifact):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / built_artifact.name


def _manifest(weights_path):
    return json.loads(weights_path.with_name(weights_path.name.replace(".weights.h5", ".json")).read_text())


def _assert_bit_identical(exported, original):
    assert list(exported) == list(original)
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype, key
        assert torch.equal(exported[key], tensor), key


def test_pth_round_trip_is_bit_identical(artifact, tmp_path, built_artifact):
    out, entry = run_export(ExportJob(artifact=artifact, format="pth"), progress=quiet)
    assert out == tmp_path / "tiny.pth"
    original = torch.load(built_artifact.parent.parent / "tiny.pth", weights_only=True)
    _assert_bit_identical(torch.load(out, weights_only=True), original)
    assert entry["parity"]["passed"] and entry["parity"]["outputs"]["logits"]["max_abs"] < 1e-4
    assert entry["sha256"] == path_sha256(out) and entry["size"] == out.stat().st_size


def test_pth_keeps_a_half_precision_source_bit_for_bit(tmp_path, spec, source):
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in source.items()}
    half["head.bias"] = half["head.bias"].astype(np.float32)  # one tensor in another dtype
    weights_path = _artifact(tmp_path, half, spec, name="half")
    out, _ = run_export(ExportJob(artifact=weights_path, format="pth"), progress=quiet)
    exported = torch.load(out, weights_only=True)
    assert exported["head.weight"].dtype == torch.float16 and exported["head.bias"].dtype == torch.float32
    _assert_bit_identical(exported, {k: torch.from_numpy(np.asarray(v)) for k, v in half.items()})


def test_manifest_without_torch_layout_gives_float32_and_zero_counters(artifact):
    manifest_path = artifact.with_name("tiny.json")
    manifest = _manifest(artifact)
    del manifest["torch_layout"]
    manifest_path.write_text(json.dumps(manifest))
    notes = []
    out, _ = run_export(ExportJob(artifact=artifact, format="pth"), progress=notes.append)
    assert any("no torch_layout entry" in note for note in notes)
    exported = torch.load(out, weights_only=True)
    counters = [v for k, v in exported.items() if k.endswith("num_batches_tracked")]
    assert len(counters) == 12 and all(v.dtype == torch.int64 and int(v) == 0 for v in counters)
    assert all(v.dtype == torch.float32 for k, v in exported.items() if not k.endswith("num_batches_tracked"))


def test_fine_tuned_keras_weights_go_back_to_official_ref(artifact, tmp_path):
    model = load_artifact(artifact)
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 64, 64, 3)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, rng.integers(0, 10, 16), batch_size=4, epochs=1, verbose=0)
    moved = {v.path: float(np.max(np.abs(v.numpy() - before[v.path]))) for v in model.weights}
    assert moved["cvt/head/kernel"] > 1e-3 and moved["cvt/stage2/block1/attn/conv_proj_v/bn/moving_mean"] > 1e-3

    manifest = {k: v for k, v in _manifest(artifact).items() if k not in ("format", "name", "artifact")}
    tuned, _ = write_artifact(model, tmp_path / "tuned", "tuned", manifest)
    out, _ = run_export(ExportJob(artifact=tuned, format="pth"), progress=quiet)
    reference = ConvolutionalVisionTransformer(manifest["spec"], 10)
    reference.load_state_dict(torch.load(out, weights_only=True), strict=True)
    inputs = parity_inputs(64, 64, batch=4, seed=3)
    with torch.inference_mode():
        expected = reference.eval()(torch.from_numpy(inputs)).numpy()
    actual = np.asarray(model(np.transpose(inputs, (0, 2, 3, 1)), training=False))
    assert np.max(np.abs(actual - expected)) < 1e-4
    assert np.max(np.abs(actual - np.asarray(load_artifact(artifact)(np.transpose(inputs, (0, 2, 3, 1)))))) > 1e-2


def test_tflite_float32_matches_keras_and_int8_reports_agreement(artifact, tmp_path):
    float_out, float_entry = run_export(ExportJob(artifact=artifact, format="tflite"), progress=quiet)
    int8_out, int8_entry = run_export(ExportJob(artifact=artifact, format="tflite", quantize="dynamic"),
                                      progress=quiet)
    assert (float_out.name, int8_out.name) == ("tiny.tflite", "tiny.int8.tflite")
    assert float_entry["parity"]["passed"] and float_entry["parity"]["logits_max_abs"] < 1e-4
    assert int8_entry["parity"]["passed"] is None and int8_entry["parity"]["atol"] is None
    assert 0 < int8_entry["parity"]["logits_max_abs"] < 0.1
    assert int8_out.stat().st_size < 0.7 * float_out.stat().st_size
    # Independently: run the files again on other inputs against a fresh Keras model.
    images = np.transpose(parity_inputs(64, 64, batch=3, seed=11), (0, 2, 3, 1))
    keras_logits = np.asarray(load_artifact(artifact)(images))
    assert np.max(np.abs(run_tflite(float_out, images) - keras_logits)) < 1e-4
    assert np.max(np.abs(run_tflite(int8_out, images) - keras_logits)) > 1e-6  # really quantized
    exports = _manifest(artifact)["exports"]
    assert [(e["file"], e["quantize"]) for e in exports] == [("tiny.tflite", "none"), ("tiny.int8.tflite", "dynamic")]


def test_saved_model_runs_any_resolution(artifact):
    out, entry = run_export(ExportJob(artifact=artifact, format="saved_model"), progress=quiet)
    assert out.is_dir() and entry["parity"]["logits_max_abs"] < 1e-4
    images = np.transpose(parity_inputs(45, 71, batch=1, seed=2), (0, 2, 3, 1))
    np.testing.assert_allclose(run_saved_model(out, images), np.asarray(load_artifact(artifact)(images)), atol=1e-4)


def test_openvino_ir_matches_keras_in_float32_read_back_by_openvino(artifact):
    import openvino

    out, entry = run_export(ExportJob(artifact=artifact, format="openvino"), progress=quiet)
    assert out.name == "tiny.openvino" and sorted(p.name for p in out.iterdir()) == ["model.bin", "model.xml"]
    assert entry["parity"]["passed"] and entry["parity"]["logits_max_abs"] < 1e-4
    assert entry["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert (entry["resolution"], entry["sha256"]) == ([64, 64], path_sha256(out))
    assert _manifest(artifact)["exports"] == [entry]
    # Independently: OpenVINO's own reader, at another batch, on other inputs, against a fresh Keras model.
    core = openvino.Core()
    ir = core.read_model(str(out / "model.xml"))
    assert [output.get_names() for output in ir.outputs] == [{"logits"}], "only the logits leave the IR"
    constants = [op for op in ir.get_ops() if op.get_type_name() == "Constant"]
    assert {op.get_element_type().get_type_name() for op in constants} <= {"f32", "i32", "i64"}, "weights not f32"
    ir.reshape([3, 64, 64, 3])
    compiled = core.compile_model(ir, "CPU", entry["compile_config"])
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    images = np.transpose(parity_inputs(64, 64, batch=3, seed=11), (0, 2, 3, 1))
    logits = compiled.create_infer_request().infer({"images": images})["logits"]
    np.testing.assert_allclose(logits, np.asarray(load_artifact(artifact)(images)), atol=1e-4)


def test_cli_export_openvino_says_how_to_compile_it(artifact, tmp_path):
    result = run_cli("export", artifact, "--format", "openvino", "--samples", "2")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "parity vs Keras: logits max abs" in result.stdout and f"wrote {tmp_path / 'tiny.openvino'}" in result.stdout
    assert 'compile it with {"INFERENCE_PRECISION_HINT": "f32"}' in result.stdout
    assert _manifest(artifact)["exports"][0]["parity"]["samples"] == 2


def test_cli_export_openvino_names_the_extra_when_openvino_is_missing(artifact, tmp_path):
    hide_openvino = ("import sys; sys.modules['openvino'] = None; import convert_cli.app as app; "
                     "app.run(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", hide_openvino, "export", str(artifact), "--format", "openvino"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    _one_line_error(result, 2, "--format openvino needs OpenVINO", "pip install 'cvt-convert[openvino]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.weights.h5"]


def test_existing_output_is_refused_unless_forced(artifact, tmp_path):
    out = tmp_path / "mine.pth"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="mine.pth exists; pass --force"):
        run_export(ExportJob(artifact=artifact, format="pth", out=out), progress=quiet)
    assert out.read_bytes() == b"keep me" and "exports" not in _manifest(artifact)
    for _ in range(2):
        run_export(ExportJob(artifact=artifact, format="pth", out=out, force=True), progress=quiet)
    assert [e["file"] for e in _manifest(artifact)["exports"]] == ["mine.pth"]
    assert _manifest(artifact)["exports"][0]["sha256"] == path_sha256(out)


def test_failed_parity_leaves_nothing(artifact, tmp_path):
    before = _manifest(artifact)
    with pytest.raises(ExportParityError, match="saved_model export, run back from disk, differs from keras by"):
        run_export(ExportJob(artifact=artifact, format="saved_model", atol=1e-12), progress=quiet)
    with pytest.raises(ExportParityError, match="pth export, run back from disk, differs from official_ref by"):
        run_export(ExportJob(artifact=artifact, format="pth", atol=1e-12, out=tmp_path / "new" / "sub" / "x.pth"),
                   progress=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.json", "tiny.weights.h5"])
    assert _manifest(artifact) == before


def test_default_output_names(tmp_path):
    weights = tmp_path / "cvt-13-224x224_1k.weights.h5"
    assert [default_export_path(weights, f, q).name for f, q in
            [("pth", "none"), ("tflite", "none"), ("tflite", "dynamic"), ("saved_model", "none"),
             ("keras-hub", "none"), ("openvino", "none")]] == [
        "cvt-13-224x224_1k.pth", "cvt-13-224x224_1k.tflite", "cvt-13-224x224_1k.int8.tflite",
        "cvt-13-224x224_1k.saved_model", "cvt-13-224x224_1k.keras-hub", "cvt-13-224x224_1k.openvino",
    ]


def _one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_cli_export_writes_pth_and_its_manifest_entry(artifact, tmp_path):
    result = run_cli("export", artifact, "--format", "pth")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "parity vs official_ref: worst" in result.stdout and f"wrote {tmp_path / 'tiny.pth'}" in result.stdout
    assert _manifest(artifact)["exports"][0]["run"]["command"] == f"convert.py export {artifact} --format pth"


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["--format", "pth", "--quantize", "dynamic"], 2, ["--quantize dynamic applies to --format tflite only"]),
        (["--format", "onnx"], 2, ["--format", "onnx"]),
        (["--format", "pth", "--atol", "1e-12"], 1, ["pth export, run back from disk, differs from official_ref"]),
    ],
)
def test_cli_export_errors_are_one_line(artifact, tmp_path, args, code, fragments):
    _one_line_error(run_cli("export", artifact, *args), code, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.weights.h5"]


def test_missing_or_damaged_artifact_is_refused(artifact, tmp_path):
    with pytest.raises(ExportError, match="nope.json: not a readable artifact .*nope.weights.h5: artifact file not"):
        run_export(ExportJob(artifact=tmp_path / "nope.json", format="pth"), progress=quiet)
    with open(artifact, "r+b") as handle:
        handle.seek(-64, 2)
        handle.write(b"\0" * 8)
    with pytest.raises(ExportError, match="differs from the manifest"):
        run_export(ExportJob(artifact=artifact, format="pth"), progress=quiet)


def test_cli_and_library_offer_the_same_formats():
    from convert_cli.export import export

    (format_option,) = [param for param in export.params if param.name == "export_format"]
    assert tuple(format_option.type.choices) == EXPORT_FORMATS
