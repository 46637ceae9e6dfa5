"""Softmax cross-entropy over every item, with a gradient that costs fewer passes over the logits.

The full softmax is most of an MFN4Rec training step (benchmarks/RESULTS.md): the `(positions, N + 1)`
logits, their softmax and its gradient. TensorFlow's `sparse_softmax_cross_entropy_with_logits`, which
Keras' `SparseCategoricalCrossentropy(from_logits=True)` calls, is on this CPU several times slower
than TensorFlow's `softmax` kernel (oneDNN) on the same array (`benchmarks/RESULTS.md`, "The full
softmax from TensorFlow's softmax kernel"; `benchmarks/sampled_softmax.py --keras-loss` times both in
a training step). This loss computes the same values from that faster kernel:

    p        = softmax(z)                            (one kernel, kept for the gradient)
    loss     = -log p_target                         where p_target >= 1e-30
             = logsumexp_j z_j - z_target            elsewhere (only the rows whose target's
                                                      probability underflows, e.g. a target at the
                                                      padding's -1e9 column)
    d loss/dz = (p - onehot(target)) · upstream

Same objective and the same reduction (Keras applies the sample weights, the mask and the mean
outside `call`); the loss and both gradients agree with Keras' to float rounding
(`tests/test_softmax_loss.py`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

TINY = 1e-30
"""Below this target probability the loss is taken from the log-sum-exp instead of `-log p_target`
(float32 keeps full precision down to about 1.2e-38)."""


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
    rows = tf.range(tf.shape(flat)[0])
    indices = tf.stack([rows, flat_labels], axis=1)
    target_probability = tf.gather_nd(probabilities, indices)
    value = -tf.math.log(tf.maximum(target_probability, TINY))
    low = tf.where(target_probability < TINY)[:, 0]  # rows whose target's probability underflows
    exact = tf.reduce_logsumexp(tf.gather(flat, low), axis=-1) - tf.gather_nd(flat, tf.gather(indices, low))
    value = tf.reshape(tf.tensor_scatter_nd_update(value, low[:, None], exact), tf.shape(labels))

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
