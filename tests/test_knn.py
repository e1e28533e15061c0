"""Item-KNN, SKNN, V-SKNN and STAN: values computed by hand on a five-session log, a brute-force
cross-check on synthetic data, the grid search, and the shared model contract."""

import math

import numpy as np
import pytest
import torch
from model_contract import synthetic

from nextclick.data.batches import batch_from_prefixes, make_batch
from nextclick.data.padded import pad_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build
from nextclick.models.knn import ITEM_TIE_BREAK, SessionKNN, top_k_per_row

# The hand-made log, sessions in time order (index = clock). Items 1..6.
#   s0: 1 2 3      s1: 2 4      s2: 1 2 2 5      s3: 6 1      s4: 4 6 4
# clicks: 1:3 2:4 3:1 4:3 5:1 6:2 ; sessions holding: 1:3 2:3 3:1 4:2 5:1 6:2
LOG = [[1, 2, 3], [2, 4], [1, 2, 2, 5], [6, 1], [4, 6, 4]]
N_ITEMS = 6


def fitted(name, **config):
    return build(name, N_ITEMS, config).fit(Cases.every_prefix(Sessions.from_lists(LOG), 1))


def scores_of(model, prefix):
    """Scores of one prefix without the popularity tie-break (it is below 1e-9)."""
    return model.score(batch_from_prefixes([np.array(prefix)]))[0].numpy()


# ------------------------------------------------------------------ Item-KNN


def test_item_knn_similarity_of_the_last_click():
    model = fitted("item-knn", shrinkage=1.0, neighbours=0)
    z = scores_of(model, [4, 1])  # only the last click (1) counts
    assert z[2] == pytest.approx(2 / (math.sqrt(3 * 3) + 1))  # s0, s2 hold 1 and 2
    assert z[3] == pytest.approx(1 / (math.sqrt(3 * 1) + 1))  # s0
    assert z[5] == pytest.approx(1 / (math.sqrt(3 * 1) + 1))  # s2
    assert z[6] == pytest.approx(1 / (math.sqrt(3 * 2) + 1))  # s3
    assert z[4] == pytest.approx(0, abs=1e-8)  # never together with 1
    assert z[1] == pytest.approx(0, abs=1e-8)  # no self-similarity (GRU4Rec's baseline)


def test_item_knn_counts_sessions_not_clicks_and_can_score_the_last_item():
    model = fitted("item-knn", shrinkage=1.0, neighbours=0, recommend_last_item=True)
    z = scores_of(model, [2])
    # 2 and 5 share one session (s2) although s2 clicks 2 twice
    assert z[5] == pytest.approx(1 / (math.sqrt(3 * 1) + 1))
    # self: sessions clicking 2 twice (s2) / (n_2 + λ)
    assert z[2] == pytest.approx(1 / (3 + 1))
    assert scores_of(model, [1])[1] == pytest.approx(0, abs=1e-8)  # nobody clicks 1 twice


def test_item_knn_keeps_the_most_similar_items_and_breaks_ties_by_popularity():
    model = fitted("item-knn", shrinkage=1.0, neighbours=1)
    z = scores_of(model, [1])
    assert z[2] == pytest.approx(0.5)
    assert z[3] < 1e-8 and z[5] < 1e-8  # cut: beyond the one kept neighbour
    top, _ = model.recommend([np.array([1])], k=6)
    # after 2, everything else scores 0: popularity order 4 (3 clicks) = 1 (3) > 6 (2) > 3 = 5 (1)
    assert top[0][0] == 2 and set(top[0][1:3]) == {1, 4} and top[0][3] == 6


# ------------------------------------------------------------------ SKNN


