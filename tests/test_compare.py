"""End-to-end tests of `python -m mfn4rec_tf.compare` on tiny runs (pop and the MFN4Rec variants)."""

import contextlib
import csv
import io
import json
import logging
import os
import shutil

import matplotlib.image
import numpy as np
import pytest

from mfn4rec_tf import compare, training
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate

# The paper protocol without its retraining step, which would double each run's time.
TINY = ["--protocol", "paper", "--budget", "1", "--patience", "1", "--quiet", "--set", "train.retrain=false",
        "--set", "model.memory_dim=8", "--set", "model.fc_hidden_units=8",
        "--set", "model.modality_hidden_units=6", "--set", "model.id_hidden_units=6"]
MODELS = ("pop", "mfn4rec", "mfn4rec-g")


@pytest.fixture(scope="module")
def demo_tables():
    return generate(DemoSpec(num_users=300, num_items=200, max_length=15))


@pytest.fixture(scope="module")
def small_data(demo_tables, tmp_path_factory):
    """A small demo-like dataset (planted signal, 300 users, image and text) so a run takes seconds."""
    items, interactions, features, _ = demo_tables
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


@pytest.fixture(scope="module")
def text_only_data(demo_tables, tmp_path_factory):
    """The same data written without the image modality."""
    items, interactions, features, _ = demo_tables
    path = tmp_path_factory.mktemp("data") / "text-only"
    return write_dataset(path, name="text-only", items=items, interactions=interactions,
                         features={"text": features["text"]})


