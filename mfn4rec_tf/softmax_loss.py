"""Softmax cross-entropy over every item, with a gradient that costs fewer passes over the logits.

The full softmax is most of an MFN4Rec training step (benchmarks/RESULTS.md): the `(positions, N + 1)`
logits, their softmax and its gradient. TensorFlow's `sparse_softmax_cross_entropy_with_logits`, which
Keras' `SparseCategoricalCrossentropy(from_logits=True)` calls, is on this CPU several times slower
than TensorFlow's `softmax` kernel (oneDNN) on the same array (`benchmarks/softmax_loss.py` prints the
figures). This loss computes the same values from that faster kernel:

    p        = softmax(z)                            (one kernel, kept for the gradient)
    lse      = max_j z_j - log(max_j p_j)            (the log-sum-exp: p_max = exp(z_max - lse) >= 1 / N,
                                                      so the log never sees an underflowed 0)
    loss     = lse - z_target
    d loss/dz = (p - onehot(target)) · upstream

Same objective and the same reduction (Keras applies the sample weights, the mask and the mean
outside `call`); the loss and both gradients agree with Keras' to float rounding
(`tests/test_softmax_loss.py`).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def softmax_cross_entropy(labels, logits):
    """`-log softmax(logits)[..., labels]` per position, with the gradient `(softmax - onehot) · upstream`.

    Args:
        labels: int tensor of shape `logits.shape[:-1]`, each in [0, num_classes).
        logits: float tensor `(..., num_classes)` (computed in float32).

    Returns:
        float32 tensor of shape `logits.shape[:-1]`.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    return _loss(logits, labels)


@tf.custom_gradient
def _loss(logits, labels):
    classes = tf.shape(logits)[-1]
    flat = tf.reshape(logits, [-1, classes])  # (M, N)
    flat_labels = tf.reshape(labels, [-1])
    probabilities = tf.nn.softmax(flat)
    lse = tf.reduce_max(flat, axis=-1) - tf.math.log(tf.reduce_max(probabilities, axis=-1))
    rows = tf.range(tf.shape(flat)[0])
    indices = tf.stack([rows, flat_labels], axis=1)
    value = tf.reshape(lse - tf.gather_nd(flat, indices), tf.shape(labels))

    def grad(upstream):
        scale = tf.reshape(tf.cast(upstream, tf.float32), [-1])  # (M,)
        dz = tf.tensor_scatter_nd_sub(probabilities * scale[:, None], indices, scale)
        return tf.reshape(dz, tf.shape(logits)), None

    return value, grad


@keras.saving.register_keras_serializable(package="mfn4rec")
class SoftmaxCrossEntropy(keras.losses.Loss):
    """`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`'s loss from `softmax_cross_entropy`:
    integer targets, logits over every class; reduction, sample weights and masks as in any Keras loss."""

    def __init__(self, name="softmax_cross_entropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:  # (..., 1) targets, as Keras
            y_true = tf.squeeze(y_true, axis=-1)
        return softmax_cross_entropy(y_true, y_pred)
