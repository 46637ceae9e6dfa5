"""`item_representation: id+knn`: the cold-start head, its calibration on validation, `python -m
mfn4rec_tf.cold_start`, and new items served by it."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_config, randomize_weights
from test_feature_knn import _inputs, _reference, _tables, _written

from mfn4rec_tf import calibration, cold_start, evaluate, export, fit
from mfn4rec_tf._checks import NotApplicable
from mfn4rec_tf.baselines.feature_knn import OFF
from mfn4rec_tf.dataset import load_dataset
from mfn4rec_tf.layers import set_known_items
from mfn4rec_tf.metrics import evaluate as evaluate_metrics
from mfn4rec_tf.model import build_model, load_model
from mfn4rec_tf.run_config import load_config

N = 80  # items: more than K = 20 known ones, so "off" recommends no new item


def _blend_reference(logits, similarity, known, offset, slope):
    """NumPy float64: known items keep their logit; the others get mean + std * (offset + slope * s) of the
    row's known items (padding left out)."""
    logits = np.asarray(logits, np.float64)
    real = known.copy()
    real[0] = False
    mean = logits[:, real].mean(axis=1, keepdims=True)
    std = logits[:, real].std(axis=1, keepdims=True)
    cold = mean + std * (offset + slope * similarity) if np.isfinite(offset) else np.full_like(logits, -1e9)
    return np.where(known[None, :], logits, cold)


def _model(representation, tables, known=None, seed=5):
    """A tiny "last"-mode model with random weights; with id+knn its head reads `tables`, flags `known`
    (default: every item) and is off."""
    from mfn4rec_tf.baselines.feature_knn import feature_means

    keras.utils.set_random_seed(seed)
    config = make_config(num_items=N, item_representation=representation)
    model = build_model(config, "last", item_features=tables)
    randomize_weights(model, seed=seed)
    if representation == "id+knn":  # the head's tables, means and flags are data, not weights to randomize
        head = model.get_layer("cold_start")
        means = feature_means([tables["image"], tables["text"]], [tables["image_present"], None])
        for weights, values in ((head.tables, [tables["image"], tables["text"], tables["image_present"]]),
                                (head.means, means), (model.get_layer("step_directions").means, means)):
            for weight, value in zip(weights, values):
                weight.assign(np.asarray(value, np.float32))
        set_known_items(model, np.ones(config.vocabulary_size, bool) if known is None else known)
        head.set_blend(None, None)
    return config, model


def test_head_scores_unknown_items_by_similarity_on_the_users_scale():
    config = make_config(num_items=N)
    tables = _tables(config)
    known = np.ones(N + 1, bool)
    known[[4, 9, 17, 23]] = False
    _, model = _model("id+knn", tables, known)
    histories = [[3, 7, 12], [2], [5, 9, 11, 2, 8]]
    inputs = _inputs(config, tables, histories, steps=6)
    head = model.get_layer("cold_start")
    probe = keras.Model(model.input, model.get_layer("last_valid_step").output)
    id_logits = model.get_layer("item_logits")(probe(inputs)).numpy()
    similarity = _reference(config, tables, [h[-1] for h in histories])
    for offset, slope in ((OFF, 0.0), (0.5, 3.0), (-1.0, 8.0)):
        head.set_blend(None if offset == OFF else offset, slope)
        got = model(inputs)["logits"].numpy()
        expected = _blend_reference(id_logits, similarity, known, offset, slope)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert head.blend() == (-1.0, 8.0)
    # in training the head passes the ID logits through: an id+knn model trains as the id model does
    directions = keras.Model(model.input, model.get_layer("last_valid_direction").output)(inputs)
    np.testing.assert_array_equal(head([id_logits, directions], training=True).numpy(), id_logits)


def test_id_knn_is_the_id_model_with_a_head():
    config = make_config(num_items=N)
    tables = _tables(config)
    _, plain = _model("id", tables)
    _, knn = _model("id+knn", tables)
    mine = {layer.name: layer for layer in knn.layers}
    for layer in plain.layers:  # the same layers, names and shapes; the head adds its own
        assert [w.shape for w in layer.weights] == [w.shape for w in mine[layer.name].weights]
        mine[layer.name].set_weights(layer.get_weights())
    knn.get_layer("cold_start").set_blend(0.0, 4.0)
    inputs = _inputs(config, tables, [[3, 7, 12], [5, 9]], steps=4)
    # every item known: the head changes nothing
    np.testing.assert_allclose(knn(inputs)["logits"].numpy(), plain(inputs)["logits"].numpy(), rtol=1e-6)
    assert {layer.name for layer in knn.layers} - {layer.name for layer in plain.layers} == {
        "step_directions", "last_valid_direction", "cold_start"}


