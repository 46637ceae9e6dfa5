"""`python -m mfn4rec_tf.compare --seeds N`: mean ± std over seeds, per-seed records, error bars and
the paired significance test against the best model."""

import csv
import json

import numpy as np
import pytest

from mfn4rec_tf import compare, training
from mfn4rec_tf._atomic import write_npz
from mfn4rec_tf.run_config import load_config
from tests.test_compare import TINY, _main, _markdown_rows, demo_tables, small_data  # noqa: F401 (fixtures)


def _run(tmp_path, name, recall, seed=None):
    """A fake finished run directory with per-user Recall@20 `recall` (users u0, u1, ...)."""
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True)
    users = np.array([f"u{i}" for i in range(len(recall))])
    write_npz(run_dir / training.PER_USER_FILE, user_id=users, **{"recall@20": np.asarray(recall, float)})
    return str(run_dir)


def _ok(model, recall_at_20, run_dir, seed=None, **extra):
    test = {key: recall_at_20 if key == "recall@20" else 0.1 for key in compare.COLUMNS}
    return compare.Result(model, "ok", run="trained", run_dir=run_dir, seconds=2.0, selected_epoch=1, epochs_run=1,
                          valid=dict(test), test=test, seed=seed, stopped_by="epochs", **extra)


def test_aggregate_means_and_sample_std_over_seeds(tmp_path):
    runs = [_ok("m", 0.2, _run(tmp_path, "s0", [1, 0]), seed=0), _ok("m", 0.4, _run(tmp_path, "s1", [0, 0]), seed=1),
            _ok("m", 0.3, _run(tmp_path, "s2", [1, 1]), seed=2)]
    result = compare.aggregate("m", runs, [0, 1, 2])
    assert result.status == "ok" and result.test["recall@20"] == pytest.approx(0.3)
    assert result.test_std["recall@20"] == pytest.approx(0.1)  # n - 1: sqrt((0.01 + 0.01 + 0) / 2)
    assert result.test_std["map@20"] == pytest.approx(0.0, abs=1e-12)
    assert result.seconds == 6.0 and result.stopped_by == "epochs"
    assert [run["seed"] for run in result.seeds] == [0, 1, 2]
    assert compare.aggregate("m", runs[:1], [0]) is runs[0]  # one seed: the run itself
    users, recall = compare.per_user_recall(result)
    assert users.tolist() == ["u0", "u1"] and recall.tolist() == pytest.approx([2 / 3, 1 / 3])
    failed = compare.aggregate("m", [runs[0], compare.Result("m", "failed", note="boom", seed=1)], [0, 1])
    assert failed.status == "failed" and failed.note == "seed 1: boom"


def test_significance_marks_a_model_the_test_cannot_tell_from_the_best(tmp_path):
    rng = np.random.default_rng(0)
    best_users = (rng.random(400) < 0.5).astype(float)
    close = np.where(rng.random(400) < 0.97, best_users, 1 - best_users)  # a few users flipped
    far = np.where(rng.random(400) < 0.5, 0.0, best_users)  # half of the hits lost
    results = [
        _ok("far", 0.3, _run(tmp_path, "far", far)),
        _ok("best", 0.6, _run(tmp_path, "best", best_users)),
        _ok("close", 0.5, _run(tmp_path, "close", close)),
        compare.Result("vbpr", "n/a", note="needs image"),
    ]
    assert compare.significance(results) == "best"
    far_result, best, close_result, _ = results
    assert best.p_value is None and far_result.significant is True and far_result.p_value < 1e-6
    assert close_result.significant is False and close_result.p_value >= 0.05
    summary = {"dataset": {"name": "d", "path": "/d", "users": 400, "items": 9, "interactions": 900, "modalities": {}},
               "modalities": [], "protocol": "leave-one-out",
               "splits": {"test": {"users": 400, "targets": 400}, "validation": {"users": 400, "targets": 400}},
               "budget": 3, "patience": 2, "seed": 0, "retrain": False, "date": "today", "machine": "m",
               "software": "s", "max_steps": 500, "max_minutes": None, "seeds": [0]}
    text = compare.format_markdown(summary, results, "cmd")
    table = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert compare.NOT_SIGNIFICANT in table["close"] and compare.NOT_SIGNIFICANT not in table["far"]
    assert compare.NOT_SIGNIFICANT not in table["best"]
    assert "Not significantly different from best" in text and "Different: far" in text
    assert "at most 500 training steps" in text and "Selection ended by: far: epochs" in text
    missing = [_ok("a", 0.5, str(tmp_path / "nothing")), _ok("b", 0.4, _run(tmp_path, "b", [1, 0]))]
    compare.significance(missing)  # a run without per-user values: no p-value, no mark
    assert missing[1].p_value is None and missing[1].significant is None


def test_seeds_must_be_positive(small_data, tmp_path):  # noqa: F811
    code, _, stderr, _ = _main(["--data", str(small_data), "--models", "pop", "--out", str(tmp_path / "o"),
                                "--seeds", "0"] + TINY)
    assert code == 2 and "--seeds must be at least 1" in stderr and not (tmp_path / "o").exists()


def test_compare_with_two_seeds_end_to_end(small_data, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    args = ["--data", str(small_data), "--models", "pop,mfn4rec", "--out", str(out), "--seeds", "2",
            "--max-steps", "3"] + TINY
    code, stdout, stderr, logs = _main(args)
    assert code == 0, stderr
    record = json.loads((out / "compare.json").read_text())
    assert record["seeds"] == [0, 1] and record["max_steps"] == 3
    mfn = next(m for m in record["models"] if m["model"] == "mfn4rec")
    seeds = [json.loads((out / "runs" / "mfn4rec" / f"seed{s}" / "metrics.json").read_text())["test"] for s in (0, 1)]
    assert [run["seed"] for run in mfn["seeds"]] == [0, 1]
    for key in compare.COLUMNS:
        values = np.array([seeds[0][key], seeds[1][key]])
        assert mfn["test"][key] == pytest.approx(values.mean()) and mfn["test_std"][key] == pytest.approx(
            values.std(ddof=1))
    for seed in (0, 1):
        config = load_config(out / "runs" / "mfn4rec" / f"seed{seed}" / "config.yaml")
        assert config.train.seed == seed and config.train.max_steps == 3
    assert all(run["stopped_by"] == "max_steps" for run in mfn["seeds"])  # 5 steps an epoch, budget 3
    table = _markdown_rows(out)
    cell = table["mfn4rec"]["Recall@20"]
    assert f"{100 * mfn['test']['recall@20']:.3f}" in cell and f"± {100 * mfn['test_std']['recall@20']:.3f}" in cell
    assert "2 seeds (0, 1)" in (out / "results.md").read_text()
    with (out / compare.PER_SEED).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["seed"]) for r in rows] == [("pop", "0"), ("pop", "1"), ("mfn4rec", "0"), ("mfn4rec", "1")]
    assert float(rows[3]["recall@20"]) == seeds[1]["recall@20"]
    best = max(record["models"], key=lambda m: m["test"]["recall@20"])
    other = next(m for m in record["models"] if m is not best)
    assert best["p_value"] is None and 0.0 <= other["p_value"] <= 1.0
    assert (out / "comparison.png").is_file()
    # Again: every seed's run is reused.
    code, _, _, logs = _main(args)
    assert code == 0 and logs.count("reusing the finished run") == 4
