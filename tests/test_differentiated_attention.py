import numpy as np
import pytest
from layer_harness import check_layer

from mfn4rec_tf.layers import DifferentiatedAttention


def test_harness(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
    check_layer(lambda: DifferentiatedAttention(dropout=0.3, seed=2), [x], expected_shape=(4, 10), tmp_path=tmp_path)


def test_equations_4_and_5_against_numpy():
    rng = np.random.default_rng(1)
    layer = DifferentiatedAttention()
    x = rng.normal(size=(3, 6)).astype("float32")
    layer.build(x.shape)
    kernel = rng.normal(size=(6, 6)).astype("float32")
    bias = rng.normal(size=(6,)).astype("float32")
    layer.scores.output_dense.kernel.assign(kernel)
    layer.scores.output_dense.bias.assign(bias)

    scores = x.astype(np.float64) @ kernel + bias  # FC_a
    attention = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)  # Eq. 4
    weighted, returned_attention = layer(x, return_attention=True)
    np.testing.assert_allclose(returned_attention.numpy(), attention, atol=1e-6)
    np.testing.assert_allclose(weighted.numpy(), attention * x, atol=1e-6)  # Eq. 5


def test_attention_is_a_distribution_over_dimensions():
    layer = DifferentiatedAttention()
    x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")
    _, attention = layer(x, return_attention=True)
    attention = attention.numpy()
    assert np.all(attention > 0)
    np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-6)


def test_constant_zero_weights_give_uniform_attention():
    layer = DifferentiatedAttention()
    x = np.arange(1, 5, dtype="float32")[None, :]
    layer.build(x.shape)
    layer.scores.output_dense.kernel.assign(np.zeros((4, 4), "float32"))
    np.testing.assert_allclose(layer(x).numpy(), x / 4.0, atol=1e-7)


def test_bad_dropout_is_named():
    with pytest.raises(ValueError, match="dropout"):
        DifferentiatedAttention(dropout=-0.1)