def test_sknn_neighbours_similarities_and_scores():
    model = fitted("sknn", neighbours=3)
    rows, sessions, similarity, _ = model.neighbours(pad_prefixes([np.array([1, 2])]))
    found = dict(zip(sessions.tolist(), similarity.tolist()))
    # candidates: s0 {1,2,3} 2/sqrt(2*3); s1 {2,4} 1/sqrt(2*2); s2 {1,2,5} 2/sqrt(2*3); s3 {6,1} 1/sqrt(2*2)
    # k = 3: s0, s2 and, of the tied s1 / s3, the more recent s3
    assert found == pytest.approx({0: 2 / math.sqrt(6), 2: 2 / math.sqrt(6), 3: 0.5})
    z = scores_of(model, [1, 2])
    high = 2 / math.sqrt(6)
    expected = {1: 2 * high + 0.5, 2: 2 * high, 3: high, 4: 0.0, 5: high, 6: 0.5}
    for item, value in expected.items():
        assert z[item] == pytest.approx(value, abs=1e-8)


def test_sknn_cosine_divides_by_the_neighbour_length():
    # session-rec's sknn.py multiplies by sqrt|n| (model_zoo.md 2.6); the formula divides
    model = fitted("sknn", neighbours=10)
    z = scores_of(model, [3])  # only s0 {1,2,3} holds 3: sim = 1 / sqrt(1 * 3)
    assert z[3] == pytest.approx(1 / math.sqrt(3))


def test_sknn_samples_the_most_recent_candidates():
    model = fitted("sknn", neighbours=3, sample_size=2)
    _, sessions, _, _ = model.neighbours(pad_prefixes([np.array([1, 2])]))
    assert sorted(sessions.tolist()) == [2, 3]  # of s0..s3, the two latest
    z = scores_of(model, [1, 2])
    assert z[1] == pytest.approx(2 / math.sqrt(6) + 0.5)
    assert z[3] == pytest.approx(0, abs=1e-8)  # s0 was not sampled


# ------------------------------------------------------------------ V-SKNN


def test_vsknn_position_weights_decay_and_idf():
    model = fitted("v-sknn", neighbours=4, sample_size=0, position_weighting="quadratic",
                   neighbour_weighting="div", idf_weighting=2.0)
    # prefix [1, 2]: w(1) = (1/2)^2 = 0.25, w(2) = 1; sim = Σ shared w / |s| (|s| = 2)
    sim = {0: (0.25 + 1) / 2, 1: 1 / 2, 2: (0.25 + 1) / 2, 3: 0.25 / 2}
    # decay by the step of the most recent shared click: s3 shares only item 1, one click back -> 1/2
    decay = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.5}
    holds = {0: {1, 2, 3}, 1: {2, 4}, 2: {1, 2, 5}, 3: {1, 6}}
    idf = {1: math.log(5 / 3), 2: math.log(5 / 3), 3: math.log(5), 4: math.log(5 / 2), 5: math.log(5), 6: math.log(5 / 2)}
    z = scores_of(model, [1, 2])
    for item in range(1, 7):
        base = sum(sim[n] * decay[n] for n in holds if item in holds[n])
        assert z[item] == pytest.approx(base * (1 + 2.0 * idf[item]), abs=1e-8), item


def test_vsknn_keeps_the_k_most_similar():
    model = fitted("v-sknn", neighbours=3, sample_size=0, position_weighting="quadratic",
                   neighbour_weighting="div", idf_weighting=0.0)
    _, sessions, similarity, _ = model.neighbours(pad_prefixes([np.array([1, 2])]))
    assert dict(zip(sessions.tolist(), similarity.tolist())) == pytest.approx({0: 0.625, 1: 0.5, 2: 0.625})


# ------------------------------------------------------------------ STAN


