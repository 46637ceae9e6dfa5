"""The Wilcoxon signed-rank test of `mfn4rec_tf.stats` against values worked out by hand and a
textbook example (and SciPy, when it happens to be installed; it is not a dependency)."""

import math

import numpy as np
import pytest

from mfn4rec_tf.stats import rank_average, wilcoxon

# Darwin's Zea mays data (cross- minus self-fertilised heights, eighths of an inch), as in Fisher's
# "The Design of Experiments" and SciPy's documentation of `wilcoxon`: W- = 24, exact p = 0.041259765625.
DARWIN = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75])


def test_average_ranks_of_ties():
    np.testing.assert_array_equal(rank_average([10, 20, 10, 30, 20, 20]), [1.5, 4, 1.5, 6, 4, 4])
    np.testing.assert_array_equal(rank_average([3.0]), [1.0])


def test_darwin_exact_matches_the_textbook():
    result = wilcoxon(DARWIN)
    assert result.method == "exact" and result.n == 15
    assert (result.w_minus, result.w_plus, result.statistic) == (24.0, 96.0, 24.0)  # ranks 10 + 14 are negative
    assert result.pvalue == pytest.approx(0.041259765625, abs=1e-12)
    assert wilcoxon(DARWIN, alternative="greater").pvalue == pytest.approx(0.0206298828125, abs=1e-12)
    # P(W+ <= 96) = 1 - P(W+ >= 96) + P(W+ = 96)
    assert wilcoxon(DARWIN, alternative="less").pvalue == pytest.approx(1 - 0.0206298828125 + _exact_at(15, 96),
                                                                        abs=1e-12)


def _exact_at(n, w):
    """P(W+ = w) by enumerating every sign pattern (2^n): the brute-force check of the counting."""
    ranks = np.arange(1, n + 1)
    patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return float(((patterns * ranks).sum(axis=1) == w).mean())


def test_exact_distribution_matches_enumeration():
    rng = np.random.default_rng(3)
    n = 10
    ranks = np.arange(1, n + 1)
    patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    sums = (patterns * ranks).sum(axis=1)
    for _ in range(5):
        d = rng.permutation(ranks) * rng.choice([-1, 1], n)
        w_plus = d[d > 0].sum()  # |d| is a permutation of 1..n: each |d| is its own rank
        expected = min(1.0, 2 * min((sums <= w_plus).mean(), (sums >= w_plus).mean()))
        assert wilcoxon(d.astype(float)).pvalue == pytest.approx(expected, abs=1e-12)


def test_darwin_normal_approximation_by_hand():
    # mean n(n+1)/4 = 60, variance n(n+1)(2n+1)/24 = 310, no ties: z = (96 - 60) / sqrt(310)
    result = wilcoxon(DARWIN, method="normal")
    z = 36 / math.sqrt(310)
    assert result.z == pytest.approx(z, abs=1e-12)
    assert result.pvalue == pytest.approx(math.erfc(z / math.sqrt(2)), abs=1e-12)
    assert result.pvalue == pytest.approx(0.04088, abs=1e-4)
    corrected = wilcoxon(DARWIN, method="normal", correction=True)
    assert corrected.z == pytest.approx(35.5 / math.sqrt(310), abs=1e-12)


def test_ties_and_zeros_dropped_by_hand():
    # d = [1, -1, 2, 2, 3, 0]: the zero is dropped, n = 5; |d| ranks 1.5, 1.5, 3.5, 3.5, 5
    # W+ = 1.5 + 3.5 + 3.5 + 5 = 13.5, W- = 1.5; mean 7.5; variance (5*6*11)/24 - (6 + 6)/48 = 13.5
    result = wilcoxon([1, -1, 2, 2, 3, 0], [0, 0, 0, 0, 0, 0])
    assert (result.w_plus, result.w_minus, result.n, result.zeros) == (13.5, 1.5, 5, 1)
    assert result.method == "normal"  # ties and zeros: no exact distribution
    assert result.z == pytest.approx(6 / math.sqrt(13.5), abs=1e-12)
    assert result.pvalue == pytest.approx(math.erfc(6 / math.sqrt(13.5) / math.sqrt(2)), abs=1e-12)
    with pytest.raises(ValueError, match="exact"):
        wilcoxon([1, -1, 2, 2, 3, 0], method="exact")


def test_pratt_ranks_the_zeros_by_hand():
    # d = [0, 0, 1, -2, 3, 4]: ranks of |d| 1.5, 1.5, 3, 4, 5, 6; W+ = 3 + 5 + 6 = 14, W- = 4
    # mean 6*7/4 - 2*3/4 = 9; variance 6*7*13/24 - 2*3*5/24 = 22.75 - 1.25 = 21.5; no ties among the rest
    result = wilcoxon([0, 0, 1, -2, 3, 4], zero_method="pratt")
    assert (result.w_plus, result.w_minus, result.n, result.zeros) == (14.0, 4.0, 6, 2)
    assert result.z == pytest.approx(5 / math.sqrt(21.5), abs=1e-12)


def test_no_difference_and_bad_input():
    assert wilcoxon([0.5, 1.0, 0.0], [0.5, 1.0, 0.0]).pvalue == 1.0
    with pytest.raises(ValueError, match="same length"):
        wilcoxon([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        wilcoxon([1, np.nan], [0, 0])
    with pytest.raises(ValueError, match="zero_method"):
        wilcoxon([1, 2], zero_method="zsplit")
    with pytest.raises(ValueError, match="alternative"):
        wilcoxon([1, 2], alternative="both")
    with pytest.raises(ValueError, match="method"):
        wilcoxon([1, 2], method="bootstrap")


def test_a_real_shift_on_many_binary_users_is_found_and_no_shift_is_not():
    rng = np.random.default_rng(0)
    a = (rng.random(5000) < 0.30).astype(float)  # per-user Recall@20 of leave-one-out: 0 or 1
    b = np.where(rng.random(5000) < 0.85, a, (rng.random(5000) < 0.20).astype(float))  # b misses more
    assert wilcoxon(a, b).pvalue < 0.001
    same = np.where(rng.random(5000) < 0.5, a, rng.permutation(a))
    assert wilcoxon(a, same).pvalue > 0.01


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
def test_agrees_with_scipy_when_installed(zero_method):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for size in (8, 30, 400):
        x = rng.integers(0, 4, size) / 3.0
        y = rng.integers(0, 4, size) / 3.0
        ours = wilcoxon(x, y, zero_method=zero_method, method="normal")
        theirs = scipy_stats.wilcoxon(x, y, zero_method=zero_method, method="approx", correction=False)
        assert ours.statistic == pytest.approx(theirs.statistic)
        assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9)
    exact = scipy_stats.wilcoxon(DARWIN, method="exact")
    assert wilcoxon(DARWIN).pvalue == pytest.approx(exact.pvalue, rel=1e-12)
