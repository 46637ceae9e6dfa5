"""Smoke tests of the benchmark scripts (benchmarks/*.py): each runs end to end on tiny arguments,
the generated data has the asked sizes and structure, and the FLOP counter matches a hand count."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as siblings

import clothing_data
import evaluation_speed
import flops
import multi_worker
import run_groups
import sampled_softmax
import training_speed
from conftest import make_config

from mfn4rec_tf.config import ModalityConfig, ModelConfig
from mfn4rec_tf.dataset import load_dataset
from mfn4rec_tf.model import build_model

TINY_SCALE = 0.01  # 226 users, 388 items, 2,729 interactions


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("clothing") / "tiny"
    assert clothing_data.main(["--out", str(path), "--scale", str(TINY_SCALE), "--seed", "3"]) == 0
    return path


def test_clothing_data_has_the_scaled_counts_and_widths(tiny_data):
    dataset = load_dataset(tiny_data)
    assert dataset.manifest["counts"] == {"users": 226, "items": 388, "interactions": 2729}
    assert clothing_data.scaled_counts(1.0) == {"users": 22_586, "items": 38_840, "interactions": 272_949}
    assert [(m.name, m.dim, m.presence) for m in dataset.modality_configs()] == [("image", 1000, False),
                                                                                ("text", 100, False)]
    lengths = dataset.interactions.groupby("user_id").size()
    assert lengths.min() >= 5 and lengths.max() <= 100 and lengths.sum() == 2729


def test_clothing_data_is_seeded_and_planted():
    first = clothing_data.generate_clothing(seed=5, scale=0.02, progress=None)
    again = clothing_data.generate_clothing(seed=5, scale=0.02, progress=None)
    other = clothing_data.generate_clothing(seed=6, scale=0.02, progress=None)
    assert first[1].equals(again[1]) and not first[1].equals(other[1])
    np.testing.assert_array_equal(first[2]["image"].values, again[2]["image"].values)
    _, interactions, _, truth = first
    users, items = interactions["user_id"].to_numpy(), interactions["item_index"].to_numpy()
    same_user = users[1:] == users[:-1]
    style = truth["style"]
    follows = style[items[1:]][same_user] == truth["successor"][style[items[:-1]]][same_user]
    assert 0.7 < follows.mean() < 0.9  # style_follow is 0.8 (+ chance hits); random would be ~1/24
    assert (np.diff(interactions["timestamp"].to_numpy())[same_user] >= 0).all()  # each user in time order


@pytest.mark.parametrize("users, total", [(10, 50), (10, 1000), (7, 93), (1000, 12_085)])
def test_draw_lengths_hits_the_total_within_bounds(users, total):
    lengths = clothing_data.draw_lengths(np.random.default_rng(0), users, total)
    assert lengths.sum() == total and lengths.min() >= 5 and lengths.max() <= 100 and len(lengths) == users


def test_draw_lengths_rejects_an_impossible_total():
    with pytest.raises(ValueError, match="cannot be spread"):
        clothing_data.draw_lengths(np.random.default_rng(0), 10, 49)


def test_clothing_data_cli_errors(tiny_data, capsys):
    for argv in (["--scale", "0"], ["--scale", "nan"], ["--out", str(tiny_data), "--scale", str(TINY_SCALE)]):
        with pytest.raises(SystemExit) as exit_info:
            clothing_data.main(argv)
        assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err


def test_clothing_data_ids_only_with_counts(tmp_path):
    path = tmp_path / "ids"
    argv = ["--out", str(path), "--items", "500", "--users", "30", "--interactions", "400", "--no-features"]
    assert clothing_data.main(argv + ["--seed", "2"]) == 0
    dataset = load_dataset(path)
    assert dataset.manifest["counts"] == {"users": 30, "items": 500, "interactions": 400}
    assert dataset.modality_configs() == () and not any((path / "features").iterdir())
    assert dataset.manifest["name"] == "clothing-scale-seed2-x1-interactions400-items500-users30-ids"
    again = tmp_path / "again"
    assert clothing_data.main(["--out", str(again)] + argv[2:] + ["--seed", "2"]) == 0
    for name in ("items.parquet", "interactions.parquet"):  # same seed, same bytes
        assert (path / name).read_bytes() == (again / name).read_bytes()
    # The ID-only catalogue is the featured one's without the tables: same items, truth and sequences.
    counts = {"items": 500, "users": 30, "interactions": 400}
    featured = clothing_data.generate_clothing(seed=2, progress=None, counts=counts)
    ids = clothing_data.generate_clothing(seed=2, progress=None, counts=counts, features=False)
    assert ids[2] == {} and featured[2]["image"].values.shape == (501, 1000)
    assert ids[0].equals(featured[0]) and ids[1].equals(featured[1])
    for key in ("style", "brand", "successor"):
        np.testing.assert_array_equal(ids[3][key], featured[3][key])


@pytest.mark.parametrize("argv, message", [
    (["--out", "x", "--items", "0"], "positive integer"),
    (["--out", "x", "--users", "10", "--interactions", "20"], "each needs 5-100"),
    (["--items", "100"], "need --out"),
    (["--no-features"], "need --out"),
])
def test_clothing_data_count_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        clothing_data.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_clothing_dataset_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MFN4REC_HOME", str(tmp_path))
    first = clothing_data.clothing_dataset(scale=0.002, progress=None)
    assert first.path == tmp_path / "clothing-v1-seed0-x0.002"
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    again = clothing_data.clothing_dataset(scale=0.002, progress=None)
    assert (again.path / "manifest.json").stat().st_mtime_ns == stamp


def _hand_config(variant, **overrides):
    fields = dict(num_items=4, variant=variant, modalities=(ModalityConfig("text", 3, 2),), id_embedding_dim=2,
                  id_hidden_units=2, memory_dim=2, fc_hidden_units=3, output_units=2)
    fields.update(overrides)
    return ModelConfig(**fields)


# Hand count, N = 4 (V = 5), item ID (w 2, h 2) and text (w 3, h 2): H = 4, D = 8, F = 3, M = 2, O = 2.
#   GRU:       6 h (w + h) + 6 h (biases) + 11 h   ->  ID 48 + 12 + 22 = 82, text 60 + 12 + 22 = 94: 176
#   attention: 2*8*8 + 8 (FC_a) + 3*8 (softmax) + 8 (a * x)                                   = 168
#   blocks:    3 * (2*8*3 + 3 + 3 (ReLU) + 2*3*2 + 2) + 2*2 (sigmoids)                         = 208
#   update:    4 * 2                                                                            = 8
#   FC_out:    2 I 2 + 2 with I = 6 (mfn4rec, -add), 4 (-g), 2 (-m)                  = 26, 18, 10
#   -m encoders: 2*2*2 + 2 + 2 (tanh) and 2*3*2 + 2 + 2                                         = 28
#   -add sum:  one add of two 2-d states                                                        = 2
#   head:      output layer 2*2*5 + 5 = 25, softmax 3*5 = 15
HAND_STEP = {"mfn4rec": 176 + 168 + 208 + 8 + 26, "mfn4rec-g": 176 + 18, "mfn4rec-m": 28 + 168 + 208 + 8 + 10,
             "mfn4rec-add": 176 + 2 + 26}


@pytest.mark.parametrize("variant", sorted(HAND_STEP))
def test_flops_match_a_hand_count(variant):
    config = _hand_config(variant)
    step = sum(part.total for part in flops.step_flops(config).values())
    assert step == HAND_STEP[variant]
    assert flops.head_flops(config)["output layer"].total == 25 and flops.head_flops(config)["softmax"].total == 15
    assert flops.forward_flops_per_event(config).total == HAND_STEP[variant] + 25 + 15
    assert flops.training_flops_per_event(config) == 3 * (HAND_STEP[variant] + 40)
    assert flops.ranking_flops_per_user(config, 3) == 3 * HAND_STEP[variant] + 25


def test_flops_hand_count_with_presence_tanh_and_cho_gru():
    config = _hand_config("mfn4rec", modalities=(ModalityConfig("text", 3, 2, presence=True),),
                          output_activation="tanh", gru_reset_after=False)
    # GRUs with one bias each: ID 48 + 6 + 22 = 76, text (w 4) 72 + 6 + 22 = 100; the presence
    # product 3; FC_out 26 + 2 (tanh); attention, blocks and update as in mfn4rec.
    expected = 3 + 76 + 100 + 168 + 208 + 8 + 28
    assert sum(part.total for part in flops.step_flops(config).values()) == expected


@pytest.mark.parametrize("variant", ["mfn4rec", "mfn4rec-g", "mfn4rec-m", "mfn4rec-add"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_flops_matmuls_and_biases_match_the_built_model(variant, reset_after):
    """Every kernel but the embedding is used once per position: matmul FLOPs = 2 x its size."""
    config = make_config(variant, gru_reset_after=reset_after)
    model = build_model(config)
    weights = [w for w in model.weights if not w.path.startswith(("item_embedding", "item_logits"))]
    kernels = sum(int(np.prod(w.shape)) for w in weights if w.path.endswith("kernel"))
    biases = sum(int(np.prod(w.shape)) for w in weights if w.path.endswith("bias"))
    assert kernels + biases == sum(int(np.prod(w.shape)) for w in weights)  # nothing else to count
    step = sum(flops.step_flops(config).values(), flops.Count())
    assert (step.matmul, step.bias) == (2 * kernels, biases)
    head = flops.head_flops(config)["output layer"]
    logits = model.get_layer("item_logits")
    assert (head.matmul, head.bias) == (2 * int(np.prod(logits.kernel.shape)), int(np.prod(logits.bias.shape)))


def test_flops_cli(tiny_data, capsys):
    assert flops.main(["--num-items", "50", "--variants", "mfn4rec,mfn4rec-g"]) == 0
    out = capsys.readouterr().out
    assert "training / event (3x)" in out and "mfn4rec-g" in out and "mfn4rec-m" not in out
    assert flops.main(["--data", str(tiny_data)]) == 0
    assert "GFLOP / epoch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        flops.main(["--variants", "lstm"])
    assert exit_info.value.code == 2 and "unknown variant" in capsys.readouterr().err


def test_flops_reject_a_baseline():
    with pytest.raises(ValueError, match="MFN4Rec variants"):
        flops.step_flops(ModelConfig(num_items=5, variant="lstm"))


def _table_rows(out):
    return {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("mfn4rec")}


def test_training_speed_end_to_end(tiny_data, capsys):
    argv = ["--data", str(tiny_data), "--variants", "mfn4rec", "--batches", "2", "--warmup", "1", "--rounds", "1"]
    assert training_speed.main(argv) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert set(rows) == {"mfn4rec"}
    assert float(rows["mfn4rec"][2]) > 0 and rows["mfn4rec"][-2:] == ["-", "-"]  # ms/step; no cell reference
    assert "TensorFlow" in out and "extrapolated" in out.lower()


@pytest.mark.slow
def test_training_speed_compares_with_the_cell_reference(tiny_data, capsys):
    argv = ["--data", str(tiny_data), "--variants", "mfn4rec:cell,mfn4rec-add", "--batches", "2", "--warmup", "1",
            "--rounds", "2"]
    assert training_speed.main(argv) == 0
    rows = _table_rows(capsys.readouterr().out)
    assert set(rows) == {"mfn4rec:cell", "mfn4rec-add"}
    assert rows["mfn4rec:cell"][-2:] == ["1.00x", "1.00x"]  # the reference against itself
    assert rows["mfn4rec-add"][-1].endswith("x") and float(rows["mfn4rec-add"][-1][:-1]) > 0


def test_training_speed_entries_name_a_variant_and_its_options():
    assert training_speed.parse_entry("mfn4rec-m") == ("mfn4rec-m", {})
    assert training_speed.parse_entry("mfn4rec:cell") == ("mfn4rec", {"memory_mode": "cell"})
    config = training_speed.run_config(SimpleNamespace(path=Path("/nowhere")), "mfn4rec:cell")  # reads only .path
    assert (config.model.variant, config.model.memory_mode) == ("mfn4rec", "cell")
    assert (config.train.batch_size, config.train.targets, config.data.max_length, config.data.protocol) == (
        64, "all", 100, "paper")


def test_training_speed_cli_errors(tiny_data, capsys):
    for argv, message in ((["--variants", "mfn4rec:fast"], "unknown option"),
                          (["--variants", "lstm"], "unknown variant"),
                          (["--variants", "mfn4rec:cell:scan"], "memory_mode twice"),
                          (["--batches", "1000"], "exceed"), (["--batches", "0"], "--batches must be >= 1")):
        with pytest.raises(SystemExit) as exit_info:
            training_speed.main(["--data", str(tiny_data), *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_evaluation_speed_end_to_end(tiny_data, capsys):
    argv = ["--data", str(tiny_data), "--max-users", "40", "--batch-size", "16", "--repeats", "1"]
    assert evaluation_speed.main(argv) == 0
    out = capsys.readouterr().out
    assert "(a) evaluate_split" in out and "(a) / bare" in out and "(a) / forward" in out
    assert "ranked: 40 users" in out and "warning" not in out


@pytest.mark.slow
def test_multi_worker_benchmark_end_to_end(tiny_data, capsys):
    assert multi_worker.main(["--data", str(tiny_data), "--epochs", "2", "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    for run in ("1 process, Keras fit", "1 process, multi-worker loop", "2 workers on 127.0.0.1"):
        assert run in out
    assert "2 workers / 1 process (fit):" in out
    with pytest.raises(SystemExit):
        multi_worker.main(["--epochs", "1"])


def test_sampled_softmax_guards_the_full_softmax(tiny_data):
    row = sampled_softmax.measure(str(tiny_data), "mfn4rec", "full", 1, "uniform", 2, 1, "none", full_limit_mb=0)
    assert row["skipped"] and row["items"] == 388 and "ms" not in row
    assert 0 < row["mean_logits_mb"] <= row["logits_mb"] <= row["epoch_logits_mb"] <= 64 * 100 * 389 * 4 / 2**20


def test_sampled_softmax_times_the_chunked_full_softmax(tiny_data):
    """A `chunked` row trains (the full loss, C items at a time) past the full-softmax guard."""
    row = sampled_softmax.measure(str(tiny_data), "mfn4rec", "chunked", 64, "uniform", 2, 1, "none", full_limit_mb=0)
    assert not row.get("skipped") and row["ms"] > 0 and row["items"] == 388


def test_sampled_softmax_times_keras_loss_row(tiny_data):
    """The `keras` row (`--keras-loss`) trains through Keras' own loss and is guarded as the full softmax."""
    row = sampled_softmax.measure(str(tiny_data), "mfn4rec", "keras", 1, "uniform", 2, 1, "none")
    assert not row.get("skipped") and row["ms"] > 0 and row["items"] == 388
    guarded = sampled_softmax.measure(str(tiny_data), "mfn4rec", "keras", 1, "uniform", 2, 1, "none", full_limit_mb=0)
    assert guarded["skipped"]


