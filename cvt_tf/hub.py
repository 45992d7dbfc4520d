"""CvT for keras-hub: a backbone with every stage's map as `pyramid_outputs`, an image classifier, its
preprocessor and image converter (the official evaluation transform), and a preset from an artifact.

Imported by `import cvt_tf` when keras-hub is installed, so `from_preset` finds the classes.
"""

import math

import keras
import numpy as np
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.models import FeaturePyramidBackbone, ImageClassifier, ImageClassifierPreprocessor
from keras_hub.src.models.task import Task

from cvt_spec import normalize_spec, stage_specs
from cvt_spec.artifacts import read_manifest
from cvt_tf.artifact import load_artifact
from cvt_tf.layers.common import flatten_grid, layer_norm
from cvt_tf.layers.stage import Stage, stage_arguments
from cvt_tf.preprocessing import EvalTransform


def _level_name(stage, stride):
    """keras-hub's name for a map `stride` times smaller than the image (`P2` for 4), else `stage<i>`."""
    level = math.log2(stride)
    return f"P{int(level)}" if level.is_integer() else f"stage{stage.index}"


@keras.saving.register_keras_serializable(package="cvt_tf")
class CvTBackbone(FeaturePyramidBackbone):
    """CvT's stages and final LayerNorm as a functional keras-hub backbone; outputs the pooled features.

    Args:
        spec: the official SPEC (the MODEL.SPEC keys).
        image_shape: (height, width, channels) of the images; None sides take any size.
        dtype: the dtype policy of every layer (the LayerNorms stay float32).
    """

    def __init__(self, spec: dict, image_shape=(None, None, 3), dtype=None, **kwargs):
        spec = normalize_spec(spec)
        # === Layers ===
        stages = [Stage(**stage_arguments(stage), name=f"stage{stage.index}", dtype=dtype)
                  for stage in stage_specs(spec)]
        norm = layer_norm("norm")
        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        x, pyramid, stride = images, {}, 1
        for stage, layer in zip(stage_specs(spec), stages, strict=True):
            x = layer(x)
            if layer.with_cls_token:
                x, cls_token = x
            stride *= stage.patch_stride
            pyramid[_level_name(stage, stride)] = x
        # Without a cls token, the official order: LayerNorm every token, then average them.
        features = norm(cls_token)[:, 0] if stages[-1].with_cls_token else ops.mean(norm(flatten_grid(x)), axis=1)
        super().__init__(inputs=images, outputs=features, dtype=dtype, **kwargs)
        # === Config ===
        self.spec = spec
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = pyramid

    def get_config(self):
        config = super().get_config()
        config.update(spec=self.spec, image_shape=self.image_shape)
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class CvTImageConverter(ImageConverter):
    """The official CvT evaluation transform on raw 0-255 images (`cvt_tf.EvalPreprocessing`).

    Args:
        resolution: the model's input size, e.g. 224 or 384, or (height, width).
        center_crop: None follows the official experiments (224: shorter side 256, center crop).
    """

    backbone_cls = CvTBackbone

    def __init__(self, resolution=224, center_crop=None, **kwargs):
        from cvt_tf.preprocessing_layer import EvalPreprocessing  # TensorFlow ops: keras-hub presets run on it

        kwargs.pop("image_size", None)  # from the config: it follows from the resolution
        transform = EvalTransform.official(resolution, center_crop)
        super().__init__(image_size=(transform.height, transform.width), **kwargs)
        self.resolution = resolution
        self.center_crop = center_crop
        self.transform = EvalPreprocessing(resolution, center_crop, name="eval_transform")

    def call(self, inputs):
        images = ops.convert_to_tensor(inputs)
        if len(images.shape) == 3:  # one image
            return self.transform(images[None])[0]
        return self.transform(images)

    def get_config(self):
        config = super().get_config()
        config.update(resolution=self.resolution, center_crop=self.center_crop)
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class CvTImageClassifierPreprocessor(ImageClassifierPreprocessor):
    """Raw images to CvT's input: `CvTImageConverter`."""

    backbone_cls = CvTBackbone
    image_converter_cls = CvTImageConverter


@keras.saving.register_keras_serializable(package="cvt_tf")
class CvTImageClassifier(ImageClassifier):
    """A `CvTBackbone` and a classification head on its pooled features (CvT's own `head`).

    Args:
        backbone: a `CvTBackbone`.
        num_classes: the head's size.
        preprocessor: a `CvTImageClassifierPreprocessor`, or None to feed preprocessed images.
        activation: None (logits), "softmax" or any Keras activation.
        dropout: dropout rate on the features before the head.
        head_dtype: the head's dtype policy; float32 by default, as CvT's head.
    """

    backbone_cls = CvTBackbone
    preprocessor_cls = CvTImageClassifierPreprocessor

    def __init__(self, backbone, num_classes, preprocessor=None, activation=None, dropout=0.0, head_dtype="float32",
                 **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(dropout, dtype=head_dtype, name="output_dropout")
        self.output_dense = keras.layers.Dense(num_classes, activation=activation, dtype=head_dtype, name="predictions")
        # === Functional Model ===
        inputs = backbone.input
        outputs = self.output_dense(self.output_dropout(backbone(inputs)))
        Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)  # not ImageClassifier's: CvT pools itself
        # === Config ===
        self.num_classes = num_classes
        self.activation = activation
        self.dropout = dropout
        self.head_dtype = head_dtype

    def get_config(self):
        config = Task.get_config(self)
        config.update(num_classes=self.num_classes, activation=keras.activations.serialize(
            keras.activations.get(self.activation)) if self.activation else None, dropout=self.dropout,
            head_dtype=self.head_dtype)
        return config


def classifier_from_artifact(path, resolution=None) -> CvTImageClassifier:
    """The keras-hub classifier of an artifact: its weights, its head, its evaluation transform.

    Args:
        resolution: the preprocessor's input size; the artifact's by default.
    """
    model = load_artifact(path)
    resolution = tuple(resolution or read_manifest(path)["resolution"])
    backbone = CvTBackbone(spec=model.spec)
    classifier = CvTImageClassifier(backbone, model.num_classes,
                                    preprocessor=CvTImageClassifierPreprocessor(CvTImageConverter(resolution)))
    source = {variable.path.removeprefix(model.name + "/"): variable for variable in model.weights}
    for variable in backbone.weights:
        variable.assign(source[variable.path])
    classifier.output_dense.kernel.assign(source["head/kernel"])
    classifier.output_dense.bias.assign(source["head/bias"])
    return classifier


def raw_images(resolution, count=2, seed=0) -> np.ndarray:
    """Seeded uint8 photos-to-be of another size than the model's: the transform resizes and crops them."""
    height, width = resolution
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, int(height * 1.3) + 3, int(width * 1.1) + 5, 3), dtype=np.uint8)


def predict_with_preset(preset_dir, images: np.ndarray) -> np.ndarray:
    """What keras-hub's own loader makes of a preset directory: `ImageClassifier.from_preset(...).predict`."""
    import keras_hub

    return keras_hub.models.ImageClassifier.from_preset(str(preset_dir)).predict(images, verbose=0)
