import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.common import (
    SECONDS_PER_YEAR,
    FilterSpec,
    SkipCounter,
    align_vectors,
    apply_filters,
    drop_duplicate_events,
    index_items,
    item_texts,
)

DAY = 24 * 3600


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_skip_counter_logs_first_few_then_counts(caplog):
    skips = SkipCounter(log_first=2)
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        for line in range(5):
            skips.skip("bad", f"f.json:{line}")
    assert skips.as_dict() == {"bad": 5}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "f.json:1" in messages[1] and "only counting" in messages[2]


def test_drop_duplicates_and_bad_rows():
    skips = SkipCounter()
    events = _events([("u", "a", 1), ("u", "a", 1), ("u", "a", 2), ("u", None, 3), ("v", "b", "x")])
    kept = drop_duplicate_events(events, skips)
    assert kept[["item_id", "timestamp"]].values.tolist() == [["a", 1], ["a", 2]]
    assert skips.as_dict() == {"bad_timestamp": 1, "duplicate_events": 1, "missing_user_or_item": 1}


def test_paper_filters_hand_worked():
    end = 10 * SECONDS_PER_YEAR
    old = end - 3 * SECONDS_PER_YEAR  # outside the last two years
    rows = [("old", "i1", old)]  # removed by the time window
    rows += [(f"u{u}", "i1", end - u * DAY) for u in range(6)]  # i1: 6 recent interactions
    rows += [(f"u{u}", "i2", end - 10 * DAY - u) for u in range(6)]
    rows += [(f"u{u}", f"rare{u}", end - 20 * DAY) for u in range(3)]  # rare items: 1 interaction each
    rows += [("u0", "i3", end - 30 * DAY - k) for k in range(5)] + [("u1", "i3", end - 31 * DAY)]  # i3: 6
    events, report = apply_filters(_events(rows), FilterSpec(last_years=2, min_item=5, min_user=3, max_user=4))
    # After the window and min_item=5: items i1, i2, i3 remain. u0 has 1+1+5 = 7 (> 4, removed),
    # u1 has 3, u2..u5 have 2 (< 3, removed).
    assert sorted(events["user_id"].unique()) == ["u1"]
    assert [step["filter"] for step in report] == ["last_years", "min_item", "user_length"]
    assert report[0]["interactions_removed"] == 1 and report[0]["users_removed"] == 1
    assert report[1]["interactions_removed"] == 3 and report[1]["items_removed"] == 3
    assert report[2]["users_removed"] == 5
    assert FilterSpec.paper() == FilterSpec(2.0, 5, 5, 100)


def test_index_items_sorted_and_metadata_joined():
    skips = SkipCounter()
    events = _events([("u", "b", 2), ("u", "a", 1), ("v", "c", 3)])
    meta = pd.DataFrame({"item_id": ["a", "a", "b", "zz"], "title": ["A", "A again", "B", "Z"]})
    items, interactions = index_items(events, meta, skips)
    assert items["item_index"].tolist() == [1, 2, 3] and items["item_id"].tolist() == ["a", "b", "c"]
    assert items["title"].tolist()[:2] == ["A", "B"] and pd.isna(items["title"].iloc[2])
    assert interactions["item_index"].tolist() == [2, 1, 3]
    assert skips.as_dict() == {"duplicate_item_metadata": 1, "items_without_metadata": 1,
                               "metadata_not_in_catalogue": 1}
    assert item_texts(items, ["title"]) == ["A", "B", None]


def test_align_vectors():
    skips = SkipCounter()
    vectors = np.array([[1, 1], [2, 2], [np.nan, 0], [9, 9], [5, 5]], "float32")
    table = align_vectors(["a", "b", "c", "d"], ["b", "a", "c", "x", "b"], vectors, "image", skips)
    np.testing.assert_array_equal(table.values, [[0, 0], [2, 2], [1, 1], [0, 0], [0, 0]])
    assert table.present.tolist() == [False, True, True, False, False]
    assert skips.as_dict() == {"image_duplicate_ids": 1, "image_missing": 1, "image_non_finite": 1}
    with pytest.raises(ValueError, match="one row per id"):
        align_vectors(["a"], ["a", "b"], np.zeros((1, 2)), "image", skips)


def test_paper_filters_flag_conflicts_with_explicit_filters():
    import argparse

    args = argparse.Namespace(paper_filters=True, last_years=None, min_item=None, min_user=3, max_user=None)
    with pytest.raises(ValueError, match="--paper-filters"):
        FilterSpec.from_args(args)
    args.min_user = None
    assert FilterSpec.from_args(args) == FilterSpec.paper()


def test_user_sample_keeps_whole_histories_and_is_fixed_by_its_seed():
    rows = [(f"u{u}", f"i{(u + k) % 7}", 100 * u + k) for u in range(40) for k in range(1 + u % 4)]
    events = _events(rows)
    kept, report = apply_filters(events, FilterSpec(sample_users=0.25, sample_seed=3))
    users = sorted(kept["user_id"].unique())
    assert len(users) == 10 and report[-1]["filter"] == "user_sample" and report[-1]["users_kept"] == 10
    assert report[-1]["users_removed"] == 30
    # every kept user keeps every event of theirs
    for user in users:
        assert (kept["user_id"] == user).sum() == (events["user_id"] == user).sum()
    # the draw depends on the seed and the set of users, not on the row order
    again, _ = apply_filters(events.sample(frac=1.0, random_state=1), FilterSpec(sample_users=0.25, sample_seed=3))
    assert sorted(again["user_id"].unique()) == users
    other, _ = apply_filters(events, FilterSpec(sample_users=0.25, sample_seed=4))
    assert sorted(other["user_id"].unique()) != users
    # applied after the user-length filter: the sample is drawn among the users that filter kept
    after, report = apply_filters(events, FilterSpec(min_user=4, sample_users=0.5))
    assert [step["filter"] for step in report] == ["user_length", "user_sample"]
    assert after.groupby("user_id").size().min() >= 4 and after["user_id"].nunique() == 5


def test_user_sample_fraction_is_checked_and_combines_with_paper_filters():
    import argparse

    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="--sample-users"):
            FilterSpec(sample_users=bad)
    args = argparse.Namespace(paper_filters=True, last_years=None, min_item=None, min_user=None, max_user=None,
                              sample_users=0.1, sample_seed=7)
    assert FilterSpec.from_args(args) == FilterSpec(2.0, 5, 5, 100, sample_users=0.1, sample_seed=7)
