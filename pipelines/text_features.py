"""Item text features: the TF-IDF-weighted mean of word vectors over an item's text.

The paper represents an item's text by the TF-IDF-weighted mean of its GloVe-100 word vectors. This
module turns item texts into that feature matrix, offline (tensorflow-text is used here only; it
never enters a served graph, see docs/stack.md#tensorflow-text-stays-out-of-served-graphs):

1. `load_word_vectors` reads a GloVe-format text file (`word v1 ... vd` a line).
2. `tokenize` cleans each text (HTML tags stripped, entities unescaped), NFKC-normalises and
   case-folds it, and splits it into runs of letters and digits with `tensorflow_text.RegexSplitter`.
3. `text_features` weights each in-vocabulary token by TF-IDF over the item corpus and averages the
   word vectors:

       tf(w, i)   = count of token w in text i
       idf(w)     = log((1 + n) / (1 + df(w))) + 1        (smooth idf, as scikit-learn's default)
       x_i        = sum_w tf(w, i) idf(w) v_w / sum_w tf(w, i) idf(w)

   where n is the number of texts, df(w) the number of texts containing w, and the sums run over
   the in-vocabulary tokens of text i only. A text without any in-vocabulary token gets a zero
   vector and `present=False`, and is counted in the report.

Example (a two-word vocabulary):

>>> import numpy as np
>>> vectors = WordVectors(index={"red": 0, "lipstick": 1},
...                       vectors=np.array([[1, 0], [0, 1]], "float32"), dim=2)
>>> features, present, report = text_features(["Red <b>lipstick</b>", None], vectors,
...                                           progress=False)
>>> features.round(3).tolist(), present.tolist()
([[0.5, 0.5], [0.0, 0.0]], [True, False])
>>> report.empty_texts
1
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_text as tf_text

from pipelines.text_cleaning import strip_html

logger = logging.getLogger("pipelines.text_features")

# How many malformed lines / problems are logged one by one before only the count is reported.
_MAX_LOGGED = 5
# Texts per tokenizer call: bounds the size of one string tensor.
DEFAULT_BATCH_SIZE = 4096
# (text, word) pairs per weighted-sum step: bounds the [pairs, d] float64 temporary (~50 MB at d=100).
_PAIR_CHUNK = 65536

# HTML comments, <script>/<style> elements with their content, and any start/end tag. A tag must
# start with a letter after `<` (or `</`), so plain-text comparisons such as "size < 5" survive.
# Token delimiters: runs of anything but letters, digits and combining marks (RE2 syntax).
_TOKEN_DELIMITERS = r"[^\pL\pN\pM]+"


@dataclasses.dataclass
class WordVectors:
    """Word vectors read from a GloVe-format file.

    Attributes:
        index: word -> row of `vectors`.
        vectors: float32 array `[V, dim]`; row `index[w]` is the vector of `w`.
        dim: vector width.
        skipped_lines: lines that gave no vector: malformed lines (wrong number of values,
            non-numeric / NaN / infinite values, invalid UTF-8) plus duplicate words.
        duplicate_words: how many of `skipped_lines` repeated an earlier word (the first is kept).
        path: the file read ("" when built in memory).
    """

    index: dict[str, int]
    vectors: np.ndarray
    dim: int
    skipped_lines: int = 0
    duplicate_words: int = 0
    path: str = ""

    def __post_init__(self):
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            raise ValueError(
                f"WordVectors: `vectors` must have shape [V, dim={self.dim}], "
                f"received shape {self.vectors.shape}"
            )
        if self.index and not 0 <= min(self.index.values()) <= max(self.index.values()) < len(
            self.vectors
        ):
            raise ValueError(
                f"WordVectors: `index` rows must lie in [0, {len(self.vectors)}), received rows "
                f"{min(self.index.values())}..{max(self.index.values())}"
            )

    def __len__(self):
        return len(self.index)


def load_word_vectors(path: str | os.PathLike, dim: int | None = None) -> WordVectors:
    """Reads word vectors in GloVe text format: `word v1 v2 ... vd`, one word a line.

    The file is UTF-8 text, gzip-compressed if its name ends in `.gz`. Fields are separated by single
    spaces (the word is everything before the first space). The vector width is the most common
    number of values among the numeric lines; lines with another width, non-numeric, NaN or
    infinite values, or invalid UTF-8 are skipped, counted, and the first few logged as `path:line`.
    Blank lines and a word2vec-style header (`count dim` on line 1) are skipped without counting.
    A repeated word keeps its first vector; the repeats are counted.

    Words are stored as they appear in the file. `tokenize` case-folds texts, so use an uncased
    vector file (glove.6B.*) or expect capitalised entries of cased files to go unused.

    Args:
        path: the GloVe file (`.txt` or `.txt.gz`).
        dim: expected vector width, or None to take the file's width.

    Returns:
        A `WordVectors`.

    Raises:
        ValueError: the file is empty, has no valid line, or its width differs from `dim`.
    """
    path = os.fspath(path)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"load_word_vectors: `dim` must be a positive integer or None, received {dim!r}")
    opener = gzip.open if path.endswith(".gz") else open

    rows: list[tuple[int, str, np.ndarray]] = []  # (line number, word, values)
    width_counts: Counter[int] = Counter()
    # The first few (line number, reason) of each pass, merged for the log.
    parse_problems: list[tuple[int, str]] = []
    width_problems: list[tuple[int, str]] = []
    malformed = 0
    lines_seen = 0

    def reject(problems, lineno, reason):
        nonlocal malformed
        malformed += 1
        if len(problems) < _MAX_LOGGED:
            problems.append((lineno, reason))

    with opener(path, "rb") as file:
        for lineno, raw in enumerate(file, start=1):
            lines_seen += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                reject(parse_problems, lineno, f"invalid UTF-8 ({err.reason})")
                continue
            line = line.rstrip("\r\n").rstrip(" ")
            if not line.strip():
                continue
            parts = line.split(" ")
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                logger.debug("%s:1: skipping word2vec header %r", path, line)
                continue
            if len(parts) < 2 or not parts[0]:
                reject(parse_problems, lineno, "no word or no values")
                continue
            try:
                values = np.array(parts[1:], dtype=np.float32)
            except ValueError:
                reject(parse_problems, lineno, "non-numeric value")
                continue
            if not np.isfinite(values).all():
                reject(parse_problems, lineno, "NaN or infinite value")
                continue
            rows.append((lineno, parts[0], values))
            width_counts[len(values)] += 1

    if lines_seen == 0:
        raise ValueError(f"load_word_vectors: word-vector file {path!r} is empty")
    if not rows:
        raise ValueError(
            f"load_word_vectors: word-vector file {path!r} has no valid `word v1 ... vd` line "
            f"({malformed} malformed)"
        )
    width = width_counts.most_common(1)[0][0]
    if dim is not None and width != dim:
        raise ValueError(
            f"load_word_vectors: word-vector file {path!r} has vectors of dim {width}, "
            f"but dim={dim} was requested"
        )

    index: dict[str, int] = {}
    kept: list[np.ndarray] = []
    duplicates = 0
    for lineno, word, values in rows:
        if len(values) != width:
            reject(width_problems, lineno, f"{len(values)} values, expected {width}")
        elif word in index:
            duplicates += 1
            logger.debug("%s:%d: duplicate word %r ignored (first kept)", path, lineno, word)
        else:
            index[word] = len(kept)
            kept.append(values)
    vectors = np.stack(kept)  # [V, width]

    for lineno, reason in sorted(parse_problems + width_problems)[:_MAX_LOGGED]:
        logger.warning("%s:%d: malformed word-vector line skipped: %s", path, lineno, reason)
    if malformed or duplicates:
        logger.warning(
            "%s: skipped %d lines (%d malformed, %d duplicate words)",
            path, malformed + duplicates, malformed, duplicates,
        )
    logger.info("Loaded %d word vectors of dim %d from %s", len(index), width, path)
    return WordVectors(
        index=index,
        vectors=vectors,
        dim=width,
        skipped_lines=malformed + duplicates,
        duplicate_words=duplicates,
        path=path,
    )


def _as_text(value, position: int) -> str:
    """One input text as `str`; None / NaN / pandas NA become ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    raise TypeError(
        f"texts[{position}] must be a str, bytes, None or NaN, received {type(value).__name__}; "
        "join list fields (e.g. Amazon 2018 `description`) into one string first"
    )


