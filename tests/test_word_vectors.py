"""Tests for pipelines/word_vectors.py: PPMI-SVD word vectors trained on item texts, GloVe output, CLI."""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfn4rec_tf.dataset import write_dataset
from pipelines import word_vectors as wv
from pipelines.common import run_main
from pipelines.text_features import load_word_vectors, text_features, tokenize
from pipelines.word_vectors import (
    build_vocabulary,
    cooccurrence_counts,
    ppmi,
    randomized_svd,
    train_word_vectors,
    write_glove,
)

REPO = Path(__file__).resolve().parents[1]
BEAUTY = REPO.parent / "shared" / "data" / "amazon2014-beauty"

TOPIC_A = [f"a{i}" for i in range(1, 9)]
TOPIC_B = [f"b{i}" for i in range(1, 9)]
NOISE = [f"n{i}" for i in range(1, 13)]


def planted_corpus(num_texts=300, seed=0):
    """Texts of 4 words from one topic (a1..a8 or b1..b8, never mixed) plus 2 noise words (n1..n12,
    shared by both topics), shuffled, with some capitals and punctuation for the tokenizer."""
    rng = np.random.default_rng(seed)
    texts = []
    for row in range(num_texts):
        topic = TOPIC_A if row % 2 == 0 else TOPIC_B
        words = list(rng.choice(topic, 4, replace=False)) + list(rng.choice(NOISE, 2, replace=False))
        rng.shuffle(words)
        texts.append(", ".join(words).upper() if row % 7 == 0 else " ".join(words))
    return texts


def unit_rows(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def topic_cosines(words, vectors):
    """Mean cosine of distinct same-topic word pairs, and of cross-topic pairs."""
    unit = unit_rows(vectors)
    a = unit[[words.index(w) for w in TOPIC_A]]  # [8, d]
    b = unit[[words.index(w) for w in TOPIC_B]]  # [8, d]
    off_diagonal = ~np.eye(len(TOPIC_A), dtype=bool)
    within = np.concatenate([(a @ a.T)[off_diagonal], (b @ b.T)[off_diagonal]])
    across = (a @ b.T).ravel()
    return within, across


def ppmi_of(texts, min_count=1):
    """words and the PPMI matrix of `texts`, through the module's own steps."""
    tokens = tokenize(texts)
    words, _ = build_vocabulary(tokens, min_count=min_count)
    index = {word: i for i, word in enumerate(words)}
    id_lists = [list(dict.fromkeys(index[t] for t in text if t in index)) for text in tokens]
    return words, ppmi(cooccurrence_counts(id_lists, len(words)))


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_topics_are_recovered(seed):
    words, vectors, report = train_word_vectors(planted_corpus(), dim=4, seed=seed, progress=False)
    assert sorted(words) == sorted(TOPIC_A + TOPIC_B + NOISE)
    assert vectors.shape == (28, 4) and vectors.dtype == np.float32
    within, across = topic_cosines(words, vectors)
    assert within.mean() > across.mean() + 0.5, (within.mean(), across.mean())
    assert within.min() > across.max(), (within.min(), across.max())
    assert report.texts == 300 and report.tokens == 1800 and report.vocabulary == 28
    assert report.pairs == 300 * 15 and report.isolated_words == 0 and report.seconds > 0


def test_training_is_deterministic_for_a_seed():
    texts = planted_corpus()
    first = train_word_vectors(texts, dim=4, seed=3, progress=False)
    second = train_word_vectors(texts, dim=4, seed=3, progress=False)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])


def test_vocabulary_is_most_frequent_first_with_alphabetical_ties():
    words, counts = build_vocabulary(tokenize(["b a c", "A b", "b d d", "c"]), min_count=2)
    # b: 3, a: 2, c: 2, d: 2 (twice in one text still counts twice); nothing else.
    assert words == ["b", "a", "c", "d"]
    assert counts == {"tokens": 9, "distinct_words": 4, "dropped_min_count": 0, "dropped_max_vocabulary": 0}


def test_min_count_and_max_vocabulary():
    # red: 4, gloss: 3, lipstick: 2, balm: 1, matte: 1.
    texts = ["red gloss lipstick", "red gloss balm", "red gloss lipstick", "red matte"]
    words, vectors, report = train_word_vectors(texts, dim=1, min_count=2, progress=False)
    assert words == ["red", "gloss", "lipstick"] and vectors.shape == (3, 1)
    assert (report.distinct_words, report.dropped_min_count, report.dropped_max_vocabulary) == (5, 2, 0)
    words, _, report = train_word_vectors(texts, dim=1, min_count=1, max_vocabulary=2, progress=False)
    assert words == ["red", "gloss"]
    assert (report.dropped_min_count, report.dropped_max_vocabulary) == (0, 3)


