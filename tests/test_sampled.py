"""The sampled softmax (mfn4rec_tf/sampled.py) against NumPy, and against the full softmax it estimates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mfn4rec_tf.sampled import (
    HIT_LOGIT,
    CandidateSampler,
    sampled_logits,
    sampled_softmax_loss,
    sampling_probabilities,
)


def _weights(seed=0, d=5, n=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(d, n + 1)).astype("float32"), rng.normal(size=n + 1).astype("float32")


def test_sampled_logits_equal_numpy():
    kernel, bias = _weights()
    rng = np.random.default_rng(1)
    h = rng.normal(size=(4, 5)).astype("float32")
    targets = np.array([3, 7, 7, 12], "int32")
    negatives = np.array([1, 7, 9, 3, 3], "int32")
    q = sampling_probabilities("popularity", np.arange(13) * 2.0)
    got = sampled_logits(tf.constant(h), tf.constant(targets), tf.constant(negatives), kernel, bias,
                         q.astype("float32"))
    scores = h @ kernel + bias  # (4, 13)
    expected = np.concatenate([scores[np.arange(4), targets][:, None], scores[:, negatives]], axis=1)
    expected -= np.log(np.concatenate([q[targets][:, None], np.tile(q[negatives], (4, 1))], axis=1))
    hits = np.concatenate([np.zeros((4, 1), bool), targets[:, None] == negatives[None, :]], axis=1)
    expected[hits] = HIT_LOGIT
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert hits.sum() == 4  # the target 3 twice in row 0, the target 7 once in rows 1 and 2


def test_every_item_once_with_uniform_q_is_the_full_softmax():
    # With every item as a negative (the target's own column removed as an accidental hit) and a
    # constant q, the sampled loss is exactly the full softmax cross-entropy over items 1..N.
    kernel, bias = _weights(seed=2)
    h = np.random.default_rng(3).normal(size=(6, 5)).astype("float32")
    targets = np.array([1, 4, 4, 9, 12, 2], "int32")
    weights = np.array([1, 1, 0, 1, 1, 1], "float32")
    q = sampling_probabilities("uniform", np.zeros(13))
    logits = sampled_logits(tf.constant(h), tf.constant(targets), tf.constant(np.arange(1, 13, dtype="int32")),
                            kernel, bias, q.astype("float32"))
    got = float(sampled_softmax_loss(logits, weights))
    scores = (h @ kernel + bias)[:, 1:].astype(np.float64)
    log_softmax = scores - np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - scores.max(1, keepdims=True)
    per_row = -log_softmax[np.arange(6), targets - 1]
    assert got == pytest.approx((per_row * weights).sum() / weights.sum(), rel=1e-5)


def test_the_sampling_probabilities():
    counts = np.array([99, 0, 1, 3, 0], float)  # index 0 (padding) is ignored
    uniform = sampling_probabilities("uniform", counts)
    np.testing.assert_allclose(uniform, [0, 0.25, 0.25, 0.25, 0.25])
    popularity = sampling_probabilities("popularity", counts)
    weights = np.array([0, 1, 2, 4, 1], float) ** 0.75
    np.testing.assert_allclose(popularity, weights / weights.sum())
    np.testing.assert_allclose(sampling_probabilities("in-batch", counts), [0, 0, 0.25, 0.75, 0])
    with pytest.raises(ValueError, match="train.sampler"):
        sampling_probabilities("softmax", counts)
    with pytest.raises(ValueError, match="all zero"):
        sampling_probabilities("in-batch", np.zeros(4))
    with pytest.raises(ValueError, match="num_negatives"):
        CandidateSampler("uniform", counts, 0, keras.random.SeedGenerator(0))


@pytest.mark.parametrize("kind", ["uniform", "popularity", "in-batch"])
def test_the_samplers_draw_items_never_padding(kind):
    counts = np.array([0, 5, 0, 1, 7, 2, 0, 0, 9, 1, 3], float)
    sampler = CandidateSampler(kind, counts, 64, keras.random.SeedGenerator(4))
    targets = tf.constant([4, 8, 8, 1, 10], tf.int32)
    drawn = sampler.sample(targets).numpy()
    assert drawn.min() >= 1 and drawn.max() <= 10
    if kind == "in-batch":  # the batch's own targets, without replacement (all 5 here: fewer than S)
        assert sorted(drawn.tolist()) == [1, 4, 8, 8, 10]
    else:
        assert len(drawn) == 64
    if kind == "popularity":  # q(j) ∝ (count + 1)^0.75: the unseen items are drawn too, but less often
        frequent = np.isin(drawn, [4, 8]).mean()
        assert frequent > 0.3


def test_keras_rs_remove_accidental_hits_leaves_the_logits_unchanged():
    """Why sampled.py masks the hits itself (keras-rs 0.4.0); if this fails, keras-rs now removes
    them and sampled.py could use its layer."""
    from keras_rs.layers import RemoveAccidentalHits

    logits = np.array([[2.0, 1.5, 0.5]], "float32")
    labels = np.array([[1.0, 0.0, 0.0]], "float32")
    candidates = np.array([7, 7, 3], "int32")  # column 1 is the target again
    out = np.asarray(RemoveAccidentalHits()(logits, labels, candidates))
    np.testing.assert_array_equal(out, logits)


# --- through the run configuration and fit ------------------------------------------------------------------


def test_the_run_configuration_checks_the_sampled_loss():
    from mfn4rec_tf.config import NotApplicable
    from mfn4rec_tf.run_config import load_config

    config = load_config(None, ["train.loss=sampled", "train.num_negatives=256", "train.sampler=in-batch"])
    assert (config.train.loss, config.train.num_negatives, config.train.sampler) == ("sampled", 256, "in-batch")
    with pytest.raises(ValueError, match="train.loss"):
        load_config(None, ["train.loss=nce"])
    with pytest.raises(ValueError, match="train.sampler"):
        load_config(None, ["train.sampler=hard"])
    with pytest.raises(ValueError, match="train.num_negatives"):
        load_config(None, ["train.num_negatives=0"])
    with pytest.raises(NotApplicable, match="bpr"):  # its own pairwise loss
        load_config(None, ["train.loss=sampled", "model.variant=bpr"])
    with pytest.raises(ValueError, match="one device"):
        load_config(None, ["train.loss=sampled", "train.strategy=mirrored"])
    assert load_config(None, ["train.loss=sampled", "model.variant=pop"]).train.loss == "sampled"  # ignored


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mfn4rec", "mv-rnn-3mdae"])  # 3mDAE: with its add_loss term
def test_fit_trains_with_the_sampled_loss_and_beats_pop(variant, tmp_path_factory):
    """End to end through `fit`: the sampled loss learns the demo's planted structure (validation
    Recall@20 well above popularity's), and the run's model is an ordinary saved model."""
    import json

    from mfn4rec_tf import fit
    from mfn4rec_tf.dataset import write_dataset
    from mfn4rec_tf.demo import DemoSpec, generate
    from mfn4rec_tf.model import load_model

    root = tmp_path_factory.mktemp("sampled")
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    data = write_dataset(root / "data", name="small", items=items, interactions=interactions, features=features)
    common = ["--data", str(data), "--protocol", "leave-one-out", "--quiet", "--epochs", "4", "--patience", "4"]
    assert fit.main([*common, "--model", "pop", "--out", str(root / "pop")]) == 0
    out = root / variant
    assert fit.main([*common, "--model", variant, "--out", str(out), "--loss", "sampled", "--num-negatives", "32",
                     "--learning-rate", "0.01"]) == 0
    pop = json.loads((root / "pop" / "metrics.json").read_text())["valid"]["recall@20"]
    recall = json.loads((out / "metrics.json").read_text())["valid"]["recall@20"]
    assert recall > pop + 0.05, (recall, pop)
    assert type(load_model(out / "model.keras")).__name__ == "SampledSoftmaxModel"
