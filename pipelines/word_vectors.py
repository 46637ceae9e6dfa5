"""Word vectors trained on the catalogue's own item texts: a GloVe stand-in for offline machines.

The text modality (`pipelines.text_features`) averages pretrained GloVe vectors. Where GloVe cannot be
downloaded, this module trains word vectors of the same format from the item texts themselves, by the
PPMI-SVD method (Levy & Goldberg 2014, "Neural word embedding as implicit matrix factorization";
Levy, Goldberg & Dagan 2015, "Improving distributional similarity with lessons learned from word
embeddings"):

1. Tokens: `text_features.tokenize`, the tokenizer the features use, so every trained word is found
   again when the features are made.
2. Vocabulary: the words occurring at least `min_count` times, the `max_vocabulary` most frequent
   (ties in alphabetical order).
3. Co-occurrence: each text is one context window. `#(w, c)` is the number of texts in which both
   words w != c occur (each distinct word of a text is taken once, so a repeated word neither counts
   twice nor co-occurs with itself); only the first `max_words_per_text` distinct vocabulary words of
   a text take part (default 200, i.e. <= 19,900 pairs a text), so one very long text cannot dominate
   the counts or the running time. Words that never share a text with another vocabulary word have
   no context and are dropped (counted as `isolated_words`).
4. Positive PMI with context-distribution smoothing (Levy et al. 2015, alpha = 0.75)::

       PPMI(w, c) = max(0, log( #(w, c) * sum_c' #(c')^alpha / (#(w) * #(c)^alpha) ))

   with `#(w) = sum_c #(w, c)`; 0 where `#(w, c) = 0`.
5. Truncated SVD `PPMI ~ U_k S_k V_k^T` by a seeded randomized range finder (Halko, Martinsson &
   Tropp 2011, Alg. 4.4 + 5.1), vectors `U_k sqrt(S_k)` (the symmetric weighting of Levy et al.).

The counts and the PPMI matrix are dense float32 `[V, V]`: 1.6 GB at the default 20,000 words.

What the vectors capture is which words share item texts *in this catalogue* ("shampoo" near
"conditioner" because they are sold together), not general English: words rare here get poor
vectors and words absent here get none. Real GloVe (glove.6B.100d) is better where it can be had.

Usage::

    python -m pipelines.word_vectors --dataset data/beauty --dim 100 --out vectors.txt
    python -m pipelines.word_vectors --texts items.csv --columns title,description --out vectors.txt
    python -m pipelines.generic ... --glove vectors.txt --dim 100      # any pipeline's text modality

Example (two topics that never share a text):

>>> texts = ["red lipstick gloss", "lipstick gloss red", "shampoo conditioner hair",
...          "hair shampoo conditioner"] * 3
>>> words, vectors, report = train_word_vectors(texts, dim=2, progress=False)
>>> words
['conditioner', 'gloss', 'hair', 'lipstick', 'red', 'shampoo']
>>> unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
>>> bool(unit[words.index("red")] @ unit[words.index("gloss")] > 0.99)
True
>>> bool(abs(unit[words.index("red")] @ unit[words.index("hair")]) < 0.01)
True
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import logging
import os
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipelines.common import item_texts, run_main
from pipelines.text_features import tokenize

logger = logging.getLogger("pipelines.word_vectors")

DEFAULT_DIM = 100
DEFAULT_MIN_COUNT = 2
DEFAULT_MAX_VOCABULARY = 20000
DEFAULT_MAX_WORDS_PER_TEXT = 200
# Context-distribution smoothing exponent (Levy et al. 2015).
CONTEXT_ALPHA = 0.75
# Randomized SVD (Halko et al. 2011): power iterations; the extra test vectors default to max(dim, 10).
# On the Beauty titles (5.6k words, dim 100) this gives every top-100 singular value within 0.2%.
DEFAULT_POWER_ITERATIONS = 5
_MIN_OVERSAMPLE = 10
# Word pairs per accumulation step: bounds the int64 key temporaries (~64 MB).
_PAIR_CHUNK = 1 << 23
# Rows per block when symmetrising the counts and computing PPMI: bounds the float64 temporaries.
_ROW_BLOCK = 512


@dataclasses.dataclass
class WordVectorReport:
    """Counts from one `train_word_vectors` run.

    Attributes:
        texts: number of texts.
        tokens: tokens over all texts.
        distinct_words: distinct tokens over all texts.
        vocabulary: words that got a vector.
        dropped_min_count: distinct words occurring fewer than `min_count` times.
        dropped_max_vocabulary: distinct words frequent enough but beyond `max_vocabulary`.
        isolated_words: vocabulary words that never share a text with another vocabulary word.
        truncated_texts: texts with more than `max_words_per_text` distinct vocabulary words.
        pairs: word pairs counted (unordered, one per text that holds both words).
        dim: vector width.
        seconds: wall time of the run.
    """

    texts: int
    tokens: int
    distinct_words: int
    vocabulary: int
    dropped_min_count: int
    dropped_max_vocabulary: int
    isolated_words: int
    truncated_texts: int
    pairs: int
    dim: int
    seconds: float

    def summary(self) -> str:
        """A short multi-line, human-readable account of the run."""
        return "\n".join(
            [
                f"texts: {self.texts:,} ({self.tokens:,} tokens, {self.distinct_words:,} distinct words)",
                (
                    f"vocabulary: {self.vocabulary:,} words of dim {self.dim} "
                    f"({self.dropped_min_count:,} below min_count, {self.dropped_max_vocabulary:,} beyond "
                    f"max_vocabulary, {self.isolated_words:,} without co-occurrence)"
                ),
                (
                    f"co-occurring pairs counted: {self.pairs:,} "
                    f"({self.truncated_texts:,} texts truncated to max_words_per_text)"
                ),
                f"time: {self.seconds:.1f} s",
            ]
        )


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value!r}")


def build_vocabulary(
    token_lists: Sequence[Sequence[str]], min_count: int = DEFAULT_MIN_COUNT,
    max_vocabulary: int = DEFAULT_MAX_VOCABULARY,
) -> tuple[list[str], dict]:
    """The words occurring at least `min_count` times, most frequent first (ties alphabetical), at most
    `max_vocabulary` of them.

    Returns:
        words, and counts: `tokens`, `distinct_words`, `dropped_min_count`, `dropped_max_vocabulary`.

    >>> build_vocabulary([["b", "a", "c"], ["a", "b"], ["b"]], min_count=2)
    (['b', 'a'], {'tokens': 6, 'distinct_words': 3, 'dropped_min_count': 1, 'dropped_max_vocabulary': 0})
    """
    counts = Counter(token for tokens in token_lists for token in tokens)
    frequent = sorted((word for word, count in counts.items() if count >= min_count),
                      key=lambda word: (-counts[word], word))
    return frequent[:max_vocabulary], {
        "tokens": sum(counts.values()),
        "distinct_words": len(counts),
        "dropped_min_count": len(counts) - len(frequent),
        "dropped_max_vocabulary": max(0, len(frequent) - max_vocabulary),
    }


def cooccurrence_counts(id_lists: Sequence[Sequence[int]], vocabulary_size: int) -> np.ndarray:
    """Symmetric float32 `[V, V]` counts: entry (w, c) is the number of lists holding both w != c.

    Each list must hold distinct word ids in `[0, V)`. The lists are grouped by length; a group of
    length k is a `[n_k, k]` matrix whose sorted rows give all pairs at once (`np.triu_indices(k, 1)`),
    accumulated as keys `w * V + c` (w < c) with `np.unique` counts into the upper triangle, which is
    then mirrored. Counts are exact up to 2**24 per pair (float32).

    >>> cooccurrence_counts([[0, 1, 2], [1, 0], [2]], 3).astype(int).tolist()
    [[0, 2, 1], [2, 0, 1], [1, 1, 0]]
    """
    size = vocabulary_size
    counts = np.zeros((size, size), dtype=np.float32)  # upper triangle first
    flat = counts.reshape(-1)
    by_length: dict[int, list] = defaultdict(list)
    for ids in id_lists:
        if len(ids) >= 2:
            by_length[len(ids)].append(ids)
    for length, group in sorted(by_length.items()):
        ids = np.sort(np.asarray(group, dtype=np.int64), axis=1)  # [n_k, k]
        first, second = np.triu_indices(length, 1)  # [k(k-1)/2] each
        rows_per_chunk = max(1, _PAIR_CHUNK // len(first))
        for start in range(0, len(ids), rows_per_chunk):
            chunk = ids[start : start + rows_per_chunk]  # [r, k]
            keys = (chunk[:, first] * size + chunk[:, second]).reshape(-1)  # [r * k(k-1)/2]
            keys, repeats = np.unique(keys, return_counts=True)
            flat[keys] += repeats
    for start in range(0, size, _ROW_BLOCK):  # mirror the upper triangle, a block of rows at a time
        stop = min(start + _ROW_BLOCK, size)
        block = counts[start:stop, start:stop]  # [b, b]
        counts[start:stop, start:stop] = np.triu(block, 1) + np.triu(block, 1).T
        counts[stop:, start:stop] = counts[start:stop, stop:].T  # [V - stop, b]
    return counts


def ppmi(counts: np.ndarray, alpha: float = CONTEXT_ALPHA, *, out: np.ndarray | None = None) -> np.ndarray:
    """Positive PMI with context-distribution smoothing (Levy et al. 2015):

        PPMI(w, c) = max(0, log(#(w, c) * sum_c' #(c')^alpha / (#(w) * #(c)^alpha)))

    where `#(w)` is the row sum and `#(c)` the column sum of `counts`, and PPMI is 0 where
    `#(w, c) = 0`. Computed in float64 a block of rows at a time.

    Args:
        counts: non-negative `[V, C]` co-occurrence counts, every row and column sum positive.
        alpha: the context smoothing exponent (1 = plain PPMI).
        out: float32 `[V, C]` array for the result (may be `counts` itself, when it is float32).

    Returns:
        float32 `[V, C]`.
    """
    word_totals = counts.sum(axis=1, dtype=np.float64)  # [V]
    context_weights = counts.sum(axis=0, dtype=np.float64) ** alpha  # [C]
    if not (word_totals > 0).all() or not (context_weights > 0).all():
        raise ValueError("ppmi: every word and every context needs a positive count")
    scale = context_weights.sum() / context_weights  # [C]
    result = np.empty(counts.shape, np.float32) if out is None else out
    for start in range(0, len(counts), _ROW_BLOCK):
        block = counts[start : start + _ROW_BLOCK].astype(np.float64)  # [b, C]
        ratio = block * scale[None, :] / word_totals[start : start + _ROW_BLOCK, None]  # [b, C]
        with np.errstate(divide="ignore"):
            pmi = np.log(ratio)  # -inf where the count is 0
        result[start : start + _ROW_BLOCK] = np.maximum(pmi, 0.0)
    return result


def randomized_svd(
    matrix: np.ndarray, rank: int, *, seed: int = 0, oversample: int | None = None,
    power_iterations: int = DEFAULT_POWER_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-`rank` singular triplets of `matrix` `[m, n]` by a seeded randomized range finder.

    Halko, Martinsson & Tropp (2011): a Gaussian test matrix `[n, rank + oversample]` (`oversample`
    defaults to max(rank, 10): the tail of a PPMI spectrum is flat, and a wide test matrix converges
    with fewer passes over the big matrix than more power iterations would), the range
    `Q = orth(A Omega)` refined by `power_iterations` rounds of `Q = orth(A orth(A^T Q))` (QR after
    every product, Alg. 4.4), then the SVD of the small `Q^T A` (Alg. 5.1). Products with `matrix` run
    in its dtype (float32 keeps a 20k x 20k matrix at 1.6 GB); QR and the small SVD in float64. Signs
    are fixed so that the largest entry of each left singular vector is positive.

    Returns:
        U `[m, rank]`, S `[rank]` (descending), Vt `[rank, n]`, float64.
    """
    rows, columns = matrix.shape
    _check_int("rank", rank, 1)
    oversample = max(rank, _MIN_OVERSAMPLE) if oversample is None else oversample
    _check_int("oversample", oversample, 0)
    _check_int("power_iterations", power_iterations, 0)
    if rank > min(rows, columns):
        raise ValueError(f"randomized_svd: rank {rank} exceeds the matrix shape {matrix.shape}")
    width = min(rank + oversample, rows, columns)
    dtype = matrix.dtype if matrix.dtype in (np.float32, np.float64) else np.float64
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((columns, width)).astype(dtype)  # [n, l]
    basis, _ = np.linalg.qr((matrix @ omega).astype(np.float64))  # [m, l]
    for _ in range(power_iterations):
        co_basis, _ = np.linalg.qr((matrix.T @ basis.astype(dtype)).astype(np.float64))  # [n, l]
        basis, _ = np.linalg.qr((matrix @ co_basis.astype(dtype)).astype(np.float64))  # [m, l]
    small = (matrix.T @ basis.astype(dtype)).astype(np.float64).T  # [l, n] = Q^T A
    small_u, singular, vt = np.linalg.svd(small, full_matrices=False)  # [l, l], [l], [l, n]
    u = basis @ small_u[:, :rank]  # [m, rank]
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(rank)])  # [rank]
    signs[signs == 0] = 1.0
    return u * signs, singular[:rank], vt[:rank] * signs[:, None]


