"""Tests for pipelines/text_features.py: GloVe reading, tokenization, TF-IDF-weighted mean vectors."""

import gzip
import logging
import math

import numpy as np
import pytest

from pipelines import text_features as tfeat
from pipelines.text_features import (
    TextFeatureReport,
    WordVectors,
    load_word_vectors,
    strip_html,
    text_features,
    tokenize,
)

# 4-d vectors, deliberately not orthogonal, so a wrong weight or a swapped word shows up.
GLOVE = {
    "red": [1.0, 0.0, 0.0, 2.0],
    "lipstick": [0.0, 1.0, 0.0, -1.0],
    "gloss": [0.0, 0.0, 1.0, 0.5],
    "balm": [0.5, 0.5, 0.5, 0.5],
}


def write_glove(path, entries=GLOVE, extra_lines=()):
    lines = [word + " " + " ".join(f"{v:g}" for v in values) for word, values in entries.items()]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def glove_file(tmp_path):
    return write_glove(tmp_path / "glove.4d.txt")


@pytest.fixture
def word_vectors(glove_file):
    return load_word_vectors(glove_file, dim=4)


# ---------------------------------------------------------------- load_word_vectors


def test_load_word_vectors_reads_words_and_values(glove_file):
    wv = load_word_vectors(glove_file)
    assert wv.dim == 4 and len(wv) == 4
    assert wv.vectors.dtype == np.float32 and wv.vectors.shape == (4, 4)
    for word, values in GLOVE.items():
        np.testing.assert_array_equal(wv.vectors[wv.index[word]], values)
    assert wv.skipped_lines == 0 and wv.duplicate_words == 0
    assert wv.path == str(glove_file)


def test_load_word_vectors_reads_gzip(tmp_path, glove_file):
    gz = tmp_path / "glove.4d.txt.gz"
    gz.write_bytes(gzip.compress(glove_file.read_bytes()))
    wv = load_word_vectors(gz, dim=4)
    np.testing.assert_array_equal(wv.vectors[wv.index["gloss"]], GLOVE["gloss"])


def test_load_word_vectors_counts_and_logs_malformed_lines(tmp_path, caplog):
    path = write_glove(
        tmp_path / "bad.txt",
        extra_lines=[
            "short 1 2 3",  # line 5: 3 values
            "long 1 2 3 4 5",  # line 6: 5 values
            "text 1 2 x 4",  # line 7: non-numeric
            "nan 1 nan 3 4",  # line 8: NaN value (the word "nan" itself is fine)
            "inf 1 2 inf 4",  # line 9: infinite value
            "red 9 9 9 9",  # line 10: duplicate, first kept
            "",  # blank: ignored, not counted
            "nan 1 2 3 4",  # line 12: the word "nan" with valid values
        ],
    )
    with open(path, "ab") as file:
        file.write(b"\xff\xfe 1 2 3 4\n")  # line 13: invalid UTF-8
    with caplog.at_level(logging.WARNING, logger="pipelines.text_features"):
        wv = load_word_vectors(path, dim=4)
    assert wv.skipped_lines == 7  # 6 malformed + 1 duplicate
    assert wv.duplicate_words == 1
    assert sorted(wv.index) == ["balm", "gloss", "lipstick", "nan", "red"]
    np.testing.assert_array_equal(wv.vectors[wv.index["red"]], GLOVE["red"])
    np.testing.assert_array_equal(wv.vectors[wv.index["nan"]], [1, 2, 3, 4])
    logged = caplog.text
    # The first five malformed lines are logged as path:line, in line order.
    for lineno in (5, 6, 7, 8, 9):
        assert f"{path}:{lineno}:" in logged
    assert f"{path}:13:" not in logged
    assert "6 malformed, 1 duplicate" in logged


def test_load_word_vectors_dim_mismatch_names_file_and_dims(glove_file):
    with pytest.raises(ValueError, match=r"glove\.4d\.txt.*dim 4.*dim=100"):
        load_word_vectors(glove_file, dim=100)


def test_load_word_vectors_width_is_the_most_common_one(tmp_path):
    # A truncated first line must not decide the width.
    path = tmp_path / "g.txt"
    path.write_text("first 1 2\nred 1 2 3 4\nbalm 5 6 7 8\n", encoding="utf-8")
    wv = load_word_vectors(path)
    assert wv.dim == 4 and sorted(wv.index) == ["balm", "red"] and wv.skipped_lines == 1


