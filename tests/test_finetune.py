"""Fine-tuning on one device: it learns, its files read back, its artifact exports, bad input is one line.

The distributed runs (mirrored, multi-worker, kill and resume) are in tests/test_finetune_distributed.py.
"""

import json

import numpy as np
import pytest

from tests.conftest import TINY_SPEC, tiny_spec
from tests.finetune_data import image_set, stored_weights, tiny_artifact

CLASSES = 5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return {"artifact": tiny_artifact(root / "artifacts", TINY_SPEC), "data": image_set(root / "data", per_class=10),
            "root": root}


@pytest.fixture(scope="module")
def trained(workspace):
    """Four epochs on the generated 5-class set, one device (in this process)."""
    from converter.finetune import FineTuneJob, run_finetune

    job = FineTuneJob(data=workspace["data"], artifact=workspace["artifact"], num_classes=CLASSES,
                      out=workspace["root"] / "run", epochs=4, batch=8, learning_rate=2e-3, strategy="one",
                      verbose=0)
    return job, run_finetune(job, progress=lambda _: None)


def test_fine_tuning_raises_validation_top1_above_chance(trained):
    job, result = trained
    # 10 validation images (2 per class); chance is 1/5. A fixed seed, so the figures are fixed too,
    # but the bar is the learning signal: at least 3 of 5 classes told apart, and better than the new head.
    assert result.top1_before <= 0.4
    assert result.top1_after >= 0.6
    assert result.top1_after > result.top1_before


def test_run_files_read_back(trained):
    job, result = trained
    history = json.loads((job.out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["val_top1"] == result.top1_after
    csv_lines = (job.out / "history.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[0] == "epoch" and len(csv_lines) == 5
    checkpoint = json.loads((job.out / "checkpoint.json").read_text())
    assert checkpoint["epochs_done"] == 4 and checkpoint["top1_before"] == result.top1_before
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["num_classes"] == CLASSES and manifest["classes"] == ["0", "1", "2", "3", "4"]
    assert manifest["fine_tuning"]["top1_after"] == result.top1_after
    assert manifest["fine_tuning"]["images"] == {"train": 40, "validation": 10}
    # The artifact holds the trained weights, float32, and no optimizer state.
    weights = stored_weights(result.weights_path.with_name("tiny-finetuned"))
    trained_values = {v.path.removeprefix("cvt/"): np.asarray(v.numpy()) for v in result.model.weights}
    assert weights.keys() == trained_values.keys()
    assert all(np.array_equal(weights[k], trained_values[k]) and weights[k].dtype == np.float32 for k in weights)
    assert weights["head/kernel"].shape == (48, CLASSES)


def _run_cli(args, capfd):
    from convert_cli.app import run

    try:
        run([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capfd.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_inspect_and_export_pth_read_the_fine_tuned_artifact(trained, capfd):
    """The .pth loads into official_ref (strict=True) and gives the Keras logits within 1e-4."""
    import torch

    from converter.export import ExportJob, run_export
    from cvt_tf import load_artifact, preprocess_input
    from official_ref import load_reference

    job, result = trained
    stem = result.weights_path.with_name("tiny-finetuned")
    code, out, err = _run_cli(["inspect", stem], capfd)
    assert code == 0 and err == [] and "sha256" in out and "matches the manifest" in out
    path, entry = run_export(ExportJob(artifact=stem, format="pth"), progress=lambda _: None)
    assert entry["parity"]["strict_load"] and entry["parity"]["passed"]
    reference = load_reference(result.model.spec, CLASSES, torch.load(path, map_location="cpu", weights_only=True))
    images = preprocess_input([str(p) for p in sorted(job.data.rglob("*.png"))[::5]], 48)
    keras_logits = np.asarray(load_artifact(stem)(images, training=False))
    with torch.no_grad():
        torch_logits = reference(torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy())).numpy()
    assert keras_logits.shape == (len(images), CLASSES)
    assert np.max(np.abs(keras_logits - torch_logits)) <= 1e-4


def test_synchronized_batch_norm_is_an_explicit_option():
    from cvt_tf import CvT

    plain = CvT(spec=TINY_SPEC, num_classes=3)
    synced = CvT.from_config(CvT(spec=TINY_SPEC, num_classes=3, synchronized_batch_norm=True).get_config())
    batch_norms = [layer for layer in synced._flatten_layers() if type(layer).__name__ == "BatchNormalization"]
    assert batch_norms and all(layer.synchronized for layer in batch_norms)
    assert not any(layer.synchronized for layer in plain._flatten_layers()
                   if type(layer).__name__ == "BatchNormalization")


@pytest.fixture(scope="module")
def other_variant(workspace):
    return tiny_artifact(workspace["root"] / "other", tiny_spec(DEPTH=[1, 1, 1]), name="other")


def _bad_inputs(workspace, trained, other_variant, tmp_path):
    job, _ = trained
    sparse = image_set(tmp_path / "sparse", per_class=2)
    (sparse / "3" / "1.png").unlink()
    common = ["--artifact", workspace["artifact"], "--strategy", "one"]
    return {
        "one image in a class": (
            ["finetune", sparse, *common, "--num-classes", 5, "--out", tmp_path / "r1"],
            f"error: {sparse}/3: class 3 has 1 image; the validation split needs at least 2 per class "
            "(one to train on, one to validate)"),
        "class count": (
            ["finetune", workspace["data"], *common, "--num-classes", 4, "--out", tmp_path / "r2"],
            f"error: {workspace['data']}: holds 5 classes (imagenet-v2 layout), --num-classes is 4"),
        "resume, another variant": (
            ["finetune", workspace["data"], "--artifact", other_variant, "--num-classes", 5, "--out", job.out,
             "--resume", "--epochs", 4, "--batch", 8, "--lr", 2e-3],
            f"error: --resume: {job.out}/checkpoint.json fine-tunes a custom SPEC, --artifact {other_variant} is "
            "another variant (DEPTH differ)"),
        "no --resume over a run": (
            ["finetune", workspace["data"], *common, "--num-classes", 5, "--out", job.out],
            f"error: {job.out}/checkpoint.json: --out holds a fine-tuning run already; pass --resume to continue it"),
        "multi-worker without TF_CONFIG": (
            ["finetune", workspace["data"], "--artifact", workspace["artifact"], "--strategy", "multi-worker",
             "--num-classes", 5, "--out", tmp_path / "r3"],
            'error: --strategy multi-worker: TF_CONFIG names no workers; set it on every worker, e.g. {"cluster": '
            '{"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'),
    }


@pytest.mark.parametrize("case", ["one image in a class", "class count", "resume, another variant",
                                  "no --resume over a run", "multi-worker without TF_CONFIG"])
def test_bad_input_exits_2_with_one_line(case, workspace, trained, other_variant, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args, message = _bad_inputs(workspace, trained, other_variant, tmp_path)[case]
    before = sorted(p.name for p in trained[0].out.iterdir())
    code, _, err = _run_cli(args, capfd)
    assert (code, err) == (2, [message])
    assert sorted(p.name for p in trained[0].out.iterdir()) == before
