"""An independent NumPy implementation of MFN4Rec (paper Eq. 1-12, read as docs/model.md explains).

Written from the equations, not from the Keras code: plain float64 loops over time steps, no Keras
or TensorFlow. The tests feed it the Keras model's weights (`keras_weights`) and compare outputs.

Weights are a nested dict of arrays:
    embedding (V, d_m)
    gru[i] = {kernel (d_in, 3h), recurrent (h, 3h), bias (2, 3h) or (3h,)}   gates ordered z, r, candidate
    project[i] = {kernel, bias}                                           (mfn4rec-m only)
    fc_a, fc_out, logits = {kernel, bias};  fc_u, fc_g1, fc_g2 = {hidden: {kernel, bias}, output: {...}}
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def dense(x, w):
    return x @ w["kernel"] + w["bias"]


def gru_step(x, h, w, reset_after):
    """One GRU step (Eq. 1-3, "a normal GRU cell"), Keras' gate layout."""
    units = h.shape[-1]
    kz, kr, kh = (w["kernel"][:, i * units:(i + 1) * units] for i in range(3))
    uz, ur, uh = (w["recurrent"][:, i * units:(i + 1) * units] for i in range(3))
    if reset_after:
        b_in, b_rec = w["bias"][0], w["bias"][1]
        bz, br, bh = (b_in[i * units:(i + 1) * units] for i in range(3))
        rz, rr, rh = (b_rec[i * units:(i + 1) * units] for i in range(3))
        z = sigmoid(x @ kz + bz + h @ uz + rz)
        r = sigmoid(x @ kr + br + h @ ur + rr)
        candidate = np.tanh(x @ kh + bh + r * (h @ uh + rh))
    else:
        bz, br, bh = (w["bias"][i * units:(i + 1) * units] for i in range(3))
        z = sigmoid(x @ kz + bz + h @ uz)
        r = sigmoid(x @ kr + br + h @ ur)
        candidate = np.tanh(x @ kh + bh + (r * h) @ uh)
    return z * h + (1.0 - z) * candidate


def gru_sequence(xs, mask, w, reset_after):
    """Runs a GRU over (B, T, d); a masked step keeps state and output."""
    batch, steps, _ = xs.shape
    units = w["recurrent"].shape[0]
    h = np.zeros((batch, units))
    outputs = np.zeros((batch, steps, units))
    for t in range(steps):
        new_h = gru_step(xs[:, t], h, w, reset_after)
        h = np.where(mask[:, t:t + 1], new_h, h)
        outputs[:, t] = h
    return outputs


def two_layer(x, w, output_activation):
    hidden = np.maximum(dense(x, w["hidden"]), 0.0)  # ReLU hidden layer (Table 1: 50 units)
    return output_activation(dense(hidden, w["output"]))


def memory_step(h_prev, h_t, u_prev, w):
    """Eq. 4-9 for one step."""
    pair = np.concatenate([h_prev, h_t], axis=-1)  # h_[t-1,t]
    attention = softmax(dense(pair, w["fc_a"]))  # Eq. 4
    attended = attention * pair  # Eq. 5
    candidate = two_layer(attended, w["fc_u"], lambda v: v)  # Eq. 6
    g1 = two_layer(attended, w["fc_g1"], sigmoid)  # Eq. 7
    g2 = two_layer(attended, w["fc_g2"], sigmoid)  # Eq. 8
    return g1 * u_prev + g2 * np.tanh(candidate)  # Eq. 9


def memory_sequence(hs, mask, w, memory_dim):
    """Runs the gated memory over (B, T, H) with state (h_{t-1}, u_{t-1}) = 0 at t = 1; masked steps carry."""
    batch, steps, width = hs.shape
    h_prev = np.zeros((batch, width))
    u = np.zeros((batch, memory_dim))
    outputs = np.zeros((batch, steps, memory_dim))
    for t in range(steps):
        keep = mask[:, t:t + 1]
        new_u = memory_step(h_prev, hs[:, t], u, w)
        u = np.where(keep, new_u, u)
        h_prev = np.where(keep, hs[:, t], h_prev)
        outputs[:, t] = u
    return outputs


