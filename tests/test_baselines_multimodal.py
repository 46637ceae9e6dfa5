"""Tests of the multimodal baselines (p-RNN, MV-RNN-Con/-Fus/-3mDAE, VCSRS) and their MultiViewFusion layer."""

import dataclasses
import json

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf
from conftest import make_config, make_inputs, randomize_weights
from layer_harness import check_layer

from mfn4rec_tf import fit, registry
from mfn4rec_tf.baselines import multimodal
from mfn4rec_tf.config import ModalityConfig, ModelConfig, NotApplicable
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.layers.multi_view_fusion import MultiViewFusion
from mfn4rec_tf.model import build_model, with_output_mode

MODELS = ("p-rnn", "mv-rnn-con", "mv-rnn-fus", "mv-rnn-3mdae", "vcsrs")
LENGTHS = [6, 2, 4, 1]  # right-padded rows of different lengths
ONE_MODALITY = (ModalityConfig("image", 7, 5, presence=True),)


def _predict(model, inputs):
    return {k: np.asarray(v) for k, v in model(inputs, training=False).items()}


def _next_item_targets(ids):
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    return targets


def _train_step(model, inputs, targets):
    """One eager Adam step on the masked cross-entropy plus the model's own losses; returns the loss.
    (`fit` itself is exercised end to end below; tracing `train_on_batch` per case costs seconds.)"""
    weights = (targets != 0).astype("float32")
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)["logits"]
        per_step = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        loss = tf.reduce_sum(per_step * weights) / weights.sum() + sum(model.losses)
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
    return float(loss)


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    return model


def test_registry_covers_the_five_models_and_they_read_some_modalities():
    for name in MODELS:
        spec = registry.get(name)
        assert spec.builder.startswith(multimodal.__name__ + ":")
        assert spec.loss is None  # softmax cross-entropy, the package default
        assert spec.modalities == "some"


