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
    training_windows,
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


def _window_targets(sequence, max_length, stride):
    """The (position in `sequence`, item) of every target trained on (weight 1) by the windows of one
    sequence, with the input each one is predicted from."""
    inputs, targets, context, stats = training_windows([sequence], max_length, stride)
    trained = []
    for window_input, window_targets, skip in zip(inputs, targets, context):
        assert len(window_input) == len(window_targets) <= max_length
        np.testing.assert_array_equal(window_input[1:], window_targets[:-1])  # next item at every step
        start = next(i for i in range(len(sequence)) if np.array_equal(sequence[i:i + len(window_input)],
                                                                       window_input))
        for offset in range(skip, len(window_targets)):
            trained.append(start + offset + 1)
    return trained, stats


@pytest.mark.parametrize("length", [1, 2, 3, 7, 10, 11, 12, 23, 50])
@pytest.mark.parametrize("max_length,stride", [(5, 5), (5, 2), (5, 1), (1, 1), (10, 3)])
def test_sliding_windows_train_on_every_target_exactly_once(length, max_length, stride):
    sequence = np.arange(101, 101 + length)  # distinct items: a window's place in the sequence is unambiguous
    trained, stats = _window_targets(sequence, max_length, stride)
    assert sorted(trained) == list(range(1, length))  # every target (positions 1..L-1) once
    assert len(trained) == len(set(trained))
    assert stats["too_short"] == (1 if length < 2 else 0)
    assert stats["examples"] == (-(-(length - 1) // stride) if length >= 2 else 0)


def test_sliding_windows_give_context_and_end_with_the_last_example():
    sequence = np.arange(1, 13)  # 12 items, 11 targets
    inputs, targets, context, _ = training_windows([sequence], max_length=5, stride=2)
    # blocks of 2 targets from the end: [11, 12], [9, 10], [7, 8], [5, 6], [3, 4], [2]
    assert [t.tolist()[c:] for t, c in zip(targets, context)] == [[2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]
    assert inputs[-1].tolist() == [7, 8, 9, 10, 11] and context.tolist() == [0, 1, 3, 3, 3, 3]
    last_inputs, last_targets, _ = training_examples([sequence], max_length=5)
    full = training_windows([sequence], max_length=5)  # stride = max_length: no overlap
    assert full[0][-1].tolist() == last_inputs[0].tolist() and full[1][-1].tolist() == last_targets[0].tolist()
    assert full[2].tolist() == [0, 0, 0] and [len(x) for x in full[0]] == [1, 5, 5]


def test_sliding_windows_reject_a_bad_stride():
    for stride in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="stride"):
            training_windows([np.arange(1, 9)], max_length=5, stride=stride)


def test_training_input_masks_context_targets_of_sliding_windows(dataset):
    sequences = [np.arange(1, 10), np.array([3, 4, 5])]
    data = TrainingInput(dataset, sequences, batch_size=8, max_length=4, windows="sliding", stride=2, shuffle=False)
    assert data.num_examples == 4 + 1  # 8 targets in blocks of 2; 2 targets in one block
    (inputs, targets, weights), = list(data.batches(0))
    trained = sorted(int(t) for t in targets["logits"][weights["logits"] > 0])
    assert trained == sorted(list(range(2, 10)) + [4, 5])  # every target once, context weight 0
    assert weights["logits"].sum() == 10
    with pytest.raises(ValueError, match="targets='all'"):
        TrainingInput(dataset, sequences, windows="sliding", targets="last")
    with pytest.raises(ValueError, match="windows"):
        TrainingInput(dataset, sequences, windows="every")
    with pytest.raises(ValueError, match="stride"):
        TrainingInput(dataset, sequences, stride=2)


def test_last_windows_are_unchanged(dataset):
    sequences = [np.arange(1, 10), np.array([3, 4, 5]), np.array([7, 8])]
    default = list(TrainingInput(dataset, sequences, batch_size=2, max_length=4, seed=3).batches(1))
    last = list(TrainingInput(dataset, sequences, batch_size=2, max_length=4, seed=3, windows="last").batches(1))
    assert len(default) == len(last)
    for (a_in, a_t, a_w), (b_in, b_t, b_w) in zip(default, last):
        np.testing.assert_array_equal(a_in["item_ids"], b_in["item_ids"])
        np.testing.assert_array_equal(a_t["logits"], b_t["logits"])
        np.testing.assert_array_equal(a_w["logits"], b_w["logits"])
    np.testing.assert_array_equal(default[0][2]["logits"], (default[0][1]["logits"] != 0).astype(np.float32))


def test_train_windows_names_agree_with_the_configuration():
    from mfn4rec_tf import data, run_config

    assert data.TRAIN_WINDOWS == run_config.TRAIN_WINDOWS
