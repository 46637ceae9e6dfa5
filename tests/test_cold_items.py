"""New items without history: items from their features, the cold-items protocol, export --add-items."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_config, make_inputs, randomize_weights

from mfn4rec_tf import export, fit, registry
from mfn4rec_tf._checks import NotApplicable
from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.dataset import load_dataset, write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.layers import FeatureItemLogits, ItemIdEmbedding, ItemLogits, set_known_items
from mfn4rec_tf.metrics import evaluate, group_result
from mfn4rec_tf.model import build_model
from mfn4rec_tf.run_config import load_config
from mfn4rec_tf.splits import cold_item_set, make_split

REPRESENTATIONS = ("features", "id+features")


def _tables(config, seed=0):
    rng = np.random.default_rng(seed)
    tables = {}
    for modality in config.modalities:
        tables[modality.name] = rng.normal(size=(config.vocabulary_size, modality.dim)).astype("float32")
        if modality.presence:
            tables[modality.name + "_present"] = rng.random(config.vocabulary_size) < 0.7
    return tables


def _encoder_reference(layer, tables, h, keep):
    """NumPy logits of a `FeatureItemLogits` layer with the ID part kept where `keep` (per item)."""
    features = np.concatenate([np.asarray(t, np.float64).reshape(len(t), -1) for t in tables], axis=1)
    hidden = np.tanh(features @ layer.hidden_kernel.numpy() + layer.hidden_bias.numpy())
    vectors = hidden @ layer.vector_kernel.numpy() + layer.vector_bias.numpy()  # (V, d)
    bias = hidden @ layer.score_kernel.numpy()
    if layer.use_id:
        vectors = vectors + layer.kernel.numpy().T * keep[:, None]
        bias = bias + layer.bias.numpy() * keep
    logits = h @ vectors.T + bias
    logits[..., 0] = -1e9
    return logits


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_item_encoder_matches_numpy(representation):
    config = make_config(item_representation=representation)
    tables = _tables(config)
    model = build_model(config, "last", item_features=tables)
    randomize_weights(model, seed=3)
    layer = model.get_layer("item_logits")
    assert isinstance(layer, FeatureItemLogits) and isinstance(model.get_layer("item_embedding"), ItemIdEmbedding)
    layer.tables[0].assign(tables["image"])  # randomize_weights replaced the (non-trainable) tables too
    layer.tables[1].assign(tables["text"])
    layer.tables[2].assign(tables["image_present"].astype("float32")[:, None])
    known = np.ones(config.vocabulary_size, bool)
    known[[2, 9]] = False
    set_known_items(model, known)
    out = model(make_inputs(config, [4, 2, 5]), training=False)
    ordered = [tables["image"], tables["text"], tables["image_present"].astype("float64")]
    expected = _encoder_reference(layer, ordered, out["user_representation"].numpy().astype(np.float64),
                                  known.astype(np.float64))
    np.testing.assert_allclose(out["logits"].numpy()[:, 1:], expected[:, 1:], rtol=1e-4, atol=1e-4)
    assert (out["logits"].numpy()[:, 0] < -1e8).all()


def test_id_representation_is_the_papers_layers():
    model = build_model(make_config(), "last")
    assert type(model.get_layer("item_logits")) is ItemLogits
    assert type(model.get_layer("item_embedding")) is keras.layers.Embedding


def test_id_dropout_only_in_training():
    layer = FeatureItemLogits(40, [3], hidden_units=4, use_id=True, id_dropout=0.5, seed=1,
                              tables=[np.random.default_rng(0).normal(size=(40, 3))])
    h = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    layer(h)
    layer.bias.assign(np.random.default_rng(2).normal(size=40).astype("float32"))
    inference = [layer(h, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    tables = [layer.tables[0].numpy()]
    with_id = _encoder_reference(layer, tables, h.astype(np.float64), np.ones(40))
    without_id = _encoder_reference(layer, tables, h.astype(np.float64), np.zeros(40))
    np.testing.assert_allclose(inference[0][:, 1:], with_id[:, 1:], rtol=1e-4, atol=1e-4)
    trained = layer(h, training=True).numpy()
    kept = np.isclose(trained, with_id, rtol=1e-4, atol=1e-4).all(axis=0)[1:]
    dropped = np.isclose(trained, without_id, rtol=1e-4, atol=1e-4).all(axis=0)[1:]
    assert (kept | dropped).all()  # each item (a column, for every row alike) has its ID part or not
    assert 5 < dropped.sum() < 34  # about half of the 39 items at rate 0.5

    embedding = ItemIdEmbedding(40, 3, id_dropout=0.5, seed=2)
    ids = np.tile(np.arange(1, 40, dtype="int32"), (2, 1))
    embedding(ids)
    np.testing.assert_array_equal(embedding(ids, training=False).numpy()[0], embedding.embeddings.numpy()[1:])
    read = embedding(ids, training=True).numpy()
    np.testing.assert_array_equal(read[0], read[1])  # one draw per item, not per position
    unknown = np.isclose(read[0], embedding.unknown.numpy()).all(axis=1)
    own = np.isclose(read[0], embedding.embeddings.numpy()[1:]).all(axis=1)
    assert (unknown | own).all() and 5 < unknown.sum() < 34


def test_exclude_unknown_items_leaves_them_out_of_the_training_softmax_only():
    from mfn4rec_tf.chunked_softmax import chunked_softmax_cross_entropy
    from mfn4rec_tf.sampled import item_weights

    rng = np.random.default_rng(4)
    h = rng.normal(size=(3, 5)).astype("float32")
    targets = np.array([1, 4, 7])
    known = np.ones(12, bool)
    known[[2, 5, 9]] = False
    layers, table = {}, rng.normal(size=(12, 3))
    for exclude in (False, True):
        layer = FeatureItemLogits(12, [3], hidden_units=4, use_id=True, id_dropout=0.0, seed=1, tables=[table],
                                  exclude_unknown=exclude)
        layer(h)
        if layers:
            layer.set_weights(layers[False].get_weights())
        layer.known.assign(known.astype("float32"))
        layers[exclude] = layer
    inference = layers[False](h, training=False).numpy()
    np.testing.assert_array_equal(layers[True](h, training=False).numpy(), inference)  # serving scores every item
    trained = layers[True](h, training=True).numpy()
    assert (trained[:, ~known] <= -1e8).all()  # index 0 (padding) and the unknown items
    np.testing.assert_allclose(trained[:, known][:, 1:], inference[:, known][:, 1:], rtol=1e-6)
    # the loss is the softmax over the known items alone (NumPy), by Keras' path and by the chunked one
    z = inference.astype(np.float64)[:, known][:, 1:]  # the known items 1..N
    columns = np.flatnonzero(known)[1:]
    position = np.searchsorted(columns, targets)
    want = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(3), position])
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets, trained)
    np.testing.assert_allclose(float(keras_loss), want, rtol=1e-5)
    kernel, bias = item_weights(layers[True])
    chunked = chunked_softmax_cross_entropy(h, kernel, bias, targets, np.ones(3, "float32"), chunk=5)
    np.testing.assert_allclose(float(chunked), want, rtol=1e-5)
    # no gradient reaches the unknown items' ID vectors from the training loss
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets, layers[True](h, training=True))
    grad = tape.gradient(loss, layers[True].kernel).numpy()
    assert np.abs(grad[:, ~known]).max() == 0.0 and np.abs(grad[:, known]).max() > 0.0
    config = make_config(item_representation="id+features", exclude_unknown_items=True)
    model = build_model(config, "last", item_features=_tables(config))
    assert model.get_layer("item_logits").exclude_unknown
    with pytest.raises(ValueError, match="exclude_unknown_items"):
        make_config(item_representation="features", exclude_unknown_items="yes")
    with pytest.raises(ValueError, match="exclude_unknown_items"):
        make_config(exclude_unknown_items=True)
    assert load_config(overrides=["model.item_representation=features",
                                  "model.exclude_unknown_items=true"]).model.exclude_unknown_items is True


def test_id_inference_scale_weighs_the_id_part_outside_training_only():
    h = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    table = np.random.default_rng(0).normal(size=(40, 3))
    known = np.ones(40)
    known[[3, 8]] = 0.0
    layers = []
    for scale in (1.0, 0.5):
        layer = FeatureItemLogits(40, [3], hidden_units=4, use_id=True, id_dropout=0.0, seed=1, tables=[table],
                                  id_inference_scale=scale)
        layer(h)
        if layers:
            layer.set_weights(layers[0].get_weights())
        layer.bias.assign(np.random.default_rng(2).normal(size=40).astype("float32"))
        layer.known.assign(known.astype("float32"))
        layers.append(layer)
    want = _encoder_reference(layers[1], [table], h.astype(np.float64), 0.5 * known)
    np.testing.assert_allclose(layers[1](h, training=False).numpy()[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layers[1](h, training=True).numpy(), layers[0](h, training=True).numpy(), rtol=1e-6)
    assert not np.allclose(layers[1](h).numpy(), layers[0](h).numpy())
    restored = FeatureItemLogits.from_config(layers[1].get_config())
    assert restored.id_inference_scale == 0.5
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="id_inference_scale"):
            FeatureItemLogits(40, [3], id_inference_scale=bad)
    with pytest.raises(ValueError, match="id_inference_scale"):
        make_config(item_representation="features", id_inference_scale=0.5)  # no ID part to weigh
    config = make_config(item_representation="id+features", id_inference_scale=0.5)
    assert build_model(config, "last", item_features=_tables(config)).get_layer("item_logits").id_inference_scale == 0.5


def test_unknown_item_reads_the_unknown_vector_and_its_features():
    config = make_config(item_representation="id+features")
    model = build_model(config, "last", item_features=_tables(config))
    inputs = make_inputs(config, [4, 3])
    inputs["item_ids"][:, 0] = 5
    set_known_items(model, np.array([1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]))  # item 5 is new
    embedding = model.get_layer("item_embedding")
    before = model(inputs)["logits"].numpy()
    rows = embedding.embeddings.numpy()
    rows[5] += 10.0  # its (untrained) ID row is never read
    embedding.embeddings.assign(rows)
    np.testing.assert_array_equal(model(inputs)["logits"].numpy(), before)
    changed = {name: value.copy() for name, value in inputs.items()}
    changed["text"][:, 0] += 1.0  # its features are
    assert not np.allclose(model(changed)["logits"].numpy(), before)
    read = embedding(np.array([[5, 1]], "int32")).numpy()
    np.testing.assert_array_equal(read[0, 0], embedding.unknown.numpy())
    np.testing.assert_array_equal(read[0, 1], rows[1])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="item_representation"):
        make_config(item_representation="image")
    with pytest.raises(ValueError, match="id_dropout"):
        make_config(item_representation="features", id_dropout=1.0)
    with pytest.raises(NotApplicable, match="feature modalities"):
        ModelConfig(num_items=5, modalities=(), item_representation="id+features")
    with pytest.raises(NotApplicable, match=r"lstm.*mfn4rec"):
        ModelConfig(num_items=5, variant="lstm", modalities=(), item_representation="features")
    with pytest.raises(NotApplicable, match="data.modalities"):
        load_config(overrides=["model.item_representation=features", "data.modalities=[]"])
    with pytest.raises(ValueError, match="cold_fraction"):
        load_config(overrides=["data.protocol=cold-items", "data.cold_fraction=1.5"])
    assert set(registry.get("mfn4rec-m").item_representations) == {"id", "features", "id+features", "id+knn"}
    assert registry.get("sasrec").item_representations == ("id",)


def test_sampled_loss_trains_a_features_model():
    from mfn4rec_tf.sampled import CandidateSampler, attach_sampler

    config = make_config(item_representation="id+features")
    model = build_model(config, "sequence", item_features=_tables(config))
    model = attach_sampler(model, CandidateSampler("uniform", np.ones(14), 6, keras.random.SeedGenerator(0)))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={"logits": keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)})
    inputs = make_inputs(config, [4, 3])
    targets = np.where(inputs["item_ids"] > 0, (inputs["item_ids"] % 13) + 1, 0).astype("int32")
    encoder = model.get_layer("item_logits")
    before = encoder.hidden_kernel.numpy().copy()
    history = model.fit(inputs, {"logits": targets}, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(encoder.hidden_kernel.numpy(), before)  # the item encoder is trained by it


def _interactions(rng, users=40, items=30):
    rows = []
    for user in range(users):
        for step, item in enumerate(rng.integers(1, items + 1, size=rng.integers(3, 9))):
            rows.append((f"u{user:02d}", int(item), step))
    return pd.DataFrame(rows, columns=["user_id", "item_index", "timestamp"])


def test_cold_items_split():
    cold = cold_item_set(30, 0.2, seed=4)
    assert len(cold) == 6 and cold.min() >= 1 and cold.max() <= 30
    np.testing.assert_array_equal(cold, cold_item_set(30, 0.2, seed=4))
    assert not np.array_equal(cold, cold_item_set(30, 0.2, seed=5))
    interactions = _interactions(np.random.default_rng(0))
    for mode in ("validation", "test"):
        split = make_split(interactions, "cold-items", mode, cold_items=cold)
        loo = make_split(interactions, "leave-one-out", mode)
        np.testing.assert_array_equal(split.cold_items, cold)
        for sequence in split.train_sequences + split.histories:
            assert not np.isin(sequence, cold).any()
        kept = {user: full[~np.isin(full, cold)] for user, full in zip(loo.train_user_ids, loo.train_sequences)}
        assert list(split.train_user_ids) == [user for user, sequence in kept.items() if len(sequence)]
        for user, sequence in zip(split.train_user_ids, split.train_sequences):
            np.testing.assert_array_equal(sequence, kept[user])
        loo_targets = dict(zip(loo.user_ids, loo.targets))
        assert list(split.user_ids) == [user for user in loo.user_ids if len(kept[user])]  # a history left empty
        for user, target in zip(split.user_ids, split.targets):  # (only cold items) is not evaluated
            np.testing.assert_array_equal(target, loo_targets[user])
        assert any(np.isin(t, cold).any() for t in split.targets)  # cold items stay targets
    with pytest.raises(ValueError, match="cold_items"):
        make_split(interactions, "cold-items", "test")
    with pytest.raises(ValueError, match="cold_items"):
        make_split(interactions, "leave-one-out", "test", cold_items=cold)
    with pytest.raises(ValueError, match="cold_fraction"):
        cold_item_set(30, 0.0)


class _Scores:
    """A stand-in "last"-mode model: fixed random logits per batch row."""

    def __init__(self, num_items, seed=0):
        self.rng = np.random.default_rng(seed)
        self.num_items = num_items

    def predict_on_batch(self, inputs):
        return {"logits": self.rng.normal(size=(len(inputs["item_ids"]), self.num_items + 1)).astype("float32")}


def test_cold_and_warm_metrics_add_up_to_the_overall_ones():
    num_items, rng = 60, np.random.default_rng(1)
    cold = np.zeros(num_items + 1, bool)
    cold[cold_item_set(num_items, 0.3, seed=0)] = True
    targets = rng.integers(1, num_items + 1, size=(50, 1)).astype("int32")
    batches = [({"item_ids": np.ones((10, 2), "int32")}, targets[i:i + 10]) for i in range(0, 50, 10)]
    result = evaluate(_Scores(num_items), batches, ks=(5, 20), progress=False,
                      target_groups={"cold": cold, "warm": ~cold})
    plain = evaluate(_Scores(num_items), batches, ks=(5, 20), progress=False)
    assert {key: result[key] for key in plain} == plain  # the groups change nothing of the overall metrics
    cold_part, warm_part = group_result(result, "cold"), group_result(result, "warm")
    assert cold_part["users"] == int(cold[targets[:, 0]].sum()) and cold_part["users"] + warm_part["users"] == 50
    for key in ("recall@20", "ndcg@20", "mrr@5", "recall@5"):
        total = cold_part[key] * cold_part["users"] + warm_part[key] * warm_part["users"]
        assert total == pytest.approx(result[key] * 50)
    assert result["recall@20"] > 0


def _written(tmp_path, name, num_users=120, num_items=80, seed=0):
    items, interactions, features, _ = generate(DemoSpec(seed=seed, num_users=num_users, num_items=num_items,
                                                         max_length=10))
    return write_dataset(tmp_path / name, name=name, items=items, interactions=interactions, features=features)


def test_new_items_are_checked(tmp_path):
    dataset = load_dataset(_written(tmp_path, "base"))
    names = ("image", "text")
    good = pd.DataFrame({"item_id": ["new-1", "new-2"],
                         "image": [np.ones(dataset.modality("image").dim)] * 2,
                         "text": [np.ones(dataset.modality("text").dim)] * 2})
    good.to_parquet(tmp_path / "good.parquet")
    new = export.read_new_items(tmp_path / "good.parquet", dataset, names)
    assert new["ids"] == ["new-1", "new-2"] and new["features"]["text"].shape == (2, dataset.modality("text").dim)
    cases = {
        "collide": (good.assign(item_id=[str(dataset.item_ids()[1]), "new-2"]), "already in the run's catalogue"),
        "repeat": (good.assign(item_id=["new-1", "new-1"]), "more than once"),
        "empty": (good.assign(item_id=["", "new-2"]), "id is empty"),
        "narrow": (good.assign(text=[np.ones(3)] * 2), r"3-d; the run's model reads"),
        "missing": (good.drop(columns=["image"]), "no column"),
    }
    for case, (frame, message) in cases.items():
        frame.to_parquet(tmp_path / f"{case}.parquet")
        with pytest.raises(export.ExportError, match=message):
            export.read_new_items(tmp_path / f"{case}.parquet", dataset, names)
    with pytest.raises(export.ExportError, match="already in the run's catalogue"):
        export.read_new_items(dataset.path, dataset, names)  # the same catalogue again: every id collides
    (tmp_path / "items.csv").write_text("item_id\nx\n")
    with pytest.raises(export.ExportError, match="dataset directory or a .parquet file"):
        export.read_new_items(tmp_path / "items.csv", dataset, names)


def test_export_refuses_new_items_for_an_id_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config().to_dict()))
    (run / "model.keras").write_bytes(b"")  # refused before the model is read
    with pytest.raises(export.ExportError, match="item_representation: id"):
        export.export_run(run, "m", base=tmp_path / "served", add_items=tmp_path / "new.parquet")


TINY = ["--epochs", "1", "--patience", "1", "--quiet", "--max-length", "6", "--set", "model.memory_dim=8",
        "--set", "model.fc_hidden_units=8", "--set", "model.modality_hidden_units=6",
        "--set", "model.id_hidden_units=6"]


@pytest.mark.slow
def test_cold_items_run_and_export_with_new_items(tmp_path, capsys):
    """fit under cold-items (cold/warm metrics), then export with items added after training: the served
    model recommends a new item whose features are those of the items it recommends, and reads new items."""
    data = _written(tmp_path, "small", num_users=300, num_items=200)
    run = tmp_path / "run"
    assert fit.main(["--data", str(data), "--out", str(run), "--protocol", "cold-items", "--set",
                     "data.cold_fraction=0.2", "--set", "model.item_representation=features", *TINY]) == 0
    assert "targets that are cold items" in capsys.readouterr().out
    scores = json.loads((run / "metrics.json").read_text())
    for split in ("valid", "test"):
        cold, warm = group_result(scores[split], "cold"), group_result(scores[split], "warm")
        assert cold["users"] > 0 and cold["users"] + warm["users"] == scores[split]["users"]
        total = cold["recall@20"] * cold["users"] + warm["recall@20"] * warm["users"]
        assert total == pytest.approx(scores[split]["recall@20"] * scores[split]["users"])

    dataset = load_dataset(data)
    config = load_config(run / "config.yaml")
    history = config.split(dataset, "test").histories[0]
    base = tmp_path / "served"
    plain = export.export_run(run, "plain", base=base, k=10)
    import tensorflow as tf

    raw = dataset.item_ids()
    request = tf.constant([[str(raw[i]) for i in history[-6:]]])
    served = tf.saved_model.load(str(plain)).signatures["serving_default"](history=request)
    best = served["item_ids"].numpy()[0, 0].decode()
    best_index = int(np.flatnonzero(raw == best)[0])
    new = pd.DataFrame({"item_id": ["brand-new"],
                        **{name: [np.asarray(dataset.features(name)[best_index])] for name in ("image", "text")}})
    new.to_parquet(tmp_path / "new.parquet")
    grown = export.export_run(run, "grown", base=base, k=10, add_items=tmp_path / "new.parquet")
    metadata = json.loads((grown / export.METADATA).read_text())
    assert metadata["num_items"] == dataset.num_items + 1 and metadata["added_items"]["count"] == 1
    loaded = tf.saved_model.load(str(grown)).signatures
    got = [i.decode() for i in loaded["serving_default"](history=request)["item_ids"].numpy()[0]]
    assert "brand-new" in got[:2]  # the same features, hence the same score as the best item
    read = loaded["serving_default"](history=tf.constant([["brand-new"]]))
    assert read["unknown_ids"].numpy().tolist() == [0]  # a new item in a history is read, not skipped
    fallback = loaded["serving_default"](history=tf.constant([[""]]))  # no known item: the popularity list
    assert not np.allclose(read["scores"].numpy(), fallback["scores"].numpy())  # the model ran on it


@pytest.mark.slow
def test_id_inference_scale_in_evaluate_and_export(tmp_path, capsys):
    """An id+features run evaluated and served with its ID part weighed by S: the served scores are the
    Keras model's with that scale, the metadata says S, and a bad S or an id-less run is refused."""
    from mfn4rec_tf import evaluate
    from mfn4rec_tf.layers import set_id_inference_scale
    from mfn4rec_tf.model import load_model, with_output_mode

    data = _written(tmp_path, "small", num_users=200, num_items=120)
    run = tmp_path / "run"
    assert fit.main(["--data", str(data), "--out", str(run), "--protocol", "cold-items", "--set",
                     "data.cold_fraction=0.2", "--set", "model.item_representation=id+features", *TINY]) == 0
    capsys.readouterr()
    results = {}
    for scale in ("1.0", "0.0"):
        assert evaluate.main(["--run", str(run), "--json", "--id-inference-scale", scale]) == 0
        results[scale] = json.loads(capsys.readouterr().out)
    assert results["1.0"] == json.loads((run / "metrics.json").read_text())["test"]  # 1.0 is the run itself
    assert evaluate.main(["--run", str(run), "--id-inference-scale", "1.5"]) == 2
    assert "id_inference_scale" in capsys.readouterr().err

    path = export.export_run(run, "scaled", base=tmp_path / "served", k=5, id_inference_scale=0.25)
    assert json.loads((path / export.METADATA).read_text())["id_inference_scale"] == 0.25
    import tensorflow as tf

    dataset = load_dataset(data)
    history = load_config(run / "config.yaml").split(dataset, "test").histories[0][-6:]
    raw = dataset.item_ids()
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        history=tf.constant([[str(raw[i]) for i in history]]))
    model = with_output_mode(load_model(run / "model.keras"), "last")
    set_id_inference_scale(model, 0.25)
    inputs = {"item_ids": np.asarray([history], "int32")}
    for name in ("image", "text"):
        inputs[name] = np.asarray(dataset.features(name))[inputs["item_ids"]]
    if "image_present" in model.input:
        inputs["image_present"] = np.asarray(dataset.presence("image"), "float32")[inputs["item_ids"]]
    logits = model(inputs)["logits"].numpy()[0]
    logits[history] = -np.inf  # the export leaves the history out
    logits[0] = -np.inf
    np.testing.assert_allclose(served["scores"].numpy()[0], np.sort(logits)[::-1][:5], rtol=1e-4, atol=1e-4)
    with pytest.raises(export.ExportError, match="id-inference-scale"):
        export.export_run(run, "bad", base=tmp_path / "served", id_inference_scale=2.0)