@pytest.mark.parametrize("modalities", [None, ONE_MODALITY], ids=["two-modalities", "one-modality"])
@pytest.mark.parametrize("name", MODELS)
def test_builds_trains_round_trips_and_switches_output_mode(name, modalities, tmp_path):
    config = make_config(name) if modalities is None else make_config(name, modalities=modalities)
    inputs = make_inputs(config, LENGTHS, seed=1)
    targets = _next_item_targets(inputs["item_ids"])
    mask = inputs["item_ids"] != 0

    model = build_model(config, output_mode="sequence")
    assert model.get_layer("fc_out").output.shape[-1] == config.output_units
    out = _predict(model, inputs)
    assert out["logits"].shape == (4, 6, config.vocabulary_size)
    assert out["user_representation"].shape == (4, 6, config.output_units)
    assert np.all(out["logits"][..., 0] <= -1e8)
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert np.isfinite(_train_step(model, inputs, targets))
    assert all(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected, got = _predict(model, inputs), _predict(loaded, inputs)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    for source in (model, loaded):
        last = _predict(with_output_mode(source, "last"), inputs)
        np.testing.assert_allclose(last["logits"], ref.last_valid(expected["logits"], mask), atol=1e-6)
        np.testing.assert_allclose(last["user_representation"], ref.last_valid(expected["user_representation"], mask),
                                   atol=1e-6)

    last_model = build_model(config, output_mode="last")
    last_targets = ref.last_valid(targets, mask)
    last_targets[last_targets == 0] = 1
    assert np.isfinite(_train_step(last_model, inputs, last_targets))
    back = _predict(with_output_mode(last_model, "sequence"), inputs)
    np.testing.assert_allclose(ref.last_valid(back["logits"], mask), _predict(last_model, inputs)["logits"], atol=1e-6)


def _pad(inputs, extra, left, seed):
    rng = np.random.default_rng(seed)
    padded = {}
    for key, array in inputs.items():
        width = [(0, 0)] * array.ndim
        width[1] = (extra, 0) if left else (0, extra)
        grown = np.pad(array, width)
        if array.dtype != np.int32:  # garbage features and presence flags at the padded steps
            steps = slice(0, extra) if left else slice(array.shape[1], None)
            grown[:, steps] = rng.normal(size=grown[:, steps].shape) * 5
        padded[key] = grown
    return padded


@pytest.mark.parametrize("name", MODELS)
def test_padding_with_garbage_features_changes_no_valid_output(name):
    config = make_config(name)
    model = build_model(config)
    randomize_weights(model, seed=2)
    last = with_output_mode(model, "last")
    inputs = make_inputs(config, LENGTHS, seed=3)
    base, base_last = _predict(model, inputs), _predict(last, inputs)
    mask = inputs["item_ids"] != 0

    appended = _predict(model, _pad(inputs, 3, left=False, seed=4))
    for key in base:
        np.testing.assert_allclose(appended[key][:, :6][mask], base[key][mask], atol=1e-6)
    for left in (False, True):
        out = _predict(last, _pad(inputs, 3, left=left, seed=5))
        for key in base_last:
            np.testing.assert_allclose(out[key], base_last[key], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_later_steps_do_not_change_earlier_outputs(name):
    config = make_config(name)
    model = build_model(config)
    randomize_weights(model, seed=6)
    inputs = make_inputs(config, [6, 6], seed=7)
    base = _predict(model, inputs)["user_representation"]
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["item_ids"][:, 3] = changed["item_ids"][:, 3] % config.num_items + 1
    for modality in config.modalities:
        changed[modality.name][:, 3] += 3.0
    out = _predict(model, changed)["user_representation"]
    np.testing.assert_allclose(out[:, :3], base[:, :3], atol=1e-6)
    assert not np.allclose(out[:, 3], base[:, 3], atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_every_modality_and_the_presence_flags_are_read(name):
    config = make_config(name)
    model = build_model(config, output_mode="last")
    randomize_weights(model, seed=8)
    inputs = make_inputs(config, [4, 4], seed=9)
    inputs["image_present"][:] = 1.0
    inputs["image_present"][:, 1] = 0.0
    base = _predict(model, inputs)["logits"]
    for modality in config.modalities:
        changed = dict(inputs, **{modality.name: inputs[modality.name] + 1.0})
        changed[modality.name][:, 1] = inputs[modality.name][:, 1]  # step 1 has no image
        assert not np.allclose(_predict(model, changed)["logits"], base, atol=1e-4), modality.name

    absent = dict(inputs, image=inputs["image"].copy())
    absent["image"][:, 1] += 5.0  # features of an item flagged as having no image: ignored
    np.testing.assert_allclose(_predict(model, absent)["logits"], base, atol=1e-6)
    flagged = dict(inputs, image=inputs["image"].copy(), image_present=np.ones_like(inputs["image_present"]))
    flagged["image"][:, 1] = 0.0  # the same zero vector, now flagged present
    assert not np.allclose(_predict(model, flagged)["logits"], base, atol=1e-4)


def test_missing_modalities_and_bad_output_mode_are_clear_errors():
    for name in MODELS:
        with pytest.raises(NotApplicable, match=name):
            build_model(make_config(name, modalities=()))
        with pytest.raises(ValueError, match="output_mode"):
            registry.get(name).build(make_config(name), "every")


# ---------------------------------------------------------------------------------------------
# NumPy references of the forward passes (GRU and the p-RNN = MFN4Rec-g graph from numpy_reference)


def _views(config, inputs):
    views = []
    for modality in config.modalities:
        features = np.asarray(inputs[modality.name], np.float64)
        if modality.presence:
            present = np.asarray(inputs[modality.name + "_present"], np.float64)[..., None]
            features = np.concatenate([features * present, present], axis=-1)
        views.append(features)
    return views


def _arr(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def _dense(layer):
    return {"kernel": _arr(layer.kernel), "bias": _arr(layer.bias)}


def _head(model, config, states):
    h_out = ref.dense(states, _dense(model.get_layer("fc_out").output_dense))
    if config.output_activation == "tanh":
        h_out = np.tanh(h_out)
    logits = ref.dense(h_out, _dense(model.get_layer("item_logits")))
    logits[..., 0] = -1e9
    return h_out, logits


def _mv_rnn_reference(model, config, inputs):
    ids = np.asarray(inputs["item_ids"])
    fusion = model.get_layer("view_fusion")
    codes = [view @ _arr(kernel) for view, kernel in zip(_views(config, inputs), fusion.kernels)]
    fused = np.concatenate(codes, axis=-1) if fusion.combine == "concat" else np.sum(codes, axis=0)
    steps = np.concatenate([_arr(model.get_layer("item_embedding").embeddings)[ids], fused], axis=-1)
    cell = model.get_layer("gru").cell
    gru = {"kernel": _arr(cell.kernel), "recurrent": _arr(cell.recurrent_kernel), "bias": _arr(cell.bias)}
    return _head(model, config, ref.gru_sequence(steps, ids != 0, gru, config.gru_reset_after))


def _lstm_sequence(xs, mask, kernel, recurrent, bias):
    """Keras' LSTM (gates i, f, c, o; sigmoid gates, tanh cell); a masked step keeps state and output."""
    batch, steps, _ = xs.shape
    units = recurrent.shape[0]
    h, c = np.zeros((batch, units)), np.zeros((batch, units))
    outputs = np.zeros((batch, steps, units))
    for t in range(steps):
        z = xs[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
        new_c = ref.sigmoid(f) * c + ref.sigmoid(i) * np.tanh(g)
        new_h = ref.sigmoid(o) * np.tanh(new_c)
        keep = mask[:, t:t + 1]
        h, c = np.where(keep, new_h, h), np.where(keep, new_c, c)
        outputs[:, t] = h
    return outputs


def _vcsrs_reference(model, config, inputs):
    ids = np.asarray(inputs["item_ids"])
    features = np.concatenate(_views(config, inputs), axis=-1)
    weights = ref.sigmoid(ref.dense(features, _dense(model.get_layer("feature_attention").output_dense)))
    steps = np.concatenate([_arr(model.get_layer("item_embedding").embeddings)[ids], weights * features], axis=-1)
    cell = model.get_layer("lstm").cell
    states = _lstm_sequence(steps, ids != 0, _arr(cell.kernel), _arr(cell.recurrent_kernel), _arr(cell.bias))
    return _head(model, config, states)


def _p_rnn_reference(model, config, inputs):
    as_g = dataclasses.replace(config, variant="mfn4rec-g")  # p-RNN's graph is MFN4Rec-g's (module doc)
    return ref.forward(as_g, ref.keras_weights(model, as_g), inputs)


REFERENCES = {
    "p-rnn": _p_rnn_reference,
    "mv-rnn-con": _mv_rnn_reference,
    "mv-rnn-fus": _mv_rnn_reference,
    "mv-rnn-3mdae": _mv_rnn_reference,  # inference: no corruption, the auto-encoder only adds a loss
    "vcsrs": _vcsrs_reference,
}


@pytest.mark.parametrize(
    "name, overrides",
    [(name, {}) for name in MODELS]
    + [("mv-rnn-con", {"output_activation": "tanh", "gru_reset_after": False}),
       ("vcsrs", {"modalities": ONE_MODALITY})],
    ids=list(MODELS) + ["mv-rnn-con-tanh-cho", "vcsrs-one-modality"],
)
def test_forward_matches_numpy_reference(name, overrides):
    config = make_config(name, **overrides)
    model = build_model(config)
    randomize_weights(model, seed=10)
    inputs = make_inputs(config, LENGTHS, seed=11)
    h_out, logits = REFERENCES[name](model, config, inputs)
    out = _predict(model, inputs)
    np.testing.assert_allclose(out["user_representation"], h_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
    mask = inputs["item_ids"] != 0
    last = _predict(with_output_mode(model, "last"), inputs)
    np.testing.assert_allclose(last["logits"], ref.last_valid(logits, mask), rtol=1e-5, atol=1e-5)


def test_reference_tells_concatenation_from_addition():
    config = make_config("mv-rnn-con", modalities=(ModalityConfig("image", 3, 5), ModalityConfig("text", 3, 4)))
    model = build_model(config)
    randomize_weights(model, seed=12)
    inputs = make_inputs(config, LENGTHS, seed=13)
    _, logits = _mv_rnn_reference(model, config, inputs)
    swapped = dict(inputs, image=inputs["text"], text=inputs["image"])  # concatenation keeps views apart
    assert not np.allclose(_predict(model, swapped)["logits"], logits, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# MV-RNN-3mDAE's auto-encoder


def test_3mdae_reconstruction_loss_only_in_training_and_in_the_compiled_loss():
    config = make_config("mv-rnn-3mdae")
    model = _compile(build_model(config))
    inputs = make_inputs(config, LENGTHS, seed=14)
    model(inputs, training=False)
    assert model.losses == []
    y_pred = model(inputs, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    last = with_output_mode(model, "last")
    last(inputs, training=True)
    assert len(last.losses) == 1
    last(inputs, training=False)
    assert last.losses == []

    targets = _next_item_targets(inputs["item_ids"])
    weights = (targets != 0).astype("float32")
    model(inputs, training=True)
    reconstruction = float(model.losses[0])
    total = float(model.compute_loss(inputs, {"logits": targets}, y_pred, {"logits": weights}))
    cross_entropy = float(model.loss["logits"](targets, y_pred["logits"], sample_weight=weights))
    assert total == pytest.approx(cross_entropy + reconstruction, rel=1e-5)
    fusion = model.get_layer("view_fusion")
    assert (fusion.corruption_rate, fusion.reconstruction_weight) == (config.dropout, multimodal.RECONSTRUCTION_WEIGHT)
    for other in ("mv-rnn-con", "mv-rnn-fus"):
        plain = build_model(make_config(other))
        plain(inputs, training=True)
        assert plain.losses == []


def test_3mdae_reconstruction_gradients_reach_the_tied_decoders_only():
    config = make_config("mv-rnn-3mdae")
    model = build_model(config)
    inputs = make_inputs(config, LENGTHS, seed=15)
    with tf.GradientTape() as tape:
        model(inputs, training=True)
        reconstruction = tf.add_n(model.losses)
    grads = tape.gradient(reconstruction, model.trainable_weights)
    fusion_kernels = {id(k) for k in model.get_layer("view_fusion").kernels}
    assert len(fusion_kernels) == len(config.modalities)
    for weight, grad in zip(model.trainable_weights, grads):
        if id(weight) in fusion_kernels:  # encoder = transposed decoder
            assert grad is not None and np.any(tf.convert_to_tensor(grad).numpy() != 0), weight.path
        else:
            assert grad is None or not np.any(tf.convert_to_tensor(grad).numpy()), weight.path


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_trainable_weight_and_training_is_seeded(name):
    config = make_config(name)
    model = build_model(config)
    inputs = make_inputs(config, LENGTHS, seed=16)
    targets = _next_item_targets(inputs["item_ids"])
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)["logits"]
        per_step = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        loss = tf.reduce_mean(per_step * (targets != 0).astype("float32")) + sum(model.losses)
    for weight, grad in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)):
        assert grad is not None, weight.path
        assert np.any(tf.convert_to_tensor(grad).numpy() != 0), weight.path

    # Dropout and view corruption draw from generators seeded by config.seed: a fresh build with the
    # same weights draws the same masks.
    first, second = build_model(config), build_model(config)
    second.set_weights(first.get_weights())
    np.testing.assert_array_equal(first(inputs, training=True)["logits"], second(inputs, training=True)["logits"])
    assert not np.allclose(first(inputs, training=True)["logits"], first(inputs, training=False)["logits"])


# ---------------------------------------------------------------------------------------------
# MultiViewFusion on its own


@pytest.mark.parametrize("combine, width", [("concat", 8), ("add", 4)])
def test_multi_view_fusion_harness(combine, width, tmp_path):
    rng = np.random.default_rng(17)
    views = [rng.normal(size=(2, 3, 6)).astype("float32"), rng.normal(size=(2, 3, 2)).astype("float32")]

    def make():
        return MultiViewFusion(4, combine=combine, corruption_rate=0.25, reconstruction_weight=0.5, seed=3)

    out = check_layer(make, views, call=lambda layer, tensors: layer(list(tensors)), expected_shape=(2, 3, width),
                      tmp_path=tmp_path)
    layer = make()
    layer(views)
    codes = [v @ keras.ops.convert_to_numpy(k) for v, k in zip(views, layer.kernels)]
    expected = np.concatenate(codes, -1) if combine == "concat" else codes[0] + codes[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(views)), expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (2, 3, width)


@pytest.mark.parametrize("combine", ["concat", "add"])
def test_multi_view_fusion_reconstruction_loss_value(combine):
    rng = np.random.default_rng(18)
    views = [rng.normal(size=(2, 4, 5)).astype("float32"), rng.normal(size=(2, 4, 3)).astype("float32")]
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    layer = MultiViewFusion(2, combine=combine, reconstruction_weight=0.7)
    fused = keras.ops.convert_to_numpy(layer(views, mask=mask, training=True))
    kernels = [keras.ops.convert_to_numpy(k).astype(np.float64) for k in layer.kernels]
    codes = [v @ k for v, k in zip(views, kernels)]
    per_step = 0.0
    for view, code, kernel in zip(views, codes, kernels):
        source = fused if combine == "add" else code
        per_step = per_step + 0.5 * np.mean((view - source @ kernel.T) ** 2, axis=-1)
    expected = 0.7 * per_step[mask].mean()
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)
    garbage = [v.copy() for v in views]
    for v in garbage:
        v[~mask] = 100.0  # masked steps add nothing
    layer(garbage, mask=mask, training=True)
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)


def test_multi_view_fusion_drops_whole_views_reproducibly():
    rng = np.random.default_rng(19)
    views = [rng.normal(size=(8, 50, 6)).astype("float32") + 3, rng.normal(size=(8, 50, 3)).astype("float32") + 3]
    layer = MultiViewFusion(4, combine="concat", corruption_rate=0.4, seed=5)
    clean = keras.ops.convert_to_numpy(layer(views))
    noisy = keras.ops.convert_to_numpy(layer(views, training=True))
    for index in range(2):
        block = slice(4 * index, 4 * (index + 1))
        dropped = np.all(noisy[..., block] == 0, axis=-1)  # (8, 50): the whole view is zero...
        kept = np.all(np.isclose(noisy[..., block], clean[..., block], atol=1e-6), axis=-1)  # ...or untouched
        assert np.all(dropped ^ kept)
        assert 0.3 < dropped.mean() < 0.5  # about corruption_rate
    twin = MultiViewFusion(4, combine="concat", corruption_rate=0.4, seed=5)  # same seed, same weights
    twin(views)
    for mine, theirs in zip(twin.kernels, layer.kernels):
        mine.assign(theirs)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin(views, training=True)), noisy)
    assert not np.array_equal(keras.ops.convert_to_numpy(layer(views, training=True)), noisy)  # next draw differs


def test_multi_view_fusion_argument_errors():
    with pytest.raises(ValueError, match="combine"):
        MultiViewFusion(4, combine="mean")
    with pytest.raises(ValueError, match="corruption_rate"):
        MultiViewFusion(4, corruption_rate=1.0)
    with pytest.raises(ValueError, match="reconstruction_weight"):
        MultiViewFusion(4, reconstruction_weight=-1.0)
    with pytest.raises(ValueError, match="units"):
        MultiViewFusion(0)
    with pytest.raises(ValueError, match="list of view tensors"):
        MultiViewFusion(4)(np.zeros((2, 3, 4), "float32"))


# ---------------------------------------------------------------------------------------------
# Sizes at the paper's settings (image 1000 + text 100, 10,000 items, Table 1)


def test_parameter_counts_at_paper_sizes():
    n, d_m, h, out = 10_000, 25, 20, 20
    common = (n + 1) * d_m + (out + 1) * (n + 1)  # item embedding, ItemLogits

    def gru(d_in, units=h):
        return 3 * (d_in * units + units * units + 2 * units)  # reset_after: two bias rows

    def fc_out(d_in):
        return d_in * out + out

    projections = 1000 * d_m + 100 * d_m  # bias-free W_image, W_text
    expected = {
        "p-rnn": gru(d_m) + gru(1000) + gru(100) + fc_out(3 * h),
        "mv-rnn-con": projections + gru(d_m + 2 * d_m) + fc_out(h),
        "mv-rnn-fus": projections + gru(d_m + d_m) + fc_out(h),
        "mv-rnn-3mdae": projections + gru(d_m + d_m) + fc_out(h),  # tied decoders: no more weights
        "vcsrs": (1100 * 1100 + 1100) + 4 * ((d_m + 1100) * h + h * h + h) + fc_out(h),
    }
    for name in MODELS:
        model = build_model(ModelConfig(num_items=n, variant=name))
        assert model.count_params() == common + expected[name], name
    assert build_model(ModelConfig(num_items=n, variant="p-rnn")).count_params() == build_model(
        ModelConfig(num_items=n, variant="mfn4rec-g")
    ).count_params()


# ---------------------------------------------------------------------------------------------
# End to end: `python -m mfn4rec_tf.fit` on the small demo, against `pop`


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The demo's planted structure at 300 users: the image of the current item predicts the next
    item's style (the sequential signal every model here reads), popularity predicts nothing."""
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    root = tmp_path_factory.mktemp("multimodal")
    data = write_dataset(root / "small", name="small", items=items, interactions=interactions, features=features)
    assert fit.main(["--data", str(data), "--model", "pop", "--protocol", "leave-one-out", "--out",
                     str(root / "pop"), "--quiet"]) == 0
    pop = json.loads((root / "pop" / "metrics.json").read_text())["valid"]["recall@20"]
    return data, pop


@pytest.mark.slow  # 7-10 s each on an idle 2-core machine, 15-25 s under the suite's load
@pytest.mark.parametrize("name", MODELS)
def test_fit_main_end_to_end_beats_popularity(name, small_demo, tmp_path, capsys):
    data, pop = small_demo
    out = tmp_path / name
    assert fit.main(["--data", str(data), "--model", name, "--protocol", "leave-one-out", "--epochs", "6",
                     "--patience", "6", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    recall = metrics["valid"]["recall@20"]
    with capsys.disabled():
        print(f"\n{name}: validation Recall@20 {recall:.4f} (pop {pop:.4f})")
    assert recall > pop + 0.15
    assert 0.0 <= metrics["test"]["recall@20"] <= 1.0
    assert f"variant: {name}" in (out / "config.yaml").read_text()
    loaded = keras.saving.load_model(out / "model.keras")
    assert loaded.name == name.replace("-", "_")
    assert loaded.get_layer("item_logits").vocabulary_size == 201
