"""The seed port's API on Keras 3: constructors, summary counts, heads, pretrained weights, saving.

Numbers are checked against the PyTorch reference (official layout) or against numpy.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

from converter.layout import official_shapes
from converter.parity import reference_outputs
from converter.pipeline import Conversion, convert
from converter.synthetic import synthetic_state_dict
from cvt_spec import OFFICIAL_CHECKPOINTS, VARIANTS, normalize_spec, variant_spec
from cvt_tf import CvT, load_artifact
from cvt_tf.weights import restore_artifact
from official_ref import load_reference
from tests.conftest import REPO, keras_twin, ported_pair, tiny_spec


@pytest.fixture(scope="module")
def tiny_pair():
    """(PyTorch reference, Keras model) of the tiny SPEC with the same synthetic weights, 10 classes."""
    return ported_pair(tiny_spec(), num_classes=10)


def _nhwc(batch=2, size=(64, 64), seed=3):
    return np.random.default_rng(seed).normal(size=(batch, *size, 3)).astype(np.float32)


def _expected(reference, x_nhwc):
    return reference_outputs(reference, np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2))))


def _summary(model):
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


def test_cvt21_summary_shows_stages_and_the_official_counts():
    model = CvT(configuration="cvt-21", data_format="channels_last", classifier_activation="softmax")
    model.build((None, 224, 224, 3))
    text = _summary(model)
    assert "Total params: 31,664,552" in text
    assert "Trainable params: 31,622,696" in text
    assert "Non-trainable params: 41,856" in text
    for row in ("stage0 (Stage)", "(None, 56, 56, 64)", "stage1 (Stage)", "(None, 28, 28, 192)", "stage2 (Stage)"):
        assert row in text
    # The same counts from the official layout: parameters, and BatchNorm running statistics.
    shapes = official_shapes(variant_spec("cvt-21"), 1000)
    buffers = sum(int(np.prod(s)) for k, (s, _) in shapes.items() if k.endswith(("running_mean", "running_var")))
    parameters = sum(int(np.prod(s)) for k, (s, _) in shapes.items() if not k.endswith("num_batches_tracked"))
    assert (parameters - buffers, buffers) == (31_622_696, 41_856)
    assert model.count_params() == parameters


def test_seed_spec_constructor_equals_the_configuration():
    model = CvT(in_chans=3, num_classes=1000, classifier_activation="softmax", data_format="channels_last",
                spec=VARIANTS["cvt-13"])
    assert model.spec == variant_spec("cvt-13")
    model.build((None, 224, 224, 3))
    shapes = official_shapes(variant_spec("cvt-13"), 1000)
    assert model.count_params() == sum(int(np.prod(s)) for k, (s, _) in shapes.items() if "num_batches" not in k)


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        (None, lambda z: z),
        ("softmax", lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)),
        ("sigmoid", lambda z: 1.0 / (1.0 + np.exp(-z))),
        (keras.activations.relu, lambda z: np.maximum(z, 0.0)),
        ("tanh", np.tanh),
    ],
    ids=["none", "softmax", "sigmoid", "relu_callable", "tanh"],
)
def test_classifier_activation_is_applied_to_the_reference_logits(tiny_pair, activation, expected):
    reference, base = tiny_pair
    model = keras_twin(base, classifier_activation=activation)
    x = _nhwc()
    logits = _expected(reference, x)["logits"].astype(np.float64)
    np.testing.assert_allclose(np.asarray(model(x)), expected(logits), atol=1e-5)


@pytest.mark.parametrize("head", [{"include_top": False}, {"num_classes": 0}])
def test_headless_model_returns_the_reference_features(tiny_pair, head):
    reference, base = tiny_pair
    model = CvT(spec=tiny_spec(), **head)
    model.build((None, None, None, 3))
    base_variables = {v.path: v for v in base.weights}
    for variable in model.weights:
        variable.assign(base_variables[variable.path])
    assert len(base.weights) - len(model.weights) == 2  # the head's kernel and bias
    x = _nhwc()
    features = np.asarray(model(x))
    assert features.shape == (2, 48)
    np.testing.assert_allclose(features, _expected(reference, x)["features"], atol=1e-5)


PRETRAINED = {"configuration": "cvt-13", "pretrained": True, "pretrained_resolution": 384, "pretrained_version": "22k"}


def _missing_weights_message(directory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CVT_TF_WEIGHTS", str(directory))
        with pytest.raises(FileNotFoundError) as error:
            CvT(**PRETRAINED, classifier_activation="softmax")
    return str(error.value)


def test_missing_pretrained_weights_name_the_file_and_the_command(tmp_path):
    message = _missing_weights_message(tmp_path)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'cvt-13-384x384_22k.weights.h5'} not found")
    assert f"`python convert.py --config cvt-13 --res 384 --version 22k --out {tmp_path}`" in message
    assert "CvT-13-384x384-IN-22k.pth" in message


def test_weights_dir_defaults_to_the_user_cache(monkeypatch, tmp_path):
    from cvt_tf.pretrained import weights_dir

    monkeypatch.delenv("CVT_TF_WEIGHTS", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights_dir() == tmp_path / ".cache" / "cvt_tf"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_dir() == tmp_path / "xdg" / "cvt_tf"


@pytest.fixture(scope="module")
def cvt13_22k_dir(tmp_path_factory):
    """A weights directory filled by the command the missing-file error suggests (plus --synthetic)."""
    import shlex

    from convert_cli.app import main
    from convert_cli.plan import plan_conversion

    directory = tmp_path_factory.mktemp("weights")
    command = _missing_weights_message(directory).split("`")[1]
    args = shlex.split(command)
    assert args[:2] == ["python", "convert.py"]
    with main.make_context("convert.py", [*args[2:], "--synthetic", "--no-parity"]) as context:
        job = plan_conversion(context.params)
    convert(job, progress=lambda _: None)
    return directory


def test_pretrained_loads_the_converted_artifact_without_torch(cvt13_22k_dir, tmp_path):
    x = _nhwc(size=(64, 64))
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, cvt_tf\n"
        "x = np.load(sys.argv[1])\n"
        f"probs = cvt_tf.CvT(**{PRETRAINED!r}, classifier_activation='softmax')(x)\n"
        f"features = cvt_tf.CvT(**{PRETRAINED!r}, include_top=False)(x)\n"
        "np.savez(sys.argv[2], probs=np.asarray(probs), features=np.asarray(features))\n"
        "assert 'torch' not in sys.modules, 'cvt_tf imported torch'\n"
    )
    env = {**__import__("os").environ, "CVT_TF_WEIGHTS": str(cvt13_22k_dir), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = np.load(tmp_path / "out.npz")

    spec = variant_spec("cvt-13")
    expected = _expected(load_reference(spec, 1000, synthetic_state_dict(spec, 1000, seed=0)), x)
    reference_probs = torch.softmax(torch.from_numpy(expected["logits"]), dim=1).numpy()
    assert loaded["probs"].shape == (2, 1000)
    np.testing.assert_allclose(loaded["probs"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(loaded["probs"], reference_probs, atol=1e-6)
    np.testing.assert_allclose(loaded["features"], expected["features"], atol=1e-4)


@pytest.mark.parametrize(("configuration", "resolution", "version"),
                         [("cvt-w24", 224, "22k"), ("cvt-w24", 384, "1k"), ("cvt-13", 224, "22k")])
def test_unofficial_pretrained_combination_lists_the_seven(configuration, resolution, version):
    with pytest.raises(ValueError, match=f"no official checkpoint for {configuration} at {resolution}") as error:
        CvT(configuration=configuration, pretrained=True, pretrained_resolution=resolution,
            pretrained_version=version)
    for checkpoint in OFFICIAL_CHECKPOINTS:
        assert checkpoint.artifact_name in str(error.value)
    assert len(OFFICIAL_CHECKPOINTS) == 7


def test_pretrained_needs_a_configuration():
    with pytest.raises(ValueError, match="pretrained=True needs configuration="):
        CvT(spec=tiny_spec(), pretrained=True)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    """The tiny SPEC's synthetic checkpoint (seed 0, as `tiny_pair`) converted to an artifact."""
    job = Conversion(spec=normalize_spec(tiny_spec()), num_classes=10, resolution=(64, 64), name="tiny",
                     out_dir=tmp_path_factory.mktemp("tiny"), parity=False)
    weights_path, _, _ = convert(job, progress=lambda _: None)
    return weights_path


