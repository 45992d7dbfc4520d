"""The CvT model: stages, final LayerNorm, classification head.

Built from a predefined configuration or an official SPEC; channels_last inside.
"""

import keras
import numpy as np
from keras import layers, ops

from cvt_spec import InputError, normalize_spec, stage_specs, variant_spec
from cvt_tf.layers.common import flatten_grid, layer_norm, split_evenly, trunc_normal_initializer
from cvt_tf.layers.options import DEFAULT_INFERENCE_STREAMS, WHOLE, InferenceOptions
from cvt_tf.layers.stage import Stage, stage_arguments
from cvt_tf.pretrained import pretrained_artifact
from cvt_tf.weights import restore_artifact

DATA_FORMATS = ("channels_last", "channels_first")
# How an inference call runs when the caller does not say: in TensorFlow graphs (tf.function,
# model.predict, a SavedModel) in independent streams, else (eager, JAX, PyTorch) in one piece.
GRAPH_OPTIONS = InferenceOptions(streams=DEFAULT_INFERENCE_STREAMS)


def default_options(training) -> InferenceOptions:
    """`GRAPH_OPTIONS` for inference traced into a TensorFlow graph, else `WHOLE`."""
    if training or keras.backend.backend() != "tensorflow":
        return WHOLE
    import tensorflow as tf  # loaded already: Keras runs on it

    if tf.executing_eagerly():
        return WHOLE
    from cvt_tf.threads import warn_on_default_threads

    warn_on_default_threads()
    return GRAPH_OPTIONS


def resolve_spec(configuration: str | None, spec: dict | None) -> dict:
    """The normalized SPEC named by exactly one of `configuration` and `spec`."""
    if (configuration is None) == (spec is None):
        raise InputError(
            "give exactly one of configuration= (e.g. 'cvt-21') and spec= (official SPEC keys); "
            f"got configuration={configuration!r}, spec={'given' if spec is not None else None}"
        )
    return variant_spec(configuration) if configuration is not None else normalize_spec(spec)


def _check_arguments(data_format, num_classes, pretrained, configuration):
    if data_format not in DATA_FORMATS:
        raise InputError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise InputError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    if pretrained and configuration is None:
        raise InputError(
            "pretrained=True needs configuration= (cvt-13, cvt-21 or cvt-w24), not spec=; "
            "load your own converted weights with cvt_tf.load_artifact"
        )


