"""Tests of mfn4rec_tf.metrics: a slow loop-and-set reference, hand-worked numbers, the edge cases."""

import math

import numpy as np
import pytest

from mfn4rec_tf.metrics import FAMILIES, KS, RankingMetrics, evaluate, format_table, top_k_items
from tests.conftest import make_config, make_inputs

# ---------------------------------------------------------------------------------------------
# The reference: written straight from the formulas of docs/model.md#metrics, one user at a time.
# ---------------------------------------------------------------------------------------------


def reference_ranking(scores, exclude, k):
    """Items 1..N that are not excluded and not -inf, by (score descending, index ascending), 0-padded."""
    banned = {int(item) for item in exclude}
    candidates = [i for i in range(1, len(scores)) if i not in banned and scores[i] != -math.inf]
    candidates.sort(key=lambda i: (-scores[i], i))
    top = candidates[:k]
    return top + [0] * (k - len(top))


def reference_metrics(users, ks):
    """`users`: list of (ranked list, targets). Returns the same dict as `RankingMetrics.result()`."""
    evaluated = [(list(ranked), {int(t) for t in targets} - {0}) for ranked, targets in users]
    skipped = sum(1 for _, targets in evaluated if not targets)
    evaluated = [(ranked, targets) for ranked, targets in evaluated if targets]
    result = {}
    per_k = {}
    for k in ks:
        hits_total = targets_total = 0
        ap, ndcg, precision, hr, mrr = [], [], [], [], []
        for ranked, targets in evaluated:
            top = ranked[:k]
            hits = [item != 0 and item in targets for item in top]
            count = sum(hits)
            hits_total += count
            targets_total += len(targets)
            seen, total = 0, 0.0
            for i, hit in enumerate(hits, start=1):
                if hit:
                    seen += 1
                    total += seen / i
            ap.append(total / len(targets))
            dcg = sum(1 / math.log2(i + 1) for i, hit in enumerate(hits, start=1) if hit)
            idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(targets), k) + 1))
            ndcg.append(dcg / idcg)
            precision.append(count / k)
            hr.append(1.0 if count > 0 else 0.0)
            mrr.append(next((1 / i for i, hit in enumerate(hits, start=1) if hit), 0.0))
        per_k[k] = {
            "recall": hits_total / targets_total if targets_total else math.nan,
            "map": mean(ap),
            "ndcg": mean(ndcg),
            "precision": mean(precision),
            "hr": mean(hr),
            "mrr": mean(mrr),
        }
    for family in FAMILIES:
        for k in ks:
            result[f"{family}@{k}"] = per_k[k][family]
    result["users"] = len(evaluated)
    result["skipped_users"] = skipped
    return result


def mean(values):
    return sum(values) / len(values) if values else math.nan


def assert_same_metrics(actual, expected):
    assert list(actual) == list(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-12, atol=1e-15, err_msg=key)


def random_batch(rng, batch, num_items, max_history=6):
    """Logits from a few integer levels (many ties); 0-7 history items; 0-5 targets, some in the history."""
    logits = rng.integers(0, 4, size=(batch, num_items + 1)).astype("float32")
    logits[:, 0] = rng.choice([-1e9, 100.0], size=batch)  # index 0 sometimes the largest: still never ranked
    history = np.zeros((batch, max_history), "int32")
    targets = np.zeros((batch, 5), "int32")
    for row in range(batch):
        length = rng.integers(0, max_history + 1)
        history[row, :length] = rng.integers(1, num_items + 1, size=length)
        count = rng.integers(1, 6) if rng.random() > 0.1 else 0  # some users without targets
        pool = list(range(1, num_items + 1))
        chosen = list(rng.choice(pool, size=min(count, num_items), replace=False))
        if length and rng.random() < 0.5:
            chosen[:1] = [history[row, 0]]  # a target that is also in the history
        chosen = list(dict.fromkeys(int(c) for c in chosen))
        targets[row, : len(chosen)] = chosen
    return logits, history, targets


