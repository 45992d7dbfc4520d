"""keras-hub presets: `export --format keras-hub` read back by keras-hub's own loaders, on raw photos."""

import keras
import keras_hub
import numpy as np
import pytest

import cvt_tf
from converter.pipeline import Conversion, convert
from cvt_spec import normalize_spec
from cvt_spec.artifacts import read_manifest
from cvt_tf.hub import CvTBackbone, CvTImageClassifier, CvTImageConverter, raw_images
from tests.conftest import run_cli, tiny_spec


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    job = Conversion(spec=normalize_spec(tiny_spec()), num_classes=10, resolution=(224, 224), name="tiny",
                     out_dir=root, seed=4)
    return convert(job, progress=lambda _: None)[0]


@pytest.fixture(scope="module")
def preset(artifact):
    result = run_cli("export", artifact, "--format", "keras-hub", "--samples", "2")
    assert result.returncode == 0, result.stderr
    return artifact.with_name("tiny.keras-hub")


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [data.chelsea(), data.coffee()]  # 300x451 and 400x600: resized and center-cropped to 224


def test_the_preset_holds_keras_hubs_files_and_its_manifest_entry(artifact, preset):
    assert sorted(p.name for p in preset.iterdir()) == [
        "config.json", "image_converter.json", "metadata.json", "model.weights.h5", "preprocessor.json",
        "task.json", "task.weights.h5"]
    (entry,) = read_manifest(artifact)["exports"]
    assert entry["format"] == "keras-hub" and entry["file"] == "tiny.keras-hub"
    assert entry["parity"]["passed"] and entry["parity"]["logits_max_abs"] <= 1e-5


def test_from_preset_predicts_raw_photos_as_load_artifact_and_preprocess_input(artifact, preset, photos):
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    assert isinstance(classifier, CvTImageClassifier)
    model = cvt_tf.load_artifact(artifact)
    for photo in photos:  # one at a time: keras-hub batches same-size images
        expected = np.asarray(model(cvt_tf.preprocess_input(photo, 224)))
        np.testing.assert_allclose(classifier.predict(photo[None], verbose=0), expected, atol=1e-5, rtol=0)


def test_the_backbone_gives_every_stage_map_as_pyramid_outputs(artifact, preset):
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    assert isinstance(backbone, CvTBackbone) and list(backbone.pyramid_outputs) == ["P2", "P3", "P4"]
    features = keras.Model(backbone.inputs, backbone.pyramid_outputs)
    images = cvt_tf.preprocess_input(list(raw_images((224, 224))), 224)
    expected = cvt_tf.load_artifact(artifact).forward_stages(images, training=False)
    for level, stage in zip(["P2", "P3", "P4"], ["stage0", "stage1", "stage2"], strict=True):
        np.testing.assert_allclose(features(images)[level], expected[stage], atol=1e-5, rtol=0)


def test_fit_fine_tunes_and_save_to_preset_round_trips(preset, tmp_path):
    classifier = keras_hub.models.ImageClassifier.from_preset(str(preset))
    images, labels = raw_images((224, 224), count=4, seed=1), np.array([0, 1, 2, 3])
    head = np.array(classifier.output_dense.kernel)
    classifier.compile(optimizer=keras.optimizers.SGD(0.1),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = classifier.fit(images, labels, batch_size=2, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(np.array(classifier.output_dense.kernel) - head).max() > 1e-4
    classifier.save_to_preset(str(tmp_path / "tuned"))
    reloaded = keras_hub.models.ImageClassifier.from_preset(str(tmp_path / "tuned"))
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), classifier.predict(images, verbose=0), atol=1e-6)


def test_configs_round_trip():
    converter = CvTImageConverter(384)
    assert CvTImageConverter.from_config(converter.get_config()).get_config() == converter.get_config()
    backbone = CvTBackbone(spec=tiny_spec(), dtype="mixed_bfloat16")
    clone = CvTBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config() and clone.dtype_policy.name == "mixed_bfloat16"
    assert [v.shape for v in clone.weights] == [v.shape for v in backbone.weights]