@keras.saving.register_keras_serializable(package="cvt_tf")
class CvT(keras.Model):
    """Convolutional vision Transformer (Wu et al. 2021) with the official microsoft/CvT numerics.

    Args:
        configuration: a predefined variant, `cvt-13`, `cvt-21` or `cvt-w24`.
        spec: instead of `configuration`, a dict of official SPEC keys.
        num_classes: width of the head; 0 returns the pooled feature vector.
        in_chans: channels of the input image.
        input_shape: (H, W, C) or (C, H, W) per `data_format`; builds the model at once if given.
        data_format: `channels_last` or `channels_first` (transposed once on entry).
        classifier_activation: None for logits, or any Keras activation, e.g. "softmax".
        include_top: False returns the pooled feature vector, as num_classes=0.
        pretrained: load the converted official weights of `configuration` from the weights directory
            ($CVT_TF_WEIGHTS, default ~/.cache/cvt_tf); see `cvt_tf.pretrained`.
        pretrained_resolution: 224 or 384, the resolution the official checkpoint was trained at.
        pretrained_version: "1k" or "22k", its pretraining data.
        synchronized_batch_norm: the BatchNorms of the `dw_bn` projections compute batch statistics over
            every replica of a `tf.distribute` strategy (Keras `synchronized=True`, TensorFlow backend), so
            `fit` gives the same result however the global batch is split; the same weights either way.

    Under a mixed precision policy the LayerNorms, the attention softmax, the head and its activation
    run in float32, so the output is float32. `call` takes `options=` (`cvt_tf.InferenceOptions`):
    streams, attention query chunks and frozen-weight folds of an inference call; by default
    `default_options` (streams in TensorFlow graphs: `model.predict`, `tf.function`, SavedModels).
    """

    def __init__(
        self, configuration=None, spec=None, num_classes=1000, in_chans=3, input_shape=None,
        data_format="channels_last", classifier_activation=None, include_top=True, pretrained=False,
        pretrained_resolution=224, pretrained_version="1k", synchronized_batch_norm=False, name="cvt", **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        _check_arguments(data_format, num_classes, pretrained, configuration)
        # Located before any layer is made: a missing file fails at once.
        pretrained_path = (
            pretrained_artifact(configuration, pretrained_resolution, pretrained_version) if pretrained else None
        )
        self.configuration = configuration
        self.spec = resolve_spec(configuration, spec)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.data_format = data_format
        self.classifier_activation = classifier_activation
        self.include_top = include_top
        self.synchronized_batch_norm = synchronized_batch_norm
        self.stages = [Stage(**stage_arguments(stage, synchronized_batch_norm), name=f"stage{stage.index}",
                             dtype=self.dtype_policy)
                       for stage in stage_specs(self.spec)]
        self.has_cls_token = self.spec["CLS_TOKEN"][-1]
        self.num_features = self.spec["DIM_EMBED"][-1]
        self.norm = layer_norm("norm")
        self.head = None
        if include_top and num_classes > 0:
            self.head = layers.Dense(
                num_classes, kernel_initializer=trunc_normal_initializer(), dtype="float32", name="head"
            )
        self.activation = keras.activations.get(classifier_activation)
        self.model_input_shape = tuple(input_shape) if input_shape is not None else None
        if input_shape is not None:
            self.build((None, *input_shape))
        if pretrained_path is not None:
            restore_artifact(self, pretrained_path)

    def build(self, input_shape):
        if self.data_format == "channels_first":
            _, channels, height, width = input_shape
        else:
            _, height, width, channels = input_shape
        if channels is not None and channels != self.in_chans:
            raise InputError(f"input has {channels} channels, the model was made with in_chans={self.in_chans}")
        self.serving_input_shape = (None, *input_shape[1:])
        # Known sizes flow through the stages, so summary() shows each stage's output grid.
        grid_shape = (None, height, width, self.in_chans)
        for stage in self.stages:
            stage.build(grid_shape)
            grid_shape = stage.compute_output_shape(grid_shape)
            if stage.with_cls_token:
                grid_shape = grid_shape[0]
        self.norm.build((None, None, self.num_features))
        if self.head is not None:
            self.head.build((None, self.num_features))
        self.built = True

    def build_for_any_size(self) -> "CvT":
        """Builds the model for images of any height and width (in its data format); returns it."""
        if not self.built:
            channels_first = self.data_format == "channels_first"
            self.build((None, self.in_chans, None, None) if channels_first else (None, None, None, self.in_chans))
        return self

    def forward_stages(self, inputs, training=None, options: InferenceOptions | None = None) -> dict:
        """Returns {"stage0": grid, ..., "features": pooled vector, "logits": head output}."""
        options = options or default_options(training)
        x = inputs
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        outputs = {}
        for i, stage in enumerate(self.stages):
            x = stage(x, training=training, options=options)
            if stage.with_cls_token:
                x, cls_token = x
            outputs[f"stage{i}"] = x
        # Without a cls token, the official order: LayerNorm every token, then average them.
        features = self.norm(cls_token)[:, 0] if self.has_cls_token else ops.mean(self.norm(flatten_grid(x)), axis=1)
        outputs["features"] = features
        if self.head is not None:
            outputs["logits"] = self.activation(self.head(features))
        return outputs

    def call(self, inputs, training=None, options: InferenceOptions | None = None):
        options = options or default_options(training)
        batch = inputs.shape[0]
        if options.streams > 1 and not training and batch is not None and batch >= options.streams:
            # Whole images per stream: no stream waits for another until the end.
            one_stream = options.in_one_stream()
            parts = split_evenly(inputs, options.streams, axis=0)
            return ops.concatenate([self.call(part, options=one_stream) for part in parts], axis=0)
        outputs = self.forward_stages(inputs, training=training, options=options)
        return outputs["logits"] if self.head is not None else outputs["features"]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`; images held in memory (a numpy array or a tensor) go batch by batch
        through `predict_on_batch`, the same compiled step without the tf.data pipeline Keras builds
        on every call (most of a one-image call at cvt-13 @ 224: README, "Speed"). Datasets,
        generators, `steps` and callbacks go to Keras as they are.
        """
        in_memory = isinstance(x, np.ndarray) or ops.is_tensor(x)
        if steps is not None or callbacks or not in_memory or int(x.shape[0]) == 0:
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
        batch_size = batch_size or 32
        starts = range(0, int(x.shape[0]), batch_size)
        progress = keras.utils.Progbar(len(starts), verbose=2 if verbose == 2 else 1) if verbose else None
        outputs = []
        for done, start in enumerate(starts, start=1):
            outputs.append(self.predict_on_batch(x[start:start + batch_size]))
            if progress is not None:
                progress.update(done)
        return np.concatenate(outputs, axis=0)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """`keras.Model.export`, whose default signature is the shape given to `build`, any batch size.

        Keras would otherwise refuse a subclassed model that was built but never called.
        """
        if input_signature is None and self.built:
            input_signature = [keras.InputSpec(shape=self.serving_input_shape, dtype=self.input_dtype)]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            configuration=self.configuration,
            spec=None if self.configuration is not None else self.spec,
            num_classes=self.num_classes, in_chans=self.in_chans,
            input_shape=self.model_input_shape, data_format=self.data_format,
            classifier_activation=keras.activations.serialize(self.activation)
            if self.classifier_activation is not None else None,
            include_top=self.include_top, synchronized_batch_norm=self.synchronized_batch_norm,
        )
        return config
