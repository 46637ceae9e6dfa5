import keras
import numpy as np
import pandas as pd
import pytest

from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.data import (
    FeatureGatherer,
    RankingInput,
    TrainingInput,
    length_bucketed_batches,
    pad,
    training_examples,
)
from mfn4rec_tf.dataset import FeatureTable, load_dataset, write_dataset
from mfn4rec_tf.model import build_model

N = 9


@pytest.fixture
def dataset(tmp_path):
    items = pd.DataFrame({"item_index": np.arange(1, N + 1), "item_id": [f"i{i}" for i in range(1, N + 1)]})
    interactions = pd.DataFrame({"user_id": ["a"] * N, "item_index": np.arange(1, N + 1), "timestamp": np.arange(N)})
    image = np.zeros((N + 1, 3), "float32")
    image[1:] = np.arange(1, N + 1)[:, None] * [1.0, 10.0, 100.0]
    present = np.ones(N + 1, bool)
    present[[0, 4]] = False
    image[4] = 0
    text = np.zeros((N + 1, 2), "float32")
    text[1:] = -np.arange(1, N + 1)[:, None]
    features = {"image": FeatureTable(image, present), "text": FeatureTable(text)}
    path = write_dataset(tmp_path / "ds", name="t", items=items, interactions=interactions, features=features)
    return load_dataset(path)


def test_gatherer_reads_rows_of_the_memory_mapped_tables(dataset):
    assert isinstance(dataset.features("image"), np.memmap)
    ids = np.array([[3, 4, 0], [9, 0, 0]], np.int32)
    inputs = FeatureGatherer(dataset)(ids)
    assert sorted(inputs) == ["image", "image_present", "item_ids", "text"]
    np.testing.assert_array_equal(inputs["image"][0, 0], [3, 30, 300])
    np.testing.assert_array_equal(inputs["image"][1, 1], [0, 0, 0])  # padding row
    np.testing.assert_array_equal(inputs["image_present"], [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(inputs["text"][:, 0, 0], [-3, -9])
    assert inputs["image"].dtype == np.float32 and not isinstance(inputs["image"], np.memmap)
    only_text = FeatureGatherer(dataset, ["text"])(ids)
    assert sorted(only_text) == ["item_ids", "text"]


def test_training_examples_all_last_truncation_and_short():
    sequences = [np.array([1, 2, 3, 4]), np.array([5]), np.array([6, 7])]
    inputs, targets, stats = training_examples(sequences, max_length=2, targets="all")
    assert [x.tolist() for x in inputs] == [[2, 3], [6]]
    assert [y.tolist() for y in targets] == [[3, 4], [7]]
    assert stats == {"examples": 2, "too_short": 1, "truncated_steps": 1}
    inputs, targets, _ = training_examples(sequences, max_length=10, targets="last")
    assert [x.tolist() for x in inputs] == [[1, 2, 3], [6]] and [y.tolist() for y in targets] == [[4], [7]]
    with pytest.raises(ValueError, match="targets"):
        training_examples(sequences, 5, targets="every")


def test_bucketed_batches_cover_everything_once_and_reduce_padding():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    again = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    plain = length_bucketed_batches(lengths, 32, np.random.default_rng(1), bucket_batches=1)

    def padded_cells(bs):
        return sum(len(b) * lengths[b].max() for b in bs)

    assert padded_cells(batches) < 0.7 * padded_cells(plain)


def test_training_input_batches_and_resume(dataset):
    sequences = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8, 9]), np.array([2, 4, 6, 8, 1])]
    data = TrainingInput(dataset, sequences, batch_size=3, seed=5)
    assert data.steps_per_epoch == 2
    epoch0 = list(data.batches(0))
    seen = []
    for inputs, targets, weights in epoch0:
        ids, tgt = inputs["item_ids"], targets["logits"]
        np.testing.assert_array_equal(weights["logits"], tgt != 0)
        for row in range(len(ids)):
            n = int((ids[row] != 0).sum())
            seen.append(ids[row, :n].tolist() + [int(tgt[row, n - 1])])
            np.testing.assert_array_equal(ids[row, 1:n], tgt[row, :n - 1])  # targets are the next items
            np.testing.assert_array_equal(inputs["text"][row, :n, 0], -ids[row, :n])
    assert sorted(seen) == sorted(s.tolist() for s in sequences)
    # Epoch k of a resumed input equals epoch k of an uninterrupted one.
    resumed = TrainingInput(dataset, sequences, batch_size=3, seed=5, epoch=2)
    through_tf = list(resumed.tf_dataset().as_numpy_iterator())
    expected = list(TrainingInput(dataset, sequences, batch_size=3, seed=5).batches(2))
    assert len(through_tf) == len(expected)
    for got, want in zip(through_tf, expected):
        np.testing.assert_array_equal(got[0]["item_ids"], want[0]["item_ids"])
        np.testing.assert_array_equal(got[1]["logits"], want[1]["logits"])
    assert resumed.epoch == 3


