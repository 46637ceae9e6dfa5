import json

import numpy as np
import pandas as pd
import pytest

from mfn4rec_tf.dataset import DatasetError, FeatureTable, load_dataset, write_dataset


def _tables():
    items = pd.DataFrame({"item_index": [2, 1, 3], "item_id": ["b", "a", "c"], "title": ["Bee", "Ant", None]})
    interactions = pd.DataFrame(
        {"user_id": ["u2", "u1", "u1", "u2"], "item_index": [3, 2, 1, 1], "timestamp": [50, 20, 10, 40]}
    )
    return items, interactions


def _features():
    values = np.arange(8, dtype="float32").reshape(4, 2)
    values[0] = 0
    text = np.ones((4, 3), "float32")
    text[0] = 0
    text[3] = 0
    return {
        "image": FeatureTable(values, how="test"),
        "text": FeatureTable(text, present=np.array([False, True, True, False]), how="words", details={"oov": 2}),
    }


def test_write_then_load_round_trip(tmp_path):
    items, interactions = _tables()
    path = write_dataset(tmp_path / "ds", name="tiny", items=items, interactions=interactions, features=_features(),
                         sources=[{"path": "x.csv", "role": "interactions"}], skipped={"bad": 1})
    dataset = load_dataset(path, verify_features=True)
    assert dataset.num_items == 3 and dataset.num_users == 2
    assert dataset.items["item_id"].tolist() == ["a", "b", "c"]  # ordered by item_index
    assert dataset.interactions[["user_id", "item_index"]].values.tolist() == [
        ["u1", 1], ["u1", 2], ["u2", 1], ["u2", 3]
    ]
    assert dataset.item_ids().tolist() == ["", "a", "b", "c"]
    np.testing.assert_array_equal(dataset.features("image"), _features()["image"].values)
    assert dataset.presence("image") is None  # everyone has it: no presence file
    assert dataset.presence("text").tolist() == [False, True, True, False]
    configs = dataset.modality_configs(hidden_units=7)
    assert [(c.name, c.dim, c.hidden_units, c.presence) for c in configs] == [
        ("image", 2, 7, False), ("text", 3, 7, True)
    ]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["counts"] == {"users": 2, "items": 3, "interactions": 4}
    assert manifest["modalities"]["text"]["items_with"] == 2 and manifest["modalities"]["text"]["details"] == {"oov": 2}
    assert manifest["skipped"] == {"bad": 1}
    assert isinstance(dataset.features("image"), np.memmap)


def test_existing_directory_needs_overwrite_and_overwrite_is_complete(tmp_path):
    items, interactions = _tables()
    path = write_dataset(tmp_path / "ds", name="one", items=items, interactions=interactions, features=_features())
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(path, name="two", items=items, interactions=interactions)
    write_dataset(path, name="two", items=items, interactions=interactions, overwrite=True)
    dataset = load_dataset(path)
    assert dataset.name == "two" and dataset.modality_names == ()
    assert not (path / "features" / "image.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging or backup left behind


def test_failed_write_leaves_nothing(tmp_path):
    items, interactions = _tables()
    bad = {"image": FeatureTable(np.full((4, 2), np.nan, "float32"))}
    with pytest.raises(DatasetError, match="NaN"):
        write_dataset(tmp_path / "ds", name="x", items=items, interactions=interactions, features=bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda i, x: (i.assign(item_index=[2, 1, 5]), x), "1..N"),
        (lambda i, x: (i.assign(item_id=["a", "a", "c"]), x), "unique"),
        (lambda i, x: (i, x.assign(item_index=[3, 2, 1, 9])), "1..3"),
        (lambda i, x: (i, x.drop(columns="timestamp")), "timestamp"),
        (lambda i, x: (i, x.iloc[:0]), "empty"),
    ],
)
def test_bad_tables_are_named(tmp_path, mutate, message):
    items, interactions = mutate(*_tables())
    with pytest.raises(DatasetError, match=message):
        write_dataset(tmp_path / "ds", name="x", items=items, interactions=interactions)


def test_bad_features_are_named(tmp_path):
    items, interactions = _tables()
    with pytest.raises(DatasetError, match="row 0"):
        write_dataset(tmp_path / "a", name="x", items=items, interactions=interactions,
                      features={"image": FeatureTable(np.ones((4, 2), "float32"))})
    with pytest.raises(DatasetError, match=r"\[4, dim\]"):
        write_dataset(tmp_path / "b", name="x", items=items, interactions=interactions,
                      features={"image": FeatureTable(np.zeros((3, 2), "float32"))})
    with pytest.raises(ValueError, match="name"):
        write_dataset(tmp_path / "c", name="x", items=items, interactions=interactions,
                      features={"Image!": FeatureTable(np.zeros((4, 2), "float32"))})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        load_dataset(tmp_path / "empty")
    items, interactions = _tables()
    path = write_dataset(tmp_path / "ds", name="x", items=items, interactions=interactions, features=_features())
    np.save(path / "features" / "image.npy", np.zeros((4, 5), "float32"))
    with pytest.raises(DatasetError, match="image.npy must be float32 \\[4, 2\\]"):
        load_dataset(path)
    (path / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="items.parquet cannot be read"):
        load_dataset(path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(path)
