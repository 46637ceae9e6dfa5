"""`mfn4rec_tf.softmax_loss`: the full softmax cross-entropy `fit` trains with, against a float64 NumPy
reference and against Keras' `SparseCategoricalCrossentropy(from_logits=True)` (values and gradients)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mfn4rec_tf.softmax_loss import SoftmaxCrossEntropy, softmax_cross_entropy


def _numpy_loss_and_gradient(logits, labels):
    """Per-position `-log softmax(z)[label]` and its gradient `softmax(z) - onehot`, in float64."""
    z = np.asarray(logits, np.float64)
    top = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=-1, keepdims=True)) + top
    chosen = np.take_along_axis(z, labels[..., None], axis=-1)
    gradient = np.exp(z - lse)
    np.put_along_axis(gradient, labels[..., None], np.take_along_axis(gradient, labels[..., None], -1) - 1.0, -1)
    return (lse - chosen)[..., 0], gradient


def _value_and_gradient(loss_fn, logits, labels, **kwargs):
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss_fn(labels, variable, **kwargs)
    return value.numpy(), tape.gradient(value, variable).numpy()


@pytest.mark.parametrize("shape", [(5, 40), (3, 6, 40)])
def test_values_and_gradients_equal_numpy(shape):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=shape) * 4.0).astype(np.float32)
    labels = rng.integers(0, shape[-1], shape[:-1])
    value, gradient = _value_and_gradient(lambda y, z: tf.reduce_sum(softmax_cross_entropy(y, z)), logits, labels)
    expected, expected_gradient = _numpy_loss_and_gradient(logits, labels)
    np.testing.assert_allclose(value, expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-6)
    per_position = softmax_cross_entropy(labels, logits).numpy()
    assert per_position.shape == shape[:-1]
    np.testing.assert_allclose(per_position, expected, rtol=1e-5, atol=1e-6)


def test_extreme_logits_stay_finite():
    """The padding column's floor (-1e9), a target far below the best item and a huge spread: the
    log-sum-exp comes from the largest probability, so no log of an underflowed zero."""
    logits = np.array([[-1e9, 0.0, 1.0, 2.0],       # padding column at the floor
                       [-1e9, 100.0, -100.0, 0.0],  # the target (column 2) 200 below the best
                       [-1e9, 50.0, 50.0, 50.0],
                       [-1e9, 1.0, 2.0, 3.0]], np.float32)  # the target is the padding column itself
    labels = np.array([3, 2, 1, 0])
    value, gradient = _value_and_gradient(lambda y, z: tf.reduce_sum(softmax_cross_entropy(y, z)), logits, labels)
    expected, expected_gradient = _numpy_loss_and_gradient(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(softmax_cross_entropy(labels, logits).numpy(), expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-6)


def test_equals_keras_loss_with_sample_weights_and_column_targets():
    """As a Keras loss: the sample weights (0 at padding positions) and the mean as Keras' own loss."""
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(4, 7, 30)) * 3.0).astype(np.float32)
    labels = rng.integers(1, 30, (4, 7))
    weights = (rng.random((4, 7)) > 0.3).astype(np.float32)
    labels[weights == 0] = 0  # as the pipelines pad: target 0 with weight 0
    ours = _value_and_gradient(SoftmaxCrossEntropy(), logits, labels, sample_weight=weights)
    keras_loss = _value_and_gradient(keras.losses.SparseCategoricalCrossentropy(from_logits=True), logits, labels,
                                     sample_weight=weights)
    np.testing.assert_allclose(ours[0], keras_loss[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], keras_loss[1], atol=1e-7)
    column = _value_and_gradient(SoftmaxCrossEntropy(), logits, labels[..., None], sample_weight=weights)
    np.testing.assert_allclose(column[0], ours[0], rtol=1e-7)


def test_serializes():
    clone = keras.losses.deserialize(keras.losses.serialize(SoftmaxCrossEntropy(reduction="sum", name="xent")))
    assert isinstance(clone, SoftmaxCrossEntropy) and clone.reduction == "sum" and clone.name == "xent"