# ---------------------------------------------------------------------------------------------
# Vectorised == reference on many random cases.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude_history", [False, True])
@pytest.mark.parametrize("num_items, ks", [(7, (1, 3, 5, 10)), (30, (1, 2, 10, 20)), (60, KS)])
def test_ranking_metrics_equal_reference(num_items, ks, exclude_history):
    # K = 10 > N = 7 in the first case: lists end in empty slots, precision still divides by K.
    rng = np.random.default_rng([num_items, exclude_history])
    metrics = RankingMetrics(ks)
    users = []
    for step in range(4):  # several batches accumulate
        batch = int(rng.integers(1, 9))
        logits, history, targets = random_batch(rng, batch, num_items)
        if step == 0:
            targets[0] = 0  # at least one user without targets
        exclude = history if exclude_history else None
        metrics.update(logits, targets, exclude=exclude)
        for row in range(batch):
            banned = history[row] if exclude_history else []
            scores = [-math.inf] + [float(s) for s in logits[row, 1:]]
            users.append((reference_ranking(scores, banned, max(ks)), targets[row]))
    expected = reference_metrics(users, ks)
    assert expected["users"] > 0 and expected["skipped_users"] > 0  # both kinds of user were drawn
    assert_same_metrics(metrics.result(), expected)


def test_top_k_items_equals_reference_with_ties_and_exclusions():
    rng = np.random.default_rng(3)
    for trial in range(40):
        num_items = int(rng.integers(1, 200))
        batch = int(rng.integers(1, 6))
        k = int(rng.integers(1, num_items + 5))
        logits = rng.integers(0, 3, size=(batch, num_items + 1)).astype("float32")  # heavy ties
        exclude = rng.integers(0, num_items + 1, size=(batch, int(rng.integers(1, num_items + 3))))
        ranked = top_k_items(logits, k, exclude=exclude)
        assert ranked.shape == (batch, k) and ranked.dtype == np.int32
        for row in range(batch):
            scores = [-math.inf] + [float(s) for s in logits[row, 1:]]
            assert ranked[row].tolist() == reference_ranking(scores, exclude[row], k), trial


# ---------------------------------------------------------------------------------------------
# Hand-worked examples.
# ---------------------------------------------------------------------------------------------