def test_words_without_a_shared_text_are_dropped_and_counted():
    # "balm" occurs twice, but always alone: it has no context.
    texts = ["red gloss", "red gloss lipstick", "lipstick red", "balm", "Balm!"]
    words, _, report = train_word_vectors(texts, dim=1, progress=False)
    assert words == ["red", "gloss", "lipstick"] and report.isolated_words == 1


def test_counts_take_each_distinct_word_once_and_truncate_long_texts():
    assert cooccurrence_counts([[1, 0]], 2).tolist() == [[0, 1], [1, 0]]
    # "gloss gloss red": one gloss-red pair, no gloss-gloss pair.
    _, _, report = train_word_vectors(["gloss gloss red", "red gloss", "red lipstick gloss"], dim=1,
                                      min_count=1, progress=False)
    assert report.pairs == 1 + 1 + 3
    long_text = "v w x y z " * 3
    _, _, report = train_word_vectors([long_text, "v w", "y z"], dim=1, max_words_per_text=3, progress=False)
    # The long text counts its first 3 distinct words only (v, w, x: 3 pairs).
    assert report.truncated_texts == 1 and report.pairs == 3 + 1 + 1


@pytest.mark.parametrize("row_block, pair_chunk", [(wv._ROW_BLOCK, wv._PAIR_CHUNK), (7, 5)])
def test_counts_and_ppmi_match_plain_loops_on_random_texts(monkeypatch, row_block, pair_chunk):
    """Blocked / chunked code (small blocks force several) against plain loops and formulas."""
    monkeypatch.setattr(wv, "_ROW_BLOCK", row_block)
    monkeypatch.setattr(wv, "_PAIR_CHUNK", pair_chunk)
    rng = np.random.default_rng(5)
    size = 30
    id_lists = [list(rng.choice(size, rng.integers(0, 9), replace=False)) for _ in range(200)]
    expected = np.zeros((size, size))
    for ids in id_lists:
        for i in ids:
            for j in ids:
                if i != j:
                    expected[i, j] += 1
    counts = cooccurrence_counts(id_lists, size)
    np.testing.assert_array_equal(counts, expected)
    totals = expected.sum(axis=1)
    weights = totals**0.75
    with np.errstate(divide="ignore"):
        pmi = np.log(expected * weights.sum() / np.outer(totals, weights))
    np.testing.assert_allclose(ppmi(counts), np.maximum(pmi, 0), rtol=1e-6, atol=1e-7)


def test_ppmi_hand_worked():
    # Vocabulary (count, ties alphabetical): lipstick 3, red 3, balm 1, gloss 1.
    # Texts as context windows, one count per text holding both words:
    #   #(lipstick, red) = 3; every other pair of distinct words = 1 (the first text).
    # Row sums #(w): lipstick 5, red 5, balm 3, gloss 3.
    # Context weights #(c)^0.75: 5^.75 = 3.343702, 3^.75 = 2.279507; their sum Z = 11.246418.
    #   PMI(lipstick, red)  = log(3 Z / (5 * 5^.75)) = log(2.018077)  =  0.702146
    #   PMI(lipstick, balm) = log(1 Z / (5 * 3^.75)) = log(0.986741)  = -0.013347 -> PPMI 0
    #   PMI(balm, lipstick) = log(1 Z / (3 * 5^.75)) = log(1.121155)  =  0.114359 (smoothing is on
    #     contexts only, so the matrix is not symmetric)
    #   PMI(balm, gloss)    = log(1 Z / (3 * 3^.75)) = log(1.644568)  =  0.497478
    #   Without smoothing (alpha = 1): PMI(lipstick, balm) = log(1 * 16 / (5 * 3)) = 0.064539.
    texts = ["red lipstick gloss balm", "red lipstick", "Lipstick, red"]
    words, matrix = ppmi_of(texts)
    assert words == ["lipstick", "red", "balm", "gloss"]
    z = 2 * 5**0.75 + 2 * 3**0.75
    lipstick, red, balm, gloss = range(4)
    assert matrix[lipstick, red] == pytest.approx(math.log(3 * z / (5 * 5**0.75)), rel=1e-6)
    assert matrix[lipstick, red] == pytest.approx(0.702146, abs=1e-6)
    assert matrix[lipstick, balm] == 0.0
    assert matrix[balm, lipstick] == pytest.approx(0.114359, abs=1e-6)
    assert matrix[balm, gloss] == pytest.approx(0.497478, abs=1e-6)
    assert np.all(np.diag(matrix) == 0)
    counts = cooccurrence_counts([[0, 1, 2, 3], [0, 1], [0, 1]], 4)
    assert ppmi(counts, alpha=1.0)[lipstick, balm] == pytest.approx(math.log(16 / 15), rel=1e-6)


