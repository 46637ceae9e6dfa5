"""Step and wall-clock budgets of the selection phase (`train.max_steps`, `train.max_minutes`) and the
`data.train_windows` settings, end to end through `python -m mfn4rec_tf.fit`."""

import json

import pytest

from mfn4rec_tf import fit, training
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.run_config import load_config

TINY = ["--quiet", "--set", "model.memory_dim=8", "--set", "model.fc_hidden_units=8",
        "--set", "model.modality_hidden_units=6", "--set", "model.id_hidden_units=6"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """300 users, so that an epoch is 5 steps of 64 sequences."""
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


def _state(out):
    return json.loads((out / "state.json").read_text())


def test_budget_settings_are_checked():
    for override, words in (("train.max_steps=0", "train.max_steps"), ("train.max_minutes=0", "train.max_minutes"),
                            ("train.max_minutes=-1", "train.max_minutes"),
                            ("data.window_stride=5", "data.window_stride"),
                            ("data.train_windows=all", "data.train_windows")):
        with pytest.raises(ValueError, match=words):
            load_config(overrides=[override])
    with pytest.raises(ValueError, match="window_stride"):
        load_config(overrides=["data.train_windows=sliding", "data.max_length=10", "data.window_stride=11"])
    with pytest.raises(ValueError, match="train.targets"):
        load_config(overrides=["data.train_windows=sliding", "train.targets=last"])
    with pytest.raises(ValueError, match="multi-worker"):
        load_config(overrides=["train.max_steps=10", "train.strategy=multi-worker"])
    config = load_config(overrides=["data.train_windows=sliding", "data.window_stride=3", "train.max_minutes=1.5"])
    assert config.data.window_stride == 3 and config.train.max_minutes == 1.5 and config.train.max_steps is None


def test_budget_callback_stops_fit_after_the_step_that_spends_it():
    class Model:
        stop_training = False

    budget = training.Budget(max_steps=3)
    budget.set_model(Model())
    for step in range(2):
        budget.on_train_batch_end(step)
    assert not budget.model.stop_training and budget.reason is None
    budget.on_train_batch_end(2)
    assert budget.model.stop_training and budget.reason == "max_steps" and budget.steps == 3
    late = training.Budget(deadline=0.0)  # perf_counter() is past it: the first step is the last
    late.set_model(Model())
    late.on_train_batch_end(0)
    assert late.reason == "max_minutes" and late.steps == 1


def test_step_budget_ends_mid_epoch_and_the_retraining_stops_at_the_same_step(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert fit.main(["--data", str(small_data), "--out", str(out), "--protocol", "paper", "--epochs", "5",
                     "--patience", "5", "--max-steps", "7", *TINY]) == 0
    assert "step budget (train.max_steps=7)" in capsys.readouterr().out
    state = _state(out)
    select = [row for row in state["history"] if row["phase"] == "select"]
    retrain = [row for row in state["history"] if row["phase"] == "retrain"]
    assert [row["steps"] for row in select] == [5, 7]  # 300 users: 5 steps an epoch; the second cut at 2
    assert state["stopped_by"] == "max_steps" and select[-1]["stopped_by"] == "max_steps"
    assert len(retrain) == state["best_epoch"]
    if state["best_epoch"] == 2:  # the selected epoch was cut short: so is the retraining's last epoch
        assert state["best_epoch_steps"] == 2 and retrain[-1]["steps"] == 2
    else:
        assert state["best_epoch_steps"] is None and retrain[-1]["steps"] > 2
    assert "stopped_by" in (out / "history.csv").read_text().splitlines()[0]


def test_wall_clock_budget_ends_the_phase(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert fit.main(["--data", str(small_data), "--out", str(out), "--protocol", "leave-one-out", "--epochs", "5",
                     "--patience", "5", "--max-minutes", "0.0001", *TINY]) == 0
    assert "wall-clock budget" in capsys.readouterr().out
    state = _state(out)
    assert state["stopped_by"] == "max_minutes" and state["best_epoch"] == 1
    assert [row["steps"] for row in state["history"]] == [1]  # the first step passed the 6 ms budget
    assert (out / "model.keras").is_file()


def test_epochs_and_patience_are_recorded_as_what_stopped(small_data, tmp_path):
    out = tmp_path / "run"
    assert fit.main(["--data", str(small_data), "--out", str(out), "--protocol", "leave-one-out", "--epochs", "1",
                     *TINY]) == 0
    state = _state(out)
    assert state["stopped_by"] == "epochs" and state["steps"] == 5 and state["history"][0]["steps"] == 5


@pytest.mark.slow
def test_a_resumed_run_counts_the_steps_already_made(small_data, tmp_path, monkeypatch):
    args = ["--data", str(small_data), "--protocol", "leave-one-out", "--epochs", "5", "--patience", "5",
            "--max-steps", "8", *TINY]
    reference = tmp_path / "reference"
    assert fit.main(args + ["--out", str(reference)]) == 0
    out = tmp_path / "interrupted"
    rank = training.evaluate_split
    calls = []

    def interrupt_second_ranking(*a, **k):  # after epoch 2's training, before its checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return rank(*a, **k)

    monkeypatch.setattr(training, "evaluate_split", interrupt_second_ranking)
    with pytest.raises(KeyboardInterrupt):
        fit.main(args + ["--out", str(out)])
    assert _state(out)["steps"] == 5 and _state(out)["epoch"] == 1
    monkeypatch.setattr(training, "evaluate_split", rank)
    assert fit.main(["--out", str(out), "--resume", "--quiet"]) == 0
    state = _state(out)
    assert [row["steps"] for row in state["history"]] == [5, 8] and state["stopped_by"] == "max_steps"
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in a[split]:
            assert b[split][key] == pytest.approx(a[split][key], abs=1e-6), (split, key)


def test_sliding_windows_train_more_steps_on_long_histories(small_data, tmp_path):
    out = tmp_path / "run"
    assert fit.main(["--data", str(small_data), "--out", str(out), "--protocol", "leave-one-out", "--epochs", "1",
                     "--max-length", "4", "--train-windows", "sliding", "--window-stride", "2", *TINY]) == 0
    config = load_config(out / "config.yaml")
    assert (config.data.train_windows, config.data.window_stride) == ("sliding", 2)
    assert _state(out)["steps"] > 5  # windows of 2 targets over sequences of up to 15 items