def test_stan_three_decays():
    model = fitted("stan", neighbours=2, sample_size=0, position_decay=1.0, recency_decay=2.0,
                   neighbour_position_decay=1.0)
    # prefix [1, 2, 1]: last positions 1 -> 3, 2 -> 2; w1 = exp((p - 3) / 1): item 1 -> 1, item 2 -> e^-1
    norm = math.sqrt(1 + math.exp(-2))
    age = {0: 4, 1: 3, 2: 2, 3: 1}  # sessions to the end of the log (s4 is the newest, age 0)
    overlap = {0: 1 + math.exp(-1), 1: math.exp(-1), 2: 1 + math.exp(-1), 3: 1.0}
    length = {0: 3, 1: 2, 2: 3, 3: 2}  # distinct items
    sim = {n: overlap[n] / (norm * math.sqrt(length[n])) * math.exp(-age[n] / 2) for n in overlap}
    # sims: s0 .100, s1 .054, s2 .273, s3 .403 -> the two neighbours are s3 and s2
    rows, sessions, similarity, _ = model.neighbours(pad_prefixes([np.array([1, 2, 1])]))
    assert dict(zip(sessions.tolist(), similarity.tolist())) == pytest.approx({2: sim[2], 3: sim[3]})
    # f3: s3 = [6, 1], p* = 2 (item 1); s2 = [1, 2, 2, 5] -> last positions 1:1, 2:3, 5:4, p* = 3
    e = math.exp
    expected = {1: sim[3] * 1 + sim[2] * e(-2), 2: sim[2] * 1, 3: 0.0, 4: 0.0, 5: sim[2] * e(-1), 6: sim[3] * e(-1)}
    z = scores_of(model, [1, 2, 1])
    for item, value in expected.items():
        assert z[item] == pytest.approx(value, abs=1e-8), item


def test_a_session_of_items_never_seen_in_training_gets_the_popularity_order():
    train = Cases.every_prefix(Sessions.from_lists(LOG), 1)
    for name in ("item-knn", "sknn", "v-sknn", "stan"):
        model = build(name, N_ITEMS + 1).fit(train)  # item 7 never occurs in training
        top, scores = model.recommend([np.array([7])], k=3)
        assert top[0].tolist() == [2, 1, 4] or top[0].tolist() == [2, 4, 1], name  # 2: 4 clicks, 1 and 4: 3
        assert np.isfinite(scores).all() and scores.max() <= ITEM_TIE_BREAK


# ------------------------------------------------------------------ vectorisation


def brute_force_stan(train: Sessions, prefix, k, l1, l2, l3, n_items):
    """STAN by the formulas, one session at a time (the slow, obvious way)."""
    last_in_prefix = {item: p for p, item in enumerate(prefix, 1)}
    w = {item: math.exp((p - len(prefix)) / l1) for item, p in last_in_prefix.items()}
    norm = math.sqrt(sum(v * v for v in w.values()))
    candidates = []
    for n in range(len(train)):
        items = train[n].tolist()
        shared = set(items) & set(w)
        if shared:
            sim = sum(w[i] for i in shared) / (norm * math.sqrt(len(set(items))))
            sim *= math.exp(-(len(train) - 1 - n) / l2)
            candidates.append((sim, n))
    candidates.sort(reverse=True)
    z = np.zeros(n_items + 1)
    for sim, n in candidates[:k]:
        items = train[n].tolist()
        last = {item: p for p, item in enumerate(items, 1)}
        p_star = max(p for p, item in enumerate(items, 1) if item in w)
        for item, p in last.items():
            z[item] += sim * math.exp(-abs(p - p_star) / l3)
    return z