def test_serve_load_reads_a_peak_rss():
    import os

    import serve_load

    assert serve_load.peak_rss_mb(os.getpid()) > 10
    assert serve_load.peak_rss_mb(2**22 + 1) is None  # past Linux's pid_max: no such process


def _fake_run(path, recall, ndcg, valid, best_epoch=2, epochs=4):
    """A finished run directory as `fit` leaves it, with the given per-user test values."""
    path.mkdir(parents=True)
    recall, ndcg = np.asarray(recall, dtype=float), np.asarray(ndcg, dtype=float)
    test = {"recall@20": float(np.nanmean(recall)), "ndcg@20": float(np.nanmean(ndcg))}
    (path / "metrics.json").write_text(json.dumps({"valid": {"recall@20": valid}, "test": test}))
    (path / "state.json").write_text(json.dumps({"best_epoch": best_epoch, "history": [{}] * epochs}))
    users = np.array([str(u) for u in range(len(recall))])
    np.savez(path / "test_per_user.npz", user_id=users, **{"recall@20": recall, "ndcg@20": ndcg})
    return path


def test_run_groups_means_stds_and_paired_tests(tmp_path, capsys):
    from mfn4rec_tf import stats

    rng = np.random.default_rng(0)
    base = (rng.random(60) < 0.3).astype(float)
    better = np.maximum(base, (rng.random(60) < 0.3).astype(float))
    a = [_fake_run(tmp_path / f"a{s}", base, base * 0.5, valid=0.1 + s / 100) for s in range(2)]
    b = [_fake_run(tmp_path / f"b{s}", values, values * 0.4, valid=0.2) for s, values in enumerate((base, better))]
    argv = ["--group", f"A={a[0]},{a[1]}", "--group", f"B={b[0]},{b[1]}", "--reference", "A",
            "--chart", str(tmp_path / "groups.png")]
    assert run_groups.main(argv) == 0
    out = capsys.readouterr().out
    # B's test Recall@20 over its two runs: the mean and std (n - 1) of the two runs' means.
    means = np.array([base.mean(), better.mean()])
    assert f"{100 * means.mean():.2f} ± {100 * means.std(ddof=1):.2f}%" in out
    assert "10.50 ± 0.71%" in out  # A's validation Recall@20: 0.10 and 0.11
    # The paired test is on the per-user values averaged over each group's runs.
    p = stats.wilcoxon((base + better) / 2, base).pvalue
    change = means.mean() / base.mean() - 1
    assert f"{100 * change:+.1f}% (p = {p:.2g})" in out
    assert "| A | 2 | 2 (4), 2 (4) |" in out and (tmp_path / "groups.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--group", "A"], "LABEL=DIR"),
    (["--group", "A=nowhere"], "not a finished fit run"),
    (["--group", "A=x", "--group", "A=y"], "labels must differ"),
    (["--group", "A=x", "--reference", "B"], "is not a group label"),
])
def test_run_groups_errors_name_the_input(argv, message, capsys):
    assert run_groups.main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_groups_refuses_groups_tested_on_other_users(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", [1.0, 0.0, 1.0], [0.5, 0.0, 0.5], valid=0.1)
    b = _fake_run(tmp_path / "b", [1.0, 0.0], [0.5, 0.0], valid=0.1)
    assert run_groups.main(["--group", f"A={a}", "--group", f"B={b}", "--reference", "A"]) == 2
    assert "tested on different users" in capsys.readouterr().err
    # runs of one group on different users (a cold set per seed): means, but no paired test
    assert run_groups.main(["--group", f"AB={a},{b}"]) == 0
    assert "| AB | 2 |" in capsys.readouterr().out
    assert run_groups.main(["--group", f"AB={a},{b}", "--group", f"A={a}", "--reference", "A"]) == 2
    assert "no test paired by user" in capsys.readouterr().err
    (b / "metrics.json").write_text("{not json")
    assert run_groups.main(["--group", f"B={b}"]) == 2
    assert "cannot read its run files" in capsys.readouterr().err


def test_run_groups_cold_warm_table(tmp_path, capsys):
    runs = []
    for seed, (cold, warm) in enumerate(((0.02, 0.10), (0.04, 0.12))):
        run = _fake_run(tmp_path / f"r{seed}", [1.0, 0.0], [0.5, 0.0], valid=0.1)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test"].update({"cold/recall@20": cold, "cold/ndcg@20": cold / 2, "warm/recall@20": warm,
                                "warm/ndcg@20": warm / 2})
        (run / "metrics.json").write_text(json.dumps(metrics))
        runs.append(run)
    assert run_groups.main(["--group", f"K={runs[0]},{runs[1]}", "--cold-warm"]) == 0
    out = capsys.readouterr().out
    assert "| K | 2 | 3.00 ± 1.41% | 1.50 ± 0.71% | 11.00 ± 1.41% | 5.50 ± 0.71% | 50.00 ± 0.00% |" in out
    plain = _fake_run(tmp_path / "plain", [1.0, 0.0], [0.5, 0.0], valid=0.1)
    assert run_groups.main(["--group", f"P={plain}", "--cold-warm"]) == 2
    assert "not the cold-items protocol" in capsys.readouterr().err