def _main(args):
    """Runs `compare.main(args)`; returns (exit code, stdout, stderr, log text)."""
    stdout, stderr, logs = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logs)
    logger = logging.getLogger("mfn4rec_tf")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = compare.main(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return code, stdout.getvalue(), stderr.getvalue(), logs.getvalue()


@pytest.fixture(scope="module")
def compared(small_data, tmp_path_factory):
    """One comparison of pop and two MFN4Rec variants (the expensive part, shared by the tests)."""
    out = tmp_path_factory.mktemp("compare") / "out"
    args = ["--data", str(small_data), "--models", ",".join(MODELS), "--out", str(out)] + TINY
    code, stdout, stderr, logs = _main(args)
    return {"out": out, "args": args, "code": code, "stdout": stdout, "stderr": stderr, "logs": logs}


def _csv(out):
    with (out / "results.csv").open() as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def _markdown_rows(out):
    """The table of results.md: model -> {column title: cell}."""
    lines = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def _metrics(out, model):
    return json.loads((out / "runs" / model / "metrics.json").read_text())


def test_table_values_are_each_runs_test_metrics(compared):
    out = compared["out"]
    assert compared["code"] == 0, compared["stderr"]
    rows, table, record = _csv(out), _markdown_rows(out), json.loads((out / "compare.json").read_text())
    assert list(rows) == list(MODELS) == list(table)
    assert [m["model"] for m in record["models"]] == list(MODELS)
    for model, entry in zip(MODELS, record["models"]):
        test = _metrics(out, model)["test"]
        state = json.loads((out / "runs" / model / "state.json").read_text())
        assert rows[model]["status"] == "ok" and entry["status"] == "ok"
        assert entry["test"] == test and entry["valid"] == _metrics(out, model)["valid"]
        for key in compare.COLUMNS:
            assert float(rows[model][key]) == test[key], (model, key)  # fractions, exactly
            cell = table[model][compare._title(key)].rstrip(compare.NOT_SIGNIFICANT).strip("*")
            assert cell == f"{100 * test[key]:.3f}", (model, key)  # percent, 3 decimals
        assert rows[model]["selected_epoch"] == str(state["best_epoch"])  # pop too: its one epoch of counting
        assert float(rows[model]["seconds"]) >= 0
    # The best value of each column is bold, and only that one.
    for key in compare.COLUMNS:
        best = max(_metrics(out, m)["test"][key] for m in MODELS)
        bold = [m for m in MODELS if table[m][compare._title(key)].startswith("**")]
        assert bold == [m for m in MODELS if _metrics(out, m)["test"][key] == best], key
    # The table is printed too.
    assert (out / "results.md").read_text().split("| Model")[1] in compared["stdout"]


def test_header_says_what_was_compared_where(compared, small_data):
    text = (compared["out"] / "results.md").read_text()
    assert "# Model comparison on small (paper protocol)" in text
    assert "300 users, 200 items" in text and f"`{small_data}`" in text
    assert "up to 1 epoch(s) per model" in text and "the selected model is tested as it is (no retraining)" in text
    assert f"{os.cpu_count()} CPU(s)" in text and "TensorFlow" in text
    assert "Command: `python -m mfn4rec_tf.compare --data " in text and "--budget 1" in text
    record = json.loads((compared["out"] / "compare.json").read_text())
    assert record["dataset"]["users"] == 300 and record["dataset"]["items"] == 200
    assert record["protocol"] == "paper" and record["budget"] == 1
    assert record["settings"]["model"]["memory_dim"] == 8 and "variant" not in record["settings"]["model"]
    assert record["argv"] == compared["args"]


def test_progress_lines_per_model(compared):
    logs = compared["logs"]
    assert "[1/3] pop: training ..." in logs
    for number, model in enumerate(MODELS, start=1):
        assert f"[{number}/3] {model}: Recall@20 " in logs, model
    assert "[2/3] mfn4rec: training ..." in logs and "selected epoch 1 of 1;" in logs
    assert "epoch 1/1  loss" in logs  # the runs' own per-epoch lines
    assert "ablation" not in logs.lower()  # two variants ran: the chart is drawn


def _image(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    drawn = np.mean(np.any(pixels < 0.9, axis=-1))  # not white
    return pixels, len(colours), drawn


def test_charts_are_images_with_content(compared):
    for name in ("comparison.png", "ablation.png"):
        pixels, colours, drawn = _image(compared["out"] / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600, name
        assert colours > 50 and drawn > 0.05, name
        # Bars in the first two colours of the cycle (blue C0 and orange C1) are there.
        for colour in ((31, 119, 180), (255, 127, 14)):
            assert np.any(np.all(np.abs((pixels * 255).astype(int) - colour) <= 2, axis=-1)), (name, colour)


def test_rerun_reuses_finished_runs_and_resumes_unfinished_ones(compared, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(compared["out"], out)
    args = [out.as_posix() if a == str(compared["out"]) else a for a in compared["args"]]
    before = {m: (out / "runs" / m / "metrics.json").stat().st_mtime_ns for m in MODELS}
    first = json.loads((out / "compare.json").read_text())
    calls = []
    real = training.run_training

    def spy(config, run_dir, resume=False, progress=True):
        calls.append((config.model.variant, resume))
        return real(config, run_dir, resume=resume, progress=progress)

    monkeypatch.setattr(training, "run_training", spy)
    code, _, stderr, logs = _main(args)
    assert code == 0, stderr
    assert calls == []  # nothing retrained
    assert {m: (out / "runs" / m / "metrics.json").stat().st_mtime_ns for m in MODELS} == before
    assert "[3/3] mfn4rec-g: reusing the finished run" in logs
    second = json.loads((out / "compare.json").read_text())
    for a, b in zip(first["models"], second["models"]):
        assert b["run"] == "reused" and b["test"] == a["test"]
        assert b["seconds"] == a["seconds"]  # the time it took when it was trained

    # An interrupted run (pop, stopped before its metrics were written) resumes; the others are reused.
    (out / "runs" / "pop" / "metrics.json").unlink()
    state = json.loads((out / "runs" / "pop" / "state.json").read_text())
    (out / "runs" / "pop" / "state.json").write_text(json.dumps(dict(state, phase="select")))
    code, _, stderr, logs = _main(args)
    assert code == 0, stderr
    assert calls == [("pop", True)]
    assert "[1/3] pop: resuming the interrupted run" in logs
    rows = _csv(out)
    assert rows["pop"]["status"] == "ok" and rows["pop"]["run"] == "resumed"
    assert float(rows["pop"]["recall@20"]) == first["models"][0]["test"]["recall@20"]


@pytest.mark.parametrize("how", ["--modalities text", "dataset without image"])
def test_model_needing_a_missing_modality_is_reported_not_applicable(how, small_data, text_only_data, tmp_path):
    out = tmp_path / "out"
    data = small_data if how.startswith("--") else text_only_data
    extra = ["--modalities", "text"] if how.startswith("--") else []
    code, _, stderr, logs = _main(["--data", str(data), "--models", "vbpr,pop", "--out", str(out)] + TINY + extra)
    assert code == 0, stderr
    rows = _csv(out)
    assert list(rows) == ["vbpr", "pop"]
    assert rows["vbpr"]["status"] == "n/a" and "image" in rows["vbpr"]["note"]
    assert rows["vbpr"]["recall@20"] == "" and rows["pop"]["status"] == "ok"
    table = _markdown_rows(out)
    assert table["vbpr"]["Recall@20"] == "n/a" and "needs the modality ['image']" in table["vbpr"]["Note"]
    assert "[1/2] vbpr: n/a: Model 'vbpr' needs the modality ['image']" in logs
    assert not (out / "runs" / "vbpr").exists()  # checked before training, nothing written for it
    # With no MFN4Rec variant there is no ablation chart, and the log says so.
    assert "No ablation chart" in logs and not (out / "ablation.png").exists()
    assert (out / "comparison.png").is_file()


def test_a_setting_the_model_cannot_take_is_reported_not_applicable(small_data, tmp_path):
    out = tmp_path / "out"
    code, _, stderr, _ = _main(["--data", str(small_data), "--models", "sasrec,pop", "--out", str(out),
                                "--set", "data.max_length=600"] + TINY)
    assert code == 0, stderr
    rows = _csv(out)
    assert rows["sasrec"]["status"] == "n/a" and "max_length" in rows["sasrec"]["note"]
    assert rows["pop"]["status"] == "ok" and not (out / "runs" / "sasrec").exists()


def _failing_for(model, error):
    real = training.run_training
    calls = []

    def run(config, run_dir, resume=False, progress=True):
        calls.append(config.model.variant)
        if config.model.variant == model:
            raise error
        return real(config, run_dir, resume=resume, progress=progress)

    return run, calls


def test_failed_model_is_reported_and_the_others_still_run(small_data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["--data", str(small_data), "--models", "mfn4rec-m,pop", "--out", str(out)] + TINY
    run, calls = _failing_for("mfn4rec-m", RuntimeError("boom | the model broke"))
    monkeypatch.setattr(training, "run_training", run)
    code, _, stderr, logs = _main(args)
    assert code == 1
    assert calls == ["mfn4rec-m", "pop"]
    assert "error: 1 model(s) failed: mfn4rec-m" in stderr
    assert "[1/2] mfn4rec-m: FAILED after" in logs and "RuntimeError: boom" in logs
    rows = _csv(out)
    assert rows["mfn4rec-m"]["status"] == "failed"
    assert "RuntimeError: boom | the model broke" in rows["mfn4rec-m"]["note"]
    assert rows["pop"]["status"] == "ok"
    assert float(rows["pop"]["recall@20"]) == _metrics(out, "pop")["test"]["recall@20"]
    table = _markdown_rows(out)
    assert table["mfn4rec-m"]["Recall@20"] == "failed" and "boom \\| the model broke" in table["mfn4rec-m"]["Note"]
    record = json.loads((out / "compare.json").read_text())
    assert "Traceback" in record["models"][0]["error"] and record["models"][1]["status"] == "ok"
    _image(out / "comparison.png")  # drawn with the failed model marked

    # Running again tries the failed model again and reuses the finished one.
    run, calls = _failing_for("mfn4rec-m", RuntimeError("still broken"))
    monkeypatch.setattr(training, "run_training", run)
    code, _, _, _ = _main(args)
    assert code == 1 and calls == ["mfn4rec-m"]
    assert "still broken" in _csv(out)["mfn4rec-m"]["note"]


def test_interrupted_comparison_writes_what_it_has(small_data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run, calls = _failing_for("mfn4rec-g", KeyboardInterrupt())
    monkeypatch.setattr(training, "run_training", run)
    code, _, _, logs = _main(["--data", str(small_data), "--models", "pop,mfn4rec-g,mfn4rec", "--out", str(out)]
                             + TINY)
    assert code == 130 and calls == ["pop", "mfn4rec-g"]
    assert "Run the same command to continue" in logs
    rows = _csv(out)
    assert [rows[m]["status"] for m in ("pop", "mfn4rec-g", "mfn4rec")] == ["ok", "not run", "not run"]
    assert rows["mfn4rec-g"]["note"] == "interrupted" and rows["mfn4rec"]["note"] == "not reached"


def test_leftover_run_directory_is_restarted(small_data, tmp_path):
    """A run killed between writing its config.yaml and its state.json is started again."""
    out = tmp_path / "out"
    (out / "runs" / "pop" / "checkpoints").mkdir(parents=True)
    (out / "runs" / "pop" / "config.yaml").write_text("half written")
    code, _, stderr, _ = _main(["--data", str(small_data), "--models", "pop", "--out", str(out)] + TINY)
    assert code == 0, stderr
    assert _csv(out)["pop"]["status"] == "ok"


def test_cli_errors_exit_2_before_touching_out(small_data, tmp_path, compared):
    out = tmp_path / "out"
    base = ["--data", str(small_data), "--out", str(out)] + TINY
    cases = [
        (["--models", "pop,mfn5rec"], "unknown model(s) mfn5rec"),
        (["--models", " , "], "--models is empty"),
        (["--data", str(tmp_path / "missing")], "does not exist"),
        (["--modalities", "audio"], "audio"),
        (["--set", "model.variant=lstm"], "choose them with --models"),
        (["--set", "model.memroy_dim=3"], "model.memroy_dim"),
        (["--budget", "0"], "train.epochs"),
        (["--protocol", "random"], "data.protocol"),
        (["--models", "mfn4rec-add", "--set", "model.id_hidden_units=9"], "'mfn4rec-add' cannot be configured"),
    ]
    for extra, message in cases:
        code, _, stderr, _ = _main(base + extra)
        assert code == 2, extra
        assert stderr.startswith("error: ") and message in stderr, (extra, stderr)
        assert "Traceback" not in stderr
        assert not out.exists(), extra

    # An --out holding runs of other settings is refused, naming the difference, and left as it was.
    done = compared["out"]
    mtime = (done / "results.md").stat().st_mtime_ns
    args = [a if a != "1" else "2" for a in compared["args"]]  # --budget 2 (and patience 2)
    code, _, stderr, _ = _main(args)
    assert code == 2 and "holds a run with other settings" in stderr and "train.epochs: saved 1, now 2" in stderr
    assert (done / "results.md").stat().st_mtime_ns == mtime
    stray = tmp_path / "stray"
    (stray / "runs" / "pop").mkdir(parents=True)
    (stray / "runs" / "pop" / "notes.txt").write_text("mine")
    code, _, stderr, _ = _main(["--data", str(small_data), "--models", "pop", "--out", str(stray)] + TINY)
    assert code == 2 and "no state.json" in stderr and (stray / "runs" / "pop" / "notes.txt").is_file()
    (tmp_path / "file").write_text("")
    code, _, stderr, _ = _main(["--data", str(small_data), "--out", str(tmp_path / "file")])
    assert code == 2 and "is not a directory" in stderr


def test_format_markdown_marks_rows_without_results():
    summary = {
        "dataset": {"name": "d", "path": "/data/d", "users": 1000, "items": 50, "interactions": 9000,
                    "modalities": {"image": 4}},
        "modalities": [], "protocol": "leave-one-out",
        "splits": {"test": {"users": 10, "targets": 10}, "validation": {"users": 9, "targets": 9}},
        "budget": 3, "patience": 2, "seed": 0, "retrain": True, "date": "today", "machine": "m", "software": "s",
    }
    results = [
        compare.Result("pop", "ok", test={k: 0.5 for k in compare.COLUMNS}, seconds=1.0),
        compare.Result("lstm", "ok", test={k: 0.25 for k in compare.COLUMNS}, selected_epoch=2, epochs_run=3,
                       seconds=12.4, note="resumed"),
        compare.Result("vbpr", "n/a", note="needs image"),
        compare.Result("sasrec", "failed", note="ValueError: a|b\nc", seconds=2.0),
        compare.Result("mfn4rec", "not run", note="interrupted"),
    ]
    text = compare.format_markdown(summary, results, "python -m mfn4rec_tf.compare --out x")
    assert "1,000 users, 50 items, 9,000 interactions; modalities: image (4-d)" in text
    assert "Feature modalities fed: none (item IDs only)" in text
    assert "the selected model is retrained on train + validation for its number of epochs, then tested" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["pop"].count("**50.000**") == 6 and "**" not in rows["lstm"]
    assert "| 25.000 | 25.000 |" in rows["lstm"] and "| 2 | 3 | 12 | resumed |" in rows["lstm"]
    assert rows["vbpr"].count("| n/a ") == 6 and rows["vbpr"].endswith("| needs image |")
    assert rows["sasrec"].count("| failed ") == 6 and "ValueError: a\\|b c" in rows["sasrec"]
    assert rows["mfn4rec"].count("| not run ") == 6
    assert "Failed: sasrec" in text
