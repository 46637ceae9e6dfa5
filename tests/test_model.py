import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf
from conftest import make_config, make_inputs, randomize_weights

from mfn4rec_tf.config import VARIANTS, ModalityConfig, ModelConfig
from mfn4rec_tf.model import build_model, with_output_mode

LENGTHS = [6, 2, 4, 1]  # right-padded rows of different lengths


def _predict(model, inputs):
    return {k: np.asarray(v) for k, v in model(inputs, training=False).items()}


def _reference_case(config, seed=0):
    model = build_model(config, output_mode="sequence")
    randomize_weights(model, seed=seed)
    inputs = make_inputs(config, LENGTHS, seed=seed)
    h_out, logits = ref.forward(config, ref.keras_weights(model, config), inputs)
    return model, inputs, h_out, logits


CASES = [make_config(v) for v in VARIANTS] + [
    make_config("mfn4rec", output_activation="tanh", gru_reset_after=False),
    make_config("mfn4rec", modalities=()),  # item IDs only
    make_config("mfn4rec-m", modalities=(ModalityConfig("audio", 2, 6),)),
    make_config("mfn4rec", memory_mode="cell"),  # the step-by-step reference path of the memory
    make_config("mfn4rec-m", memory_mode="cell"),
]
CASE_IDS = [c.variant for c in CASES[: len(VARIANTS)]] + ["tanh-cho-gru", "id-only", "m-one-modality", "cell",
                                                         "m-cell"]


@pytest.mark.parametrize("config", CASES, ids=CASE_IDS)
def test_sequence_outputs_match_numpy_reference(config):
    model, inputs, h_out, logits = _reference_case(config)
    out = _predict(model, inputs)
    np.testing.assert_allclose(out["user_representation"], h_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", CASES, ids=CASE_IDS)
def test_last_outputs_match_numpy_reference(config):
    model, inputs, h_out, logits = _reference_case(config, seed=1)
    mask = inputs["item_ids"] != 0
    out = _predict(with_output_mode(model, "last"), inputs)
    np.testing.assert_allclose(out["user_representation"], ref.last_valid(h_out, mask), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["logits"], ref.last_valid(logits, mask), rtol=1e-5, atol=1e-5)


def test_reference_detects_swapped_modalities():
    # The data is asymmetric enough that feeding image features as text (and back) changes the output.
    config = make_config("mfn4rec", modalities=(ModalityConfig("image", 3, 5), ModalityConfig("text", 3, 4)))
    model, inputs, _, logits = _reference_case(config)
    swapped = dict(inputs, image=inputs["text"], text=inputs["image"])
    assert not np.allclose(_predict(model, swapped)["logits"], logits, atol=1e-3)


def test_paper_defaults_have_table_1_sizes():
    n = 1000
    model = build_model(ModelConfig(num_items=n))
    grus = 3 * (25 * 20 + 20 * 20 + 2 * 20) + 3 * (1000 * 20 + 20 * 20 + 2 * 20) + 3 * (100 * 20 + 20 * 20 + 2 * 20)
    fc_a = 120 * 120 + 120  # 6*20 -> 6*20
    fc_u_g1_g2 = 3 * (120 * 50 + 50 + 50 * 20 + 20)  # 6*20 -> 50 -> 20
    fc_out = 80 * 20 + 20  # 4*20 -> 20
    embedding_and_logits = (n + 1) * 25 + (20 + 1) * (n + 1)
    assert model.count_params() == grus + fc_a + fc_u_g1_g2 + fc_out + embedding_and_logits
    assert model.get_layer("gated_memory").cell.attention.dropout == 0.3


def test_named_inputs_and_outputs():
    config = make_config()
    model = build_model(config)
    assert sorted(model.input) == ["image", "image_present", "item_ids", "text"]
    assert sorted(model.output) == ["logits", "user_representation"]
    assert model.input["item_ids"].dtype == "int32"


@pytest.mark.parametrize("variant", VARIANTS)
def test_appending_or_prepending_padding_changes_nothing(variant):
    config = make_config(variant)
    model = build_model(config)
    randomize_weights(model, seed=2)
    inputs = make_inputs(config, LENGTHS, seed=3)
    base = _predict(model, inputs)
    base_last = _predict(with_output_mode(model, "last"), inputs)

    rng = np.random.default_rng(4)
    extra = 3

    def pad(array, left):
        width = [(0, 0)] * array.ndim
        width[1] = (extra, 0) if left else (0, extra)
        if array.dtype == np.int32:
            return np.pad(array, width)
        noise = rng.normal(size=np.pad(array, width).shape).astype(array.dtype)  # garbage at padded steps
        padded = np.pad(array, width)
        steps = slice(0, extra) if left else slice(array.shape[1], None)
        padded[:, steps] = noise[:, steps]
        return padded

    appended = {k: pad(v, left=False) for k, v in inputs.items()}
    out = _predict(model, appended)
    steps = inputs["item_ids"].shape[1]
    for key in base:
        np.testing.assert_allclose(out[key][:, :steps], base[key], atol=1e-6)
    out_last = _predict(with_output_mode(model, "last"), appended)
    for key in base_last:
        np.testing.assert_allclose(out_last[key], base_last[key], atol=1e-6)

    prepended = {k: pad(v, left=True) for k, v in inputs.items()}
    out_last = _predict(with_output_mode(model, "last"), prepended)
    for key in base_last:
        np.testing.assert_allclose(out_last[key], base_last[key], atol=1e-5)


def test_presence_flag_is_used_and_absent_features_are_ignored():
    config = make_config()
    model = build_model(config, output_mode="last")
    randomize_weights(model, seed=5)
    inputs = make_inputs(config, [4, 4], seed=6)
    inputs["image_present"][:] = 1.0
    inputs["image_present"][:, 1] = 0.0
    base = _predict(model, inputs)["logits"]
    noisy = dict(inputs, image=inputs["image"].copy())
    noisy["image"][:, 1] += 5.0  # features of absent items
    np.testing.assert_allclose(_predict(model, noisy)["logits"], base, atol=1e-6)
    flipped = dict(inputs, image_present=np.ones_like(inputs["image_present"]))
    flipped["image"] = inputs["image"].copy()
    flipped["image"][:, 1] = 0.0  # zero vector, but now flagged present
    assert not np.allclose(_predict(model, flipped)["logits"], base, atol=1e-4)


def _loss(logits, targets):
    weights = tf.cast(targets != 0, tf.float32)
    per_step = tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_sum(per_step * weights) / tf.reduce_sum(weights)


def _next_item_targets(ids):
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    return targets


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_trainable_weight(variant):
    config = make_config(variant)
    model = build_model(config)
    inputs = make_inputs(config, LENGTHS, seed=7)
    targets = _next_item_targets(inputs["item_ids"])
    with tf.GradientTape() as tape:
        loss = _loss(model(inputs, training=True)["logits"], targets)
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(float(loss))
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None, weight.path
        grad = tf.convert_to_tensor(grad).numpy()  # embeddings give IndexedSlices
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), weight.path