def test_restore_refuses_another_head_or_spec(tiny_artifact):
    with pytest.raises(ValueError, match="10-class head, the model num_classes=5; use num_classes=10, or include_top"):
        restore_artifact(CvT(spec=tiny_spec(), num_classes=5), tiny_artifact)
    with pytest.raises(ValueError, match=r"another SPEC: DEPTH \[1, 1, 2\] \(model: \[1, 1, 3\]\)"):
        restore_artifact(CvT(spec=tiny_spec(DEPTH=[1, 1, 3]), num_classes=10), tiny_artifact)


def test_artifact_without_its_head_gives_the_reference_features(tiny_pair, tiny_artifact):
    reference, _ = tiny_pair
    x = _nhwc(size=(61, 75))
    features = np.asarray(load_artifact(tiny_artifact, include_top=False)(x))
    np.testing.assert_allclose(features, _expected(reference, x)["features"], atol=1e-5)


MODEL_ARGUMENTS = {
    "softmax_channels_first": {"classifier_activation": "softmax", "data_format": "channels_first"},
    "fixed_input_shape": {"input_shape": (64, 64, 3), "classifier_activation": "sigmoid"},
    "avg_projection": {"spec": tiny_spec(QKV_PROJ_METHOD="avg")},
    "features_only": {"include_top": False},
}


