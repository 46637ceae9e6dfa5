"""Sampled softmax with the logQ correction: train over 1 + S candidate items instead of all N.

The full softmax scores every item at every position: a `(B·T, N + 1)` product and its gradient,
most of an epoch's work at N in the tens of thousands (benchmarks/RESULTS.md). The sampled loss
scores, at each real position, its target and S negatives shared by the whole batch (one
`(B·T, d) × (d, S)` product), and corrects each candidate's logit by the log of its sampling
probability (Bengio & Senécal 2008; Yi et al., RecSys 2019), so that the softmax over the sample
estimates the full one:

    logit'_j = h · w_j + b_j - log q(j)        for the target and each negative j
    loss     = -log softmax(logit')_target     averaged over the real (weight > 0) positions

A negative equal to the row's target (an "accidental hit") is removed from that row (its logit set to
a large negative number). The candidates come from `CandidateSampler`:

- `uniform`: S items drawn uniformly with replacement; q(j) = 1 / N.
- `popularity`: S items drawn with replacement with q(j) ∝ (count(j) + 1)^0.75, the counts of the
  training targets (the +1 keeps every item reachable, the 0.75 power as in word2vec).
- `in-batch`: S targets of the batch itself drawn without replacement (all of them if there are
  fewer); q(j) = count(j) / total, the target frequency, since an item enters a batch as often as
  it is a target.

keras-rs (the Keras team's recommender library for Keras 3) has both pieces as layers. We use its
`SamplingProbabilityCorrection` (with a smaller floor than its 1e-6 default, which a catalogue of a
million items reaches). Its `RemoveAccidentalHits` (0.4.0) adds `finfo(float32).smallest_normal / 100`
(about 1e-40) to the duplicates' logits, which leaves them unchanged, so the hits are masked here
(`tests/test_sampled.py` shows both).

`train.loss: bce` is SASRec's own loss (Kang & McAuley, ICDM 2018, Eq. 6): at each real position,
binary cross-entropy on the target and on one negative drawn for that position alone, uniformly
among the other items (`OneNegativeSampler`):

    loss = softplus(-s_target) + softplus(s_negative)    (= -log σ(s_target) - log(1 - σ(s_negative)))

averaged over the real positions (`one_negative_bce_loss`). SASRec's code draws the negative among
the items the user never interacted with; here it is any item but the position's target.

Evaluation always ranks every item; only training samples.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mfn4rec_tf.run_config import SAMPLERS

POPULARITY_POWER = 0.75
HIT_LOGIT = -1e9
"""The logit of an accidental hit: far below any real logit, finite so that 0 · it stays 0."""
PROBABILITY_FLOOR = 1e-30


def sampling_probabilities(kind: str, counts) -> np.ndarray:
    """q over item indices 0..N (q[0] = 0, padding) for sampler `kind`, from the target `counts`.

    Args:
        kind: one of `SAMPLERS`.
        counts: `(N + 1,)` how often each item is a training target (index 0 ignored).
    """
    counts = np.asarray(counts, np.float64).copy()
    counts[0] = 0.0
    num_items = len(counts) - 1
    if kind == "uniform":
        q = np.full(num_items + 1, 1.0 / num_items)
    elif kind == "popularity":
        q = (counts + 1.0) ** POPULARITY_POWER
    elif kind == "in-batch":
        if counts.sum() <= 0:
            raise ValueError("The in-batch sampler needs training targets; the counts are all zero.")
        q = counts.copy()
    else:
        raise ValueError(f"`train.sampler` must be one of {SAMPLERS}. Received: {kind!r}")
    q[0] = 0.0
    return (q / q.sum()).astype(np.float64)


class CandidateSampler:
    """Draws the S negatives one batch shares, with the table of sampling probabilities.

    Args:
        kind: one of `SAMPLERS`.
        counts: `(N + 1,)` target counts of the training data (see `sampling_probabilities`).
        num_negatives: S.
        seed_generator: a `keras.random.SeedGenerator` (its state is checkpointed with the model).
    """

    def __init__(self, kind, counts, num_negatives, seed_generator):
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
            raise ValueError(f"`train.num_negatives` must be a positive integer. Received: {num_negatives!r}")
        self.kind = kind
        self.num_negatives = int(num_negatives)
        q = sampling_probabilities(kind, counts)
        self.num_items = len(q) - 1
        self.probabilities = tf.constant(q, tf.float32)
        self.log_q = tf.constant(np.log(np.maximum(q, 1e-300)), tf.float32)
        self.seed_generator = seed_generator

    @property
    def seed_states(self) -> list:
        """The state variables that continue its draws (checkpointed beside the model's)."""
        return [self.seed_generator.state]

    def loss(self, h, targets, weights, item_logits):
        """The sampled softmax loss of `h` `(M, d)` at M real positions with `targets` and `weights` `(M,)`."""
        negatives = self.sample(targets)
        logits = sampled_logits(h, targets, negatives, *item_weights(item_logits), self.probabilities)
        return sampled_softmax_loss(logits, weights)

    def sample(self, targets):
        """`(S,)` int32 negatives for the batch whose real targets are `targets` (1-D)."""
        if self.kind == "in-batch":
            shuffled = keras.random.shuffle(targets, seed=self.seed_generator)
            return tf.cast(shuffled[: self.num_negatives], tf.int32)
        if self.kind == "uniform":
            return tf.cast(keras.random.randint((self.num_negatives,), 1, self.num_items + 1,
                                                seed=self.seed_generator), tf.int32)
        draws = keras.random.categorical(self.log_q[None, :], self.num_negatives, seed=self.seed_generator)
        return tf.cast(draws[0], tf.int32)


def item_weights(layer):
    """`(kernel (d, N + 1), bias (N + 1,))` of the item output layer for a training step: an
    `ItemLogits`' or `TiedItemLogits`' weights, or the vectors `FeatureItemLogits` computes from the
    items' features (with its ID dropout)."""
    if hasattr(layer, "item_weights"):
        return layer.item_weights(training=True)
    return layer.kernel, layer.bias


def sampled_logits(h, targets, negatives, kernel, bias, probabilities):
    """The corrected logits `(M, 1 + S)`: column 0 the target, then the shared negatives.

    Args:
        h: `(M, d)` user representations at M real positions.
        targets: `(M,)` int item indices.
        negatives: `(S,)` int item indices.
        kernel, bias: the item output layer's `(d, N + 1)` and `(N + 1,)` weights (`ItemLogits`).
        probabilities: `(N + 1,)` sampling probabilities q.
    """
    from keras_rs.layers import SamplingProbabilityCorrection

    kernel = ops.cast(kernel, h.dtype)
    bias = ops.cast(bias, h.dtype)
    positive = ops.sum(h * ops.take(ops.transpose(kernel), targets, axis=0), axis=-1) + ops.take(bias, targets)
    negative = ops.matmul(h, ops.take(kernel, negatives, axis=1)) + ops.take(bias, negatives)[None, :]  # (M, S)
    logits = ops.concatenate([positive[:, None], negative], axis=1)
    q = ops.concatenate([ops.take(probabilities, targets)[:, None],
                         ops.broadcast_to(ops.take(probabilities, negatives)[None, :], ops.shape(negative))], axis=1)
    logits = SamplingProbabilityCorrection(epsilon=PROBABILITY_FLOOR)(logits, ops.cast(q, logits.dtype))
    hits = ops.equal(targets[:, None], negatives[None, :])  # (M, S): a negative equal to the row's target
    hits = ops.concatenate([ops.zeros_like(hits[:, :1]), hits], axis=1)
    return ops.where(hits, ops.cast(HIT_LOGIT, logits.dtype), logits)


class OneNegativeSampler:
    """One negative per position, uniform over the items other than that position's target.

    Args:
        num_items: N (items 1..N; at least 2).
        seed_generator: a `keras.random.SeedGenerator` (its state is checkpointed with the model).
    """


    def __init__(self, num_items, seed_generator):
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 2:
            raise ValueError(f"The bce loss draws a negative other than the target, so it needs at least 2 items. "
                             f"Received: {num_items!r}")
        self.num_items = int(num_items)
        self.seed_generator = seed_generator

    @property
    def seed_states(self) -> list:
        """The state variables that continue its draws (checkpointed beside the model's)."""
        return [self.seed_generator.state]

    def loss(self, h, targets, weights, item_logits):
        """The one-negative BCE of `h` `(M, d)` at M real positions with `targets` and `weights` `(M,)`."""
        return one_negative_bce_loss(h, targets, self.sample(targets), *item_weights(item_logits), weights)

    def sample(self, targets):
        """`(M,)` int32 negatives for the `(M,)` targets: uniform over 1..N without the target."""
        targets = tf.cast(targets, tf.int32)
        draws = tf.cast(keras.random.randint(tf.shape(targets), 1, self.num_items, seed=self.seed_generator),
                        tf.int32)  # 1..N-1
        return draws + tf.cast(draws >= targets, tf.int32)  # skip the target: uniform over the other N-1


def one_negative_bce_loss(h, targets, negatives, kernel, bias, weights):
    """Mean over the positions (weighted) of `softplus(-s_target) + softplus(s_negative)`.

    Args:
        h: `(M, d)` user representations; targets, negatives: `(M,)` item indices; kernel, bias: the
        item output layer's `(d, N + 1)` and `(N + 1,)` weights; weights: `(M,)`.
    """
    kernel = ops.transpose(ops.cast(kernel, h.dtype))  # (N + 1, d)
    bias = ops.cast(bias, h.dtype)
    positive = ops.sum(h * ops.take(kernel, targets, axis=0), axis=-1) + ops.take(bias, targets)
    negative = ops.sum(h * ops.take(kernel, negatives, axis=0), axis=-1) + ops.take(bias, negatives)
    loss = ops.softplus(-positive) + ops.softplus(negative)
    weights = ops.cast(weights, loss.dtype)
    return ops.sum(loss * weights) / ops.maximum(ops.sum(weights), 1.0)


def sampled_softmax_loss(logits, weights):
    """Mean over the positions (weighted) of `-log softmax(logits)[:, 0]`."""
    loss = -ops.log_softmax(logits, axis=-1)[:, 0]
    weights = ops.cast(weights, loss.dtype)
    return ops.sum(loss * weights) / ops.maximum(ops.sum(weights), 1.0)


class _SampledTraining:
    """What a `SampledSoftmaxModel` trains with (kept off Keras' tracking: it is rebuilt, not saved):
    the encoder up to the user representation, the `ItemLogits` layer, and the objective (a
    `CandidateSampler`, or `chunked_softmax.ChunkedSoftmax`), whose `loss(h, targets, weights,
    item_logits)` takes the representations at the batch's real positions."""

    def __init__(self, model, sampler):
        names = {layer.name for layer in model.layers}
        representation = "last_valid_step" if "last_valid_step" in names else "fc_out"
        self.encoder = keras.Model(model.input, model.get_layer(representation).output)
        self.item_logits = model.get_layer("item_logits")
        self.sampler = sampler


@keras.saving.register_keras_serializable(package="mfn4rec")
class SampledSoftmaxModel(keras.Model):
    """A model of the package (functional, same layers and outputs) whose `fit` trains with the
    sampled softmax (or, with a `OneNegativeSampler`, the one-negative BCE) of this module once
    `attach_sampler` gave it a sampler (or with the chunked full softmax of
    `mfn4rec_tf.chunked_softmax`); without one it trains as any Keras model. It keeps
    `keras.Model`'s constructor, so Keras saves and loads it as a functional model; the sampler is not
    saved (`training.py` attaches it again on resume).
    """

    def train_step(self, data):
        sampled = self.__dict__.get("_sampled")
        if sampled is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = tf.convert_to_tensor(y["logits"] if isinstance(y, dict) else y)
        if sample_weight is None:
            weights = tf.cast(targets > 0, tf.float32)
        else:
            weights = sample_weight["logits"] if isinstance(sample_weight, dict) else sample_weight
            weights = tf.convert_to_tensor(weights)
        with tf.GradientTape() as tape:
            h = sampled.encoder(x, training=True)  # (B, T, d) or (B, d): no (., N + 1) logits
            h = tf.reshape(h, [-1, tf.shape(h)[-1]])
            flat_targets = tf.reshape(tf.cast(targets, tf.int32), [-1])
            flat_weights = tf.reshape(tf.cast(weights, h.dtype), [-1])
            real = flat_weights > 0
            h, flat_targets, flat_weights = (tf.boolean_mask(h, real), tf.boolean_mask(flat_targets, real),
                                             tf.boolean_mask(flat_weights, real))
            loss = sampled.sampler.loss(h, flat_targets, flat_weights, sampled.item_logits)
            extra = sampled.encoder.losses  # e.g. MV-RNN-3mDAE's reconstruction loss
            if extra:
                loss = loss + tf.add_n([tf.cast(term, loss.dtype) for term in extra])
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        # Keras' own loss tracker (what `fit` reports as "loss"; Keras reads its metrics, not this step's
        # return value, when their names agree), weighted by the batch's rows as Keras' own step does.
        rows = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        self._loss_tracker.update_state(loss, sample_weight=rows)
        return {"loss": self._loss_tracker.result()}


def attach_sampler(model: keras.Model, sampler) -> SampledSoftmaxModel:
    """`model` as a `SampledSoftmaxModel` (the same layers; `model` itself when it is one) that trains
    with `sampler`'s objective (a `CandidateSampler`: sampled softmax; a `OneNegativeSampler`:
    one-negative BCE; `chunked_softmax.ChunkedSoftmax`: the full softmax in chunks). Raises ValueError
    when the model scores items without one vector per item (`ItemLogits`, `TiedItemLogits`, or
    `FeatureItemLogits` for items from their features)."""
    from mfn4rec_tf.layers import FeatureItemLogits, has_item_vectors

    layer = model.get_layer("item_logits")
    if not (has_item_vectors(layer) or type(layer) is FeatureItemLogits):
        raise ValueError(f"This loss needs an `ItemLogits` output layer (one vector per item); {model.name!r} "
                         f"scores items with {type(layer).__name__}.")
    if not isinstance(model, SampledSoftmaxModel):
        model = SampledSoftmaxModel(model.input, model.output, name=model.name)
    object.__setattr__(model, "_sampled", _SampledTraining(model, sampler))  # untracked: not saved
    return model


def sampler_seed_states(model) -> list:
    """The state variables of the sampler attached to `model` (checkpointed beside the model's own)."""
    sampled = getattr(model, "__dict__", {}).get("_sampled")
    return [] if sampled is None else list(sampled.sampler.seed_states)
