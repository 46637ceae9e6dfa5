import keras
import numpy as np
import pytest
from layer_harness import check_layer
from numpy_reference import gru_sequence

from mfn4rec_tf.layers import MultiGRU


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 5, 4)).astype("float32"), rng.normal(size=(3, 5, 2)).astype("float32")]


def test_harness(tmp_path):
    check_layer(
        lambda: MultiGRU([3, 6]),
        _inputs(),
        call=lambda layer, xs: keras.layers.Concatenate()(layer(xs)),
        expected_shape=(3, 5, 9),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("implementation", ["fused", "keras"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_each_gru_matches_numpy_reference_with_mask(reset_after, implementation):
    layer = MultiGRU([3, 6], reset_after=reset_after, implementation=implementation)
    xs = _inputs(1)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], bool)
    layer.build([x.shape for x in xs])
    rng = np.random.default_rng(2)
    for gru in layer.grus:
        for w in gru.weights:
            w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    outputs = layer(xs, mask=mask)
    for x, gru, out in zip(xs, layer.grus, outputs):
        w = {"kernel": gru.cell.kernel.numpy(), "recurrent": gru.cell.recurrent_kernel.numpy(),
             "bias": gru.cell.bias.numpy()}
        np.testing.assert_allclose(out.numpy(), gru_sequence(x.astype(float), mask, w, reset_after), atol=1e-5)


def test_modalities_are_independent():
    layer = MultiGRU([3, 6])
    xs = _inputs(3)
    first = [o.numpy() for o in layer(xs)]
    changed = [xs[0], xs[1] + 1.0]
    second = [o.numpy() for o in layer(changed)]
    np.testing.assert_allclose(first[0], second[0], atol=0)
    assert not np.allclose(first[1], second[1])


def test_wrong_number_of_inputs_is_a_clear_error():
    with pytest.raises(ValueError, match="2 GRUs"):
        MultiGRU([3, 6])([np.zeros((1, 2, 3), "float32")])


@pytest.mark.parametrize("units", [3, [], [3, 0]])
def test_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        MultiGRU(units)


@pytest.mark.parametrize("reset_after", [True, False])
def test_fused_and_keras_executions_agree_in_outputs_and_gradients(reset_after):
    """Same weights, right and left padding and a hole: outputs and every gradient within 1e-5."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    xs = [tf.constant(rng.normal(size=(4, 9, d)).astype("float32")) for d in (5, 11, 3)]
    mask = np.ones((4, 9), bool)
    mask[0, 6:] = False
    mask[1, :2] = False
    mask[2, 4] = False
    fused = MultiGRU([3, 4, 2], reset_after=reset_after, implementation="fused")
    reference = MultiGRU([3, 4, 2], reset_after=reset_after, implementation="keras")
    fused(xs, mask=mask)
    reference(xs, mask=mask)
    weights = [rng.normal(0, 0.5, w.shape).astype("float32") for w in fused.get_weights()]
    fused.set_weights(weights)
    reference.set_weights(weights)
    results = []
    for layer in (fused, reference):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            outputs = layer(xs, mask=mask)
            loss = sum(tf.reduce_sum(tf.sin(o)) for o in outputs)
        results.append((outputs, tape.gradient(loss, layer.trainable_weights + xs)))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_bad_implementation_is_named():
    with pytest.raises(ValueError, match="implementation"):
        MultiGRU([3], implementation="cudnn")
