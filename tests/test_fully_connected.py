import keras
import numpy as np
import pytest
from layer_harness import check_layer

from mfn4rec_tf.layers import FullyConnected


def test_harness_two_layer(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 12)).astype("float32")
    check_layer(
        lambda: FullyConnected(5, hidden_units=7, activation="sigmoid", dropout=0.3, seed=1),
        [x],
        expected_shape=(4, 5),
        tmp_path=tmp_path,
    )


def test_harness_single_layer_on_sequences(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 4, 6)).astype("float32")
    check_layer(lambda: FullyConnected(2, dropout=0.3), [x], expected_shape=(3, 4, 2), tmp_path=tmp_path)


def test_two_layer_values_match_hand_computation():
    layer = FullyConnected(2, hidden_units=3, activation="sigmoid")
    layer.build((None, 2))
    layer.hidden.kernel.assign(np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]], "float32"))
    layer.hidden.bias.assign(np.array([0.0, 0.5, -1.0], "float32"))
    layer.output_dense.kernel.assign(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32"))
    layer.output_dense.bias.assign(np.array([0.1, -0.1], "float32"))
    x = np.array([[1.0, 1.0]], "float32")
    hidden = np.maximum(np.array([3.0, -0.5, -1.0]), 0.0)  # ReLU([1+2, -1+0+0.5, 0.5-0.5-1])
    expected = 1 / (1 + np.exp(-(hidden @ np.array([[1, 0], [0, 1], [1, 1]]) + [0.1, -0.1])))
    np.testing.assert_allclose(layer(x).numpy(), expected[None, :], rtol=1e-6)


def test_dropout_placement_hidden_layer_for_two_layers_input_for_one():
    x = np.ones((64, 4), "float32")
    # Two layers: every hidden unit is sum(x) = 4 (all-ones kernel) and the output kernel is the
    # identity. Dropout on the hidden layer zeroes whole units: outputs are exactly 0 or 4 / (1 - 0.5).
    # (Dropout on the input would give every unit of a row the same value instead.)
    two = FullyConnected(8, hidden_units=8, dropout=0.5, seed=0)
    two.build(x.shape)
    two.hidden.kernel.assign(np.ones((4, 8), "float32"))
    two.output_dense.kernel.assign(np.eye(8, dtype="float32"))
    out = two(x, training=True).numpy()
    assert set(np.unique(out)) == {0.0, 8.0}
    assert not np.all(out == out[:, :1])  # units of one row differ: the mask is on hidden units
    # One layer: all-ones kernel, so each output is the sum of the surviving inputs / (1 - 0.5): the
    # same for every unit of a row, and a multiple of 2.
    one = FullyConnected(8, dropout=0.5, seed=0)
    one.build(x.shape)
    one.output_dense.kernel.assign(np.ones((4, 8), "float32"))
    out = one(x, training=True).numpy()
    assert np.all(out == out[:, :1]) and set(np.unique(out)) <= {0.0, 2.0, 4.0, 6.0, 8.0}
    assert len(np.unique(out)) > 1


def test_dropout_acts_on_hidden_layer_only_in_training():
    layer = FullyConnected(4, hidden_units=64, dropout=0.5, seed=3)
    x = np.ones((8, 5), "float32")
    assert np.allclose(layer(x, training=False), layer(x, training=False))
    assert not np.allclose(layer(x, training=True), layer(x, training=False))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"units": 0}, "units"),
        ({"units": 3, "hidden_units": -1}, "hidden_units"),
        ({"units": 3, "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FullyConnected(**kwargs)


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError):
        FullyConnected(3, activation="not_an_activation")


def test_keras_serialization_finds_registered_class():
    layer = FullyConnected(3, hidden_units=4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, FullyConnected) and restored.hidden_units == 4