def test_ppmi_rejects_rows_without_counts():
    with pytest.raises(ValueError, match="positive count"):
        ppmi(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def zipf_texts(num_texts=600, vocabulary=300, seed=0):
    """Random texts of Zipf-distributed words: no structure, so a flat PPMI spectrum (the hard case)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocabulary + 1)
    return [" ".join(f"w{w}" for w in rng.choice(vocabulary, rng.integers(2, 12), p=weights / weights.sum()))
            for _ in range(num_texts)]


def topic_texts(num_texts=800, seed=0):
    """12 topics of 6..28 words and different frequencies, 4 topic words + 2 Zipf noise words a text:
    a decaying spectrum, like real catalogue text."""
    rng = np.random.default_rng(seed)
    topics = [[f"t{t}w{i}" for i in range(6 + 2 * t)] for t in range(12)]
    topic_weights = np.arange(12, 0, -1) / 78.0
    noise_weights = 1.0 / np.arange(1, 101)
    texts = []
    for _ in range(num_texts):
        topic = topics[rng.choice(12, p=topic_weights)]
        noise = rng.choice(100, 2, p=noise_weights / noise_weights.sum())
        texts.append(" ".join([*rng.choice(topic, 4, replace=False), *(f"n{w}" for w in noise)]))
    return texts


@pytest.mark.parametrize("corpus, power_iterations", [(topic_texts, wv.DEFAULT_POWER_ITERATIONS), (zipf_texts, 10)])
def test_randomized_svd_matches_full_svd(corpus, power_iterations):
    _, matrix = ppmi_of(corpus(), min_count=2)  # [V, V] float32, V ~ 270
    rank = 10
    u, s, vt = randomized_svd(matrix, rank, seed=0, power_iterations=power_iterations)
    full_u, full_s, _ = np.linalg.svd(matrix.astype(np.float64))
    assert u.shape == (len(matrix), rank) and s.shape == (rank,) and vt.shape == (rank, len(matrix))
    np.testing.assert_allclose(s, full_s[:rank], rtol=1e-3)
    # Orthonormal factors, and a rank-k residual as small as the optimal one (Eckart-Young).
    np.testing.assert_allclose(u.T @ u, np.eye(rank), atol=1e-6)
    np.testing.assert_allclose(vt @ vt.T, np.eye(rank), atol=1e-6)
    residual = np.linalg.norm(matrix - (u * s) @ vt)
    optimal = np.sqrt((full_s[rank:] ** 2).sum())
    assert residual == pytest.approx(optimal, rel=1e-4)
    # The leading singular vector (well separated in both corpora), up to sign.
    assert abs(u[:, 0] @ full_u[:, 0]) > 0.9999


def test_vectors_are_u_times_sqrt_s_of_the_corpus_ppmi():
    """End to end: vectors W = U_k sqrt(S_k) of the corpus PPMI, so W^T W = S_k and W W^T = U_k S_k U_k^T
    (both free of the sign of each singular vector)."""
    texts = topic_texts()
    words, vectors, _ = train_word_vectors(texts, dim=8, progress=False)
    ppmi_words, matrix = ppmi_of(texts, min_count=2)
    assert words == ppmi_words
    full_u, full_s, _ = np.linalg.svd(matrix.astype(np.float64))
    gram = vectors.astype(np.float64).T @ vectors
    np.testing.assert_allclose(gram, np.diag(full_s[:8]), rtol=1e-3, atol=1e-3)
    expected = (full_u[:, :8] * full_s[:8]) @ full_u[:, :8].T
    np.testing.assert_allclose(vectors.astype(np.float64) @ vectors.T, expected, atol=1e-3 * full_s[0])


def test_randomized_svd_few_power_iterations_are_less_exact():
    """The power iterations matter: with none, the tail values are visibly off (the test can fail)."""
    _, matrix = ppmi_of(zipf_texts(), min_count=2)
    full_s = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    _, rough, _ = randomized_svd(matrix, 10, seed=0, oversample=2, power_iterations=0)
    assert np.max(np.abs(rough - full_s[:10]) / full_s[:10]) > 1e-2


def test_dim_must_be_below_vocabulary_size():
    with pytest.raises(ValueError, match=r"dim=3 .* vocabulary size 3"):
        train_word_vectors(["red gloss lipstick", "red gloss lipstick"], dim=3, progress=False)


def test_no_words_left_is_an_error():
    with pytest.raises(ValueError, match="no words left"):
        train_word_vectors(["red gloss", "lipstick balm"], dim=1, min_count=2, progress=False)


@pytest.mark.parametrize("argument", [{"dim": 0}, {"min_count": 0}, {"max_vocabulary": 1}, {"dim": 2.5},
                                      {"max_words_per_text": 1}, {"power_iterations": -1}])
def test_bad_arguments_are_named(argument):
    name = next(iter(argument))
    with pytest.raises(ValueError, match=name):
        train_word_vectors(planted_corpus(), progress=False, **argument)


# ---------------------------------------------------------------- write_glove


@pytest.mark.parametrize("name", ["vectors.txt", "vectors.txt.gz"])
def test_write_glove_round_trips_through_load_word_vectors(tmp_path, name):
    words, vectors, _ = train_word_vectors(planted_corpus(), dim=4, progress=False)
    vectors[0, 0] = 1.2345678e-7  # a tiny and a large value keep their relative precision
    vectors[1, 1] = -98765.4321
    path = write_glove(tmp_path / "sub" / name, words, vectors)
    loaded = load_word_vectors(path, dim=4)
    assert list(loaded.index) == words and loaded.skipped_lines == 0
    np.testing.assert_allclose(loaded.vectors, vectors, rtol=1e-5, atol=0)
    assert os.listdir(tmp_path / "sub") == [name]  # no temporary file left


def test_write_glove_replaces_atomically_and_rejects_bad_input(tmp_path):
    path = tmp_path / "vectors.txt"
    write_glove(path, ["red", "gloss"], np.ones((2, 3)))
    write_glove(path, ["balm"], np.full((1, 3), 2.0))
    assert path.read_text() == "balm 2 2 2\n"
    for words, vectors in [(["two words"], np.ones((1, 3))), (["red", "red"], np.ones((2, 3))),
                           (["red"], np.full((1, 3), np.nan)), (["red", "gloss"], np.ones((1, 3)))]:
        with pytest.raises(ValueError, match="write_glove"):
            write_glove(path, words, vectors)
    assert path.read_text() == "balm 2 2 2\n" and os.listdir(tmp_path) == ["vectors.txt"]
    (tmp_path / "plain.txt").write_text("")  # the file gets the usual permissions (umask), not 0600
    assert path.stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


# ---------------------------------------------------------------- command line


def run(argv, capsys):
    status = run_main(wv.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def items_csv(tmp_path):
    texts = planted_corpus(120)
    frame = pd.DataFrame({
        "item_id": [f"i{n}" for n in range(len(texts))],
        "title": [" ".join(t.split()[:3]) for t in texts],
        "description": [" ".join(t.split()[3:]) for t in texts],
    })
    path = tmp_path / "items.csv"
    frame.to_csv(path, index=False)
    return path, texts


def test_cli_on_a_csv_with_two_columns(items_csv, tmp_path, capsys):
    path, texts = items_csv
    out = tmp_path / "vectors.txt"
    status, stdout, _ = run(["--texts", path, "--columns", "title, description", "--dim", "4", "--out", out],
                            capsys)
    assert status == 0
    assert f"Word vectors written to {out}" in stdout and "--glove" in stdout and "vocabulary: 28 words" in stdout
    loaded = load_word_vectors(out, dim=4)
    assert sorted(loaded.index) == sorted(TOPIC_A + TOPIC_B + NOISE)
    # Title and description joined give the tokens of the original texts, hence the same vectors.
    words, vectors, _ = train_word_vectors(texts, dim=4, progress=False)
    np.testing.assert_allclose(loaded.vectors[[loaded.index[w] for w in words]], vectors, rtol=1e-5, atol=1e-6)
    # They feed the text modality: every item text has known words.
    _, present, _ = text_features(texts, loaded, progress=False)
    assert present.all()


def test_cli_on_a_dataset_directory(tmp_path, capsys):
    texts = planted_corpus(60)
    items = pd.DataFrame({
        "item_index": np.arange(1, 61, dtype="int32"),
        "item_id": [f"a{n}" for n in range(60)],  # ids that are also topic words: must not be read
        "title": texts,
        "brand": ["N1 n2"] * 60,
    })
    interactions = pd.DataFrame({"user_id": ["u1", "u1"], "item_index": [1, 2], "timestamp": [1, 2]})
    dataset = write_dataset(tmp_path / "ds", name="tiny", items=items, interactions=interactions)
    out = tmp_path / "vectors.txt"
    status, _, _ = run(["--dataset", dataset, "--dim", "4", "--out", out], capsys)
    assert status == 0
    loaded = load_word_vectors(out)
    # Default columns: title and brand (every text column but item_id).
    joined = [f"{t}. N1 n2" for t in texts]
    words, vectors, _ = train_word_vectors(joined, dim=4, progress=False)
    assert list(loaded.index) == words
    np.testing.assert_allclose(loaded.vectors, vectors, rtol=1e-5, atol=1e-6)
    status, _, _ = run(["--dataset", dataset, "--columns", "title", "--dim", "4", "--out", out, "--overwrite"],
                       capsys)
    assert status == 0
    assert list(load_word_vectors(out).index) == train_word_vectors(texts, dim=4, progress=False)[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--texts", "{tmp}/missing.csv"], "does not exist"),
        (["--dataset", "{tmp}"], "items.parquet does not exist"),
        (["--texts", "{csv}", "--columns", "name"], "no text column ['name']"),
        (["--texts", "{csv}"], "dim=100 must be smaller than the vocabulary size"),
        (["--texts", "{csv}", "--min-count", "1000"], "no words left"),
        (["--texts", "{csv}", "--dim", "0"], "`dim` must be an integer >= 1"),
        (["--texts", "{tmp}/items.json"], "expected a .csv, .tsv or .parquet"),
    ],
)
def test_cli_errors_are_one_line_and_status_2(items_csv, tmp_path, capsys, args, message):
    (tmp_path / "items.json").write_text("{}")
    argv = [a.format(tmp=tmp_path, csv=items_csv[0]) for a in args] + ["--out", tmp_path / "vectors.txt"]
    status, _, err = run(argv, capsys)
    assert status == 2 and message in one_error_line(err)
    assert not (tmp_path / "vectors.txt").exists()


def test_cli_refuses_to_overwrite_without_the_flag(items_csv, tmp_path, capsys):
    out = tmp_path / "vectors.txt"
    out.write_text("keep me\n")
    status, _, err = run(["--texts", items_csv[0], "--dim", "4", "--out", out], capsys)
    assert status == 2 and "--overwrite" in one_error_line(err) and out.read_text() == "keep me\n"


def test_help_runs_as_a_module_and_states_defaults():
    result = subprocess.run([sys.executable, "-m", "pipelines.word_vectors", "--help"], cwd=REPO,
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    for option, default in [("--dim", 100), ("--min-count", 2), ("--max-vocabulary", 20000), ("--seed", 0),
                            ("--max-words-per-text", 200)]:
        assert option in help_text and f"(default: {default})" in help_text
    for option in ("--texts", "--dataset", "--columns", "--out", "--overwrite"):
        assert option in help_text


# ---------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_amazon_beauty_titles():
    """100-d vectors from the 12k Amazon 2014 Beauty titles: obvious pairs are close."""
    items_csv = BEAUTY / "items.csv"
    if not items_csv.is_file():
        pytest.skip(f"real data not found at {BEAUTY}")
    titles = pd.read_csv(items_csv, dtype=str, keep_default_na=False)["title"].tolist()
    started = time.perf_counter()
    words, vectors, report = train_word_vectors(titles, dim=100, progress=False)
    print(f"\ntrained on {len(titles)} titles in {time.perf_counter() - started:.1f} s\n{report.summary()}")
    assert report.vocabulary > 1000 and vectors.shape == (report.vocabulary, 100)
    unit = unit_rows(vectors)
    index = {word: i for i, word in enumerate(words)}
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(words), (2, 20000))
    keep = first != second
    median = np.median((unit[first[keep]] * unit[second[keep]]).sum(axis=1))
    for a, b in [("shampoo", "conditioner"), ("nail", "polish"), ("eye", "shadow"), ("lip", "gloss")]:
        cosine = float(unit[index[a]] @ unit[index[b]])
        assert cosine > median + 0.3, (a, b, cosine, median)
    for word in ("shampoo", "lipstick"):
        similarity = unit @ unit[index[word]]
        neighbours = [words[i] for i in np.argsort(-similarity)[1:6]]
        print(f"nearest to {word}: {neighbours}")
    shampoo_neighbours = [words[i] for i in np.argsort(-(unit @ unit[index["shampoo"]]))[1:6]]
    assert "conditioner" in shampoo_neighbours
