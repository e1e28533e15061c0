"""Hand-computed rankings: pessimistic ties, padding never ranked, HR@K / MRR@K, memory bounds."""

import numpy as np
import pytest
import torch

from nextclick.data.sessions import Cases, Sessions
from nextclick.evaluate import Evaluation, by_length, evaluate, metrics_from_ranks, paired_test, ranks_from_scores

INF = float("inf")


def test_rank_is_one_plus_items_scoring_at_least_the_target():
    scores = torch.tensor([
        [-INF, 0.1, 0.9, 0.5, 0.3],  # target 3 (0.5): only item 2 is higher -> rank 2
        [-INF, 0.4, 0.4, 0.4, 0.1],  # target 2 ties with items 1 and 3 -> rank 3 (pessimistic)
        [-INF, 0.0, 0.0, 0.0, 1.0],  # target 4 is the best -> rank 1
    ])
    assert ranks_from_scores(scores, torch.tensor([3, 2, 4])).tolist() == [2, 3, 1]


def test_padding_column_is_never_ranked_even_with_a_high_score():
    scores = torch.tensor([[99.0, 0.1, 0.2]])
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [1]


def test_constant_scores_rank_every_target_last():
    scores = torch.zeros(2, 6)
    scores[:, 0] = -INF
    assert ranks_from_scores(scores, torch.tensor([1, 5])).tolist() == [5, 5]


def test_nan_target_ranks_last():
    scores = torch.tensor([[-INF, float("nan"), 0.3, 0.1]])
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [3]


def test_hit_rate_and_mrr_from_hand_computed_ranks():
    ranks = np.array([1, 2, 5, 11, 30])
    m = metrics_from_ranks(ranks, ks=(5, 10, 20))
    assert m["HR@5"] == pytest.approx(3 / 5)
    assert m["HR@10"] == pytest.approx(3 / 5)
    assert m["HR@20"] == pytest.approx(4 / 5)
    assert m["MRR@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 5)
    assert m["MRR@20"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 11) / 5)


def test_breakdown_by_prefix_length_pools_long_prefixes():
    ranks = np.array([1, 3, 30, 2])
    lengths = np.array([1, 1, 2, 25])
    table = by_length(ranks, lengths, ks=(20,), cap=20)
    assert table["1"]["cases"] == 2 and table["1"]["HR@20"] == 1.0
    assert table["2"]["HR@20"] == 0.0
    assert table["20+"]["MRR@20"] == pytest.approx(0.5)


def test_evaluate_scores_every_case_in_order_with_bounded_batches():
    sessions = Sessions.from_lists([[1, 2, 3], [3, 1], [2, 2, 4]])
    cases = Cases.every_prefix(sessions, 1)
    widths = []

    def score(batch):  # prefers the item equal to the last click + 1
        widths.append(len(batch))
        s = torch.zeros(len(batch), 6)
        s[:, 0] = -INF
        s[torch.arange(len(batch)), (batch.items[:, -1] + 1).clamp(max=5)] = 1.0
        return s

    result = evaluate(score, cases, batch_size=2)
    assert max(widths) == 2
    # cases: [1,2]->3 hit; [1]->2 hit; [3]->1 miss (tie of 4 zeros -> rank 5); [2,2]->4 miss; [2]->2 miss
    assert result.ranks.tolist() == [1, 1, 5, 5, 5]
    assert result.metrics["HR@5"] == 1.0 and result.metrics["HR@10"] == 1.0
    assert result.metrics["MRR@20"] == pytest.approx((1 + 1 + 3 / 5) / 5)


def test_paired_t_test_detects_a_consistent_difference():
    a = np.array([1] * 50 + [30] * 50)
    b = np.array([30] * 90 + [1] * 10)
    result = paired_test(a, b, k=20)
    assert result["HR@20"]["p"] < 0.01 and result["HR@20"]["mean_difference"] == pytest.approx(0.4)
    assert paired_test(a, a)["MRR@20"]["p"] == 1.0


@pytest.mark.slow  # scores all of diginetica's test cases
def test_evaluating_diginetica_never_builds_the_full_score_matrix(benchmarks_dir):
    """60,858 x 43,097 float32 would be 10.5 GB; evaluation holds one batch at a time."""
    import subprocess
    import sys

    code = (
        "import resource, torch; from nextclick.data.benchmarks import load_split; "
        "from nextclick.models import build; from nextclick.evaluate import evaluate; "
        f"s = load_split(r'{benchmarks_dir / 'diginetica'}'); m = build('pop', s.n_items).fit(s.train_cases()); "
        "r = evaluate(m.score, s.test); "
        "print(len(r.ranks), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == 60_858
    assert int(out[1]) < 4 * 1024 * 1024  # KiB: under 4 GB peak


def test_repeat_targets_are_the_labels_already_clicked_in_the_prefix():
    sessions = Sessions.from_lists([[1, 2, 1, 3], [4, 4], [5, 6, 7]])
    cases = Cases.every_prefix(sessions, 1)
    labels_and_prefixes = [(int(label), cases.prefix(c).tolist()) for c, label in enumerate(cases.labels)]
    expected = [label in prefix for label, prefix in labels_and_prefixes]
    assert cases.repeats().tolist() == expected
    assert sum(expected) == 2  # 1 after [1, 2]; 4 after [4]


def test_evaluation_splits_metrics_into_repeat_and_new_targets():
    evaluation = Evaluation(np.array([1, 30, 2, 4]), np.array([1, 2, 3, 4]), repeats=np.array([True, True, False, False]))
    split = evaluation.by_repeat()
    assert split["repeat"]["cases"] == 2 and split["repeat"]["share"] == 0.5
    assert split["repeat"]["HR@20"] == 0.5 and split["new"]["HR@20"] == 1.0
    assert split["new"]["MRR@20"] == pytest.approx((1 / 2 + 1 / 4) / 2)
