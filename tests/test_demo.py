import numpy as np
import pytest

from mfn4rec_tf import demo
from mfn4rec_tf.splits import make_split

SMALL = demo.DemoSpec(num_users=400, num_items=300)


@pytest.fixture(scope="module")
def generated():
    return demo.generate(SMALL)


def test_deterministic_from_seed(generated):
    items, interactions, features, _ = generated
    again = demo.generate(SMALL)
    assert interactions.equals(again[1]) and items.equals(again[0])
    np.testing.assert_array_equal(features["image"].values, again[2]["image"].values)
    other = demo.generate(demo.DemoSpec(seed=1, num_users=400, num_items=300))
    assert not interactions.equals(other[1])


def _transitions(interactions):
    frame = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    same_user = frame["user_id"].to_numpy()[1:] == frame["user_id"].to_numpy()[:-1]
    items = frame["item_index"].to_numpy()
    return items[:-1][same_user], items[1:][same_user], frame


def test_image_features_predict_the_next_style(generated):
    _, interactions, features, truth = generated
    current, following, _ = _transitions(interactions)
    image, present = features["image"].values, features["image"].present
    styles = truth["style"]
    centroids = np.stack([image[(styles == s) & present].mean(axis=0) for s in range(SMALL.styles)])
    keep = present[current]
    seen_style = np.argmin(((image[current[keep], None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    # Learn the successor map from the data itself, then predict.
    table = np.zeros((SMALL.styles, SMALL.styles))
    np.add.at(table, (seen_style, styles[following[keep]]), 1)
    accuracy = (table.argmax(axis=1)[seen_style] == styles[following[keep]]).mean()
    chance = np.bincount(styles[following]).max() / len(following)
    assert accuracy > 0.75 and chance < 0.2, (accuracy, chance)


def test_history_text_predicts_the_next_brand(generated):
    _, interactions, features, truth = generated
    text, brands = features["text"].values, truth["brand"]
    centroids = np.stack([text[brands == b].mean(axis=0) for b in range(SMALL.brands)])
    _, _, frame = _transitions(interactions)
    correct = total = 0
    for _, group in frame.groupby("user_id"):
        items = group["item_index"].to_numpy()
        profile = text[items[:-1]].mean(axis=0)
        guess = np.argmin(((centroids - profile) ** 2).sum(-1))
        correct += guess == brands[items[-1]]
        total += 1
    assert correct / total > 0.6  # chance is about 1/8


def test_some_items_lack_images(generated):
    _, _, features, _ = generated
    present = features["image"].present
    assert 0.05 < 1 - present[1:].mean() < 0.15
    assert not features["image"].values[~present].any()


def test_paper_protocol_evaluates_most_users(generated):
    _, interactions, _, _ = generated
    for mode in ("validation", "test"):
        split = make_split(interactions, "paper", mode)
        assert len(split.user_ids) > 0.8 * SMALL.num_users


def test_demo_dataset_is_cached_and_regenerated_when_broken(tmp_path, monkeypatch):
    monkeypatch.setenv("MFN4REC_HOME", str(tmp_path))
    first = demo.demo_dataset(seed=3)
    assert first.path == tmp_path / "demo-v1-seed3"
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    again = demo.demo_dataset(seed=3)
    assert (again.path / "manifest.json").stat().st_mtime_ns == stamp
    (first.path / "items.parquet").write_bytes(b"broken")
    repaired = demo.demo_dataset(seed=3)
    assert repaired.num_items == demo.DemoSpec().num_items and len(repaired.interactions) > 30000