def test_map_ndcg_mrr_precision_two_targets_hit_at_ranks_1_and_3():
    # Items 1..6. Scores rank item 2 first, item 4 second, item 5 third. Targets {2, 5}.
    # Hits at ranks 1 and 3 (item 4 at rank 2 is a miss).
    #   AP@3   = (1/1 + 2/3) / |T| = (1 + 2/3) / 2 = 5/6
    #   DCG@3  = 1/log2(2) + 1/log2(4) = 1 + 1/2;  IDCG@3 over min(2, 3) = 2 positions = 1 + 1/log2(3)
    #   MRR@3  = 1/1;  Precision@3 = 2/3;  Recall@3 = 2/2;  HR@3 = 1
    #   At K = 2 only the hit at rank 1 counts: AP@2 = (1/1)/2, Precision@2 = 1/2, Recall@2 = 1/2.
    logits = np.array([[0.0, 0.1, 0.9, 0.2, 0.8, 0.7, 0.3]])
    metrics = RankingMetrics(ks=(2, 3))
    metrics.update(logits, np.array([[2, 5]]))
    result = metrics.result()
    assert result["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert result["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert result["mrr@3"] == pytest.approx(1.0)
    assert result["precision@3"] == pytest.approx(2 / 3)
    assert result["recall@3"] == pytest.approx(1.0)
    assert result["hr@3"] == pytest.approx(1.0)
    assert result["map@2"] == pytest.approx(0.5)
    assert result["precision@2"] == pytest.approx(0.5)
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_map_divides_by_all_targets_not_by_k():
    # Targets {1, 2, 3}, K = 1, item 1 ranked first: AP@1 = (1/1) / |T| = 1/3 (not 1/min(3, 1) = 1),
    # whereas IDCG@1 uses min(3, 1) = 1 position, so NDCG@1 = 1.
    metrics = RankingMetrics(ks=(1,))
    metrics.update_from_ranked(np.array([[1]]), np.array([[1, 2, 3]]))
    assert metrics.result()["map@1"] == pytest.approx(1 / 3)
    assert metrics.result()["ndcg@1"] == pytest.approx(1.0)


def test_recall_is_micro_averaged():
    # User A: T = {1}, hit -> 1 of 1.  User B: T = {2, 3, 4, 5}, one hit (item 2) -> 1 of 4.
    #   micro = (1 + 1) / (1 + 4) = 0.4      macro = (1/1 + 1/4) / 2 = 0.625
    metrics = RankingMetrics(ks=(2,))
    metrics.update_from_ranked(np.array([[1, 9], [2, 8]]), np.array([[1, 0, 0, 0], [2, 3, 4, 5]]))
    result = metrics.result()
    assert result["recall@2"] == pytest.approx(0.4)
    assert result["recall@2"] != pytest.approx(0.625)
    assert result["hr@2"] == pytest.approx(1.0)  # both users have a hit


def test_mrr_uses_the_first_hit_within_k():
    # Ranked [7, 3, 4], T = {3, 4}: first hit at rank 2 -> MRR@3 = MRR@2 = 1/2; MRR@1 = 0.
    # A second user without any hit adds 0: mean = (1/2 + 0) / 2 = 1/4.
    metrics = RankingMetrics(ks=(1, 2, 3))
    metrics.update_from_ranked(np.array([[7, 3, 4], [1, 2, 5]]), np.array([[3, 4], [6, 0]]))
    result = metrics.result()
    assert result["mrr@1"] == 0.0
    assert result["mrr@2"] == pytest.approx(0.25)
    assert result["mrr@3"] == pytest.approx(0.25)


def test_precision_divides_by_k_even_beyond_the_number_of_items():
    # N = 3 items, all three are targets, K = 5: R = [.., .., .., 0, 0] holds every item.
    #   Precision@5 = 3/5 (not 3/3); Recall@5 = 3/3; NDCG@5 = 1 (IDCG over min(3, 5) = 3 positions).
    # K = 2: Precision@2 = 2/2.
    metrics = RankingMetrics(ks=(2, 5))
    metrics.update(np.array([[0.0, 0.3, 0.2, 0.1]]), np.array([[1, 2, 3]]))
    result = metrics.result()
    assert result["precision@5"] == pytest.approx(3 / 5)
    assert result["precision@2"] == pytest.approx(1.0)
    assert result["recall@5"] == pytest.approx(1.0)
    assert result["ndcg@5"] == pytest.approx(1.0)


def test_ties_rank_the_lower_index_first():
    # Items 1..5 with scores 0.5, 0.9, 0.5, 0.5, 0.1: item 2, then the tied 1, 3, 4 by index.
    logits = np.array([[0.0, 0.5, 0.9, 0.5, 0.5, 0.1]])
    assert top_k_items(logits, 5).tolist() == [[2, 1, 3, 4, 5]]
    # The tie straddles the cut-off: K = 2 keeps the lowest tied index (1), not 3 or 4.
    assert top_k_items(logits, 2).tolist() == [[2, 1]]
    # So a target 3 is a miss at K = 2 and a hit at rank 3 for K = 3.
    metrics = RankingMetrics(ks=(2, 3))
    metrics.update(logits, np.array([[3]]))
    assert metrics.result()["hr@2"] == 0.0
    assert metrics.result()["mrr@3"] == pytest.approx(1 / 3)


def test_ties_on_a_long_row_rank_the_lower_index_first():
    # 5000 items, all with the same score except a few: sort-based or partition-based top-k
    # implementations that are not stable pick arbitrary tied items here.
    logits = np.zeros((2, 5001), "float32")
    logits[0, [4000, 17]] = 1.0
    logits[1, 2500] = -1.0
    ranked = top_k_items(logits, 6)
    assert ranked.tolist() == [[17, 4000, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6]]


def test_padding_index_zero_is_never_ranked():
    # Index 0 has by far the largest logit; it must not appear, even when K exceeds N = 3:
    # the three real items come first and the two slots left over are empty (0).
    logits = np.array([[1e9, 0.2, 0.3, 0.1]])
    assert top_k_items(logits, 2).tolist() == [[2, 1]]
    assert top_k_items(logits, 5).tolist() == [[2, 1, 3, 0, 0]]
    metrics = RankingMetrics(ks=(1,))
    metrics.update(logits, np.array([[2]]))
    assert metrics.result()["hr@1"] == 1.0  # item 2 is first, not index 0


def test_excluded_history_items_are_not_ranked_and_targets_are_kept():
    # History [3, 1, 0-padding]: items 3 and 1 are removed from the ranking; the rest keep their order.
    logits = np.array([[0.0, 0.9, 0.1, 0.8, 0.7, 0.2]])
    history = np.array([[3, 1, 0]])
    assert top_k_items(logits, 3).tolist() == [[1, 3, 4]]
    assert top_k_items(logits, 3, exclude=history).tolist() == [[4, 5, 2]]
    # Target 3 is in the history: without exclusion it is a hit at rank 2; with exclusion it cannot
    # be hit but still counts in |T| (Recall@3 = 0/1, and the user is still evaluated).
    plain, excluding = RankingMetrics(ks=(3,)), RankingMetrics(ks=(3,))
    plain.update(logits, np.array([[3]]))
    excluding.update(logits, np.array([[3]]), exclude=history)
    assert plain.result()["recall@3"] == 1.0 and plain.result()["mrr@3"] == pytest.approx(0.5)
    assert excluding.result()["recall@3"] == 0.0 and excluding.result()["users"] == 1


def test_excluding_more_items_than_allows_k_leaves_empty_slots():
    logits = np.array([[0.0, 0.1, 0.2, 0.3]])
    assert top_k_items(logits, 3, exclude=np.array([[1, 3]])).tolist() == [[2, 0, 0]]


def test_items_scored_minus_infinity_are_not_candidates():
    logits = np.array([[0.0, -np.inf, 0.2, 0.3]])
    assert top_k_items(logits, 3).tolist() == [[3, 2, 0]]


def test_users_without_targets_are_ignored_and_counted():
    # Rows 2 and 4 have no targets: the result equals that of rows 1 and 3 alone, plus the count.
    ranked = np.array([[1, 2], [1, 2], [3, 4], [5, 6]])
    targets = np.array([[2, 0], [0, 0], [9, 4], [0, 0]])
    with_empty, without = RankingMetrics(ks=(1, 2)), RankingMetrics(ks=(1, 2))
    with_empty.update_from_ranked(ranked, targets)
    without.update_from_ranked(ranked[[0, 2]], targets[[0, 2]])
    result = with_empty.result()
    assert result["users"] == 2 and result["skipped_users"] == 2
    assert without.result()["skipped_users"] == 0
    for key in result:
        if key != "skipped_users":
            assert result[key] == without.result()[key], key
    assert result["hr@2"] == 1.0 and result["recall@2"] == pytest.approx(2 / 3)


def test_duplicate_targets_count_once():
    # T = {3} written twice: |T| = 1, so Recall@1 = 1 (not 1/2).
    metrics = RankingMetrics(ks=(1,))
    metrics.update_from_ranked(np.array([[3]]), np.array([[3, 3]]))
    assert metrics.result()["recall@1"] == 1.0
    assert metrics.result()["map@1"] == 1.0


def test_one_dimensional_targets_mean_one_target_per_user():
    # Leave-one-out: Recall@K = HR@K.
    metrics = RankingMetrics(ks=(1, 2))
    metrics.update_from_ranked(np.array([[4, 2], [1, 3], [5, 6]]), np.array([2, 1, 7]))
    result = metrics.result()
    assert result["recall@2"] == result["hr@2"] == pytest.approx(2 / 3)
    assert result["recall@1"] == result["hr@1"] == pytest.approx(1 / 3)


def test_result_keys_reset_and_empty_state():
    metrics = RankingMetrics(ks=(20, 10))
    assert metrics.ks == (10, 20)
    assert math.isnan(metrics.result()["recall@10"]) and metrics.result()["users"] == 0
    metrics.update_from_ranked(np.tile(np.arange(1, 21), (2, 1)), np.array([[1], [25]]))
    expected_keys = [f"{family}@{k}" for family in FAMILIES for k in (10, 20)] + ["users", "skipped_users"]
    assert list(metrics.result()) == expected_keys
    assert metrics.result()["hr@10"] == 0.5
    metrics.reset()
    assert metrics.result()["users"] == 0 and math.isnan(metrics.result()["hr@10"])


def test_default_ks():
    assert KS == (10, 20, 30, 50)
    assert RankingMetrics().ks == KS
    assert "recall@20" in RankingMetrics().result() and "map@30" in RankingMetrics().result()


@pytest.mark.parametrize("ks", [(), (0,), (10, 10), (2.5,), "20", (True,)])
def test_invalid_ks_raise(ks):
    with pytest.raises(ValueError, match="ks"):
        RankingMetrics(ks)


def test_invalid_inputs_raise():
    metrics = RankingMetrics(ks=(2,))
    with pytest.raises(ValueError, match="NaN"):
        metrics.update(np.array([[0.0, np.nan, 1.0]]), np.array([[1]]))
    with pytest.raises(ValueError, match="targets"):
        metrics.update(np.array([[0.0, 0.5, 1.0]]), np.array([[3]]))  # N = 2
    with pytest.raises(ValueError, match="sequence-mode"):
        metrics.update(np.zeros((1, 4, 3)), np.array([[1]]))
    with pytest.raises(ValueError, match="twice"):
        metrics.update_from_ranked(np.array([[4, 4]]), np.array([[4]]))
    with pytest.raises(ValueError, match="max\\(ks\\)"):
        metrics.update_from_ranked(np.array([[4]]), np.array([[4]]))
    with pytest.raises(ValueError, match="exclude"):
        top_k_items(np.zeros((1, 3)), 1, exclude=np.array([[5]]))
    with pytest.raises(ValueError, match="`k`"):
        top_k_items(np.zeros((1, 3)), 0)
    assert metrics.result()["users"] == 0  # nothing was accumulated by the failed calls


# ---------------------------------------------------------------------------------------------
# evaluate() and format_table().
# ---------------------------------------------------------------------------------------------


class FixedScores:
    """A stand-in model: logits are a function of the batch's item_ids, so exclusion can be checked."""

    def __init__(self, num_items):
        self.scores = np.linspace(1.0, 0.0, num_items + 1).astype("float32")  # item 1 best, N worst

    def predict_on_batch(self, inputs):
        batch = inputs["item_ids"].shape[0]
        return {"logits": np.tile(self.scores, (batch, 1)), "user_representation": np.zeros((batch, 2))}


def test_evaluate_accumulates_batches_and_excludes_history():
    model = FixedScores(num_items=6)  # ranking 1, 2, 3, ... for everyone
    batches = [
        ({"item_ids": np.array([[1, 0], [5, 6]], "int32")}, np.array([[2, 0], [1, 3]], "int32")),
        ({"item_ids": np.array([[2, 1]], "int32")}, np.array([[3, 4]], "int32")),
    ]
    # No exclusion: R = [1, 2] for all -> hits: user 1 {2}: 1, user 2 {1,3}: 1, user 3 {3,4}: 0.
    plain = evaluate(model, batches, ks=(2,), progress=False)
    assert plain["users"] == 3 and plain["recall@2"] == pytest.approx(2 / 5)
    # Excluding history: R = [2, 3], [1, 2], [3, 4] -> hits 1, 1, 2 of 1, 2, 2 targets.
    excluding = evaluate(model, iter(batches), ks=(2,), exclude_history=True, progress=False)
    assert excluding["recall@2"] == pytest.approx(4 / 5)
    assert excluding["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 2) / 3)


def test_evaluate_shows_progress_when_the_number_of_batches_is_known(capsys):
    model = FixedScores(num_items=4)
    batches = [({"item_ids": np.array([[1]], "int32")}, np.array([[2]], "int32"))] * 3
    evaluate(model, iter(batches), ks=(1,), progress=True, steps=3)
    assert "3/3" in capsys.readouterr().out
    evaluate(model, iter(batches), ks=(1,), progress=True)  # generator, no steps: no bar
    assert "3/3" not in capsys.readouterr().out
    evaluate(model, batches, ks=(1,), progress=False)
    assert capsys.readouterr().out == ""


def test_evaluate_rejects_models_without_logits():
    class NoDict:
        def predict_on_batch(self, inputs):
            return np.zeros((1, 3))

    with pytest.raises(ValueError, match="logits"):
        evaluate(NoDict(), [({"item_ids": np.array([[1]])}, np.array([[2]]))], ks=(1,), progress=False)


def test_evaluate_runs_a_built_model_in_last_mode():
    from mfn4rec_tf.model import build_model

    config = make_config()
    model = build_model(config, output_mode="last")
    batches = []
    for seed, lengths in enumerate([(3, 1, 4), (2, 5)]):
        inputs = make_inputs(config, lengths, seed=seed)
        targets = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6]][: len(lengths)], "int32")
        batches.append((inputs, targets))
    result = evaluate(model, batches, ks=(5, 20), exclude_history=True, progress=False)
    # Same numbers by hand: the model's logits, ranked with the history excluded.
    metrics = RankingMetrics(ks=(5, 20))
    for inputs, targets in batches:
        logits = np.asarray(model(inputs, training=False)["logits"])
        assert logits.shape == (len(targets), config.num_items + 1)
        metrics.update(logits, targets, exclude=inputs["item_ids"])
    assert_same_metrics(result, metrics.result())
    assert result["users"] == 5
    # K = 20 > N = 13 items: every candidate is ranked, so every target not in the history is hit.
    hittable = sum(
        len(set(row_targets[row_targets != 0]) - set(inputs["item_ids"][row]))
        for inputs, targets in batches
        for row, row_targets in enumerate(targets)
    )
    assert hittable < 9  # some target is in its history, so exclusion shows
    assert result["recall@20"] == pytest.approx(hittable / 9)  # 9 targets in all