def test_settings_are_checked():
    assert load_config(overrides=["model.item_representation=id+knn",
                                  "model.tie_item_embeddings=true", "model.output_units=25"]).model.tie_item_embeddings
    with pytest.raises(ValueError, match="exclude_unknown_items"):
        load_config(overrides=["model.item_representation=id+knn", "model.exclude_unknown_items=true"])
    with pytest.raises(NotApplicable, match="id\\+knn"):
        load_config(overrides=["model.variant=sasrec", "model.item_representation=id+knn"])
    with pytest.raises(ValueError, match="non-empty"):
        calibration.grid(offsets=[], slopes=[1.0])
    with pytest.raises(ValueError, match="finite"):
        calibration.grid(offsets=[float("nan")], slopes=[1.0])


class _Batches:
    """Validation-like batches: each history ends with an item whose most similar items are `targets`."""

    def __init__(self, config, tables, histories, targets):
        self.items = (_inputs(config, tables, histories, steps=4), np.asarray(targets)[:, None])

    def __iter__(self):
        yield self.items


def test_calibration_chooses_on_validation_and_sets_the_head():
    config = make_config(num_items=N)
    tables = _tables(config)
    rng = np.random.default_rng(3)
    histories = [list(rng.integers(1, N + 1, size=3)) for _ in range(40)]
    similarity = _reference(config, tables, [h[-1] for h in histories])
    similarity[np.arange(40), [h[-1] for h in histories]] = -np.inf
    nearest = similarity[:, 1:].argmax(axis=1) + 1  # each history's most similar other item
    unknown = np.unique(nearest)
    known = np.ones(N + 1, bool)
    known[unknown] = False
    _, model = _model("id+knn", tables, known)
    groups = {"cold": ~known, "warm": known}
    batches = _Batches(config, tables, histories, nearest)  # every target is new and the last item's twin
    chosen = calibration.calibrate(model, batches, target_groups=groups, progress=False)
    assert len(chosen.rows) == 1 + len(calibration.OFFSETS) * len(calibration.SLOPES)
    off = chosen.rows[0]
    assert (off["offset"], off["slope"], off["recall@20"]) == (None, None, 0.0)  # off: new items never come up
    assert chosen.offset is not None and chosen.chosen["recall@20"] > 0.5
    assert chosen.chosen["recall@20"] == max(row["recall@20"] for row in chosen.rows)
    assert model.get_layer("cold_start").blend() == (chosen.offset, chosen.slope)
    again = evaluate_metrics(model, batches, ks=(20,), progress=False, target_groups=groups)
    assert again["recall@20"] == chosen.chosen["recall@20"]  # the model ranks as the calibration did
    assert again["cold/recall@20"] == chosen.chosen["cold/recall@20"]

    warm_targets = [int(np.flatnonzero(known[1:])[0]) + 1] * 40  # no new item is ever a target: off is kept
    chosen = calibration.calibrate(model, _Batches(config, tables, histories, warm_targets), progress=False)
    assert (chosen.offset, chosen.slope) == (None, None)
    assert model.get_layer("cold_start").blend() == (None, None)
    with pytest.raises(ValueError, match="cold-items"):
        calibration.calibrate(model, batches, warm_tolerance=0.05, progress=False)  # no cold / warm groups
    with pytest.raises(ValueError, match="fraction"):
        calibration.calibrate(model, batches, target_groups=groups, warm_tolerance=1.0, progress=False)
    with pytest.raises(ValueError, match="cold-start head"):
        calibration.calibrate(_model("id", tables)[1], batches, progress=False)
    with pytest.raises(ValueError, match="metric"):
        calibration.calibrate(model, batches, metric="mrr@5", progress=False)


