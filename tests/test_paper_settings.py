"""Each model at its own paper's settings: registry presets, SASRec as its paper and reference code
define it (tied item table, pre-LN blocks; the forward pass against NumPy), its BCE loss with one
sampled negative per position, GRU4Rec, per-model search spaces, and `compare` using each preset."""

import argparse

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize_weights

from mfn4rec_tf import compare, optim, presets, registry, training
from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.heads import load_model
from mfn4rec_tf.layers import TiedItemLogits
from mfn4rec_tf.model import build_model, with_output_mode
from mfn4rec_tf.run_config import RunConfig, load_config
from mfn4rec_tf.sampled import OneNegativeSampler, SampledSoftmaxModel, one_negative_bce_loss
from mfn4rec_tf.search_spaces import load_space

# --- presets -----------------------------------------------------------------------------------------------


def test_mfn4rec_keeps_the_papers_table_1():
    config = load_config()
    assert config == RunConfig() and config.model.variant == "mfn4rec"
    model, train = config.model, config.train
    assert (model.id_embedding_dim, model.id_hidden_units, model.modality_hidden_units, model.memory_dim,
            model.fc_hidden_units, model.output_units, model.dropout) == (25, 20, 20, 20, 50, 20, 0.3)
    assert (train.learning_rate, train.batch_size, train.optimizer, train.adam_beta_2) == (0.01, 64, "adam", 0.999)
    assert config.data.max_length == 100 and registry.get("mfn4rec").preset == {}


def test_sasrec_preset_is_its_papers():
    config = load_config(None, ["model.variant=sasrec"])
    model, train = config.model, config.train
    assert (model.id_embedding_dim, model.attention_blocks, model.attention_heads, model.dropout) == (50, 2, 1, 0.5)
    assert (train.learning_rate, train.adam_beta_2, train.batch_size, train.optimizer) == (0.001, 0.98, 128, "adam")
    assert config.data.max_length == 50 and train.loss == "full"
    # a user's settings stay above the preset (dense data: dropout 0.2, 200 items; the paper's loss)
    dense = load_config(None, ["model.variant=sasrec", "model.dropout=0.2", "data.max_length=200", "train.loss=bce"])
    assert (dense.model.dropout, dense.data.max_length, dense.model.id_embedding_dim) == (0.2, 200, 50)
    assert dense.train.loss == "bce"


def test_gru4rec_preset_and_optimizer():
    config = load_config(None, ["model.variant=gru4rec"])
    assert (config.model.id_hidden_units, config.model.id_embedding_dim, config.model.dropout) == (100, 100, 0.0)
    assert (config.train.optimizer, config.train.learning_rate) == ("adagrad", 0.01)
    assert isinstance(optim.make_optimizer(config.train), keras.optimizers.Adagrad)
    adam = optim.make_optimizer(load_config(None, ["model.variant=sasrec"]).train)
    assert isinstance(adam, keras.optimizers.Adam) and adam.beta_2 == pytest.approx(0.98)
    with pytest.raises(ValueError, match="train.optimizer"):
        load_config(None, ["train.optimizer=sgd"])
    with pytest.raises(ValueError, match="adam_beta_2"):
        load_config(None, ["train.adam_beta_2=1.0"])


def test_bce_applies_only_to_models_with_item_vectors():
    assert load_config(None, ["model.variant=gru4rec", "train.loss=bce"]).train.loss == "bce"
    with pytest.raises(ValueError, match="bce.*does not apply to bpr"):
        load_config(None, ["model.variant=bpr", "train.loss=bce"])


# --- SASRec: the forward pass against NumPy ----------------------------------------------------------------


def _sasrec(output_mode="sequence", **overrides):
    fields = dict(num_items=11, variant="sasrec", modalities=(), id_embedding_dim=8, attention_heads=2,
                  attention_blocks=1, dropout=0.0, seed=0)
    fields.update(overrides)
    config = ModelConfig(**fields)
    return config, build_model(config, output_mode)