def test_training_input_last_targets(dataset):
    data = TrainingInput(dataset, [np.array([1, 2, 3]), np.array([4, 5])], batch_size=4, targets="last", shuffle=False)
    (inputs, targets, weights), = list(data.batches(0))
    np.testing.assert_array_equal(inputs["item_ids"], [[1, 2], [4, 0]])
    np.testing.assert_array_equal(targets["logits"], [3, 5])
    np.testing.assert_array_equal(weights["logits"], [1, 1])


def test_fit_consumes_the_tf_dataset(dataset):
    config = ModelConfig(num_items=N, modalities=dataset.modality_configs(hidden_units=4), id_hidden_units=4,
                         memory_dim=3, fc_hidden_units=5, output_units=4)
    model = build_model(config)
    model.compile(optimizer="adam", loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    data = TrainingInput(dataset, [np.arange(1, 10), np.array([3, 4, 5])], batch_size=2)
    history = model.fit(data.tf_dataset(), epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert data.epoch == 2


def test_ranking_input_keeps_user_order(dataset):
    data = RankingInput(dataset, [np.array([1, 2, 3]), np.array([4])], [np.array([5, 6]), np.array([7])],
                        batch_size=5, max_length=2)
    (inputs, targets), = list(data.batches())
    np.testing.assert_array_equal(inputs["item_ids"], [[2, 3], [4, 0]])
    np.testing.assert_array_equal(targets, [[5, 6], [7, 0]])
    (tf_inputs, tf_targets), = list(data.tf_dataset().as_numpy_iterator())
    np.testing.assert_array_equal(tf_targets, targets)


def test_errors_are_clear(dataset):
    with pytest.raises(ValueError, match="fewer than two"):
        TrainingInput(dataset, [np.array([1])])
    with pytest.raises(ValueError, match="batch_size"):
        TrainingInput(dataset, [np.array([1, 2])], batch_size=0)
    with pytest.raises(KeyError, match="no modality 'audio'"):
        FeatureGatherer(dataset, ["audio"])
    with pytest.raises(ValueError, match="target lists"):
        RankingInput(dataset, [np.array([1])], [])
    assert pad([]).shape == (0, 1)


def test_training_loss_is_the_mean_over_real_next_item_targets(dataset):
    """Pins the normalisation fit relies on: padded positions add nothing and are not counted."""
    import tensorflow as tf

    config = ModelConfig(num_items=N, modalities=dataset.modality_configs(hidden_units=4), id_hidden_units=4,
                         memory_dim=3, fc_hidden_units=5, output_units=4, dropout=0.0)
    model = build_model(config)
    model.compile(optimizer="adam", loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    data = TrainingInput(dataset, [np.arange(1, 10), np.array([3, 4, 5]), np.array([7, 8])], batch_size=3,
                         shuffle=False)
    (inputs, targets, weights), = list(data.batches(0))
    logits = model(inputs, training=False)["logits"]
    per_step = tf.keras.losses.sparse_categorical_crossentropy(targets["logits"], logits, from_logits=True).numpy()
    expected = (per_step * weights["logits"]).sum() / weights["logits"].sum()  # 8 + 2 + 1 real targets
    assert weights["logits"].sum() == 11
    loss = model.test_on_batch(inputs, targets, sample_weight=weights, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