def test_stan_batched_sparse_scores_match_the_formulas_on_synthetic_data():
    split = synthetic()
    model = build("stan", split.n_items, {"neighbours": 20, "recency_decay": 500.0}).fit(split.train_cases())
    chosen = np.arange(0, len(split.test), len(split.test) // 25)[:25]
    batch = make_batch(split.test, chosen)
    scores = model.score(batch).numpy()
    for row, case in enumerate(chosen):
        expected = brute_force_stan(split.train, split.test.prefix(case).tolist(), 20, 1.25, 500.0, 2.5, split.n_items)
        np.testing.assert_allclose(scores[row, 1:], expected[1:], atol=2 * ITEM_TIE_BREAK)


@pytest.mark.parametrize("name, config", [
    ("stan", {}), ("stan", {"neighbours": 5, "sample_size": 30}), ("stan", {"neighbours": 3, "recency_decay": 0.0}),
    ("sknn", {}), ("sknn", {"neighbours": 4, "sample_size": 25}),
    ("v-sknn", {}), ("v-sknn", {"neighbours": 6, "position_weighting": "linear", "neighbour_weighting": "quadratic"}),
    ("v-sknn", {"position_weighting": "log", "neighbour_weighting": "div", "idf_weighting": 0.0}),
    ("v-sknn", {"position_weighting": "div", "neighbour_weighting": "log", "sample_size": 0})])
def test_session_knn_s_compiled_recommend_gives_the_array_form_s_items_and_scores(name, config, monkeypatch):
    pytest.importorskip("numba")
    from nextclick.models import base

    split = synthetic()
    model = build(name, split.n_items, config).fit(split.train_cases())
    prefixes = [split.test.prefix(case) for case in range(0, len(split.test), max(1, len(split.test) // 40))]
    prefixes += [np.array([3, 3, 7, 3]), np.arange(1, model.max_length + 40) % split.n_items + 1,  # repeats; over the cap
                 np.array([4, 0, 9])]  # padding inside a prefix holds a position and is no item
    batches = [prefixes[i : i + 3] for i in range(0, len(prefixes), 3)]
    expected = [model.recommend(batch, k=15) for batch in batches]
    monkeypatch.setenv(base.COMPILED_ENV, "1")  # tests/conftest.py turns the compiled forms off elsewhere
    monkeypatch.setattr(base, "_compiled_top_items", None)  # and back off after this test
    assert base.use_compiled()
    for batch, (top, scores) in zip(batches, expected):
        found, found_scores = model.recommend(batch, k=15)
        assert found.tolist() == top.tolist()
        np.testing.assert_allclose(found_scores, scores, rtol=1e-12)
    with pytest.raises(IndexError, match="item indices"):  # the compiled code reads no index unchecked
        model.recommend([np.array([1, split.n_items + 1])])


def test_scores_do_not_depend_on_the_batch():
    split = synthetic()
    for name in ("sknn", "v-sknn", "stan", "item-knn"):
        model = build(name, split.n_items).fit(split.train_cases())
        together = model.score(make_batch(split.test, np.arange(40)))
        alone = torch.cat([model.score(make_batch(split.test, np.array([i]))) for i in range(40)])
        torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-15)


def test_loading_other_arrays_drops_what_was_derived_from_the_old_ones():
    split = synthetic()
    batch = make_batch(split.test, np.arange(40))
    fewer_sessions = split.carve_validation()[0]  # the same model fitted on other data: other arrays
    for name in ("item-knn", "sknn"):
        model, other = (build(name, split.n_items).fit(cases) for cases in (split.train_cases(), fewer_sessions))
        model.score(batch)  # builds its similarity matrix or neighbour index
        model.load_state_arrays(other.state_arrays())
        torch.testing.assert_close(model.score(batch), other.score(batch), rtol=0, atol=0)


def test_top_k_per_row_keeps_short_rows_and_the_best_of_long_rows():
    indptr = np.array([0, 2, 6, 6, 9])
    priority = np.array([0.1, 0.2, 0.5, 0.9, 0.1, 0.7, 0.3, 0.2, 0.1])
    assert top_k_per_row(indptr, priority, 2).tolist() == [0, 1, 3, 5, 6, 7]


# ------------------------------------------------------------------ grid search


def test_tune_searches_the_models_grid_on_validation_and_keeps_the_winner(monkeypatch, tmp_path):
    from nextclick.runs.bench import run_bench
    from nextclick.training.loop import TrainOptions

    monkeypatch.setattr(SessionKNN, "search_space", {"neighbours": (500, 1)})
    options = TrainOptions(progress=False, quiet=True, checkpoint_dir=str(tmp_path / "run"))
    result, path = run_bench("sknn", None, overrides={"tune": "true"}, options=options, results_dir=tmp_path, threads=1)
    search = result["grid"]
    assert search["metric"] == "HR@20" and search["grid"] == {"neighbours": [500, 1]}
    assert [c["neighbours"] for c in search["candidates"]] == [500, 1]
    assert search["candidates"][0]["HR@20"] > search["candidates"][1]["HR@20"]  # one neighbour is too few
    assert result["config"]["neighbours"] == search["chosen"]["neighbours"] == 500
    assert path.parent.name == "tune=true"  # the run is named by what was asked, not by what was chosen


def test_models_do_not_search_by_themselves():
    split = synthetic()
    model = build("sknn", split.n_items, {"tune": True, "neighbours": 7}).fit(split.train_cases())
    assert model.config.neighbours == 7