def _layer_norm(x, layer):
    gamma, beta = (np.asarray(w) for w in layer.weights)
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _attention(query, keys, allowed, layer):
    qk, qb, kk, kb, vk, vb, ok, ob = (np.asarray(w) for w in layer.weights)
    q = np.einsum("btd,dhk->bthk", query, qk) + qb
    k = np.einsum("btd,dhk->bthk", keys, kk) + kb
    v = np.einsum("btd,dhk->bthk", keys, vk) + vb
    scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(allowed[:, None], scores, -1e9)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqs,bshk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", heads, ok) + ob


def _sasrec_numpy(model, ids, blocks):
    """The paper's reference code: scaled tied embedding + positions, pre-LN on the query, residual on
    the normalised input, padding zeroed, final LN, scores against the same table."""
    table = np.asarray(model.get_layer("item_logits").embeddings)
    d = table.shape[1]
    mask = ids != 0
    steps = ids.shape[1]
    x = table[ids] * np.sqrt(d) + np.asarray(model.get_layer("positions").positions)[:steps]
    x = x * mask[..., None]
    allowed = np.tril(np.ones((steps, steps), bool))[None] & mask[:, None, :]
    for b in range(blocks):
        q = _layer_norm(x, model.get_layer(f"block{b}_attention_norm"))
        x = q + _attention(q, x, allowed, model.get_layer(f"block{b}_attention"))
        n = _layer_norm(x, model.get_layer(f"block{b}_ffn_norm"))
        w1, b1 = (np.asarray(w) for w in model.get_layer(f"block{b}_ffn_hidden").weights)
        w2, b2 = (np.asarray(w) for w in model.get_layer(f"block{b}_ffn_output").weights)
        x = n + np.maximum(n @ w1 + b1, 0.0) @ w2 + b2
        x = x * mask[..., None]
    h = _layer_norm(x, model.get_layer("final_norm"))
    return h, h @ table.T


@pytest.mark.parametrize("blocks", [1, 2])
def test_sasrec_forward_matches_the_reference_architecture(blocks):
    config, model = _sasrec(attention_blocks=blocks)
    randomize_weights(model, seed=3, scale=0.4)
    ids = np.array([[3, 5, 7, 2, 0], [4, 1, 0, 0, 0]], "int32")
    out = model({"item_ids": ids}, training=False)
    h, logits = _sasrec_numpy(model, ids, blocks)
    valid = ids != 0
    np.testing.assert_allclose(np.asarray(out["user_representation"])[valid], h[valid], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(out["logits"])[valid][:, 1:], logits[valid][:, 1:], rtol=2e-4, atol=2e-4)
    assert np.all(np.asarray(out["logits"])[..., 0] < -1e8)  # padding never scores


def test_sasrec_ties_its_input_and_output_item_vectors():
    config, model = _sasrec()
    layer = model.get_layer("item_logits")
    assert isinstance(layer, TiedItemLogits)
    assert not any(isinstance(other, keras.layers.Embedding) for other in model.layers)  # one item table
    assert [w.name for w in layer.weights] == ["embeddings"]
    assert layer.embeddings.shape == (config.vocabulary_size, config.id_embedding_dim)
    # every item's output vector is its input vector: a gradient of one output score reaches the
    # input rows as well, and the table's kernel view is its transpose
    np.testing.assert_array_equal(np.asarray(layer.kernel), np.asarray(layer.embeddings).T)
    ids = tf.constant([[2, 3, 0]], tf.int32)
    with tf.GradientTape() as tape:
        score = model({"item_ids": ids})["logits"][0, 1, 9]  # item 9 never appears in the input
    gradient = tf.convert_to_tensor(tape.gradient(score, layer.embeddings)).numpy()
    assert np.abs(gradient[9]).sum() > 0 and np.abs(gradient[[2, 3]]).sum() > 0


def test_sasrec_heads_are_configurable_and_must_divide_the_width():
    _, model = _sasrec(attention_heads=2)
    assert model.get_layer("block0_attention").num_heads == 2
    with pytest.raises(ValueError, match="divide by `attention_heads`"):
        _sasrec(attention_heads=3)


