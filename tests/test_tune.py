"""Tests of `python -m mfn4rec_tf.tune` and its search spaces, on a small generated dataset.

Trials are kept cheap: item IDs only, tiny widths, one or two epochs, so that a trial is a few
seconds (mostly graph tracing).
"""

import csv
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import pytest
import yaml

from mfn4rec_tf import fit, training, tune
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.model import build_model
from mfn4rec_tf.run_config import RunConfig, load_config
from mfn4rec_tf.search_spaces import FIXED, NAMES, load_space, parse_space, tunable_keys

ROOT = Path(__file__).resolve().parents[1]

# IDs only, tiny widths, and mfn4rec-g (no memory network), which traces fastest: these tests are
# about the search; the searched keys come from each test's space.
FAST = ["--protocol", "leave-one-out", "--modalities", "none", "--model", "mfn4rec-g", "--quiet",
        "--set", "model.id_embedding_dim=8", "--set", "model.fc_hidden_units=8", "--set", "model.output_units=8",
        "--set", "model.id_hidden_units=6", "--set", "model.memory_dim=6"]

SPACE = """\
model.id_hidden_units: {choice: [4, 8]}
model.output_units: {choice: [6, 8]}
model.dropout: {float: {min: 0.1, max: 0.3, step: 0.1}}
train.batch_size: {choice: [32, 64]}
train.learning_rate: {float: {min: 0.003, max: 0.03, sampling: log}}
"""


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small demo-like dataset (planted signal, 300 users), as in test_fit."""
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


def _space(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _rows(out):
    with (Path(out) / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def _tune(data, out, space, *extra, base=FAST):
    return tune.main(["--data", str(data), "--out", str(out), "--space", space, *base, *extra])


# ---- search spaces ----

def test_shipped_spaces_load_and_centre_on_the_paper():
    assert NAMES[:3] == ("paper", "wide", "recipe")  # MFN4Rec's; then the baselines' (tests/test_paper_settings.py)
    shipped = Path(tune.__file__).parent / "search_spaces"
    assert set(NAMES) == {path.stem for path in shipped.glob("*.yaml")}
    paper = load_space("paper")
    assert paper.keys == ("model.id_hidden_units", "model.modality_hidden_units", "model.memory_dim",
                          "model.dropout", "train.learning_rate", "train.batch_size")
    defaults = RunConfig()  # the paper's settings (Table 1, Sec. 4.1)
    for parameter in paper.parameters:
        section, name = parameter.key.split(".")
        centre = getattr(getattr(defaults, section), name)
        if parameter.form == "choice":
            assert parameter.values[len(parameter.values) // 2] == centre, parameter.key
        else:
            assert parameter.min < centre < parameter.max, parameter.key
    wide = load_space("wide")
    assert set(paper.keys) < set(wide.keys)
    # The normalised copy (space.yaml in TUNE_DIR) reads back the same.
    for space in (paper, wide, load_space("recipe")):
        assert parse_space(yaml.safe_load(space.to_yaml())).to_dict() == space.to_dict()


def test_space_values_map_onto_the_run_config():
    space = parse_space({"model.modality_hidden_units": {"choice": [10, 30]},
                         "model.id_hidden_units": {"same_as": "model.modality_hidden_units"},
                         "model.dropout": {"float": {"min": 0.1, "max": 0.5, "step": 0.1}},
                         "model.output_activation": {"choice": ["linear", "tanh"]}})
    assert [p.key for p in space.searched] == ["model.modality_hidden_units", "model.dropout",
                                               "model.output_activation"]
    config = space.apply(RunConfig(), {"model.modality_hidden_units": 30, "model.dropout": 0.30000000000000004,
                                       "model.output_activation": "tanh", "tuner/epochs": 3})
    assert (config.model.modality_hidden_units, config.model.id_hidden_units) == (30, 30)
    assert config.model.dropout == 0.3  # KerasTuner's float steps are rounded
    assert config.model.output_activation == "tanh"
    assert config.model.memory_dim == RunConfig().model.memory_dim  # the rest is the base's
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    assert sorted(hp.values) == ["model.dropout", "model.modality_hidden_units", "model.output_activation"]


def test_boolean_choices_come_back_as_booleans():
    # KerasTuner's Choice stores [false, true] as 0 / 1; the run configuration refuses 0 as a boolean.
    space = parse_space({"model.tie_item_embeddings": {"choice": [False, True]},
                         "model.id_embedding_dim": {"choice": [25, 64]},
                         "model.output_units": {"same_as": "model.id_embedding_dim"}})
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    assert hp.values["model.tie_item_embeddings"] == 0 and type(hp.values["model.tie_item_embeddings"]) is not bool
    for drawn in (0, 1):
        values = dict(hp.values, **{"model.tie_item_embeddings": drawn})
        config = space.apply(RunConfig(), values)
        assert config.model.tie_item_embeddings is bool(drawn)
    recipe = load_space("recipe")
    hp = keras_tuner.HyperParameters()
    recipe.declare(hp)
    assert recipe.apply(RunConfig(), hp.values).model.tie_item_embeddings is False


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be a non-empty mapping"),
    ("{}", "must be a non-empty mapping"),
    ("model.memroy_dim: {choice: [10]}", "unknown key `model.memroy_dim`"),
    ("memory_dim: {choice: [10]}", "unknown key `memory_dim`"),
    ("train.epochs: {choice: [1, 2]}", "`train.epochs` cannot be tuned"),
    ("data.protocol: {choice: [paper]}", "`data.protocol` cannot be tuned"),
    ("model.memory_dim: [10, 20]", "`model.memory_dim` must be exactly one of"),
    ("model.memory_dim: {choice: [10], int: {min: 1, max: 2}}", "`model.memory_dim` must be exactly one of"),
    ("model.memory_dim: {range: [1, 2]}", "`model.memory_dim` must be exactly one of"),
    ("model.memory_dim: {choice: []}", "`model.memory_dim`: choice must be a non-empty list"),
    ("model.memory_dim: {choice: [10, 10]}", "`model.memory_dim`: choice values repeat"),
    ("model.memory_dim: {choice: [10, 2.5]}", "`model.memory_dim` is a int setting; choice value 2.5"),
    ("model.memory_dim: {choice: [0, 10]}", "`model.memory_dim`: value 0 is not valid"),
    ("model.memory_dim: {float: {min: 1, max: 2}}", "`model.memory_dim` is an integer setting: use int"),
    ("model.dropout: {int: {min: 0, max: 1}}", "`model.dropout` is a float setting: use float"),
    ("model.dropout: {float: {min: 0.1, max: 1.5}}", "`model.dropout`: value 1.5 is not valid"),
    ("model.dropout: {float: {min: 0.5, max: 0.1}}", "`model.dropout`: float min must be below max"),
    ("model.dropout: {float: {max: 0.5}}", "`model.dropout`: float needs min"),
    ("model.dropout: {float: {min: 0.1, max: 0.5, stepp: 0.1}}", "`model.dropout`: unknown float field(s) ['stepp']"),
    ("model.dropout: {float: {min: 0.1, max: 0.5, step: -0.1}}", "`model.dropout`: float step must be > 0"),
    ("model.dropout: {float: {min: 0.0, max: 0.5, sampling: log}}", "`model.dropout`: log sampling needs min > 0"),
    ("model.dropout: {float: {min: 0.1, max: 0.5, sampling: cubic}}", "`model.dropout`: float sampling must be"),
    ("model.dropout: {float: {min: low, max: 0.5}}", "`model.dropout`: float min must be a number"),
    ("model.memory_dim: {int: {min: 1.5, max: 4}}", "`model.memory_dim`: int min must be an integer"),
    ("model.variant: {int: {min: 1, max: 2}}", "`model.variant` is a str setting: use choice"),
    ("model.variant: {choice: [mfn4rec, pop]}", "`model.variant`: `pop` has nothing to tune"),
    ("model.variant: {choice: [mfn4rec, mfn5rec]}", "`model.variant`: value 'mfn5rec' is not valid"),
    ("model.gru_reset_after: {choice: [true, 1]}", "`model.gru_reset_after` is a bool setting; choice value 1"),
    ("model.id_hidden_units: {same_as: model.modality_hidden_units}",
     "`model.id_hidden_units`: same_as must name another searched key"),
    ("model.id_hidden_units: {same_as: model.dropout}\nmodel.dropout: {choice: [0.1]}",
     "`model.id_hidden_units`: same_as `model.dropout`, a setting of another type"),
])
def test_space_errors_name_the_key(text, message):
    with pytest.raises(ValueError) as error:
        parse_space(yaml.safe_load(text), source="s.yaml")
    assert "Search space s.yaml" in str(error.value)
    assert message in str(error.value)


def test_fixed_keys_are_real_settings_and_the_rest_tunable():
    keys = {f"{name}.{key}" for name, section in RunConfig().to_dict().items() for key in section}
    assert set(FIXED) <= keys and set(tunable_keys()) == keys - set(FIXED)
    assert "train.learning_rate" in tunable_keys() and "train.batch_size" in tunable_keys()
    assert not set(FIXED) & set(tunable_keys())


def test_command_errors_start_nothing(small_data, tmp_path, capsys):
    assert _tune(small_data, tmp_path / "a", "nope") == 2
    shipped = "paper, wide, recipe, sasrec, gru4rec, rnn, multimodal, bpr"
    assert f"neither a shipped space ({shipped})" in capsys.readouterr().err
    assert _tune(small_data, tmp_path / "b", _space(tmp_path, "model.dropout: {choice: [0.1, 2.0]}")) == 2
    assert "`model.dropout`: value 2.0 is not valid" in capsys.readouterr().err
    assert _tune(small_data, tmp_path / "c", _space(tmp_path, "model.dropout: {choice: [0.1\n")) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    space = _space(tmp_path, SPACE)
    assert _tune(small_data, tmp_path / "d", space, base=["--model", "pop"]) == 2
    assert "pop (the most frequent items of the training sequences, for every user) is a reference with no " \
           "hyperparameters" in capsys.readouterr().err
    assert _tune(small_data, tmp_path / "e", space, "--set", "train.epochs=0") == 2
    assert "`train.epochs` must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _tune(small_data, tmp_path / "f", space, "--tuner", "hyperband", "--hyperband-factor", "1")
    assert "must be >= 2" in capsys.readouterr().err
    assert _tune(tmp_path / "missing", tmp_path / "g", space) == 2
    assert "does not exist" in capsys.readouterr().err
    for name in "bcdefg":  # nothing written for a search that cannot start
        assert not (tmp_path / name).exists()


# ---- the hypermodel ----

def test_build_maps_hyperparameters_onto_the_normal_builder(small_data):
    base = load_config(overrides=[f"data.path={small_data}", "data.modalities=[]", "model.fc_hidden_units=8"])
    space = parse_space({"model.memory_dim": {"choice": [4, 12]}, "train.learning_rate": {"choice": [0.005, 0.02]}})
    hypermodel = tune.MFN4RecHyperModel(base, space)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update({"model.memory_dim": 12, "train.learning_rate": 0.02})
    model = hypermodel.build(hp)
    dataset = training.open_data(base)
    reference = build_model(space.apply(base, hp.values).model_config(dataset))
    assert [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in reference.weights]
    assert any(12 in tuple(w.shape) for w in model.weights)  # the memory width reached the model
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)


# ---- searches ----

def test_random_search_scores_every_trial_and_best_config_trains(small_data, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="mfn4rec_tf")
    out = tmp_path / "tune"
    space = _space(tmp_path, SPACE)
    tables_seen = []  # trials.csv's completed rows as each trial begins: the table is written after every trial
    begin = tune._Reporting.on_trial_begin

    def counting_begin(self, trial):
        table = out / "trials.csv"
        tables_seen.append(table.read_text().count("COMPLETED") if table.exists() else None)
        begin(self, trial)

    monkeypatch.setattr(tune._Reporting, "on_trial_begin", counting_begin)
    assert _tune(small_data, out, space, "--max-trials", "4", "--epochs", "2") == 0
    assert tables_seen == [None, 1, 2, 3]
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "COMPLETED" and not row["error"], row
        assert 0.0 <= float(row["val_recall@20"]) <= 1.0
        assert row["model.id_hidden_units"] in ("4", "8") and row["train.batch_size"] in ("32", "64")
        assert 0.1 <= float(row["model.dropout"]) <= 0.3 and 0.003 <= float(row["train.learning_rate"]) <= 0.03
        assert 1 <= int(row["best_epoch"]) <= int(row["last_epoch"]) <= 2
    assert len({tuple(row[k] for k in ("model.id_hidden_units", "model.output_units", "model.dropout",
                                       "train.batch_size", "train.learning_rate")) for row in rows}) == 4
    # progress: one line per trial start and end, with the best so far; the table printed
    messages = [r.getMessage() for r in caplog.records]
    for number in range(1, 5):
        label = f"trial {number - 1} ({number}/4): "
        assert any(m.startswith(label + "model.id_hidden_units=") for m in messages)
        assert any(m.startswith(label + "val_recall@20 ") and "best so far" in m for m in messages)
    assert "recall@20 (%)" in printed and "best_config.yaml" in printed

    # the best configuration: the base with the best values, and fit takes it as it is
    best = max(rows, key=lambda row: float(row["val_recall@20"]))
    assert printed.count("\n* ") == 1 and f"\n* {best['trial']} " in printed
    config = load_config(out / "best_config.yaml")
    assert config.model.output_units == int(best["model.output_units"])
    assert config.model.dropout == float(best["model.dropout"])
    assert config.train.learning_rate == pytest.approx(float(best["train.learning_rate"]))
    assert config.model.fc_hidden_units == 8 and config.model.variant == "mfn4rec-g"  # from the base
    assert config.data.modalities == [] and config.data.path == str(small_data)
    assert load_config(out / "base_config.yaml").train.epochs == 2
    run = tmp_path / "fit"
    assert fit.main(["--config", str(out / "best_config.yaml"), "--data", str(small_data), "--out", str(run),
                     "--quiet"]) == 0
    # the objective is the number fit selects on: same model, same loop, same full-ranking metric
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["valid"]["recall@20"] == pytest.approx(float(best["val_recall@20"]), abs=1e-6)
    state = json.loads((run / "state.json").read_text())
    assert state["best_epoch"] == int(best["best_epoch"])


def test_failed_trials_are_reported_with_their_error(small_data, tmp_path, capsys, caplog, monkeypatch):
    original = tune.MFN4RecHyperModel.build

    def build(self, hp):
        if hp.values["model.memory_dim"] == 8:
            raise RuntimeError("planted failure for memory_dim=8")
        return original(self, hp)

    monkeypatch.setattr(tune.MFN4RecHyperModel, "build", build)
    out = tmp_path / "tune"
    space = _space(tmp_path, "model.memory_dim: {choice: [4, 8]}\nmodel.dropout: {choice: [0.1, 0.2]}\n")
    assert _tune(small_data, out, space, "--max-trials", "4", "--epochs", "1") == 0
    rows = _rows(out)
    assert sorted(row["status"] for row in rows) == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    for row in rows:
        if row["model.memory_dim"] == "8":
            assert row["status"] == "FAILED" and row["val_recall@20"] == ""
            assert row["error"] == "RuntimeError: planted failure for memory_dim=8"
            record = json.loads((out / "search" / f"trial_{row['trial']}" / tune.RECORD).read_text())
            assert "Traceback" in record["traceback"] and "planted failure" in record["traceback"]
        else:
            assert row["status"] == "COMPLETED" and 0.0 <= float(row["val_recall@20"]) <= 1.0
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "FAILED" in r.getMessage()]
    assert len(failures) == 2 and "planted failure" in failures[0].getMessage()
    printed = capsys.readouterr().out
    assert "RuntimeError: planted failure" in printed and "2 trial(s) failed" in printed
    assert load_config(out / "best_config.yaml").model.memory_dim == 4


def test_all_trials_failing_exits_nonzero(small_data, tmp_path, capsys):
    # a space whose every combination is an invalid model (mfn4rec-add needs equal hidden sizes)
    out = tmp_path / "tune"
    space = _space(tmp_path, "model.variant: {choice: [mfn4rec-add]}\nmodel.dropout: {choice: [0.1, 0.2]}\n")
    assert tune.main(["--data", str(small_data), "--out", str(out), "--space", space, "--max-trials", "2",
                      "--epochs", "1", "--quiet", "--set", "model.id_hidden_units=4",
                      "--set", "model.modality_hidden_units=6"]) == 1
    captured = capsys.readouterr()
    assert "no trial completed" in captured.err
    rows = _rows(out)
    assert [row["status"] for row in rows] == ["FAILED", "FAILED"]
    assert all("every hidden size must be equal" in row["error"] for row in rows)
    assert "ValueError: Variant 'mfn4rec-add'" in captured.out
    assert not (out / "best_config.yaml").exists()


def test_consecutive_failures_stop_the_search(small_data, tmp_path, capsys, monkeypatch):
    def build(self, hp):
        raise RuntimeError("always broken")

    monkeypatch.setattr(tune.MFN4RecHyperModel, "build", build)
    out = tmp_path / "tune"
    assert _tune(small_data, out, _space(tmp_path, "model.dropout: {float: {min: 0.1, max: 0.5}}"),
                 "--max-trials", "6") == 1
    assert [row["status"] for row in _rows(out)] == ["FAILED"] * 3
    assert capsys.readouterr().err.count("error:") == 1


def test_missing_tensorboard_or_bayesian_packages_are_clear_errors(small_data, tmp_path, capsys, monkeypatch):
    space = _space(tmp_path, SPACE)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tensorboard.plugins.hparams.api", None)  # import fails as if not installed
        assert _tune(small_data, tmp_path / "a", space) == 2
    error = capsys.readouterr().err
    assert "KerasTuner needs tensorboard" in error and "every trial fails" in error
    for module in ("scipy.optimize", "sklearn.gaussian_process"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)
            assert _tune(small_data, tmp_path / "b", space, "--tuner", "bayesian") == 2
        error = capsys.readouterr().err
        assert "--tuner bayesian needs scipy and scikit-learn" in error and "mfn4rec-tf[bayesian]" in error
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_resume_runs_only_the_missing_trials_and_refuses_another_search(small_data, tmp_path, capsys):
    out = tmp_path / "tune"
    space = _space(tmp_path, SPACE)
    assert _tune(small_data, out, space, "--max-trials", "2", "--epochs", "1") == 0
    first = _rows(out)
    assert len(first) == 2
    records = {path: path.read_text() for path in (out / "search").glob(f"trial_*/{tune.RECORD}")}
    capsys.readouterr()

    assert _tune(small_data, out, space, "--max-trials", "3", "--epochs", "1") == 0
    assert "3 trial(s), 1 run by this command" in capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == 3 and rows[:2] == first and rows[2]["status"] == "COMPLETED"
    assert {path: path.read_text() for path in records} == records  # earlier trials did not run again
    assert len(list((out / "search").glob(f"trial_*/{tune.RECORD}"))) == 3

    assert _tune(small_data, out, space, "--max-trials", "3", "--epochs", "1") == 0  # nothing left to run
    assert "0 run by this command" in capsys.readouterr().out

    assert _tune(small_data, out, space, "--max-trials", "4", "--epochs", "2") == 2
    assert "another base configuration (train.epochs: saved 1, now 2)" in capsys.readouterr().err
    other = _space(tmp_path, SPACE.replace("[32, 64]", "[16, 64]"), "other.yaml")
    assert _tune(small_data, out, other, "--max-trials", "4", "--epochs", "1") == 2
    error = capsys.readouterr().err
    assert "another space (train.batch_size: saved {'choice': [32, 64]}, now {'choice': [16, 64]})" in error
    assert _tune(small_data, out, space, "--max-trials", "4", "--epochs", "1", "--tuner", "hyperband") == 2
    assert "tuner: saved 'random', now 'hyperband'" in capsys.readouterr().err
    assert len(_rows(out)) == 3
    # the saved space is a valid --space for continuing
    assert _tune(small_data, out, str(out / "space.yaml"), "--max-trials", "3", "--epochs", "1") == 0


def test_hyperband_passes_epochs_and_continues_trials(small_data, tmp_path):
    out = tmp_path / "tune"
    # max_epochs 3, factor 3: three 1-epoch trials, then the best one continues for epochs 2-3
    assert _tune(small_data, out, _space(tmp_path, SPACE), "--tuner", "hyperband", "--epochs", "3",
                 "--max-trials", "4") == 0
    rows = _rows(out)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4
    assert [(row["first_epoch"], row["last_epoch"]) for row in rows[:3]] == [("0", "1")] * 3
    first_round = {row["trial"]: float(row["val_recall@20"]) for row in rows[:3]}
    assert rows[3]["from_trial"] == max(first_round, key=first_round.get)
    assert rows[3]["first_epoch"] == "1" and rows[3]["last_epoch"] == "3"
    assert 2 <= int(rows[3]["best_epoch"]) <= 3
    for key in tune.load_space(out / "space.yaml").keys:  # the continued trial has its parent's values
        parent = next(row for row in rows if row["trial"] == rows[3]["from_trial"])
        assert rows[3][key] == parent[key]


@pytest.mark.filterwarnings("ignore:The optimal value found for dimension")  # sklearn, on 2 points
def test_bayesian_search(small_data, tmp_path):
    pytest.importorskip("scipy")
    pytest.importorskip("sklearn")
    out = tmp_path / "tune"
    assert _tune(small_data, out, _space(tmp_path, SPACE), "--tuner", "bayesian", "--initial-points", "2",
                 "--max-trials", "3", "--epochs", "1") == 0  # the third trial comes from the Gaussian process
    rows = _rows(out)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    assert all(0.0 <= float(row["val_recall@20"]) <= 1.0 for row in rows)


# ---- distributed ----

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_distributed_environment_errors(small_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    assert _tune(small_data, tmp_path / "d", _space(tmp_path, SPACE)) == 2
    assert "not KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_distributed_chief_and_two_workers_on_loopback(small_data, tmp_path):
    out = tmp_path / "tune"  # shared by every process, as a shared file system would be
    command = [sys.executable, "-m", "mfn4rec_tf.tune", "--data", str(small_data), "--out", str(out),
               "--space", _space(tmp_path, SPACE), "--max-trials", "4", "--epochs", "1", *FAST]
    port = str(_free_port())
    processes = {}
    logs = {}
    try:
        for role in ("chief", "tuner0", "tuner1"):
            env = dict(os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=port, TF_CPP_MIN_LOG_LEVEL="3")
            logs[role] = (tmp_path / f"{role}.log").open("w")
            processes[role] = subprocess.Popen(command, env=env, cwd=ROOT, stdout=logs[role],
                                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 420
        for role in ("tuner0", "tuner1", "chief"):  # the chief ends last (it polls every 20 s at the end)
            processes[role].wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for handle in logs.values():
            handle.close()
    output = {role: (tmp_path / f"{role}.log").read_text() for role in processes}
    for role, process in processes.items():
        assert process.returncode == 0, f"{role} exited {process.returncode}:\n{output[role][-3000:]}"
    rows = _rows(out)
    assert len(rows) == 4
    assert all(row["status"] == "COMPLETED" and 0.0 <= float(row["val_recall@20"]) <= 1.0 for row in rows), rows
    assert {row["worker"] for row in rows} <= {"tuner0", "tuner1"}
    assert "chief (oracle at 127.0.0.1:" in output["chief"] and "recall@20 (%)" in output["chief"]
    assert (out / "best_config.yaml").is_file()
    for role in ("tuner0", "tuner1"):
        assert f"{role} done:" in output[role]


def test_trials_of_different_models_are_fed_the_modalities_each_reads(small_data, tmp_path):
    """A space over `model.variant`: bpr reads item IDs only, mfn4rec-g every modality of the data."""
    base = [arg for arg in FAST if arg not in ("--modalities", "none")]
    base[base.index("--model") + 1] = "bpr"
    space = _space(tmp_path, "model.variant: {choice: [bpr, mfn4rec-g]}\n")
    assert _tune(small_data, tmp_path / "tune", space, "--max-trials", "2", "--epochs", "1", base=base) == 0
    rows = _rows(tmp_path / "tune")
    assert sorted(row["model.variant"] for row in rows) == ["bpr", "mfn4rec-g"]
    assert all(row["status"] == "COMPLETED" and not row["error"] for row in rows), rows
