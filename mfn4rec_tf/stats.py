"""The Wilcoxon signed-rank test, in NumPy (SciPy is not a dependency), for comparing two models'
per-user metrics on the same users (`python -m mfn4rec_tf.compare`).

For paired values `x_i`, `y_i` the differences `d_i = x_i - y_i` are ranked by `|d_i|` (tied
absolute values get the mean of their ranks) and `W+` is the sum of the ranks of the positive
differences, `W-` that of the negative ones. Under the null hypothesis (the differences are
symmetric around 0) `W+` has mean `n(n + 1)/4`.

Zero differences (a user both models hit, or both miss: most users of a leave-one-out Recall@20):

- `"wilcox"` (default): they are dropped before ranking, and `n` counts the non-zero ones.
- `"pratt"`: they are ranked with the others (so they raise the ranks of the non-zero ones), then
  their ranks are left out of `W+` and `W-`; mean and variance are those of the ranks that remain.

p-values (two-sided unless asked otherwise):

- `"exact"`: the distribution of `W+` over the `2^n` sign patterns, counted exactly; only without
  zeros or ties (it counts integer ranks 1..n) and for n <= `EXACT_MAX_N`.
- `"normal"`: `z = (W+ - mean) / sd` with the tie-corrected variance
  `n(n + 1)(2n + 1)/24 - Σ_t (t^3 - t)/48` over the groups of `t` tied absolute values (zeros
  dropped; for Pratt the zeros' group is removed from mean and variance as in Pratt, 1959), and
  `p = erfc(|z| / √2)` (two-sided), without continuity correction unless `correction=True`.
- `"auto"` (default): exact when it applies, else normal.

With no non-zero difference the two samples do not differ: the p-value is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ZERO_METHODS = ("wilcox", "pratt")
METHODS = ("auto", "exact", "normal")
ALTERNATIVES = ("two-sided", "greater", "less")
EXACT_MAX_N = 50
"""The largest n whose exact distribution `method="auto"` counts (2^n patterns, counted in O(n^3))."""


@dataclass(frozen=True)
class WilcoxonResult:
    """The outcome of `wilcoxon`.

    Attributes:
        statistic: `min(W+, W-)` for a two-sided test, else `W+` (SciPy reports the same).
        pvalue: the p-value of the chosen alternative.
        w_plus, w_minus: the rank sums of the positive and the negative differences.
        n: the differences ranked (non-zero ones; with `"pratt"` zeros included).
        zeros: the zero differences.
        z: the normal approximation's z of `W+`, or None when the p-value is exact.
        method: `"exact"` or `"normal"`, the one used.
    """

    statistic: float
    pvalue: float
    w_plus: float
    w_minus: float
    n: int
    zeros: int
    z: float | None
    method: str


def rank_average(values) -> np.ndarray:
    """1-based ranks of `values` (ascending), ties sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts) - 1  # group number of each sorted position
    first = np.flatnonzero(starts)  # 0-based first position of each group
    last = np.append(first[1:], len(values)) - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(values), np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def _tie_sizes(values) -> np.ndarray:
    _, counts = np.unique(np.asarray(values), return_counts=True)
    return counts


def _exact_counts(n: int) -> np.ndarray:
    """`counts[s]`: the subsets of {1..n} whose sum is s (the sign patterns giving W+ = s)."""
    total = n * (n + 1) // 2
    counts = np.zeros(total + 1, dtype=object if n > 60 else np.float64)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def wilcoxon(x, y=None, *, zero_method: str = "wilcox", method: str = "auto", alternative: str = "two-sided",
             correction: bool = False) -> WilcoxonResult:
    """The Wilcoxon signed-rank test of `x - y` (or of `x` alone when `y` is None).

    Args:
        x, y: paired 1-d samples of the same length (NaN is an error).
        zero_method: `"wilcox"` or `"pratt"` (the module docstring).
        method: `"auto"`, `"exact"` or `"normal"`.
        alternative: `"two-sided"`, `"greater"` (x tends to exceed y) or `"less"`.
        correction: a continuity correction of 0.5 in the normal approximation.

    Raises:
        ValueError: naming the argument that is wrong (shapes, NaN, an unknown option, or
            `method="exact"` with ties or zeros).
    """
    if zero_method not in ZERO_METHODS:
        raise ValueError(f"`zero_method` must be one of {ZERO_METHODS}. Received: {zero_method!r}")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: {method!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"`alternative` must be one of {ALTERNATIVES}. Received: {alternative!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"`x` must be 1-d. Received shape {x.shape}")
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        if y.shape != x.shape:
            raise ValueError(f"`x` and `y` must have the same length. Received {x.shape} and {y.shape}")
        d = x - y
    else:
        d = x
    if np.isnan(d).any():
        raise ValueError("`x` and `y` must not contain NaN (drop the unpaired users first).")
    zeros = int((d == 0).sum())
    if zero_method == "wilcox":
        d = d[d != 0]
    n = len(d)
    nonzero = d != 0
    if not nonzero.any():
        return WilcoxonResult(0.0, 1.0, 0.0, 0.0, n, zeros, None, "exact")
    ranks = rank_average(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    has_ties = len(_tie_sizes(np.abs(d))) < n
    exact_possible = zeros == 0 and not has_ties
    if method == "exact" and not exact_possible:
        raise ValueError("`method='exact'` counts integer ranks: it needs differences without zeros or ties; use "
                         "'normal' or 'auto'.")
    statistic = min(w_plus, w_minus) if alternative == "two-sided" else w_plus
    if method == "exact" or (method == "auto" and exact_possible and n <= EXACT_MAX_N):
        counts = _exact_counts(n)
        total = float(2**n)
        w = int(round(w_plus))
        below = float(sum(counts[: w + 1])) / total  # P(W+ <= w)
        above = float(sum(counts[w:])) / total  # P(W+ >= w)
        p = {"two-sided": min(1.0, 2.0 * min(below, above)), "greater": above, "less": below}[alternative]
        return WilcoxonResult(statistic, p, w_plus, w_minus, n, zeros, None, "exact")

    mean = n * (n + 1) / 4.0
    variance = n * (n + 1) * (2 * n + 1) / 24.0
    if zero_method == "pratt" and zeros:
        mean -= zeros * (zeros + 1) / 4.0
        variance -= zeros * (zeros + 1) * (2 * zeros + 1) / 24.0
        ties = _tie_sizes(np.abs(d[nonzero]))  # the zeros' own group is out of the sum already
    else:
        ties = _tie_sizes(np.abs(d))
    variance -= float((ties.astype(np.float64) ** 3 - ties).sum()) / 48.0
    if variance <= 0:
        return WilcoxonResult(statistic, 1.0, w_plus, w_minus, n, zeros, None, "normal")
    shift = w_plus - mean
    if correction:
        if alternative == "two-sided":
            shift -= math.copysign(min(0.5, abs(shift)), shift)
        else:
            shift -= 0.5 if alternative == "greater" else -0.5
    z = shift / math.sqrt(variance)
    p = {"two-sided": math.erfc(abs(z) / math.sqrt(2.0)), "greater": 0.5 * math.erfc(z / math.sqrt(2.0)),
         "less": 0.5 * math.erfc(-z / math.sqrt(2.0))}[alternative]
    return WilcoxonResult(statistic, min(1.0, p), w_plus, w_minus, n, zeros, z, "normal")