def test_sasrec_saves_and_loads_with_its_tied_table(tmp_path):
    _, model = _sasrec(attention_blocks=2)
    randomize_weights(model, seed=5, scale=0.3)
    ids = np.array([[3, 5, 7, 0]], "int32")
    model.save(tmp_path / "sasrec.keras")
    loaded = load_model(tmp_path / "sasrec.keras")
    np.testing.assert_allclose(loaded({"item_ids": ids})["logits"], model({"item_ids": ids})["logits"], atol=1e-5)
    last = with_output_mode(loaded, "last")({"item_ids": ids})["logits"]
    np.testing.assert_allclose(last[0], np.asarray(model({"item_ids": ids})["logits"])[0, 2], atol=1e-5)


# --- the BCE loss with one sampled negative per position ---------------------------------------------------


def test_one_negative_bce_loss_matches_numpy():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 4)).astype("float32")
    kernel = rng.normal(size=(4, 8)).astype("float32")
    bias = rng.normal(size=(8,)).astype("float32")
    targets = np.array([1, 2, 7, 3, 5])
    negatives = np.array([4, 6, 1, 3 + 1, 2])
    weights = np.array([1.0, 1.0, 0.0, 1.0, 2.0], "float32")
    loss = float(one_negative_bce_loss(tf.constant(h), tf.constant(targets), tf.constant(negatives), kernel, bias,
                                       tf.constant(weights)))

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    positive = np.einsum("md,dm->m", h, kernel[:, targets]) + bias[targets]
    negative = np.einsum("md,dm->m", h, kernel[:, negatives]) + bias[negatives]
    expected = -np.log(sigmoid(positive)) - np.log(1.0 - sigmoid(negative))  # SASRec's Eq. (6) per position
    np.testing.assert_allclose(loss, (expected * weights).sum() / weights.sum(), rtol=1e-5)


def test_one_negative_sampler_draws_any_item_but_the_target():
    sampler = OneNegativeSampler(5, keras.random.SeedGenerator(0))
    targets = tf.constant(np.tile(np.arange(1, 6), 2000), tf.int32)
    draws = sampler.sample(targets).numpy()
    assert draws.shape == targets.shape and draws.min() >= 1 and draws.max() <= 5
    assert not np.any(draws == targets.numpy())
    counts = np.bincount(draws[targets.numpy() == 3], minlength=6)[1:]  # target 3: items 1, 2, 4, 5 alike
    assert counts[2] == 0 and np.all(np.abs(counts[[0, 1, 3, 4]] / 2000 - 0.25) < 0.04)
    with pytest.raises(ValueError, match="at least 2 items"):
        OneNegativeSampler(1, keras.random.SeedGenerator(0))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    items, interactions, features, _ = generate(DemoSpec(num_users=80, num_items=120, max_length=10))
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", name="tiny", items=items,
                         interactions=interactions, features=features)


def _one_step(config, dataset):
    from mfn4rec_tf.dataset import load_dataset
    from mfn4rec_tf.splits import make_split

    dataset = load_dataset(dataset)
    split = make_split(dataset.interactions, "leave-one-out", "validation")
    keras.utils.set_random_seed(0)
    model = training.new_model(config, dataset, split.train_sequences)
    ids = np.array([[3, 5, 7, 2, 0], [4, 1, 6, 0, 0]], "int32")
    targets = np.array([[5, 7, 2, 9, 0], [1, 6, 8, 0, 0]], "int32")
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit({"item_ids": ids}, {"logits": targets}, sample_weight={"logits": (targets > 0) * 1.0},
                        epochs=1, verbose=0)
    moved = any(not np.allclose(a, np.asarray(b)) for a, b in zip(before, model.trainable_weights))
    return model, float(history.history["loss"][0]), moved


def test_sasrec_trains_with_the_bce_loss(tiny_data):
    config = load_config(None, ["model.variant=sasrec", "train.loss=bce", "data.modalities=[]"])
    model, loss, moved = _one_step(config, tiny_data)
    assert isinstance(model, SampledSoftmaxModel) and moved
    # at the start every score is near 0, so each position's loss is near 2 log 2
    assert np.isfinite(loss) and abs(loss - 2 * np.log(2)) < 0.5


# --- GRU4Rec -------------------------------------------------------------------------------------------------


