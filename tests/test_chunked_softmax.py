"""The chunked full softmax (mfn4rec_tf/chunked_softmax.py): loss and gradients against NumPy, and a
training run through `fit` against Keras' own softmax cross-entropy."""

import json

import numpy as np
import pytest
import tensorflow as tf

from mfn4rec_tf.chunked_softmax import PADDING_FLOOR, ChunkedSoftmax, chunked_softmax_cross_entropy


def _numpy_loss_and_grads(h, kernel, bias, targets, weights):
    """An independent reading: z = h W + b (column 0's bias at the floor), loss = Σ w (lse - z_t) / max(Σ w, 1)."""
    h, kernel, bias, weights = (np.asarray(a, np.float64) for a in (h, kernel, bias, weights))
    b = bias.copy()
    b[0] = PADDING_FLOOR
    z = h @ kernel + b
    top = z.max(axis=1, keepdims=True)
    p = np.exp(z - top)
    p /= p.sum(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    divisor = max(weights.sum(), 1.0)
    loss = (weights * (lse - z[np.arange(len(targets)), targets])).sum() / divisor
    g = p.copy()
    g[np.arange(len(targets)), targets] -= 1.0
    g *= (weights / divisor)[:, None]  # d loss / d z
    dbias = g.sum(axis=0)
    dbias[0] = 0.0  # column 0's bias is replaced by the floor
    return loss, g @ kernel.T, h.T @ g, dbias


@pytest.mark.parametrize("chunk", [1, 5, 8, 38, 100])  # N + 1 = 38: chunks that divide it, don't, and exceed it
def test_loss_and_gradients_equal_numpy(chunk):
    rng = np.random.default_rng(chunk)
    rows, d, n = 9, 4, 37
    h = rng.normal(size=(rows, d)).astype("float32")
    kernel = rng.normal(size=(d, n + 1)).astype("float32")
    bias = rng.normal(size=n + 1).astype("float32")
    targets = rng.integers(1, n + 1, rows).astype("int32")
    targets[3] = targets[4]  # a repeated target: its kernel and bias gradients add up
    weights = np.array([1, 1, 0, 1, 2.5, 1, 0, 1, 0.5], "float32")
    variables = [tf.Variable(h), tf.Variable(kernel), tf.Variable(bias)]
    with tf.GradientTape() as tape:
        loss = chunked_softmax_cross_entropy(*variables, targets, weights, chunk)
    grads = tape.gradient(loss, variables)
    want_loss, *want_grads = _numpy_loss_and_grads(h, kernel, bias, targets, weights)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_all_zero_weights_give_zero_loss_and_gradients():
    rng = np.random.default_rng(1)
    h = tf.Variable(rng.normal(size=(3, 2)).astype("float32"))
    kernel = tf.Variable(rng.normal(size=(2, 6)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = chunked_softmax_cross_entropy(h, kernel, tf.zeros(6), [1, 2, 3], tf.zeros(3), 4)
    assert float(loss) == 0.0
    assert all(not np.any(g.numpy()) for g in tape.gradient(loss, [h, kernel]))


def test_the_chunk_setting_is_checked():
    from mfn4rec_tf.run_config import load_config

    assert load_config(None, ["train.softmax_chunk=4096"]).train.softmax_chunk == 4096
    assert load_config(None, []).train.softmax_chunk == 0
    with pytest.raises(ValueError, match="train.softmax_chunk"):
        load_config(None, ["train.softmax_chunk=-1"])
    with pytest.raises(ValueError, match="train.softmax_chunk"):
        ChunkedSoftmax(0)


@pytest.mark.slow
def test_fit_with_chunks_trains_as_keras_softmax(tmp_path_factory):
    """Two epochs through `fit` (dropout off, same seed): the chunked path gives Keras' losses and the
    same validation metrics, and its run is an ordinary saved model."""
    from mfn4rec_tf import fit
    from mfn4rec_tf.dataset import write_dataset
    from mfn4rec_tf.demo import DemoSpec, generate
    from mfn4rec_tf.model import load_model

    root = tmp_path_factory.mktemp("chunked")
    items, interactions, features, _ = generate(DemoSpec(num_users=200, num_items=150, max_length=12))
    data = write_dataset(root / "data", name="small", items=items, interactions=interactions, features=features)
    common = ["--data", str(data), "--protocol", "leave-one-out", "--quiet", "--epochs", "2", "--patience", "2",
              "--dropout", "0"]
    assert fit.main([*common, "--out", str(root / "keras")]) == 0
    assert fit.main([*common, "--out", str(root / "chunked"), "--softmax-chunk", "64"]) == 0
    keras_run, chunked_run = (json.loads((root / name / "metrics.json").read_text()) for name in ("keras", "chunked"))
    keras_loss, chunked_loss = ((root / name / "history.csv").read_text() for name in ("keras", "chunked"))
    assert keras_loss.splitlines()[0] == chunked_loss.splitlines()[0]
    for want, got in zip(keras_loss.splitlines()[1:], chunked_loss.splitlines()[1:]):
        header = keras_loss.splitlines()[0].split(",")
        for name, a, b in zip(header, want.split(","), got.split(",")):
            if name == "loss":
                assert float(b) == pytest.approx(float(a), rel=1e-4), (name, a, b)
    for split in ("valid", "test"):
        for metric, value in keras_run[split].items():
            assert chunked_run[split][metric] == pytest.approx(value, abs=2e-3), (split, metric)
    assert type(load_model(root / "chunked" / "model.keras")).__name__ == "SampledSoftmaxModel"