def test_the_warm_tolerance_rule():
    """Best cold Recall among the blends that keep (1 - T) of the head-off warm Recall; else the best overall."""
    def row(offset, overall, cold, warm):
        return {"offset": offset, "slope": None if offset is None else 1.0, "recall@20": overall,
                "cold/recall@20": cold, "warm/recall@20": warm}

    rows = [row(None, 0.140, 0.0, 0.155), row(0.0, 0.141, 0.03, 0.153), row(1.0, 0.139, 0.07, 0.148),
            row(2.0, 0.120, 0.15, 0.117), row(3.0, 0.139, 0.07, 0.149)]
    assert calibration._choose(rows, "recall@20")["offset"] == 0.0
    assert calibration._choose(rows, "recall@20", 0.05)["offset"] == 1.0  # 0.148 >= 0.95 * 0.155; a tie keeps it
    assert calibration._choose(rows, "recall@20", 0.3)["offset"] == 2.0
    assert calibration._choose(rows, "recall@20", 0.0)["offset"] is None  # nothing keeps every warm hit
    no_warm = [dict(row, **{"warm/recall@20": float("nan")}) for row in rows]  # every target a new item
    with pytest.raises(ValueError, match="no warm target"):
        calibration._choose(no_warm, "recall@20", 0.05)


TINY = ["--epochs", "1", "--patience", "1", "--quiet", "--max-length", "6", "--set", "model.memory_dim=8",
        "--set", "model.fc_hidden_units=8", "--set", "model.modality_hidden_units=6",
        "--set", "model.id_hidden_units=6", "--protocol", "cold-items", "--set", "data.cold_fraction=0.2"]


@pytest.mark.slow
def test_fit_calibrates_and_the_command_adds_the_head_to_an_id_run(tmp_path, capsys):
    """fit with id+knn writes the calibration and tests the calibrated model; cold_start adds the same head
    to an id run trained the same way (same weights: training is the same); evaluate reproduces both."""
    data = _written(tmp_path, "small", num_users=240, num_items=120)
    knn_run, id_run, added = tmp_path / "knn", tmp_path / "id", tmp_path / "added"
    assert fit.main(["--data", str(data), "--out", str(knn_run), "--set", "model.item_representation=id+knn",
                     *TINY]) == 0
    assert fit.main(["--data", str(data), "--out", str(id_run), *TINY]) == 0
    state = json.loads((knn_run / "state.json").read_text())
    table = pd.read_csv(knn_run / calibration.CALIBRATION_FILE)
    assert len(table) == 1 + len(calibration.OFFSETS) * len(calibration.SLOPES) and table["chosen"].sum() == 1
    chosen = table[table["chosen"] == 1].iloc[0]
    assert state["cold_start"]["valid"]["recall@20"] == pytest.approx(chosen["recall@20"])
    assert load_model(knn_run / "model.keras").get_layer("cold_start").blend() == (
        state["cold_start"]["offset"], state["cold_start"]["slope"])
    capsys.readouterr()
    assert cold_start.main(["--run", str(id_run), "--out", str(added), "--quiet"]) == 0
    assert "cold-start head" in capsys.readouterr().out
    assert load_config(added / "config.yaml").model.item_representation == "id+knn"
    # the same training, so the same calibration and test metrics as the id+knn run
    added_state = json.loads((added / "state.json").read_text())
    assert added_state["cold_start"] == state["cold_start"]
    assert added_state["best_epoch"] == json.loads((id_run / "state.json").read_text())["best_epoch"]
    scores = json.loads((added / "metrics.json").read_text())["test"]
    assert scores == pytest.approx(json.loads((knn_run / "metrics.json").read_text())["test"])
    assert json.loads((added / "metrics.json").read_text())["valid"] == pytest.approx(
        json.loads((knn_run / "metrics.json").read_text())["valid"])  # the calibrated model's, in both
    assert evaluate.main(["--run", str(added), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(scores)
    given = tmp_path / "given"
    assert cold_start.main(["--run", str(id_run), "--out", str(given), "--blend", "1.5", "4", "--quiet"]) == 0
    assert load_model(given / "model.keras").get_layer("cold_start").blend() == (1.5, 4.0)
    assert not (given / calibration.CALIBRATION_FILE).exists()  # nothing was ranked to choose it
    assert json.loads((given / "state.json").read_text())["cold_start"]["metric"] == "given"
    capsys.readouterr()
    for argv, message in ((["--run", str(id_run), "--out", str(added)], "already exists"),
                          (["--run", str(id_run), "--out", str(tmp_path / "y"), "--blend", "1", "x"], "two numbers"),
                          (["--run", str(id_run), "--out", str(tmp_path / "z"), "--blend", "off", "2"], "--blend"),
                          (["--run", str(id_run), "--out", str(tmp_path / "w"), "--blend", "1", "2",
                            "--warm-tolerance", "0.05"], "takes no --warm-tolerance"),
                          (["--run", str(tmp_path), "--out", str(tmp_path / "x")], "not a finished run")):
        assert cold_start.main(argv) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_export_serves_new_items_through_the_head(tmp_path):
    """An id+knn run exported with a new item whose features are the last history item's: served near
    the top with the blend on, never with it off; a new item in a history is read."""
    import tensorflow as tf

    data = _written(tmp_path, "small", num_users=200, num_items=100)
    run = tmp_path / "run"
    assert fit.main(["--data", str(data), "--out", str(run), "--set", "model.item_representation=id+knn",
                     "--set", "train.exclude_history=true", *TINY]) == 0
    dataset = load_dataset(data)
    config = load_config(run / "config.yaml")
    history = config.split(dataset, "test").histories[0][-6:]
    raw = dataset.item_ids()
    new = pd.DataFrame({"item_id": ["brand-new"], **{name: [np.asarray(dataset.features(name)[history[-1]])]
                                                     for name in ("image", "text")}})
    new.to_parquet(tmp_path / "new.parquet")
    request = tf.constant([[str(raw[i]) for i in history]])
    got = {}
    for name, blend in (("on", (2.0, 16.0)), ("off", (None, None))):
        model = load_model(run / "model.keras")
        model.get_layer("cold_start").set_blend(*blend)
        model.save(run / "model.keras")
        path = export.export_run(run, name, base=tmp_path / "served", k=10, add_items=tmp_path / "new.parquet")
        metadata = json.loads((path / export.METADATA).read_text())
        assert (metadata["cold_start"]["offset"], metadata["cold_start"]["slope"]) == blend
        loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
        got[name] = [i.decode() for i in loaded(history=request)["item_ids"].numpy()[0]]
        assert loaded(history=tf.constant([["brand-new"]]))["unknown_ids"].numpy().tolist() == [0]
    assert "brand-new" in got["on"][:3] and "brand-new" not in got["off"]


def test_export_refuses_new_items_for_an_id_model_and_names_the_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config().to_dict()))
    (run / "model.keras").write_bytes(b"")
    with pytest.raises(export.ExportError, match="mfn4rec_tf.cold_start"):
        export.export_run(run, "m", base=tmp_path / "served", add_items=tmp_path / "new.parquet")