def tokenize(
    texts: Iterable, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
) -> list[list[str]]:
    """Splits texts into lower-cased word tokens with tensorflow-text.

    Per text: `strip_html`, then `tensorflow_text.case_fold_utf8` (NFKC normalisation + Unicode case
    folding: "Lipstick" and "ＬＩＰＳＴＩＣＫ" both give "lipstick"), then
    `tensorflow_text.RegexSplitter` at every run of characters that are not letters, digits or
    combining marks. Tokens are thus maximal runs of letters and digits: punctuation and whitespace
    are dropped, letters and digits stay together ("mp3", "spf15", "50ml"), and words joined by
    punctuation split ("e-mail" -> "e", "mail"; "don't" -> "don", "t"; "12.5" -> "12", "5").
    (`UnicodeScriptTokenizer` was not chosen: it splits "mp3" into "mp", "3".) Texts go through
    TensorFlow `batch_size` at a time.

    Args:
        texts: a sequence of str (bytes are read as UTF-8); None, NaN or "" give no tokens.
        batch_size: texts per tokenizer call.
        progress: show a `keras.utils.Progbar` over the texts.

    Returns:
        One list of tokens per text, in order.

    >>> tokenize(["Lipstick, RED!", None, "<p>Gloss &amp; balm</p>"])
    [['lipstick', 'red'], [], ['gloss', 'balm']]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"tokenize: `batch_size` must be a positive integer, received {batch_size!r}")
    if isinstance(texts, (str, bytes)):
        raise TypeError("tokenize: `texts` must be a sequence of texts, received a single string")
    cleaned = [strip_html(_as_text(value, i)) for i, value in enumerate(texts)]
    splitter = tf_text.RegexSplitter(_TOKEN_DELIMITERS)
    bar = keras.utils.Progbar(len(cleaned), unit_name="text") if progress else None
    result: list[list[str]] = []
    for start in range(0, len(cleaned), batch_size):
        batch = tf.constant(cleaned[start : start + batch_size], dtype=tf.string)  # [b]
        folded = tf_text.case_fold_utf8(batch)  # [b]
        tokens = splitter.split(folded)  # [b, (tokens)] ragged
        # A run of combining marks alone (after a space) holds no letter or digit: drop it.
        keep = tf.strings.regex_full_match(tokens.flat_values, r".*[\pL\pN].*")  # [all tokens]
        tokens = tf.ragged.boolean_mask(tokens, tokens.with_flat_values(keep))  # [b, (kept)]
        words = [word.decode("utf-8") for word in tokens.flat_values.numpy().tolist()]
        splits = tokens.row_splits.numpy().tolist()
        result.extend(words[splits[i] : splits[i + 1]] for i in range(len(splits) - 1))
        if bar is not None:
            bar.update(len(result))
    return result


@dataclasses.dataclass
class TextFeatureReport:
    """Counts from one `text_features` run.

    Attributes:
        texts: number of texts (items).
        empty_texts: texts without any token (None, NaN, blank, or only markup / punctuation).
        no_known_words: texts with tokens, none of them in the word vectors.
        tokens: tokens over all texts.
        oov_tokens: tokens without a word vector.
        vocabulary_types: distinct tokens over all texts.
        oov_types: distinct tokens without a word vector.
        top_oov: the most frequent out-of-vocabulary tokens with their counts (at most 10).
    """

    texts: int
    empty_texts: int
    no_known_words: int
    tokens: int
    oov_tokens: int
    vocabulary_types: int
    oov_types: int
    top_oov: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def present(self) -> int:
        """Texts that got a feature vector."""
        return self.texts - self.empty_texts - self.no_known_words

    def summary(self) -> str:
        """A short multi-line, human-readable account of the run."""

        def share(part, whole):
            return f"{100.0 * part / whole:.1f}%" if whole else "n/a"

        lines = [
            f"texts: {self.texts} ({self.present} with features, {self.empty_texts} empty, "
            f"{self.no_known_words} without known words)",
            f"tokens: {self.tokens} ({self.oov_tokens} out of vocabulary, "
            f"{share(self.oov_tokens, self.tokens)})",
            f"distinct tokens: {self.vocabulary_types} ({self.oov_types} out of vocabulary, "
            f"{share(self.oov_types, self.vocabulary_types)})",
        ]
        if self.top_oov:
            lines.append(
                "most frequent out-of-vocabulary tokens: "
                + ", ".join(f"{word} ({count})" for word, count in self.top_oov)
            )
        return "\n".join(lines)


def text_features(
    texts: Sequence,
    word_vectors: WordVectors,
    *,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray, TextFeatureReport]:
    """TF-IDF-weighted mean word vector of each text (the paper's text modality).

        x_i = sum_w tf(w, i) idf(w) v_w / sum_w tf(w, i) idf(w),
        idf(w) = log((1 + n) / (1 + df(w))) + 1

    over the in-vocabulary tokens w of text i (`tokenize`); tf(w, i) counts w in text i, df(w)
    counts the texts containing w, n = len(texts). The idf is computed over the texts given (the
    item corpus), so pass all items at once. Out-of-vocabulary tokens get no weight and do not
    dilute the mean. Computed with NumPy in float64 (bincount over (text, word) pairs, no sparse
    matrices), returned as float32.

    Args:
        texts: one text per item (str, bytes, None or NaN).
        word_vectors: from `load_word_vectors`.
        progress: show a `keras.utils.Progbar` while tokenizing.
        batch_size: texts per tokenizer call.

    Returns:
        features: float32 `[n, d]`; zero rows where `present` is False.
        present: bool `[n]`; False for texts without any in-vocabulary token.
        report: a `TextFeatureReport` (also logged).
    """
    if not isinstance(word_vectors, WordVectors):
        raise TypeError(
            "text_features: `word_vectors` must be a WordVectors (see load_word_vectors), "
            f"received {type(word_vectors).__name__}"
        )
    tokens = tokenize(texts, batch_size=batch_size, progress=progress)
    n, d = len(tokens), word_vectors.dim
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=n)  # [n]

    # Corpus types (distinct tokens) in order of first appearance.
    type_ids: dict[str, int] = {}
    token_types = np.fromiter(
        (type_ids.setdefault(token, len(type_ids)) for text in tokens for token in text),
        dtype=np.int64,
        count=int(lengths.sum()),
    )  # [N] one entry per token
    num_types = len(type_ids)
    token_docs = np.repeat(np.arange(n, dtype=np.int64), lengths)  # [N]
    type_rows = np.fromiter(
        (word_vectors.index.get(word, -1) for word in type_ids), dtype=np.int64, count=num_types
    )  # [T] row in word_vectors.vectors, -1 if out of vocabulary
    known_type = type_rows >= 0  # [T]
    known_token = known_type[token_types]  # [N]

    # Term counts of the in-vocabulary (text, type) pairs, sorted by text then type.
    pair_keys, term_counts = np.unique(
        token_docs[known_token] * max(num_types, 1) + token_types[known_token], return_counts=True
    )  # [P], [P]
    pair_docs = pair_keys // max(num_types, 1)  # [P]
    pair_types = pair_keys % max(num_types, 1)  # [P]
    doc_freq = np.bincount(pair_types, minlength=num_types)  # [T]
    idf = np.log((1.0 + n) / (1.0 + doc_freq)) + 1.0  # [T]
    weights = term_counts * idf[pair_types]  # [P] float64
    weight_sums = np.bincount(pair_docs, weights=weights, minlength=n)  # [n]

    sums = np.zeros((n, d), dtype=np.float64)
    vectors = word_vectors.vectors
    for start in range(0, len(pair_keys), _PAIR_CHUNK):
        chunk = slice(start, start + _PAIR_CHUNK)
        docs = pair_docs[chunk]  # [c], sorted
        weighted = weights[chunk, None] * vectors[type_rows[pair_types[chunk]]]  # [c, d]
        starts = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))  # [texts in chunk]
        sums[docs[starts]] += np.add.reduceat(weighted, starts, axis=0)

    present = weight_sums > 0  # [n]
    features = np.zeros((n, d), dtype=np.float32)
    features[present] = sums[present] / weight_sums[present, None]

    type_counts = np.bincount(token_types, minlength=num_types)  # [T]
    oov = np.flatnonzero(~known_type)
    words = list(type_ids)
    top = oov[np.argsort(-type_counts[oov], kind="stable")[:10]]
    empty = int((lengths == 0).sum())
    report = TextFeatureReport(
        texts=n,
        empty_texts=empty,
        no_known_words=n - empty - int(present.sum()),
        tokens=int(lengths.sum()),
        oov_tokens=int((~known_token).sum()),
        vocabulary_types=num_types,
        oov_types=len(oov),
        top_oov=[(words[t], int(type_counts[t])) for t in top],
    )
    logger.info("Text features (dim %d):\n%s", d, report.summary())
    if report.empty_texts or report.no_known_words:
        logger.warning(
            "%d of %d texts got a zero text feature (present=False): %d empty, %d without known words",
            n - int(present.sum()), n, report.empty_texts, report.no_known_words,
        )
    return features, present, report
