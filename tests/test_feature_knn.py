"""`feature-knn`: the content-based reference (mfn4rec_tf/baselines/feature_knn.py) against NumPy, through
fit (cold/warm metrics, nothing trained), save/load, and export with items added after training."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_config

from mfn4rec_tf import export, fit, registry
from mfn4rec_tf.dataset import load_dataset, write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.metrics import group_result
from mfn4rec_tf.model import build_model, load_model, with_output_mode
from mfn4rec_tf.run_config import load_config


def _tables(config, seed=0):
    rng = np.random.default_rng(seed)
    tables = {}
    for modality in config.modalities:
        tables[modality.name] = rng.normal(loc=0.5, size=(config.vocabulary_size, modality.dim)).astype("float32")
        if modality.presence:
            present = rng.random(config.vocabulary_size) < 0.7
            tables[modality.name][~present] = 0.0  # an item without the modality has a zero row
            tables[modality.name + "_present"] = present
    return tables


def _reference(config, tables, items):
    """NumPy: every item's score against each item of `items` (mean cosine of the centred features)."""
    scores = 0.0
    for modality in config.modalities:
        x = tables[modality.name].astype(np.float64)
        present = (tables[modality.name + "_present"] if modality.presence
                   else np.ones(len(x), bool)).astype(bool)
        present[0] = False
        mean = x[present].mean(axis=0)
        centred = x - mean
        norm = np.linalg.norm(centred, axis=1, keepdims=True)
        unit = np.where(present[:, None] & (norm > 0), centred / np.maximum(norm, 1e-300), 0.0)
        scores = scores + unit[items] @ unit.T
    scores = scores / len(config.modalities)
    scores[:, 0] = -1e9
    return scores


def _inputs(config, tables, histories, steps):
    ids = np.zeros((len(histories), steps), "int32")
    for row, history in enumerate(histories):
        ids[row, : len(history)] = history
    inputs = {"item_ids": ids}
    for modality in config.modalities:
        inputs[modality.name] = tables[modality.name][ids]
        if modality.presence:
            inputs[modality.name + "_present"] = tables[modality.name + "_present"].astype("float32")[ids]
    return inputs


def test_scores_are_the_mean_cosine_to_the_last_item():
    config = make_config("feature-knn", num_items=30)
    tables = _tables(config)
    present = tables["image_present"]
    with_image = np.flatnonzero(present[1:]) + 1
    without_image = np.flatnonzero(~present[1:]) + 1
    histories = [[3, 7, int(with_image[0])], [int(without_image[0])], [5, 9, 11, 2, int(with_image[1])]]
    model = build_model(config, "last", item_features=tables)
    out = model(_inputs(config, tables, histories, steps=6))
    expected = _reference(config, tables, [h[-1] for h in histories])
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    # an item scores 1 against itself when it has every modality
    assert out["logits"].numpy()[0, histories[0][-1]] == pytest.approx(1.0, abs=1e-5)

    sequence = build_model(config, "sequence", item_features=tables)
    steps = sequence(_inputs(config, tables, histories, steps=6))["logits"].numpy()
    np.testing.assert_allclose(steps[2, 1], _reference(config, tables, [histories[2][1]])[0], rtol=1e-5, atol=1e-5)
    assert steps.shape == (3, 6, config.vocabulary_size)


def test_nothing_is_trained_and_it_saves_and_loads(tmp_path):
    config = make_config("feature-knn", num_items=20)
    tables = _tables(config, seed=1)
    model = build_model(config, "sequence", item_features=tables)
    assert model.trainable_weights == []
    before = [w.numpy().copy() for w in model.weights]
    model.compile(optimizer="adam", loss={"logits": "sparse_categorical_crossentropy"})
    inputs = _inputs(config, tables, [[1, 2, 3], [4, 5]], steps=4)
    targets = np.array([[2, 3, 6, 0], [5, 8, 0, 0]])
    model.fit(inputs, {"logits": targets}, epochs=1, verbose=0)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())
    path = tmp_path / "knn.keras"
    model.save(path)
    loaded = with_output_mode(load_model(path), "last")
    last = _inputs(config, tables, [[1, 2, 3]], steps=4)
    np.testing.assert_allclose(loaded(last)["logits"].numpy(), _reference(config, tables, [3]), rtol=1e-5,
                               atol=1e-5)


def test_it_needs_a_modality_and_every_table():
    assert registry.get("feature-knn").family == "reference"
    with pytest.raises(ValueError, match="at least one feature modality"):
        build_model(make_config("feature-knn", modalities=()), "last")
    config = make_config("feature-knn")
    tables = _tables(config)
    with pytest.raises(ValueError, match="no table for the modality 'text'"):
        build_model(config, "last", item_features={k: v for k, v in tables.items() if k != "text"})
    with pytest.raises(ValueError, match="'image_present'"):
        build_model(config, "last", item_features={k: v for k, v in tables.items() if k != "image_present"})


def _written(tmp_path, name, num_users=200, num_items=120, seed=0):
    items, interactions, features, _ = generate(DemoSpec(seed=seed, num_users=num_users, num_items=num_items,
                                                         max_length=10))
    return write_dataset(tmp_path / name, name=name, items=items, interactions=interactions, features=features)


@pytest.mark.slow
def test_fit_on_cold_items_and_export_new_items(tmp_path, capsys):
    """fit under cold-items ranks cold targets as warm ones (it never uses interactions); export --add-items
    serves a new item with the last history item's features at the top (after that item itself)."""
    data = _written(tmp_path, "small")
    run = tmp_path / "run"
    assert fit.main(["--data", str(data), "--model", "feature-knn", "--out", str(run), "--protocol", "cold-items",
                     "--set", "data.cold_fraction=0.2", "--quiet"]) == 0
    assert "targets that are cold items" in capsys.readouterr().out
    scores = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "state.json").read_text())["best_epoch"] == 1
    cold, warm = group_result(scores["test"], "cold"), group_result(scores["test"], "warm")
    assert cold["users"] > 0 and cold["users"] + warm["users"] == scores["test"]["users"]

    dataset = load_dataset(data)
    config = load_config(run / "config.yaml")
    history = config.split(dataset, "test").histories[0][-6:]
    raw = dataset.item_ids()
    last = int(history[-1])
    new = pd.DataFrame({"item_id": ["brand-new"],
                        **{name: [np.asarray(dataset.features(name)[last])] for name in ("image", "text")}})
    new.to_parquet(tmp_path / "new.parquet")
    grown = export.export_run(run, "grown", base=tmp_path / "served", k=10, add_items=tmp_path / "new.parquet",
                              exclude_seen=False)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(grown)).signatures["serving_default"]
    request = tf.constant([[str(raw[i]) for i in history]])
    got = [i.decode() for i in loaded(history=request)["item_ids"].numpy()[0]]
    assert set(got[:2]) == {str(raw[last]), "brand-new"}  # the same features as the last item: the same score
    read = loaded(history=tf.constant([[str(raw[i]) for i in history[:-1]] + ["brand-new"]]))
    assert read["unknown_ids"].numpy().tolist() == [0]
    assert {i.decode() for i in read["item_ids"].numpy()[0][:2]} == {str(raw[last]), "brand-new"}