def test_load_word_vectors_skips_word2vec_header(tmp_path):
    path = write_glove(tmp_path / "w2v.txt")
    path.write_text("4 4\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    wv = load_word_vectors(path, dim=4)
    assert len(wv) == 4 and wv.skipped_lines == 0


def test_load_word_vectors_empty_file_raises(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt.*is empty"):
        load_word_vectors(path)


def test_load_word_vectors_without_valid_line_raises(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_text("hello world\nfoo 1 bar\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"junk\.txt.*no valid.*2 malformed"):
        load_word_vectors(path)


def test_load_word_vectors_rejects_bad_dim(glove_file):
    with pytest.raises(ValueError, match="dim"):
        load_word_vectors(glove_file, dim=0)


def test_word_vectors_checks_shapes():
    with pytest.raises(ValueError, match=r"shape \[V, dim=3\]"):
        WordVectors(index={"a": 0}, vectors=np.zeros((1, 4)), dim=3)
    with pytest.raises(ValueError, match="rows"):
        WordVectors(index={"a": 1}, vectors=np.zeros((1, 4)), dim=4)


# ---------------------------------------------------------------- tokenize


def test_tokenize_case_folds_and_drops_punctuation():
    assert tokenize(["Lipstick, LIPSTICK! lipstick...", "ＲＥＤ Straße"]) == [
        ["lipstick", "lipstick", "lipstick"],
        ["red", "strasse"],
    ]


def test_tokenize_keeps_letters_with_digits_and_splits_at_punctuation():
    assert tokenize(["SPF15 mp3 anti-aging (x2) don't 12.5"]) == [
        ["spf15", "mp3", "anti", "aging", "x2", "don", "t", "12", "5"]
    ]


def test_tokenize_strips_html_and_unescapes_entities():
    texts = [
        "<p>Red&nbsp;<b>Lipstick</b></p><br/>Gloss &amp; Balm",
        "<div class='x'>Matte</div><script>var a = 1;</script><!-- hidden comment -->",
        "Caf&eacute; &amp;quot;Nude&amp;quot; &lt;br&gt;Shine",
        "size < 5",
    ]
    assert tokenize(texts) == [
        ["red", "lipstick", "gloss", "balm"],
        ["matte"],
        ["café", "nude", "shine"],
        ["size", "5"],
    ]


def test_strip_html_replaces_tags_by_space():
    assert strip_html("a<br>b</p>c") == "a b c"
    assert strip_html("x &lt; y") == "x < y"


def test_tokenize_empty_inputs_give_no_tokens():
    assert tokenize([None, float("nan"), np.nan, "", "   ", "!!! ...", b"Gloss"]) == [
        [], [], [], [], [], [], ["gloss"]
    ]


def test_tokenize_batches_keep_order():
    texts = [f"word{i} Extra" if i % 3 else None for i in range(10)]
    expected = [[f"word{i}", "extra"] if i % 3 else [] for i in range(10)]
    assert tokenize(texts, batch_size=3) == expected
    assert tokenize(texts, batch_size=4096) == expected


def test_tokenize_rejects_non_text_entries():
    with pytest.raises(TypeError, match=r"texts\[1\].*list"):
        tokenize(["ok", ["a", "list"]])
    with pytest.raises(TypeError, match="single string"):
        tokenize("just one string")
    with pytest.raises(ValueError, match="batch_size"):
        tokenize(["a"], batch_size=0)


# ---------------------------------------------------------------- text_features


def test_text_features_hand_worked_tfidf(word_vectors):
    texts = [
        "Red lipstick, RED",  # red x2, lipstick x1
        "<b>Lipstick</b> gloss zzz",  # lipstick, gloss, OOV zzz
        None,  # empty
        "qqq!!",  # only an OOV word
    ]
    features, present, report = text_features(texts, word_vectors, progress=False)

    # n = 4; df(red) = 1, df(lipstick) = 2, df(gloss) = 1 (OOV words carry no weight).
    idf_red = math.log(5 / 2) + 1  # 1.9163
    idf_lipstick = math.log(5 / 3) + 1  # 1.5108
    idf_gloss = math.log(5 / 2) + 1
    red, lipstick, gloss = (np.array(GLOVE[w]) for w in ("red", "lipstick", "gloss"))
    expected_0 = (2 * idf_red * red + idf_lipstick * lipstick) / (2 * idf_red + idf_lipstick)
    expected_1 = (idf_lipstick * lipstick + idf_gloss * gloss) / (idf_lipstick + idf_gloss)
    # Numbers by hand for row 0: weights 3.8326 and 1.5108 over 5.3434.
    np.testing.assert_allclose(expected_0, [0.717254, 0.282746, 0.0, 1.151763], atol=1e-6)

    assert features.dtype == np.float32 and features.shape == (4, 4)
    np.testing.assert_allclose(features[0], expected_0, rtol=1e-6)
    np.testing.assert_allclose(features[1], expected_1, rtol=1e-6)
    np.testing.assert_array_equal(features[2:], 0.0)
    assert present.dtype == bool and present.tolist() == [True, True, False, False]

    assert report == TextFeatureReport(
        texts=4,
        empty_texts=1,
        no_known_words=1,
        tokens=7,
        oov_tokens=2,
        vocabulary_types=5,
        oov_types=2,
        top_oov=[("zzz", 1), ("qqq", 1)],
    )
    assert report.present == 2


def test_text_features_tfidf_is_not_a_plain_mean(word_vectors):
    # "balm" appears in every text (low idf) and twice in the first: a plain mean gives it 2/3.
    features, _, _ = text_features(["balm balm red", "balm", "balm gloss"], word_vectors, progress=False)
    idf_balm, idf_red = math.log(4 / 4) + 1, math.log(4 / 2) + 1
    expected = (2 * idf_balm * np.array(GLOVE["balm"]) + idf_red * np.array(GLOVE["red"])) / (
        2 * idf_balm + idf_red
    )
    np.testing.assert_allclose(features[0], expected, rtol=1e-6)
    plain_mean = (2 * np.array(GLOVE["balm"]) + np.array(GLOVE["red"])) / 3
    assert not np.allclose(features[0], plain_mean, atol=1e-3)
    np.testing.assert_allclose(features[1], GLOVE["balm"], rtol=1e-6)


def test_text_features_case_folding_makes_one_word(word_vectors):
    features, present, report = text_features(
        ["Lipstick", "lipstick", "LIPSTICK"], word_vectors, progress=False
    )
    np.testing.assert_allclose(features, np.tile(GLOVE["lipstick"], (3, 1)), rtol=1e-6)
    assert present.all() and report.vocabulary_types == 1 and report.oov_tokens == 0


def naive_features(texts_tokens, wv):
    """Per-text reference of the TF-IDF mean, written with Python loops."""
    n = len(texts_tokens)
    known = [[t for t in tokens if t in wv.index] for tokens in texts_tokens]
    df = {}
    for tokens in known:
        for word in set(tokens):
            df[word] = df.get(word, 0) + 1
    out = np.zeros((n, wv.dim))
    for i, tokens in enumerate(known):
        if not tokens:
            continue
        num, den = np.zeros(wv.dim), 0.0
        for word in set(tokens):
            weight = tokens.count(word) * (math.log((1 + n) / (1 + df[word])) + 1)
            num += weight * wv.vectors[wv.index[word]]
            den += weight
        out[i] = num / den
    return out


def test_text_features_match_a_loop_reference_across_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(40)]
    wv = WordVectors(
        index={w: i for i, w in enumerate(vocab)},
        vectors=rng.normal(size=(40, 6)).astype("float32"),
        dim=6,
    )
    texts = []
    for _ in range(300):
        length = rng.integers(0, 12)
        words = [f"w{k}" if k < 40 else f"oov{k}" for k in rng.zipf(1.5, size=length) - 1]
        texts.append(" ".join(words) if length else None)
    # Tiny chunks and batches: texts split across weighted-sum chunks and tokenizer batches.
    monkeypatch.setattr(tfeat, "_PAIR_CHUNK", 7)
    features, present, report = text_features(texts, wv, progress=False, batch_size=17)
    expected = naive_features(tokenize(texts), wv)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(present, np.abs(expected).sum(axis=1) > 0)
    assert report.empty_texts == sum(t is None for t in texts)
    assert report.tokens == sum(len(t.split()) for t in texts if t)


def test_text_features_all_empty(word_vectors):
    features, present, report = text_features([None, ""], word_vectors, progress=False)
    assert features.shape == (2, 4) and not features.any() and not present.any()
    assert report.empty_texts == 2 and report.tokens == 0 and report.vocabulary_types == 0


def test_text_features_summary_and_progress(word_vectors, capsys):
    _, _, report = text_features(["red zzz zzz", "", "gloss"], word_vectors, progress=True)
    assert "3/3" in capsys.readouterr().out  # the progress bar ran to the end
    summary = report.summary()
    assert summary.splitlines()[0] == "texts: 3 (2 with features, 1 empty, 0 without known words)"
    assert "tokens: 4 (2 out of vocabulary, 50.0%)" in summary
    assert "zzz (2)" in summary


def test_text_features_rejects_wrong_word_vectors():
    with pytest.raises(TypeError, match="WordVectors"):
        text_features(["a"], {"a": [1.0]}, progress=False)
