import numpy as np
import pytest
import tensorflow as tf
from layer_harness import check_layer

from mfn4rec_tf.layers import GatedMemory
from mfn4rec_tf.layers.gated_memory import _linear_scan

MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0, 0],  # right padding
        [0, 0, 1, 1, 1, 1, 1],  # left padding
        [1, 0, 1, 0, 0, 1, 1],  # holes
        [0, 0, 0, 0, 0, 0, 0],  # nothing
    ],
    bool,
)


def _states(seed=0, steps=7, width=6):
    return np.random.default_rng(seed).normal(size=(len(MASK), steps, width)).astype("float32")


def _pair(seed=1, **kwargs):
    """Two layers, scan and cell, with the same random weights."""
    scan = GatedMemory(6, memory_dim=4, hidden_units=5, mode="scan", **kwargs)
    cell = GatedMemory(6, memory_dim=4, hidden_units=5, mode="cell", **kwargs)
    scan.build((None, None, 6))
    cell.build((None, None, 6))
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.7, w.shape).astype("float32") for w in scan.get_weights()]
    scan.set_weights(weights)
    cell.set_weights(weights)
    return scan, cell


@pytest.mark.parametrize("mode", ["scan", "cell"])
def test_harness(mode, tmp_path):
    check_layer(lambda: GatedMemory(6, memory_dim=4, hidden_units=5, dropout=0.3, seed=2, mode=mode), [_states()],
                expected_shape=(5, 7, 4), tmp_path=tmp_path)


def test_scan_equals_cell_outputs_with_any_padding():
    scan, cell = _pair()
    states = _states()
    np.testing.assert_allclose(scan(states, mask=MASK).numpy(), cell(states, mask=MASK).numpy(), atol=1e-5)
    np.testing.assert_allclose(scan(states).numpy(), cell(states).numpy(), atol=1e-5)


def test_scan_equals_cell_gradients():
    scan, cell = _pair(seed=3)
    states = tf.constant(_states(4))
    target = tf.constant(np.random.default_rng(5).normal(size=(len(MASK), 7, 4)).astype("float32"))

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(states)
            loss = tf.reduce_sum(tf.square(layer(states, mask=MASK) - target))
        return tape.gradient(loss, [states, *layer.trainable_weights])

    for g_scan, g_cell in zip(grads(scan), grads(cell)):
        np.testing.assert_allclose(g_scan.numpy(), g_cell.numpy(), atol=1e-5, rtol=1e-5)


def test_scan_on_a_long_sequence():
    scan, cell = _pair(seed=6)
    states = np.random.default_rng(7).normal(size=(3, 100, 6)).astype("float32")
    mask = np.ones((3, 100), bool)
    mask[1, 60:] = False
    np.testing.assert_allclose(scan(states, mask=mask).numpy(), cell(states, mask=mask).numpy(), atol=1e-5)


def test_linear_scan_against_a_loop():
    rng = np.random.default_rng(8)
    a = rng.uniform(0, 1, size=(2, 13, 3)).astype("float32")
    b = rng.normal(size=(2, 13, 3)).astype("float32")
    expected = np.zeros_like(b)
    u = np.zeros((2, 3), "float32")
    for t in range(13):
        u = a[:, t] * u + b[:, t]
        expected[:, t] = u
    np.testing.assert_allclose(_linear_scan(tf.constant(a), tf.constant(b)).numpy(), expected, atol=1e-6)
    one = _linear_scan(tf.constant(a[:, :1]), tf.constant(b[:, :1])).numpy()
    np.testing.assert_allclose(one, b[:, :1])


def test_modes_share_weights_and_config():
    layer = GatedMemory(6, memory_dim=4, mode="scan")
    layer.build((None, None, 6))
    assert len(layer.trainable_weights) == 14  # FC_a (2) + FC_u, FC_g1, FC_g2 (4 each)
    config = layer.get_config()
    assert config["mode"] == "scan" and GatedMemory.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="mode"):
        GatedMemory(6, mode="loop")


def test_training_dropout_differs_from_inference():
    scan, _ = _pair(seed=9, dropout=0.5)
    states = _states(10)
    assert not np.allclose(scan(states, training=True).numpy(), scan(states, training=False).numpy())


@pytest.mark.parametrize("steps", [1, 7])
def test_scan_with_static_shapes_and_xla(steps):
    """A tf.function traced with a static length (1 included) and an XLA-compiled one give the
    eager outputs (the doubling scan keeps every shape fixed, so both trace)."""
    scan, cell = _pair()
    states, mask = _states(steps=7)[:, :steps], MASK[:, :steps]
    expected = cell(states, mask=mask).numpy()
    static = tf.function(lambda x, m: scan(x, mask=m))
    compiled = tf.function(lambda x, m: scan(x, mask=m), jit_compile=True)
    np.testing.assert_allclose(static(tf.constant(states), tf.constant(mask)).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled(tf.constant(states), tf.constant(mask)).numpy(), expected, rtol=1e-5,
                               atol=1e-6)