def test_format_table_prints_percentages_per_family_and_k():
    metrics = RankingMetrics(ks=(10, 20))
    metrics.update_from_ranked(np.array([[1] + [0] * 19, [2] + [0] * 19]), np.array([[1, 0], [5, 6]]))
    table = format_table(metrics.result(), ks=(10, 20))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "(%)", "@10", "@20"]
    assert [line.split()[0] for line in lines[1:7]] == list(FAMILIES)
    assert lines[1].split() == ["recall", "33.333", "33.333"]  # 1 hit of 3 targets
    assert lines[6].split() == ["mrr", "50.000", "50.000"]
    assert lines[7] == "users: 2"
    assert format_table({"hr@10": 0.1234567}, ks=(10,)).splitlines()[5].split() == ["hr", "12.346"]


# --- ranking in item chunks (issue: catalogues whose (batch, N + 1) scores do not fit) -------------------------


def test_top_k_in_chunks_equals_the_full_ranking_with_ties_and_exclusions():
    from mfn4rec_tf.metrics import top_k_items_chunked

    rng = np.random.default_rng(7)
    user = rng.integers(-2, 3, size=(9, 4)).astype("float32")  # small integers: many exact ties
    kernel = rng.integers(-2, 3, size=(4, 41)).astype("float32")
    bias = rng.integers(-1, 2, size=41).astype("float32")
    exclude = rng.integers(0, 41, size=(9, 6))
    full = user @ kernel + bias
    for k in (1, 5, 20, 45):
        for chunk in (1, 3, 7, 40, 41, 100):
            for ex in (None, exclude):
                np.testing.assert_array_equal(top_k_items_chunked(user, kernel, bias, k, ex, chunk_items=chunk),
                                              top_k_items(full, k, ex), err_msg=f"k={k} chunk={chunk}")


