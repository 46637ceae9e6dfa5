import pandas as pd
import pytest

from mfn4rec_tf.splits import make_split

# Hand-worked example. Time range [0, 100]: paper cuts at 60 (validation) and 80 (test).
#   u1: items 1@0, 2@30, 3@60, 4@70, 4@75, 5@80, 6@90, 7@100
#   u2: items 8@10, 9@65                 -> one train item, one validation target, no test target
#   u3: items 10@85, 11@95               -> nothing before 60 (not evaluated in validation)
#   u4: items 3@5, 3@50                  -> nothing after 60: trains, never evaluated
EVENTS = [
    ("u1", 1, 0), ("u1", 2, 30), ("u1", 3, 60), ("u1", 4, 70),
    ("u1", 4, 75), ("u1", 5, 80), ("u1", 6, 90), ("u1", 7, 100),
    ("u2", 8, 10), ("u2", 9, 65),
    ("u3", 10, 85), ("u3", 11, 95),
    ("u4", 3, 5), ("u4", 3, 50),
]


@pytest.fixture
def interactions():
    frame = pd.DataFrame(EVENTS, columns=["user_id", "item_index", "timestamp"])
    return frame.sample(frac=1.0, random_state=0)  # order must not matter


def _lists(arrays):
    return [a.tolist() for a in arrays]


def test_paper_validation(interactions):
    split = make_split(interactions, "paper", "validation")
    assert split.train_user_ids.tolist() == ["u1", "u2", "u4"]
    assert _lists(split.train_sequences) == [[1, 2, 3], [8], [3, 3]]
    assert split.user_ids.tolist() == ["u1", "u2"]
    assert _lists(split.histories) == [[1, 2, 3], [8]]
    assert _lists(split.targets) == [[4, 5], [9]]  # (60, 80]: 4, 4 (deduplicated), 5


def test_paper_test(interactions):
    split = make_split(interactions, "paper", "test")
    assert _lists(split.train_sequences) == [[1, 2, 3, 4, 4, 5], [8, 9], [3, 3]]
    assert split.user_ids.tolist() == ["u1"]
    assert _lists(split.targets) == [[6, 7]]


def test_user_ratio(interactions):
    validation = make_split(interactions, "user-ratio", "validation")
    # u1: n=8 -> train 4 (floor 4.8), validation up to 6 (floor 6.4); u2, u3, u4: n=2 -> train 1, validation none
    assert validation.user_ids.tolist() == ["u1"]
    assert _lists(validation.histories) == [[1, 2, 3, 4]]
    assert _lists(validation.targets) == [[4, 5]]
    assert validation.train_user_ids.tolist() == ["u1", "u2", "u3", "u4"]
    test = make_split(interactions, "user-ratio", "test")
    assert test.user_ids.tolist() == ["u1", "u2", "u3", "u4"]
    assert _lists(test.histories) == [[1, 2, 3, 4, 4, 5], [8], [10], [3]]
    assert _lists(test.targets) == [[6, 7], [9], [11], [3]]


def test_leave_one_out(interactions):
    validation = make_split(interactions, "leave-one-out", "validation")
    assert validation.user_ids.tolist() == ["u1"]  # the others have only two events
    assert _lists(validation.histories) == [[1, 2, 3, 4, 4, 5]]
    assert _lists(validation.targets) == [[6]]
    test = make_split(interactions, "leave-one-out", "test")
    assert test.user_ids.tolist() == ["u1", "u2", "u3", "u4"]
    assert _lists(test.histories) == [[1, 2, 3, 4, 4, 5, 6], [8], [10], [3]]
    assert _lists(test.targets) == [[7], [9], [11], [3]]


def test_validation_and_test_targets_never_in_validation_training(interactions):
    for protocol in ("paper", "user-ratio", "leave-one-out"):
        validation = make_split(interactions, protocol, "validation")
        test = make_split(interactions, protocol, "test")
        for user, history in zip(validation.user_ids, validation.histories):
            test_row = list(test.user_ids).index(user) if user in test.user_ids else None
            if test_row is not None:
                assert len(test.histories[test_row]) > len(history)  # test history extends validation's


def test_ties_keep_dataset_order():
    frame = pd.DataFrame({"user_id": ["a", "a", "a"], "item_index": [5, 3, 9], "timestamp": [1, 1, 1]})
    split = make_split(frame, "leave-one-out", "test")
    assert _lists(split.histories) == [[5, 3]] and _lists(split.targets) == [[9]]


def test_deterministic(interactions):
    a = make_split(interactions, "paper", "validation")
    b = make_split(interactions.sample(frac=1.0, random_state=3), "paper", "validation")
    assert _lists(a.train_sequences) == _lists(b.train_sequences) and _lists(a.targets) == _lists(b.targets)


def test_bad_arguments(interactions):
    with pytest.raises(ValueError, match="protocol"):
        make_split(interactions, "random", "test")
    with pytest.raises(ValueError, match="mode"):
        make_split(interactions, "paper", "train")
    with pytest.raises(ValueError, match="timestamp"):
        make_split(interactions.drop(columns="timestamp"), "paper", "test")