def test_gru4rec_keeps_the_contract_and_trains(tiny_data):
    config = ModelConfig(num_items=11, variant="gru4rec", modalities=(), id_embedding_dim=6, id_hidden_units=5,
                         dropout=0.2, seed=0)
    for mode in ("sequence", "last"):
        model = build_model(config, mode)
        for name in ("padding_mask", "fc_out", "item_logits"):
            model.get_layer(name)
        assert model.get_layer("gru").units == 5 and sorted(model.input) == ["item_ids"]
        out = model({"item_ids": np.array([[3, 5, 0], [2, 0, 0]], "int32")})
        steps = (3,) if mode == "sequence" else ()
        assert out["logits"].shape == (2, *steps, 12) and out["user_representation"].shape == (2, *steps, 5)
    # the hidden state scores the items directly: logits = h W + b
    model = build_model(config, "last")
    randomize_weights(model, seed=2)
    out = model({"item_ids": np.array([[3, 5, 0]], "int32")})
    layer = model.get_layer("item_logits")
    expected = np.asarray(out["user_representation"]) @ np.asarray(layer.kernel) + np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(out["logits"])[0, 1:], expected[0, 1:], rtol=1e-5, atol=1e-5)
    for loss in ("full", "sampled", "bce"):
        run = load_config(None, ["model.variant=gru4rec", f"train.loss={loss}", "train.num_negatives=8",
                                 "data.modalities=[]", "model.id_hidden_units=8", "model.id_embedding_dim=8"])
        _, value, moved = _one_step(run, tiny_data)
        assert np.isfinite(value) and moved, loss


# --- search spaces and compare -------------------------------------------------------------------------------


def test_every_tunable_model_has_a_search_space_that_loads():
    for name in registry.names():
        spec = registry.get(name)
        if spec.family == "reference":
            assert spec.search_space is None
            continue
        space = load_space(spec.search_space)
        base = load_config(None, [f"model.variant={name}"])
        hp = {p.key: (p.values[-1] if p.form == "choice" else p.max) for p in space.searched}
        config = space.apply(base, hp)
        assert config.model.variant == name
    assert registry.get("sasrec").search_space == "sasrec" and registry.get("gru4rec").search_space == "gru4rec"
    assert registry.get("mfn4rec").search_space == "paper"
    for name in ("sasrec", "gru4rec"):  # each space holds its model's preset (the paper's settings)
        space, preset = load_space(name), load_config(None, [f"model.variant={name}"])
        for parameter in space.searched:
            section, key = parameter.key.split(".")
            value = getattr(getattr(preset, section), key)
            if parameter.form == "choice":
                assert value in parameter.values, (name, parameter.key)
            else:
                assert parameter.min <= value <= parameter.max, (name, parameter.key)
    sasrec = load_space("sasrec")
    widths = next(p.values for p in sasrec.searched if p.key == "model.id_embedding_dim")
    heads = next(p.values for p in sasrec.searched if p.key == "model.attention_heads")
    assert all(w % h == 0 for w in widths for h in heads)  # every trial builds


def _args(data, out, models, *extra):
    args = compare.parse_args(["--data", str(data), "--models", models, "--out", str(out), "--protocol",
                               "leave-one-out", *extra])
    assert isinstance(args, argparse.Namespace)
    return args


def test_compare_runs_each_model_at_its_own_preset(tiny_data, tmp_path):
    plan = compare.make_plan(_args(tiny_data, tmp_path / "out", "sasrec,gru4rec,mfn4rec", "--budget", "2"))
    configs = {entry.model: entry.config for entry in plan.entries}
    assert configs["sasrec"].model.id_embedding_dim == 50 and configs["sasrec"].data.max_length == 50
    assert configs["sasrec"].train.learning_rate == 0.001
    assert configs["gru4rec"].model.id_hidden_units == 100 and configs["gru4rec"].train.optimizer == "adagrad"
    assert configs["mfn4rec"].model.id_embedding_dim == 25 and configs["mfn4rec"].train.learning_rate == 0.01
    assert {c.train.epochs for c in configs.values()} == {2}  # the budget stays shared
    assert compare.own_settings(plan.base, configs["sasrec"])["model.id_embedding_dim"] == 50
    assert compare.own_settings(plan.base, configs["mfn4rec"]) == {}
    # a user's --set applies to every model, above its preset
    plan = compare.make_plan(_args(tiny_data, tmp_path / "out", "sasrec,gru4rec", "--set", "model.dropout=0.1"))
    assert {entry.config.model.dropout for entry in plan.entries} == {0.1}
    # with --tune each model is searched first
    plan = compare.make_plan(_args(tiny_data, tmp_path / "out", "pop,gru4rec", "--tune", "2"))
    assert [entry.action for entry in plan.entries] == ["train", "tune"]