def test_the_calibrations_merged_lists_are_the_full_rankings():
    """`_Rankings.top` (known items ranked once, unknown ones per blend, merged) equals `top_k_items` over
    the head's full scores: ties to the lower index, history excluded, -inf and empty slots alike."""
    from mfn4rec_tf.baselines.feature_knn import blend_scores
    from mfn4rec_tf.metrics import top_k_items

    rng = np.random.default_rng(0)
    batch, width = 16, 60
    logits = rng.normal(size=(batch, width)).round(1).astype(np.float32)  # rounded: many ties
    logits[:, 0] = -1e9
    similarity = rng.uniform(-1, 1, size=(batch, width)).round(1).astype(np.float32)
    known = (rng.random(width) < 0.6).astype(np.float32)
    known[0] = 1.0
    exclude = rng.integers(0, width, size=(batch, 8))
    for offset, slope in ((None, None), (0.0, 1.0), (1.5, 4.0), (-2.0, 16.0), (6.0, 0.5)):
        ranks = calibration._Rankings(logits, similarity, known, exclude)
        full = blend_scores(logits, similarity, known, OFF if offset is None else offset, slope or 0.0)
        np.testing.assert_array_equal(ranks.top(offset, slope), top_k_items(np.asarray(full), 20, exclude))
    few = np.zeros(width, np.float32)
    few[[0, 3, 5]] = 1.0  # two known items: the lists end in unknown items, then empty slots
    ranks = calibration._Rankings(logits, similarity, few, exclude)
    full = blend_scores(logits, similarity, few, 0.5, 2.0)
    np.testing.assert_array_equal(ranks.top(0.5, 2.0), top_k_items(np.asarray(full), 20, exclude))
