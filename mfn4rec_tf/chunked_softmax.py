"""The full softmax cross-entropy over every item, computed in item chunks with its own gradient.

The unchunked path (`ItemLogits` + the Keras loss `softmax_loss.SoftmaxCrossEntropy`) writes the
`(B, T, N + 1)` logits of a batch, then its softmax and gradient, several passes over an array of
tens of megabytes: at widths around 20 that memory traffic, not arithmetic, is most of a training
step (benchmarks/RESULTS.md).
This module computes the same loss at the batch's real positions only (not at the padding) and in
chunks of C items, so that each `(M, C)` block of logits is written, reduced and used while it is
still in the CPU's cache, and is never kept for the backward pass:

    forward:   z_c = h · W_c + b_c            for each chunk c of items, a running log-sum-exp
               loss = Σ_i w_i (lse_i - z_i,t_i) / max(Σ_i w_i, 1)
    backward:  z_c again, p_c = exp(z_c - lse) · g,   g_i = upstream · w_i / max(Σ w, 1)
               dh += p_c · W_cᵀ,  dW_c = hᵀ · p_c,  db_c = Σ_i p_c;  minus g at each target

Same objective as the unchunked path (softmax cross-entropy with the padding column at `ItemLogits`'s floor;
the positions weighted by their sample weights, the sum divided by the sum of the weights, which is
Keras' divisor when the weights are the 0/1 real-position flags the pipelines give); the results
agree to float rounding (`tests/test_chunked_softmax.py`). Only training changes: evaluation ranks
every item as before.
"""

from __future__ import annotations

import tensorflow as tf

PADDING_FLOOR = -1e9
"""The padding column's logit, as in `ItemLogits` (float32)."""


def chunked_softmax_cross_entropy(h, kernel, bias, targets, weights, chunk):
    """The weighted mean softmax cross-entropy of `h` against every item, in chunks of `chunk` items.

    Args:
        h: `(M, d)` user representations at M positions.
        kernel, bias: `ItemLogits`'s `(d, N + 1)` and `(N + 1,)` weights; column 0 is padding (its
            logit is the floor, as in `ItemLogits`).
        targets: `(M,)` int item indices.
        weights: `(M,)` float sample weights.
        chunk: items per chunk (a positive int).

    Returns:
        a scalar: `Σ w_i · (logsumexp_j z_ij - z_i,t_i) / max(Σ w_i, 1)`, differentiable in `h`,
        `kernel` and `bias` (the gradient recomputes the logits chunk by chunk).
    """
    h = tf.convert_to_tensor(h, tf.float32)
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    bias = tf.convert_to_tensor(bias, tf.float32)
    targets = tf.cast(targets, tf.int32)
    weights = tf.cast(weights, tf.float32)
    return _loss(h, kernel, bias, targets, weights, int(chunk))


def _loss(h, kernel, bias, targets, weights, chunk):
    width, columns = kernel.shape
    columns = int(columns) if columns is not None else None
    if columns is None or width is None:
        raise ValueError("chunked_softmax_cross_entropy needs an item output kernel of static shape (d, N + 1).")
    chunks = -(-columns // chunk)
    padded = chunks * chunk

    @tf.custom_gradient
    def loss_fn(h, kernel, bias):
        floored = tf.where(tf.range(columns) == 0, tf.constant(PADDING_FLOOR, tf.float32), bias)
        # Chunk-major item vectors (chunks, C, d) and biases (chunks, C); the padded columns get the
        # floor, so they add exp(floor - max) = 0 to every sum.
        blocks = tf.reshape(tf.transpose(tf.pad(kernel, [[0, 0], [0, padded - columns]])), [chunks, chunk, width])
        offsets = tf.reshape(tf.pad(floored, [[0, padded - columns]], constant_values=PADDING_FLOOR), [chunks, chunk])
        rows = tf.shape(h)[0]

        def logits(i):
            return tf.matmul(h, blocks[i], transpose_b=True) + offsets[i][None, :]  # (M, C)

        def forward(i, running_max, running_sum):
            z = logits(i)
            new_max = tf.maximum(running_max, tf.reduce_max(z, axis=1))
            running_sum = running_sum * tf.exp(running_max - new_max) + tf.reduce_sum(
                tf.exp(z - new_max[:, None]), axis=1)
            return i + 1, new_max, running_sum

        _, top, total = tf.while_loop(
            lambda i, *_: i < chunks, forward,
            (tf.constant(0), tf.fill([rows], tf.constant(-float("inf"), tf.float32)), tf.zeros([rows], tf.float32)))
        lse = top + tf.math.log(total)  # (M,)
        target_vectors = tf.gather(kernel, targets, axis=1)  # (d, M)
        target_logits = tf.reduce_sum(h * tf.transpose(target_vectors), axis=1) + tf.gather(floored, targets)
        divisor = tf.maximum(tf.reduce_sum(weights), 1.0)
        value = tf.reduce_sum(weights * (lse - target_logits)) / divisor

        def grad(upstream):
            scale = tf.cast(upstream, tf.float32) * weights / divisor  # (M,)

            def backward(i, dh, kernel_grads, bias_grads):
                p = tf.exp(logits(i) - lse[:, None]) * scale[:, None]  # (M, C): d loss / d z
                dh += tf.matmul(p, blocks[i])
                kernel_grads = kernel_grads.write(i, tf.matmul(p, h, transpose_a=True))  # (C, d)
                bias_grads = bias_grads.write(i, tf.reduce_sum(p, axis=0))
                return i + 1, dh, kernel_grads, bias_grads

            _, dh, kernel_grads, bias_grads = tf.while_loop(
                lambda i, *_: i < chunks, backward,
                (tf.constant(0), tf.zeros_like(h),
                 tf.TensorArray(tf.float32, size=chunks, element_shape=[chunk, width]),
                 tf.TensorArray(tf.float32, size=chunks, element_shape=[chunk])))
            dkernel = tf.transpose(tf.reshape(kernel_grads.stack(), [padded, width])[:columns])  # (d, N + 1)
            dbias = tf.reshape(bias_grads.stack(), [padded])[:columns]
            # the target's -1 of (softmax - one-hot)
            dh -= scale[:, None] * tf.transpose(target_vectors)
            dkernel -= tf.transpose(tf.math.unsorted_segment_sum(scale[:, None] * h, targets, columns))
            dbias -= tf.math.unsorted_segment_sum(scale, targets, columns)
            dbias = tf.where(tf.range(columns) == 0, tf.zeros_like(dbias), dbias)  # column 0's bias is replaced
            return dh, dkernel, dbias

        return value, grad

    return loss_fn(h, kernel, bias)


class ChunkedSoftmax:
    """The objective a `sampled.SampledSoftmaxModel` trains with for `train.loss: full` when
    `train.softmax_chunk` > 0: the full softmax cross-entropy of this module, `chunk` items at a time.

    Args:
        chunk: items per chunk (a positive int).
    """

    seed_states = ()  # draws nothing

    def __init__(self, chunk):
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"`train.softmax_chunk` must be a positive integer here. Received: {chunk!r}")
        self.chunk = chunk

    def loss(self, h, targets, weights, item_logits):
        """The loss of `h` `(M, d)` at M real positions with `targets` and `weights` `(M,)`."""
        from mfn4rec_tf.sampled import item_weights

        kernel, bias = item_weights(item_logits)
        return chunked_softmax_cross_entropy(h, kernel, bias, targets, weights, self.chunk)