def _text_word_ids(token_lists, index, max_words, progress):
    """Per text, its distinct vocabulary word ids in order of first occurrence, at most `max_words`."""
    bar = keras.utils.Progbar(len(token_lists), unit_name="text") if progress else None
    id_lists, truncated = [], 0
    for position, tokens in enumerate(token_lists, start=1):
        ids = list(dict.fromkeys(index[token] for token in tokens if token in index))
        if len(ids) > max_words:
            truncated += 1
            ids = ids[:max_words]
        id_lists.append(ids)
        if bar is not None and (position % 10000 == 0 or position == len(token_lists)):
            bar.update(position)
    return id_lists, truncated


def train_word_vectors(
    texts: Sequence,
    dim: int = DEFAULT_DIM,
    min_count: int = DEFAULT_MIN_COUNT,
    max_vocabulary: int = DEFAULT_MAX_VOCABULARY,
    seed: int = 0,
    progress: bool = True,
    *,
    max_words_per_text: int = DEFAULT_MAX_WORDS_PER_TEXT,
    oversample: int | None = None,
    power_iterations: int = DEFAULT_POWER_ITERATIONS,
) -> tuple[list[str], np.ndarray, WordVectorReport]:
    """Trains PPMI-SVD word vectors on `texts` (see the module docstring for the method).

    Args:
        texts: the item texts (str, bytes, None or NaN), one context window each.
        dim: vector width; must be below the vocabulary size.
        min_count: a word needs at least this many tokens to get a vector.
        max_vocabulary: at most this many words (the most frequent) get a vector.
        seed: seeds the randomized SVD; the same texts and seed give the same vectors.
        progress: show progress bars while tokenizing and counting.
        max_words_per_text: distinct vocabulary words per text that take part in the counts.
        oversample: extra random test vectors of the randomized SVD (None: max(dim, 10)).
        power_iterations: power iterations of the randomized SVD.

    Returns:
        words: the vocabulary, most frequent first; vectors: float32 `[V, dim]` (row i = words[i]);
        report: a `WordVectorReport` (also logged).

    Raises:
        ValueError: a bad argument, no word with a context left, or `dim` >= the vocabulary size.
    """
    started = time.perf_counter()
    _check_int("dim", dim, 1)
    _check_int("min_count", min_count, 1)
    _check_int("max_vocabulary", max_vocabulary, 2)
    _check_int("max_words_per_text", max_words_per_text, 2)
    if oversample is not None:
        _check_int("oversample", oversample, 0)
    _check_int("power_iterations", power_iterations, 0)

    token_lists = tokenize(texts, progress=progress)
    words, counted = build_vocabulary(token_lists, min_count, max_vocabulary)
    id_lists, truncated = _text_word_ids(token_lists, {w: i for i, w in enumerate(words)},
                                         max_words_per_text, progress)
    # Keep the words that share a text with another vocabulary word; renumber them 0..V-1.
    has_context = np.zeros(len(words), dtype=bool)
    for ids in id_lists:
        if len(ids) >= 2:
            has_context[ids] = True
    isolated = len(words) - int(has_context.sum())
    if isolated:
        new_id = np.cumsum(has_context) - 1  # [old V]
        id_lists = [new_id[ids].tolist() if len(ids) >= 2 else [] for ids in id_lists]
        words = [word for word, keep in zip(words, has_context) if keep]
    size = len(words)
    if size == 0:
        raise ValueError(
            f"no words left: of {counted['distinct_words']} distinct words, none occurs at least "
            f"min_count={min_count} times and shares a text with another such word"
        )
    if dim >= size:
        raise ValueError(
            f"dim={dim} must be smaller than the vocabulary size {size}; lower dim or min_count, or "
            "give more texts"
        )

    pairs = sum(len(ids) * (len(ids) - 1) // 2 for ids in id_lists)
    logger.info("Counting %d co-occurring pairs of %d words", pairs, size)
    matrix = cooccurrence_counts(id_lists, size)  # [V, V] float32
    ppmi(matrix, out=matrix)  # in place: [V, V] PPMI
    logger.info("Factorising the %d x %d PPMI matrix (rank %d)", size, size, dim)
    u, singular, _ = randomized_svd(matrix, dim, seed=seed, oversample=oversample,
                                    power_iterations=power_iterations)
    del matrix
    vectors = (u * np.sqrt(singular)[None, :]).astype(np.float32)  # [V, dim]

    report = WordVectorReport(
        texts=len(token_lists),
        tokens=counted["tokens"],
        distinct_words=counted["distinct_words"],
        vocabulary=size,
        dropped_min_count=counted["dropped_min_count"],
        dropped_max_vocabulary=counted["dropped_max_vocabulary"],
        isolated_words=isolated,
        truncated_texts=truncated,
        pairs=pairs,
        dim=dim,
        seconds=time.perf_counter() - started,
    )
    logger.info("Word vectors:\n%s", report.summary())
    return words, vectors, report


def write_glove(path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray) -> Path:
    """Writes `word v1 ... vd` lines (UTF-8, values as `%.7g`; gzip if `path` ends in `.gz`), atomically:
    to a temporary file beside `path`, then `os.replace`. Reads back with `text_features.load_word_vectors`.

    Raises:
        ValueError: mismatched lengths, an empty word or one with whitespace, repeated words, or
            non-finite values.
    """
    path = Path(path)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(words) or not len(words):
        raise ValueError(
            f"write_glove: need one vector row per word, received {len(words)} words and vectors of "
            f"shape {vectors.shape}"
        )
    for word in words:
        if not isinstance(word, str) or not word or len(word.split()) != 1 or word != word.strip():
            raise ValueError(f"write_glove: words must be non-empty and without whitespace, received {word!r}")
    if len(set(words)) != len(words):
        raise ValueError("write_glove: words must be distinct")
    if not np.isfinite(vectors).all():
        raise ValueError("write_glove: vectors have NaN or infinite values")

    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with mode "x" (not tempfile.mkstemp, whose 0600 would survive os.replace): the usual
    # permissions, and never an existing file.
    temporary = path.parent / f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(temporary, "xt", encoding="utf-8", newline="\n") as file:
            for word, row in zip(words, vectors.tolist()):
                file.write(word + " " + " ".join([f"{value:.7g}" for value in row]) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- command line


def _string_columns(frame: pd.DataFrame) -> list[str]:
    """Columns holding text: string dtype, or object dtype whose non-missing values are all str."""
    columns = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.StringDtype) or (
            column.dtype == object and column.dropna().map(lambda v: isinstance(v, str)).all()
        ):
            columns.append(name)
    return columns


def read_texts(texts: str | None = None, dataset: str | None = None, columns: list[str] | None = None):
    """The texts to train on: from a CSV / parquet file (`texts`, default column `title`) or a dataset
    directory's `items.parquet` (default: every text column but `item_id`), columns joined by ". ".

    Returns:
        (texts, columns used, source path).
    """
    if (texts is None) == (dataset is None):
        raise ValueError("give exactly one of --texts FILE and --dataset DIR")
    if dataset is not None:
        path = Path(dataset) / "items.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"--dataset {dataset}: {path} does not exist (not a dataset directory?)")
        frame = pd.read_parquet(path)
        default = [c for c in _string_columns(frame) if c not in ("item_id", "item_index")]
    else:
        path = Path(texts)
        if not path.is_file():
            raise FileNotFoundError(f"--texts {texts} does not exist (or is not a file)")
        suffix = path.name.lower()
        if suffix.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif suffix.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False,
                                sep="\t" if ".tsv" in suffix else ",")
        else:
            raise ValueError(f"--texts {texts}: expected a .csv, .tsv or .parquet file")
        default = ["title"]
    columns = list(columns) if columns else default
    missing = [c for c in columns if c not in frame.columns]
    if missing or not columns:
        raise ValueError(
            f"{path}: no text column {missing if missing else ''} (columns: {list(frame.columns)}); "
            "choose with --columns"
        )
    return item_texts(frame, columns), columns, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.word_vectors",
        description="Trains GloVe-format word vectors on the item texts themselves (PPMI-SVD), for "
                    "machines without GloVe; use the result as `--glove FILE --dim DIM` in any pipeline.",
    )
    source = parser.add_argument_group("input (one of)")
    inputs = source.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--texts", help="CSV/TSV/parquet file with one row per item")
    inputs.add_argument("--dataset", help="dataset directory; reads its items.parquet")
    source.add_argument("--columns",
                        help="comma-separated text columns, joined by '. ' (default: title for --texts; "
                             "every text column but item_id for --dataset)")
    training = parser.add_argument_group("training")
    training.add_argument("--dim", type=int, default=DEFAULT_DIM, help="vector width (default: %(default)s)")
    training.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT,
                          help="tokens a word needs to get a vector (default: %(default)s)")
    training.add_argument("--max-vocabulary", type=int, default=DEFAULT_MAX_VOCABULARY,
                          help="most frequent words kept; memory is 4 * N^2 bytes (default: %(default)s)")
    training.add_argument("--max-words-per-text", type=int, default=DEFAULT_MAX_WORDS_PER_TEXT,
                          help="distinct words of a text counted as co-occurring (default: %(default)s)")
    training.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="GloVe text file to write (.txt, or .txt.gz)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def main(argv=None) -> Path:
    """Trains and writes the vectors; returns the file written. Raises ValueError / OSError on bad input
    (`run_main` turns those into one `error:` line and exit status 2)."""
    args = build_parser().parse_args(argv)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    if Path(args.out).exists() and not args.overwrite:
        raise ValueError(f"--out {args.out} already exists; pass --overwrite to replace it")
    texts, columns, source = read_texts(args.texts, args.dataset, columns)
    logger.info("Training word vectors on %d texts (%s) of %s", len(texts), ", ".join(columns), source)
    words, vectors, report = train_word_vectors(
        texts, dim=args.dim, min_count=args.min_count, max_vocabulary=args.max_vocabulary, seed=args.seed,
        max_words_per_text=args.max_words_per_text,
    )
    path = write_glove(args.out, words, vectors)
    print(f"Word vectors written to {path}\n  " + report.summary().replace("\n", "\n  ")
          + f"\n  use them with: --glove {path} --dim {report.dim}")
    return path


if __name__ == "__main__":
    sys.exit(run_main(main))
