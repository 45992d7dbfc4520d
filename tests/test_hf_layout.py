"""Hugging Face transformers checkpoints in: the rename table against transformers' own key list, and
artifacts from HF-layout files (.bin and .safetensors) equal to those from the official layout."""

import json

import numpy as np
import pytest
import torch

from converter.hf_layout import detect_layout, hf_renames, official_key_names, rename_to_official
from converter.layout import LayoutError, official_shapes
from converter.pipeline import Conversion, convert
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec, variant_spec
from tests.conftest import OFFICIAL_KEYS, run_cli, tiny_spec

HF_KEYS = OFFICIAL_KEYS.parent / "hf_keys"


def key_file(path):
    """{key: shape} of a key list in tests/data (lines `key (shape) dtype`)."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, rest = line.split(" ", 1)
        shape_text = rest.rsplit(" ", 1)[0]
        entries[key] = tuple(int(d) for d in shape_text.strip("()").split(",") if d.strip())
    return entries


@pytest.mark.parametrize("variant", ["cvt-13", "cvt-21", "cvt-w24"])
def test_renames_cover_transformers_keys_once_and_keep_shapes(variant):
    hf_keys = key_file(HF_KEYS / f"{variant}.txt")
    official_keys = key_file(OFFICIAL_KEYS / f"{variant}-384.txt")
    renames = hf_renames(variant_spec(variant), 1000)
    assert sorted(r.hf_key for r in renames) == sorted(hf_keys)
    assert sorted(r.official_key for r in renames) == sorted(official_keys)
    assert len({r.hf_key for r in renames}) == len(renames) == len(hf_keys)
    for rename in renames:
        assert hf_keys[rename.hf_key] == official_keys[rename.official_key], rename


def test_renames_follow_the_spec_for_projections_without_weights():
    spec = normalize_spec(tiny_spec(QKV_PROJ_METHOD=["avg", "linear", "dw_bn"], QKV_BIAS=[False, True, True]))
    renames = hf_renames(spec, 0)
    assert sorted(r.official_key for r in renames) == sorted(official_shapes(spec, 0))
    assert not any(r.hf_key.startswith("classifier") for r in renames)


@pytest.fixture(scope="module")
def official(spec):
    return synthetic_state_dict(spec, 10, seed=4)


def hf_layout(state_dict, spec, num_classes=10):
    return {r.hf_key: state_dict[r.official_key] for r in hf_renames(spec, num_classes)}


def test_layout_is_recognised_from_the_keys(spec, official):
    assert detect_layout(official) == "official"
    assert detect_layout(hf_layout(official, spec)) == "transformers"


def test_one_error_lists_every_missing_and_unexpected_hf_key(spec, official):
    broken = hf_layout(official, spec)
    del broken["layernorm.weight"]
    del broken["cvt.encoder.stages.1.layers.0.intermediate.dense.bias"]
    broken["stage0.patch_embed.proj.weight"] = official["stage0.patch_embed.proj.weight"]  # mixed layouts
    broken["cvt.encoder.stages.2.layers.7.output.dense.bias"] = np.zeros(48, np.float32)
    with pytest.raises(LayoutError) as error:
        rename_to_official(broken, spec, 10)
    message = str(error.value)
    assert "(2 missing in checkpoint, 2 unexpected in checkpoint)" in message
    assert "missing in checkpoint: layernorm.weight" in message
    assert "missing in checkpoint: cvt.encoder.stages.1.layers.0.intermediate.dense.bias" in message
    assert "unexpected in checkpoint: stage0.patch_embed.proj.weight (16, 3, 7, 7)" in message
    assert "unexpected in checkpoint: cvt.encoder.stages.2.layers.7.output.dense.bias (48,)" in message


def test_missing_step_counters_are_allowed_as_in_the_official_layout(spec, official):
    hf = {k: v for k, v in hf_layout(official, spec).items() if not k.endswith("num_batches_tracked")}
    renamed = rename_to_official(hf, spec, 10)
    assert sorted(renamed) == sorted(k for k in official if not k.endswith("num_batches_tracked"))
    assert all(renamed[k] is official[k] for k in renamed)


def _save_hf(state_dict, path):
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)


def _convert(checkpoint, out_dir, spec):
    job = Conversion(spec=spec, num_classes=10, resolution=(64, 64), name="tiny", out_dir=out_dir,
                     checkpoint=checkpoint)
    return convert(job, progress=lambda _: None)


@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "model.safetensors"])
def test_hf_checkpoint_gives_the_same_artifact_bytes_as_the_official_one(tmp_path, spec, official, file_name):
    save_checkpoint(official, tmp_path / "official.pth")
    _save_hf(hf_layout(official, spec), tmp_path / file_name)
    official_weights, official_manifest, _ = _convert(tmp_path / "official.pth", tmp_path / "from_official", spec)
    hf_weights, hf_manifest, report = _convert(tmp_path / file_name, tmp_path / "from_hf", spec)
    assert report.passed and report.worst.max_abs < 1e-4
    assert hf_weights.read_bytes() == official_weights.read_bytes()
    official_entry, hf_entry = (json.loads(p.read_text()) for p in (official_manifest, hf_manifest))
    assert hf_entry["artifact"]["sha256"] == official_entry["artifact"]["sha256"]
    assert hf_entry["source"]["layout"] == "transformers" and official_entry["source"]["layout"] == "official"
    assert hf_entry["parity"]["outputs"] == official_entry["parity"]["outputs"]


def test_cli_reads_an_hf_safetensors_file(tmp_path, spec, official, tiny_spec_file):
    _save_hf(hf_layout(official, spec), tmp_path / "model.safetensors")
    result = run_cli("--spec", tiny_spec_file, "--num-classes", 10, "--res", 64,
                     "--checkpoint", tmp_path / "model.safetensors", "--out", tmp_path / "out", "--name", "hf")
    assert result.returncode == 0, result.stderr
    assert "renamed the transformers layout to the official one" in result.stdout
    assert "parity PASSED" in result.stdout and result.stderr == ""


def test_cli_lists_hf_problems_in_one_line(tmp_path, spec, official, tiny_spec_file):
    broken = hf_layout(official, spec)
    del broken["classifier.bias"]
    _save_hf(broken, tmp_path / "pytorch_model.bin")
    result = run_cli("--spec", tiny_spec_file, "--num-classes", 10, "--res", 64,
                     "--checkpoint", tmp_path / "pytorch_model.bin", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'pytorch_model.bin'}: Hugging Face checkpoint does not fit the model "
        "(1 missing in checkpoint): missing in checkpoint: classifier.bias (10,)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", ["cvt-13", "cvt-21", "cvt-w24"])
def test_key_names_without_a_spec_equal_the_spec_table(variant):
    renames = {r.hf_key: r.official_key for r in hf_renames(variant_spec(variant), 1000)}
    assert official_key_names(key_file(HF_KEYS / f"{variant}.txt")) == renames


def test_an_hf_checkpoint_alone_is_recognised(tmp_path):
    from convert_cli.app import main
    from convert_cli.plan import plan_conversion

    spec = variant_spec("cvt-13")
    _save_hf(hf_layout(synthetic_state_dict(spec, 1000), spec, 1000), tmp_path / "model.safetensors")
    context = main.make_context("convert.py", ["--checkpoint", str(tmp_path / "model.safetensors"), "--res", "224"])
    job = plan_conversion(context.params)
    assert (job.configuration, job.spec, job.num_classes) == ("cvt-13", spec, 1000)
    assert (job.name, job.resolution) == ("cvt-13-224x224", (224, 224))