def forward(config, weights, inputs):
    """Returns (h_out (B, T, d_out), logits (B, T, V)) of `config` (a ModelConfig) for numpy `inputs`."""
    ids = np.asarray(inputs["item_ids"])
    mask = ids != 0
    streams = [weights["embedding"][ids]]
    for modality in config.modalities:
        features = np.asarray(inputs[modality.name], dtype=np.float64)
        if modality.presence:
            present = np.asarray(inputs[modality.name + "_present"], dtype=np.float64)[..., None]
            features = np.concatenate([features * present, present], axis=-1)
        streams.append(features)

    if config.variant == "mfn4rec-m":
        hidden = [np.tanh(dense(x, w)) for x, w in zip(streams, weights["project"])]
    else:
        hidden = [gru_sequence(x, mask, w, config.gru_reset_after) for x, w in zip(streams, weights["gru"])]
    states = np.concatenate(hidden, axis=-1)

    if config.variant == "mfn4rec-g":
        fused = states
    elif config.variant == "mfn4rec-add":
        fused = np.concatenate([states, np.sum(hidden, axis=0)], axis=-1)
    else:
        memory = memory_sequence(states, mask, weights, config.memory_dim)
        fused = memory if config.variant == "mfn4rec-m" else np.concatenate([states, memory], axis=-1)

    h_out = dense(fused, weights["fc_out"])  # Eq. 10
    if config.output_activation == "tanh":
        h_out = np.tanh(h_out)
    logits = dense(h_out, weights["logits"])  # Eq. 11 (before the softmax)
    logits[..., 0] = -1e9  # padding is never a candidate
    return h_out, logits


def last_valid(sequence, mask):
    """Value of each row at its last unmasked step (step 0 if none)."""
    steps = mask.shape[1]
    last = np.where(mask, np.arange(steps)[None, :], -1).max(axis=1).clip(min=0)
    return sequence[np.arange(len(sequence)), last]


def cross_entropy(logits, target):
    """Eq. 12 for one distribution and a target index."""
    shifted = logits - logits.max()
    return float(np.log(np.exp(shifted).sum()) - shifted[target])


def keras_weights(model, config):
    """Reads a built Keras MFN4Rec model's weights into the reference's dict layout (float64)."""

    def arr(variable):
        return np.asarray(variable.numpy(), dtype=np.float64)

    def dense_w(layer):
        return {"kernel": arr(layer.kernel), "bias": arr(layer.bias)}

    def block(fc):
        if fc.hidden is None:
            return dense_w(fc.output_dense)
        return {"hidden": dense_w(fc.hidden), "output": dense_w(fc.output_dense)}

    weights = {"embedding": arr(model.get_layer("item_embedding").embeddings)}
    if config.variant == "mfn4rec-m":
        names = ["item_ids", *(m.name for m in config.modalities)]
        weights["project"] = [dense_w(model.get_layer(f"project_{n}")) for n in names]
    else:
        weights["gru"] = [
            {"kernel": arr(g.cell.kernel), "recurrent": arr(g.cell.recurrent_kernel), "bias": arr(g.cell.bias)}
            for g in model.get_layer("multi_gru").grus
        ]
    if config.variant in ("mfn4rec", "mfn4rec-m"):
        cell = model.get_layer("gated_memory").cell
        weights["fc_a"] = block(cell.attention.scores)
        weights["fc_u"] = block(cell.candidate)
        weights["fc_g1"] = block(cell.remain_gate)
        weights["fc_g2"] = block(cell.update_gate)
    weights["fc_out"] = block(model.get_layer("fc_out"))
    logits = model.get_layer("item_logits")
    weights["logits"] = {"kernel": arr(logits.kernel), "bias": arr(logits.bias)}
    return weights
