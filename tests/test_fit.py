"""End-to-end tests of `python -m mfn4rec_tf.fit` and `python -m mfn4rec_tf.evaluate` on tiny runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mfn4rec_tf import evaluate, fit
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate

ROOT = Path(__file__).resolve().parents[1]
KS = (10, 20, 30, 50)
FAMILIES = ("recall", "map", "ndcg", "precision", "mrr")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small demo-like dataset (planted signal, 300 users) so a run takes seconds."""
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


TINY = ["--epochs", "3", "--patience", "1", "--quiet", "--set", "model.memory_dim=8",
        "--set", "model.fc_hidden_units=8",
        "--set", "model.modality_hidden_units=6", "--set", "model.id_hidden_units=6"]


def _run(args):
    return fit.main(args)


def test_main_end_to_end_writes_every_artifact(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["--data", str(small_data), "--out", str(out)] + TINY) == 0
    printed = capsys.readouterr().out
    assert "recall" in printed.lower() and str(out) in printed
    for name in ("config.yaml", "state.json", "best.keras", "model.keras", "metrics.json", "metrics.csv",
                 "history.csv", "training_curves.png"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("*tfevents*"))
    assert not (out / "checkpoints").exists()  # removed once the run is done
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics) == ["test", "valid"]
    for split in metrics.values():
        for family in FAMILIES:
            for k in KS:
                assert 0.0 <= split[f"{family}@{k}"] <= 1.0
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == "done"
    phases = [row["phase"] for row in state["history"]]
    assert phases.count("retrain") == state["best_epoch"]  # paper protocol: retrained for the selected epochs
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # evaluate re-computes the test metrics of the saved run
    capsys.readouterr()
    assert evaluate.main(["--run", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key, value in metrics["test"].items():
        assert again[key] == pytest.approx(value, abs=1e-6), key


def test_same_seed_same_metrics(small_data, tmp_path):
    args = ["--data", str(small_data), "--protocol", "leave-one-out"] + TINY + ["--epochs", "2"]
    assert _run(args + ["--out", str(tmp_path / "a")]) == 0
    assert _run(args + ["--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a == b


def test_popularity_baseline_and_mfn4rec_beats_it(small_data, tmp_path):
    assert _run(["--data", str(small_data), "--model", "pop", "--out", str(tmp_path / "pop"), "--quiet"]) == 0
    pop = json.loads((tmp_path / "pop" / "metrics.json").read_text())
    assert _run(["--data", str(small_data), "--out", str(tmp_path / "mfn"), "--epochs", "6", "--quiet",
                 "--protocol", "paper"]) == 0
    mfn = json.loads((tmp_path / "mfn" / "metrics.json").read_text())
    assert mfn["valid"]["recall@20"] > pop["valid"]["recall@20"]


def test_config_file_and_errors(small_data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 1\nmodel:\n  variant: mfn4rec-g\n")
    out = tmp_path / "run"
    assert _run(["--data", str(small_data), "--config", str(config), "--out", str(out), "--quiet",
                 "--protocol", "leave-one-out"]) == 0
    assert "variant: mfn4rec-g" in (out / "config.yaml").read_text()
    capsys.readouterr()
    assert _run(["--data", str(small_data), "--out", str(out), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _run(["--set", "model.memroy_dim=3", "--out", str(tmp_path / "x")]) == 2
    assert "model.memroy_dim" in capsys.readouterr().err
    assert _run(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run(["--data", str(small_data), "--modalities", "audio", "--out", str(tmp_path / "z")]) == 2
    assert "audio" in capsys.readouterr().err
    assert _run(["--resume", "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    assert _run(["--out", str(out), "--resume", "--epochs", "7", "--quiet"]) == 2  # disagrees with config.yaml
    assert "differs" in capsys.readouterr().err
    assert _run(["--out", str(out), "--resume", "--quiet"]) == 0  # finished run: evaluated again


def test_failed_start_leaves_out_free(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["--data", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 2
    assert _run(["--data", str(small_data), "--modalities", "audio", "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert _run(["--data", str(small_data), "--out", str(out), "--epochs", "1", "--quiet",
                 "--protocol", "leave-one-out"]) == 0
    # A kill between "selection finished" and "best model copied" leaves phase "final": resumable.
    state = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps(dict(state, phase="final")))
    (out / "model.keras").unlink()
    assert _run(["--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "model.keras").is_file()


def _fit_command(data, out, extra=()):
    return [sys.executable, "-m", "mfn4rec_tf.fit", "--data", str(data), "--out", str(out), *TINY[:-8],
            "--epochs", "4", "--patience", "4", "--protocol", "leave-one-out", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("loss", [(), ("--loss", "sampled", "--num-negatives", "32", "--sampler", "popularity")],
                         ids=["full", "sampled"])
def test_resume_after_kill_matches_uninterrupted_run(small_data, tmp_path, loss):
    # With the sampled loss the sampler's generator state is checkpointed too: the same negatives follow.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    reference = tmp_path / "reference"
    subprocess.run(_fit_command(small_data, reference, loss), check=True, env=env, capture_output=True, cwd=ROOT)

    out = tmp_path / "killed"
    process = subprocess.Popen(_fit_command(small_data, out, loss), env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 as soon as an epoch checkpoint exists, mid-run
        state = out / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("epoch", 0) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((out / "state.json").read_text())["phase"] != "done"
    # Resume as the README says: the run directory alone (its config.yaml holds the settings).
    resumed = subprocess.run([sys.executable, "-m", "mfn4rec_tf.fit", "--out", str(out), "--resume"], env=env,
                             capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout + resumed.stderr
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in a[split]:
            assert b[split][key] == pytest.approx(a[split][key], abs=1e-6), (split, key)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(small_data, tmp_path):
    script = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from mfn4rec_tf import fit\n"
        "sys.exit(fit.main(sys.argv[1:]))\n"
    )
    out = tmp_path / "mirrored"
    args = ["--data", str(small_data), "--out", str(out), "--strategy", "mirrored", "--protocol", "leave-one-out",
            *TINY[:-8], "--epochs", "2"]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MirroredStrategy over 2 replica(s)" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["test"]["recall@20"])


def test_threads_sets_tensorflows_pools_before_the_run(small_data, tmp_path):
    script = (
        "import sys, tensorflow as tf\n"
        "from mfn4rec_tf import fit\n"
        "status = fit.main(sys.argv[1:])\n"
        "print('pools', tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
        "sys.exit(status)\n"
    )
    out = tmp_path / "one-thread"
    args = ["--data", str(small_data), "--out", str(out), "--threads", "1", *TINY[:-8], "--epochs", "1"]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pools 1 1" in result.stdout
    assert (out / "metrics.json").is_file()


def test_threads_errors_name_the_flag(small_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit.parse_args(["--threads", "0"])
    assert "--threads" in capsys.readouterr().err
    # Too late once TensorFlow has run an op in this process (the test process has): an error, not a crash.
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    assert _run(["--data", str(small_data), "--out", str(tmp_path / "late"), "--threads", "3", *TINY]) == 2
    assert "--threads 3: TensorFlow has already started its thread pools" in capsys.readouterr().err
    assert not (tmp_path / "late").exists()
