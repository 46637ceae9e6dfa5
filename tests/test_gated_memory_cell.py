import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_harness import check_layer
from numpy_reference import memory_sequence

from mfn4rec_tf.layers import GatedMemoryCell


def _sequence(seed=0, batch=3, steps=6, width=7):
    return np.random.default_rng(seed).normal(size=(batch, steps, width)).astype("float32")


def _cell_weights(cell):
    def dense(layer):
        return {"kernel": layer.kernel.numpy(), "bias": layer.bias.numpy()}

    def block(fc):
        return {"hidden": dense(fc.hidden), "output": dense(fc.output_dense)}

    return {
        "fc_a": dense(cell.attention.scores.output_dense),
        "fc_u": block(cell.candidate),
        "fc_g1": block(cell.remain_gate),
        "fc_g2": block(cell.update_gate),
    }


def _randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))


def test_harness_inside_rnn(tmp_path):
    check_layer(
        lambda: keras.layers.RNN(GatedMemoryCell(7, memory_dim=4, hidden_units=5, dropout=0.3, seed=1),
                                 return_sequences=True),
        [_sequence()],
        expected_shape=(3, 6, 4),
        tmp_path=tmp_path,
    )


def test_cell_config_round_trip():
    cell = GatedMemoryCell(7, memory_dim=4, hidden_units=5, dropout=0.2, hidden_activation="tanh", seed=3)
    assert GatedMemoryCell.from_config(cell.get_config()).get_config() == cell.get_config()


def test_state_and_output_sizes():
    cell = GatedMemoryCell(7, memory_dim=4)
    assert cell.state_size == [7, 4] and cell.output_size == 4
    h0, u0 = cell.get_initial_state(batch_size=2)
    assert h0.shape == (2, 7) and u0.shape == (2, 4)
    assert not np.any(h0.numpy()) and not np.any(u0.numpy())


def test_stepping_by_hand_equals_rnn_layer():
    xs = _sequence(1)
    cell = GatedMemoryCell(7, memory_dim=4, hidden_units=5)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    sequence, last_h, last_u = rnn(xs)
    _randomize(cell, 2)
    sequence, last_h, last_u = rnn(xs)

    states = cell.get_initial_state(batch_size=xs.shape[0])
    for t in range(xs.shape[1]):
        output, states = cell(xs[:, t], states)
        np.testing.assert_allclose(output.numpy(), sequence[:, t].numpy(), atol=1e-6)
    np.testing.assert_allclose(states[0].numpy(), last_h.numpy(), atol=1e-6)
    np.testing.assert_allclose(states[1].numpy(), last_u.numpy(), atol=1e-6)
    np.testing.assert_allclose(last_h.numpy(), xs[:, -1], atol=0)  # the h-state is the last input


def test_equations_4_to_9_against_numpy_reference_with_mask():
    xs = _sequence(3, batch=4, steps=7)
    mask = np.array(
        [[1] * 7, [1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1]], bool
    )
    cell = GatedMemoryCell(7, memory_dim=4, hidden_units=5)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    rnn.build(xs.shape)
    _randomize(cell, 4)
    expected = memory_sequence(xs.astype(float), mask, _cell_weights(cell), memory_dim=4)
    np.testing.assert_allclose(rnn(xs, mask=mask).numpy(), expected, atol=1e-5)


def test_memory_depends_on_previous_hidden_state():
    # Swapping h_{t-1} for zeros must change u_t: the cell really reads the adjacent pair.
    xs = _sequence(5, batch=2, steps=2)
    cell = GatedMemoryCell(7, memory_dim=4)
    states = cell.get_initial_state(batch_size=2)
    _, states = cell(xs[:, 0], states)
    _randomize(cell, 6)
    u_with_history, _ = cell(xs[:, 1], [xs[:, 0], states[1]])
    u_without, _ = cell(xs[:, 1], [np.zeros_like(xs[:, 0]), states[1]])
    assert not np.allclose(u_with_history.numpy(), u_without.numpy())


def test_gradients_reach_every_weight():
    xs = _sequence(7)
    cell = GatedMemoryCell(7, memory_dim=4, hidden_units=5, dropout=0.3, seed=0)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    rnn.build(xs.shape)
    _randomize(cell, 8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(rnn(xs, training=True)))
    grads = tape.gradient(loss, rnn.trainable_weights)
    assert len(grads) == len(rnn.trainable_weights) == 14
    for weight, grad in zip(rnn.trainable_weights, grads):
        assert grad is not None and np.any(grad.numpy() != 0), weight.path


def test_training_dropout_is_seeded_and_changes_output():
    xs = _sequence(9)

    def run(seed):
        keras.utils.set_random_seed(0)
        rnn = keras.layers.RNN(GatedMemoryCell(7, memory_dim=4, dropout=0.5, seed=seed), return_sequences=True)
        return rnn(xs, training=True).numpy(), rnn(xs, training=False).numpy()

    train_a, infer_a = run(11)
    train_b, _ = run(11)
    np.testing.assert_allclose(train_a, train_b, atol=0)
    assert not np.allclose(train_a, infer_a)


def test_input_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="input_dim=5"):
        keras.layers.RNN(GatedMemoryCell(5))(_sequence())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"input_dim": 0}, "input_dim"),
        ({"input_dim": 4, "memory_dim": 2.5}, "memory_dim"),
        ({"input_dim": 4, "dropout": 2}, "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GatedMemoryCell(**kwargs)
