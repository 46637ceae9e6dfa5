"""A harness every layer goes through: config round trip, eager and symbolic calls, one fit step,
and `.keras` save -> load -> the same outputs."""

from __future__ import annotations

import copy

import keras
import numpy as np


def check_layer(make_layer, inputs, call=None, expected_shape=None, tmp_path=None, trainable=True):
    """Runs the harness.

    Args:
        make_layer: zero-argument factory of the layer under test.
        inputs: list of numpy arrays, the layer's inputs.
        call: `call(layer, tensors)` -> output; default `layer(*tensors)`.
        expected_shape: the eager output's shape.
        tmp_path: folder for the `.keras` file (skips the save check if None).
        trainable: whether the fit step must change the layer's weights.
    """
    call = call or (lambda layer, tensors: layer(*tensors))
    layer = make_layer()

    # Config round trip: from_config(get_config()) rebuilds an equal configuration.
    config = layer.get_config()
    clone = layer.__class__.from_config(copy.deepcopy(config))  # some from_config pop keys
    assert clone.get_config() == config

    # Eager call: shape and dtype.
    eager = keras.ops.convert_to_numpy(call(layer, [keras.ops.convert_to_tensor(x) for x in inputs]))
    if expected_shape is not None:
        assert eager.shape == tuple(expected_shape)
    assert eager.dtype == np.float32
    assert np.all(np.isfinite(eager))

    # Symbolic call inside a functional model (batch dimension unknown).
    symbolic_inputs = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
    symbolic_layer = make_layer()
    output = call(symbolic_layer, symbolic_inputs)
    assert tuple(output.shape[1:]) == eager.shape[1:]
    model = keras.Model(symbolic_inputs, output)

    # One fit step moves the weights (the layer is differentiable end to end).
    if trainable:
        before = [w.copy() for w in model.get_weights()]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        target = np.random.default_rng(0).normal(size=eager.shape).astype("float32")
        model.fit(inputs, target, epochs=1, batch_size=len(inputs[0]), verbose=0)
        after = model.get_weights()
        assert any(not np.allclose(b, a) for b, a in zip(before, after)), "a fit step changed no weight"

    # .keras round trip: same outputs from the reloaded model.
    if tmp_path is not None:
        expected = model.predict(inputs, verbose=0)
        path = str(tmp_path / f"{symbolic_layer.name}.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), expected, rtol=0, atol=1e-6)
    return eager
