"""Tests of `python -m mfn4rec_tf.export`: the served graph against the Keras model, the version layout."""

import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mfn4rec_tf import export, fit
from mfn4rec_tf.data import FeatureGatherer, pad
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.metrics import top_k_items
from mfn4rec_tf.model import with_output_mode
from mfn4rec_tf.run_config import load_config
from mfn4rec_tf.splits import make_split
from mfn4rec_tf.training import open_data

MAX_LENGTH = 6
K = 10
TINY = ["--epochs", "1", "--patience", "1", "--quiet", "--protocol", "leave-one-out", "--max-length", str(MAX_LENGTH),
        "--set", "model.memory_dim=8", "--set", "model.fc_hidden_units=8", "--set", "model.modality_hidden_units=6",
        "--set", "model.id_hidden_units=6"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A small demo-like dataset (300 users, 200 items; image with presence, text)."""
    items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    """A one-epoch MFN4Rec run with histories cut to MAX_LENGTH items."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert fit.main(["--data", str(small_data), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """Version 1 of model `tiny`, exported through the CLI; returns (version dir, what it printed)."""
    base = tmp_path_factory.mktemp("served")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = export.main(["--run", str(run), "--name", "tiny", "--base", str(base), "--k", str(K)])
    assert code == 0
    return base / "tiny" / "1", printed.getvalue()


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported[0]))


class Reference:
    """The Keras model of the run, fed item indices as training feeds them: the expected answers."""

    def __init__(self, run):
        config = load_config(run / "config.yaml")
        dataset = open_data(config)
        self.model = with_output_mode(keras.saving.load_model(run / "model.keras"), "last")
        self.gather = FeatureGatherer(dataset, config.modality_names(dataset))
        self.ids = dataset.item_ids()
        self.index = {item: i for i, item in enumerate(self.ids) if i}
        self.num_items = dataset.num_items
        sequences = make_split(dataset.interactions, config.data.protocol, "test").train_sequences
        self.popularity = np.bincount(np.concatenate(sequences), minlength=self.num_items + 1).astype(np.float32)
        self.sequences = sequences

    def known(self, histories):
        return [[self.index[item] for item in row if item in self.index] for row in histories]

    def outputs(self, histories):
        fed = pad([row[-MAX_LENGTH:] for row in self.known(histories)])
        return {key: np.array(value) for key, value in self.model(self.gather(fed)).items()}

    def recommend(self, histories, k, exclude_seen):
        """(raw item ids, scores) of the top k, with popularity for rows without a known item."""
        known = self.known(histories)
        logits = self.outputs(histories)["logits"]
        empty = np.array([not row for row in known])
        logits[empty] = self.popularity
        items = top_k_items(logits, k, exclude=pad(known) if exclude_seen else None)
        assert (items > 0).all()  # the tests keep k <= the candidates left
        return self.ids[items].astype(str), np.take_along_axis(logits, items, axis=1)


@pytest.fixture(scope="module")
def reference(run):
    return Reference(run)


@pytest.fixture(scope="module")
def histories(reference):
    """Raw-id histories: plain, with unknown ids and "" inside, longer than MAX_LENGTH, a repeated
    item, all unknown, all padding. Returns (rows padded with "", unknown ids per row)."""
    ids = reference.ids
    seqs = [[str(ids[i]) for i in seq] for seq in reference.sequences if len(seq) >= 12]
    rows = [
        seqs[0][:4],
        [seqs[1][0], "no-such-item", *seqs[1][1:5], "", "nope", *seqs[1][5:11]],  # 11 known > MAX_LENGTH
        ["unknown-a", "unknown-b"],
        [],
        [seqs[2][0], seqs[2][1], seqs[2][0]],
        seqs[3][:MAX_LENGTH + 3],
    ]
    width = max(len(row) for row in rows)
    return [row + [""] * (width - len(row)) for row in rows], [0, 2, 2, 0, 0, 0]


def _decode(tensor):
    return np.char.decode(tensor.numpy().astype(bytes), "utf-8")


def test_serving_default_matches_keras_top_k(served, reference, histories):
    rows, unknown = histories
    out = served.signatures["serving_default"](history=tf.constant(rows))
    items, scores = reference.recommend(rows, K, exclude_seen=False)
    assert out["item_ids"].shape == (len(rows), K) and out["scores"].dtype == tf.float32
    np.testing.assert_array_equal(_decode(out["item_ids"]), items)
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["unknown_ids"].numpy(), unknown)
    assert out["unknown_ids"].dtype == tf.int32


@pytest.mark.parametrize("k, exclude_seen", [(5, True), (7, False), (K, True), (1, False)])
def test_recommend_matches_keras_for_k_and_exclusion(served, reference, histories, k, exclude_seen):
    rows, unknown = histories
    out = served.signatures["recommend"](history=tf.constant(rows), k=tf.constant(k),
                                         exclude_seen=tf.constant(exclude_seen))
    items, scores = reference.recommend(rows, k, exclude_seen)
    np.testing.assert_array_equal(_decode(out["item_ids"]), items)
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["unknown_ids"].numpy(), unknown)
    known = reference.known(rows)
    for row, recommended in zip(known, _decode(out["item_ids"])):
        seen = {str(reference.ids[i]) for i in row}
        assert not (exclude_seen and seen & set(recommended))


def test_exclusion_changes_the_list(served, reference, histories):
    """Without exclusion the model does recommend some history items here, so the test above can fail."""
    rows, _ = histories
    out = served.signatures["recommend"](history=tf.constant(rows), k=tf.constant(50),
                                         exclude_seen=tf.constant(False))
    seen = [{str(reference.ids[i]) for i in row} for row in reference.known(rows)]
    assert any(s & set(r) for s, r in zip(seen, _decode(out["item_ids"])))


def test_rows_without_known_items_get_the_most_popular(served, reference):
    rows = tf.constant([["ghost", "", ""], ["", "", ""], ["a", "b", "c"]])
    out = served.signatures["serving_default"](history=rows)
    expected = top_k_items(reference.popularity[None], K)[0]
    for row in range(3):
        np.testing.assert_array_equal(_decode(out["item_ids"])[row], reference.ids[expected].astype(str))
        np.testing.assert_array_equal(out["scores"].numpy()[row], reference.popularity[expected])
    np.testing.assert_array_equal(out["unknown_ids"].numpy(), [1, 0, 3])
    # A batch of empty histories (zero columns) is valid too.
    out = served.signatures["serving_default"](history=tf.zeros((2, 0), tf.string))
    np.testing.assert_array_equal(_decode(out["item_ids"]), np.tile(reference.ids[expected].astype(str), (2, 1)))


def test_k_is_capped_and_excluded_items_sink_to_the_floor(served, reference, histories):
    rows, _ = histories
    out = served.signatures["recommend"](history=tf.constant(rows), k=tf.constant(reference.num_items + 50),
                                         exclude_seen=tf.constant(True))
    items, scores = _decode(out["item_ids"]), out["scores"].numpy()
    assert items.shape == (len(rows), reference.num_items)
    for row, known in enumerate(reference.known(rows)):
        assert sorted(items[row]) == sorted(reference.ids[1:].astype(str))  # every item once, never padding
        seen = {str(reference.ids[i]) for i in known}
        tail = items[row][reference.num_items - len(seen):]
        assert set(tail) == seen
        assert np.all(scores[row][reference.num_items - len(seen):] == np.float32(export.EXCLUDED_SCORE))
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        served.signatures["recommend"](history=tf.constant(rows), k=tf.constant(0), exclude_seen=tf.constant(False))


def test_user_representation_matches_keras(served, reference, histories):
    rows, unknown = histories
    out = served.signatures["user_representation"](history=tf.constant(rows))
    expected = reference.outputs(rows)["user_representation"]
    assert out["user_representation"].shape == expected.shape and out["user_representation"].dtype == tf.float32
    np.testing.assert_allclose(out["user_representation"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["unknown_ids"].numpy(), unknown)


def test_layout_metadata_and_cli_summary(exported, run, reference):
    version_dir, printed = exported
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    assert sorted(p.name for p in version_dir.parent.iterdir()) == ["1"]  # no staging directory left
    metadata = json.loads((version_dir / "assets.extra" / "mfn4rec.json").read_text())
    assert metadata["variant"] == "mfn4rec" and metadata["run_dir"] == str(run.resolve())
    assert (metadata["num_items"], metadata["k"], metadata["max_length"]) == (reference.num_items, K, MAX_LENGTH)
    assert metadata["exclude_seen"] is False  # the run's train.exclude_history
    assert metadata["xla"] is False
    assert [m["name"] for m in metadata["modalities"]] == ["image", "text"]
    assert [m["presence"] for m in metadata["modalities"]] == [True, False]
    assert metadata["metrics"] == json.loads((run / "metrics.json").read_text())
    assert metadata["package_version"] and metadata["export_time"]
    assert metadata["signatures"]["serving_default"]["outputs"]["item_ids"] == f"string [None, {K}]"
    assert str(version_dir) in printed
    for name in export.SIGNATURES:
        assert name in printed


@pytest.mark.slow
def test_loads_without_the_package(exported, served, histories, tmp_path):
    """A plain TensorFlow process (as TF Serving) loads and runs it without mfn4rec_tf or tensorflow_text."""
    rows, _ = histories
    script = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "out = model.signatures['serving_default'](history=tf.constant(json.loads(sys.argv[2])))\n"
        "assert 'mfn4rec_tf' not in sys.modules and 'tensorflow_text' not in sys.modules, 'imported'\n"
        "print(json.dumps({key: value.numpy().tolist() for key, value in out.items()}, default=bytes.decode))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(exported[0]), json.dumps(rows)], check=False,
                            capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    expected = served.signatures["serving_default"](history=tf.constant(rows))
    assert got["item_ids"] == _decode(expected["item_ids"]).tolist()
    np.testing.assert_allclose(got["scores"], expected["scores"].numpy(), rtol=1e-6)


@pytest.mark.slow
def test_saved_model_cli_runs_serving_default(exported, served, histories, tmp_path):
    rows, _ = histories
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli), "run", "--dir", str(exported[0]), "--tag_set", "serve", "--signature_def",
                             "serving_default", "--input_exprs", f"history={json.dumps(rows[:2])}"],
                            check=False, capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    expected = _decode(served.signatures["serving_default"](history=tf.constant(rows[:2]))["item_ids"])
    for key in ("item_ids", "scores", "unknown_ids"):
        assert f"Result for output key {key}:" in result.stdout
    assert f"b'{expected[0][0]}'" in result.stdout and f"b'{expected[1][0]}'" in result.stdout


@pytest.fixture(scope="module")
def prepared(run):
    """The export of the run with `exclude_seen=True` built once (graph and archive), reused by the
    tests of the version layout."""
    config = load_config(run / "config.yaml")
    return export._prepare_export(run, config, K, True)


def test_versions_count_up_and_stale_staging_goes(exported, run, prepared, reference, histories, monkeypatch,
                                                  capsys):
    monkeypatch.setattr(export, "_prepare_export", lambda *args: prepared)
    model_dir = exported[0].parent
    first = (exported[0] / "saved_model.pb").read_bytes()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = model_dir / f".staging-9-{dead.pid}-0123abcd"
    live = model_dir / f".staging-8-{os.getppid()}-0123abcd"
    for path in (stale, live):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"partial")
    try:
        assert export.export_run(run, "tiny", base=model_dir.parent, k=K, exclude_seen=True) == model_dir / "2"
        assert not stale.exists() and live.exists()  # a running process' staging directory stays
    finally:
        (live / "saved_model.pb").unlink()
        live.rmdir()
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]
    assert (exported[0] / "saved_model.pb").read_bytes() == first
    # Version 2 excludes the history in serving_default, as exported.
    assert json.loads((model_dir / "2" / "assets.extra" / "mfn4rec.json").read_text())["exclude_seen"] is True
    rows, _ = histories
    out = tf.saved_model.load(str(model_dir / "2")).signatures["serving_default"](history=tf.constant(rows))
    items, scores = reference.recommend(rows, K, exclude_seen=True)
    np.testing.assert_array_equal(_decode(out["item_ids"]), items)
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-5)

    with pytest.raises(export.ExportError, match="Version 2 of model 'tiny' already exists"):
        export.export_run(run, "tiny", base=model_dir.parent, version=2)
    capsys.readouterr()
    assert export.main(["--run", str(run), "--name", "tiny", "--base", str(model_dir.parent), "--version", "1"]) == 2
    assert "Version 1 of model 'tiny' already exists" in capsys.readouterr().err
    assert (exported[0] / "saved_model.pb").read_bytes() == first
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]


def test_next_version_reads_integer_names_only(tmp_path):
    assert export.next_version(tmp_path / "none") == 1
    for name in ("1", "10", "2", ".staging-11-5-ab", "abc", "3a"):
        (tmp_path / name).mkdir()
    assert export.next_version(tmp_path) == 11


STUB = types.SimpleNamespace(dataset_info={}, num_items=200, modalities=[], signatures={}, tensorflow_version="",
                             added_items=None, cold_start=None)
"""What the layout tests export instead of a model: `_write` is replaced there."""


def _another_export_takes(version_dir):
    """A `_write` that, while "writing", lets another export publish `version_dir` first."""

    def write(export_, staging, metadata):
        (staging / "saved_model.pb").write_bytes(b"ours")
        version_dir.mkdir(parents=True)
        (version_dir / "saved_model.pb").write_bytes(b"theirs")

    return write


def test_version_taken_during_the_export(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_prepare_export", lambda *args: STUB)
    model_dir = tmp_path / "tiny"
    monkeypatch.setattr(export, "_write", _another_export_takes(model_dir / "1"))
    assert export.export_run(run, "tiny", base=tmp_path) == model_dir / "2"  # version left free: the next one
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == b"theirs"
    assert (model_dir / "2" / "saved_model.pb").read_bytes() == b"ours"

    monkeypatch.setattr(export, "_write", _another_export_takes(model_dir / "5"))
    with pytest.raises(export.ExportError, match="Version 5 of model 'tiny' was written by another export"):
        export.export_run(run, "tiny", base=tmp_path, version=5)
    assert (model_dir / "5" / "saved_model.pb").read_bytes() == b"theirs"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "5"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_crash_while_writing_leaves_nothing(run, prepared, tmp_path, monkeypatch, capsys, error):
    monkeypatch.setattr(export, "_prepare_export", lambda *args: prepared)

    def save(obj, path, *args, **kwargs):
        Path(path, "saved_model.pb").write_bytes(b"half")  # some of it written, then the crash
        raise error

    monkeypatch.setattr(tf.saved_model, "save", save)
    with pytest.raises(type(error)):
        export.export_run(run, "tiny", base=tmp_path, k=K)
    assert list((tmp_path / "tiny").iterdir()) == []
    if isinstance(error, KeyboardInterrupt):  # the CLI says so and exits 130
        assert export.main(["--run", str(run), "--name", "tiny", "--base", str(tmp_path), "--k", str(K)]) == 130
        assert "interrupted" in capsys.readouterr().err
        assert list((tmp_path / "tiny").iterdir()) == []


def test_rename_failure_other_than_a_taken_version_is_raised(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_prepare_export", lambda *args: STUB)
    monkeypatch.setattr(export, "_write", lambda export_, staging, metadata: None)

    def rename(src, dst):
        raise OSError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(export.os, "rename", rename)
    with pytest.raises(PermissionError):
        export.export_run(run, "tiny", base=tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []


@pytest.fixture(scope="module")
def pop_run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pop"
    assert fit.main(["--data", str(small_data), "--out", str(out), "--model", "pop", "--quiet",
                     "--protocol", "leave-one-out"]) == 0
    return out


def test_cli_errors_exit_2_and_write_nothing(run, pop_run, tmp_path, capsys):
    base = tmp_path / "served"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    cases = [
        (["--run", str(tmp_path / "missing"), "--name", "m"], "does not exist"),
        (["--run", str(tmp_path), "--name", "m"], "no config.yaml"),
        (["--run", str(unfinished), "--name", "m"], "no model.keras"),
        (["--run", str(run), "--name", "../escape"], "name='../escape'"),
        (["--run", str(run), "--name", "a/b"], "name='a/b'"),
        (["--run", str(run), "--name", ".hidden"], "name='.hidden'"),
        (["--run", str(run), "--name", "nl\n"], "name='nl\\n'"),  # `$` alone would have let it through
        (["--run", str(run), "--name", "m", "--version", "0"], "version=0"),
        (["--run", str(run), "--name", "m", "--k", "0"], "k=0"),
        (["--run", str(run), "--name", "m", "--k", "500"], "larger than the catalogue (200 items)"),
    ]
    for args, message in cases:
        assert export.main([*args, "--base", str(base)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (args, err)
    assert not base.exists()
    with pytest.raises(SystemExit) as raised:
        export.main(["--name", "m"])  # argparse: --run is required
    assert raised.value.code == 2
    assert "--run" in capsys.readouterr().err


def test_pop_exports_like_any_model(pop_run, tmp_path):
    # `pop` is a model of the registry like the others: its counts are its weights.
    path = export.export_run(pop_run, "pop", base=tmp_path)
    metadata = json.loads((path / export.METADATA).read_text())
    assert metadata["variant"] == "pop" and (path / "saved_model.pb").is_file()


@pytest.mark.parametrize("failure", ["tensorflow", "os"])
def test_a_full_disk_is_one_error_line_and_publishes_nothing(run, tmp_path, capsys, monkeypatch, failure):
    import errno

    def full_disk(archive, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "saved_model.pb").write_bytes(b"half")  # something was written before the disk filled
        if failure == "tensorflow":
            raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables: No space left on device")
        raise OSError(errno.ENOSPC, "No space left on device")

    # keras.export.ExportArchive() is an instance of the backend's subclass: patch that class's writer
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", full_disk)
    base = tmp_path / "served"
    assert export.main(["--run", str(run), "--name", "m", "--base", str(base)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and "Nothing was published" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list((base / "m").iterdir()) == []  # no version, no staging left


def test_api_checks_arguments(run, tmp_path):
    with pytest.raises(export.ExportError, match="exclude_seen"):
        export.export_run(run, "m", base=tmp_path, exclude_seen="yes")
    with pytest.raises(export.ExportError, match="version=True"):
        export.export_run(run, "m", base=tmp_path, version=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(export.ExportError, match="is not a directory"):
        export.export_run(run, "m", base=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_length_buckets():
    assert export.length_buckets(100) == [8, 16, 32, 64, 100]
    assert export.length_buckets(64) == [8, 16, 32, 64]
    assert export.length_buckets(9) == [8, 9]
    assert export.length_buckets(6) == [6]


def _warmup_histories(version_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    records = tf.data.TFRecordDataset(str(version_dir / export.WARMUP))
    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request for r in records]
    assert {r.model_spec.signature_name for r in requests} == {"serving_default"}
    return [tf.make_ndarray(r.inputs["history"]) for r in requests]


def test_the_plain_export_has_one_warm_up_request(exported):
    (history,) = _warmup_histories(exported[0])
    assert history.shape == (1, 8) and (history != b"").all()


@pytest.mark.slow
def test_xla_export_answers_as_the_plain_one(run, served, histories, tmp_path):
    """XLA on bucketed shapes: the same items and scores as the plain export, for batch sizes that
    are and are not powers of two and lengths below, at and above `max_length`."""
    path = export.export_run(run, "fast", base=tmp_path, k=K, xla=True)
    metadata = json.loads((path / export.METADATA).read_text())
    assert metadata["xla"] is True
    assert [h.shape for h in _warmup_histories(path)] == [(b, MAX_LENGTH) for b in export.WARMUP_BATCH_SIZES]
    fast = tf.saved_model.load(str(path))
    rows, unknown = histories
    for batch in (rows, rows[:1], rows[:3], rows[1:2]):
        history = tf.constant(batch)
        want = served.signatures["serving_default"](history=history)
        got = fast.signatures["serving_default"](history=history)
        np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())
        np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got["unknown_ids"].numpy(), want["unknown_ids"].numpy())
        want = served.signatures["recommend"](history=history, k=tf.constant(3), exclude_seen=tf.constant(True))
        got = fast.signatures["recommend"](history=history, k=tf.constant(3), exclude_seen=tf.constant(True))
        np.testing.assert_array_equal(got["item_ids"].numpy(), want["item_ids"].numpy())
        want = served.signatures["user_representation"](history=history)["user_representation"].numpy()
        got = fast.signatures["user_representation"](history=history)["user_representation"].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert got.shape == (len(batch), want.shape[1])