def _tiny_model(arguments, base):
    arguments = {"spec": tiny_spec(), "num_classes": 10, **arguments}
    if arguments["spec"] != tiny_spec():
        _, base = ported_pair(arguments["spec"], num_classes=10)
    model = CvT(**arguments)
    if not model.built:
        channels_first = model.data_format == "channels_first"
        model.build((None, 3, None, None) if channels_first else (None, None, None, 3))
    base_variables = {v.path: v for v in base.weights}
    for variable in model.weights:
        variable.assign(base_variables[variable.path])
    x = _nhwc()
    return model, np.transpose(x, (0, 3, 1, 2)) if model.data_format == "channels_first" else x


@pytest.mark.parametrize("case", sorted(MODEL_ARGUMENTS))
def test_config_round_trip(tiny_pair, case):
    model, x = _tiny_model(MODEL_ARGUMENTS[case], tiny_pair[1])
    config = json.loads(json.dumps(model.get_config()))
    clone = CvT.from_config(config)
    assert json.loads(json.dumps(clone.get_config())) == config
    if not clone.built:
        clone.build(model._build_shapes_dict["input_shape"])
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(model(x)))


def test_config_of_a_configuration_stays_a_name():
    config = CvT(configuration="cvt-21", classifier_activation="softmax").get_config()
    assert config["configuration"] == "cvt-21" and config["spec"] is None
    assert config["classifier_activation"] == "softmax"
    assert CvT.from_config(config).spec == variant_spec("cvt-21")


@pytest.mark.parametrize("case", sorted(MODEL_ARGUMENTS))
def test_keras_file_round_trip_needs_no_custom_objects(tiny_pair, case, tmp_path):
    model, x = _tiny_model(MODEL_ARGUMENTS[case], tiny_pair[1])
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert type(restored) is CvT
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))
    restored_variables = {v.path: v for v in restored.weights}
    for variable in model.weights:
        np.testing.assert_array_equal(restored_variables[variable.path], variable, err_msg=variable.path)
