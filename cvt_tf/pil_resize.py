"""PIL's 8-bit bicubic resize (Pillow `Resample.c`) in TensorFlow ops, to the same integers.

Antialiased Keys cubic (a = -0.5), 22-bit fixed-point coefficients, horizontal pass first (as in
every Pillow before 13), each pass rounded and clipped to 8 bits; float64 products keep the sums exact.
"""

import tensorflow as tf

PRECISION_BITS = 22  # Pillow: 32 bits - 8 bits of pixel - 2 bits of headroom
BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0


def bicubic_filter(x: tf.Tensor) -> tf.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, as Pillow's `bicubic_filter`."""
    x = tf.abs(x)
    near = ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def fixed_point_coefficients(in_size, out_size) -> tf.Tensor:
    """(out_size, in_size) float64 matrix of Pillow's integer coefficients for one axis.

    Output pixel i samples around center (i + 0.5) * in/out; when shrinking, the kernel is
    widened by in/out (the antialiasing); each row is normalised to sum 1, then scaled by 2**22
    and rounded half away from zero, as `precompute_coeffs` and `normalize_coeffs_8bpc` do.
    """
    in_size = tf.cast(in_size, tf.float64)
    out_size = tf.cast(out_size, tf.float64)
    scale = in_size / out_size
    filter_scale = tf.maximum(scale, 1.0)
    support = BICUBIC_SUPPORT * filter_scale
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.floor(center - support + 0.5), 0.0)[:, None]
    end = tf.minimum(tf.floor(center + support + 0.5), in_size)[:, None]
    source = tf.range(in_size, dtype=tf.float64)[None, :]
    weights = bicubic_filter((source - center[:, None] + 0.5) * (1.0 / filter_scale))
    weights = tf.where((source >= first) & (source < end), weights, 0.0)
    scaled = weights / tf.reduce_sum(weights, axis=1, keepdims=True) * float(1 << PRECISION_BITS)
    return tf.where(scaled < 0.0, tf.math.ceil(scaled - 0.5), tf.floor(scaled + 0.5))


def _to_8bit(sums):
    """Pillow's `clip8`: add half, shift right by 22 bits, clip to 0..255."""
    half = float(1 << (PRECISION_BITS - 1))
    return tf.clip_by_value(tf.floor((sums + half) / float(1 << PRECISION_BITS)), 0.0, 255.0)


def resize_bicubic_8bit(pixels, height, width) -> tf.Tensor:
    """(batch, H, W, C) integer pixel values 0..255 -> (batch, height, width, C) float64, as PIL.

    Equals `Image.resize((width, height), Image.BICUBIC)` on 8-bit images; `height` and `width`
    may be tensors known only when the graph runs.
    """
    pixels = tf.cast(pixels, tf.float64)
    shape = tf.shape(pixels)
    horizontal = fixed_point_coefficients(shape[2], width)
    pixels = _to_8bit(tf.einsum("bhwc,ow->bhoc", pixels, horizontal))
    vertical = fixed_point_coefficients(shape[1], height)
    return _to_8bit(tf.einsum("bhwc,oh->bowc", pixels, vertical))