def test_evaluate_with_a_memory_budget_gives_the_same_metrics():
    import keras

    from mfn4rec_tf.config import ModalityConfig, ModelConfig
    from mfn4rec_tf.metrics import evaluate
    from mfn4rec_tf.model import build_model

    keras.utils.set_random_seed(3)
    model = build_model(ModelConfig(num_items=300, modalities=(ModalityConfig("text", 3),), id_hidden_units=4,
                                    memory_dim=3, fc_hidden_units=5, output_units=4), output_mode="last")
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(3):
        ids = rng.integers(0, 301, size=(16, 5)).astype("int32")
        ids[:, 0] = rng.integers(1, 301, size=16)
        batches.append(({"item_ids": ids, "text": rng.normal(size=(16, 5, 3)).astype("float32")},
                        rng.integers(0, 301, size=(16, 2))))
    for exclude_history in (False, True):
        whole = evaluate(model, batches, exclude_history=exclude_history, progress=False)
        # 16 users x 301 items x 4 bytes x 3 = 58 KB: a 0.01 MB budget cuts the catalogue into 3 chunks
        chunked = evaluate(model, batches, exclude_history=exclude_history, progress=False, memory_mb=0.02)
        assert chunked == whole


def test_per_user_values_average_to_the_aggregates():
    from mfn4rec_tf.metrics import RankingMetrics

    rng = np.random.default_rng(11)
    metrics = RankingMetrics(ks=(2, 5), per_user=True)
    plain = RankingMetrics(ks=(2, 5))
    for _ in range(3):
        logits = rng.normal(size=(7, 13))
        targets = rng.integers(0, 13, size=(7, 1))  # one target each; 0 = a user without targets
        metrics.update(logits, targets)
        plain.update(logits, targets)
    result, users = metrics.result(), metrics.per_user_result()
    assert plain.result() == result  # keeping per-user values changes no aggregate
    assert sorted(users) == ["ndcg@2", "ndcg@5", "recall@2", "recall@5"] and len(users["recall@5"]) == 21
    assert np.isnan(users["recall@5"]).sum() == result["skipped_users"]
    for key in users:  # one target per user: the micro Recall is the mean of the per-user values too
        assert np.nanmean(users[key]) == pytest.approx(result[key], abs=1e-12), key


def test_per_user_recall_by_hand_and_without_per_user():
    from mfn4rec_tf.metrics import RankingMetrics

    metrics = RankingMetrics(ks=(2,), per_user=True)
    # user 0: ranks [5, 3], targets {3, 4}: 1 of 2; user 1: ranks [1, 2], targets {7}: 0 of 1; user 2: no target
    metrics.update_from_ranked(np.array([[5, 3], [1, 2], [1, 2]]), np.array([[3, 4], [7, 0], [0, 0]]))
    users = metrics.per_user_result()
    np.testing.assert_allclose(users["recall@2"], [0.5, 0.0, np.nan])
    np.testing.assert_allclose(users["ndcg@2"], [(1 / np.log2(3)) / (1 + 1 / np.log2(3)), 0.0, np.nan])
    assert metrics.result()["recall@2"] == pytest.approx(1 / 3)  # micro: 1 hit of 3 targets
    with pytest.raises(ValueError, match="per_user=True"):
        RankingMetrics(ks=(2,)).per_user_result()