def test_compare_preset_is_for_its_models_and_model_set_for_one(tiny_data, tmp_path):
    plan = compare.make_plan(_args(tiny_data, tmp_path / "out", "sasrec,mfn4rec,mfn4rec-g", "--preset", "recipe",
                                   "--model-set", "sasrec:model.dropout=0.2", "--budget", "4", "--patience", "2"))
    configs = {entry.model: entry.config for entry in plan.entries}
    recipe = presets.PRESETS["recipe"]
    for name in ("mfn4rec", "mfn4rec-g"):  # the recipe, but the shared budget
        assert configs[name].train.optimizer == "adamw" and configs[name].data.train_windows == "sliding"
        assert configs[name].model.id_embedding_dim == recipe["model"]["id_embedding_dim"]
        assert (configs[name].train.epochs, configs[name].train.patience) == (4, 2)
    sasrec = configs["sasrec"]  # its own preset, the recipe not applied, its own dropout
    assert sasrec.train.optimizer == "adam" and sasrec.data.train_windows == "last" and sasrec.model.dropout == 0.2
    assert sasrec.model.id_embedding_dim == 50 and (sasrec.train.epochs, sasrec.train.patience) == (4, 2)
    assert plan.base.train.optimizer == "adam"  # what every model shares has neither
    assert plan.summary["preset"] == "recipe" and plan.summary["model_settings"] == {"sasrec": ["model.dropout=0.2"]}
    text = compare.format_markdown(dict(plan.summary, date="d", machine="m", software="s"), [], "cmd")
    assert "the recipe preset" in text and "sasrec also `model.dropout=0.2`" in text
    for extra, message in [
        (["--preset", "recipe", "--models", "sasrec"], "applies to none of --models"),
        (["--model-set", "sasrec-model.dropout=0.2"], "MODEL:SECTION.KEY=VALUE"),
        (["--model-set", "gru4rec:model.dropout=0.2"], "is not one of --models"),
        (["--model-set", "sasrec:model.variant=lstm"], "cannot set model.variant"),
        (["--model-set", "sasrec:model.nope=1"], "model.nope"),
    ]:
        args = _args(tiny_data, tmp_path / "out", "sasrec,mfn4rec", *extra)  # a second --models wins
        with pytest.raises((compare.CompareError, ValueError, KeyError), match=message):
            compare.make_plan(args)


@pytest.mark.slow
def test_compare_tune_searches_each_model_then_trains_its_best(tiny_data, tmp_path):
    out = tmp_path / "out"
    code = compare.main(["--data", str(tiny_data), "--models", "pop,gru4rec", "--out", str(out), "--protocol",
                         "leave-one-out", "--budget", "1", "--patience", "1", "--tune", "2", "--quiet",
                         "--set", "model.id_hidden_units=8", "--modalities", "none"])
    assert code == 0
    trials = (out / "tune" / "gru4rec" / "trials.csv").read_text().splitlines()
    assert len(trials) == 3 and not (out / "tune" / "pop").exists()
    import json

    record = json.loads((out / "compare.json").read_text())
    gru4rec = next(m for m in record["models"] if m["model"] == "gru4rec")
    assert gru4rec["status"] == "ok" and gru4rec["tuning"]["trials"] == 2
    tuned = load_config(out / "runs" / "gru4rec" / "config.yaml")
    for key, value in gru4rec["tuning"]["values"].items():
        section, name = key.split(".")
        assert getattr(getattr(tuned, section), name) == value