@pytest.mark.parametrize("variant", VARIANTS)
def test_keras_file_round_trip_gives_identical_predictions(variant, tmp_path):
    config = make_config(variant)
    model = build_model(config)
    randomize_weights(model, seed=8)
    inputs = make_inputs(config, LENGTHS, seed=9)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected, got = _predict(model, inputs), _predict(loaded, inputs)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    last_expected = _predict(with_output_mode(model, "last"), inputs)
    last_got = _predict(with_output_mode(loaded, "last"), inputs)
    for key in last_expected:
        np.testing.assert_array_equal(last_got[key], last_expected[key])


def test_get_config_from_config_rebuilds_the_model():
    config = make_config()
    model = build_model(config, output_mode="last")
    randomize_weights(model, seed=10)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    inputs = make_inputs(config, LENGTHS, seed=11)
    np.testing.assert_array_equal(_predict(clone, inputs)["logits"], _predict(model, inputs)["logits"])


def test_output_modes_share_weights():
    config = make_config()
    sequence = build_model(config)
    last = with_output_mode(sequence, "last")
    assert last.get_layer("item_logits") is sequence.get_layer("item_logits")
    assert len(last.trainable_weights) == len(sequence.trainable_weights)
    randomize_weights(sequence, seed=12)  # changes what `last` computes too
    inputs = make_inputs(config, LENGTHS, seed=13)
    mask = inputs["item_ids"] != 0
    np.testing.assert_allclose(
        _predict(last, inputs)["logits"], ref.last_valid(_predict(sequence, inputs)["logits"], mask), atol=1e-6
    )
    back = with_output_mode(last, "sequence")
    np.testing.assert_allclose(_predict(back, inputs)["logits"], _predict(sequence, inputs)["logits"], atol=1e-6)


def test_bad_output_mode_and_foreign_model():
    with pytest.raises(ValueError, match="output_mode"):
        build_model(make_config(), output_mode="every")
    inp = keras.Input((3,))
    with pytest.raises(ValueError, match="not a functional model from `build_model`"):
        with_output_mode(keras.Model(inp, keras.layers.Dense(2)(inp)), "last")


def test_one_batch_overfit():
    config = make_config("mfn4rec", dropout=0.0)
    model = build_model(config)
    inputs = make_inputs(config, [7, 5, 7, 3, 6, 7, 4, 7], seed=14)
    targets = _next_item_targets(inputs["item_ids"])
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = _loss(model(inputs, training=True)["logits"], targets)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
        return loss

    losses = [float(step()) for _ in range(200)]
    assert losses[0] > 2.0  # about log(13) at initialisation
    assert losses[-1] < 0.25 * losses[0], losses[::20]
