"""BPR-MF and FPMC: scores and BPR updates computed by hand, epoch selection on validation, and the
shared model contract."""

import math

import numpy as np
import pytest
import torch
from model_contract import synthetic

from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build
from nextclick.models.factorization import _BPRNetwork, _Clicks, _FPMCNetwork


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------ BPR-MF


def test_bpr_mf_scores_with_the_mean_of_the_prefix_item_factors():
    model = build("bpr-mf", 3, {"factors": 2})
    model.item_factors = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    model.item_bias = np.array([0, 0.1, 0.2, 0.3], dtype=np.float32)
    model.popularity = np.array([0, 1, 1, 1.0])
    z = model.score(batch_from_prefixes([np.array([1, 3])]))[0]
    # session vector = mean(q1, q3) = (1, 0.5)
    assert torch.isneginf(z[0])
    assert z[1:].tolist() == pytest.approx([1 + 0.1, 0.5 + 0.2, 1.5 + 0.3], abs=1e-6)


def test_bpr_mf_sgd_step_is_the_bpr_update():
    model = build("bpr-mf", 2, {"factors": 2, "learning_rate": 0.1, "learn_item_bias": True})
    network = _BPRNetwork(1, 2, model.config)
    with torch.no_grad():
        network.session_factors.weight[:] = torch.tensor([[1.0, 0.0]])
        network.item_factors.weight[:] = torch.tensor([[0, 0], [0.5, 0.5], [0.0, 1.0]])
        network.item_bias.weight.zero_()
    clicks = _Clicks.of(Sessions.from_lists([[1]]))  # session 0 clicked item 1
    loss = model._loss(network, clicks, np.array([0]), torch.tensor([2]))  # negative: item 2
    x = 1.0 * (0.5 - 0.0) + 0.0 * (0.5 - 1.0)  # <p_u, q_i - q_j>
    assert float(loss.detach()) == pytest.approx(-math.log(sigmoid(x)))
    optimizer = model._optimizer(network)
    loss.backward()
    optimizer.step()
    step = 0.1 * sigmoid(-x)  # lr * dln σ(x)/dx
    assert network.session_factors.weight[0].tolist() == pytest.approx([1 + step * 0.5, 0 - step * 0.5])
    assert network.item_factors.weight[1].tolist() == pytest.approx([0.5 + step * 1, 0.5])
    assert network.item_factors.weight[2].tolist() == pytest.approx([0 - step * 1, 1.0])
    assert network.item_bias.weight[:, 0].tolist() == pytest.approx([0, step, -step])


# ------------------------------------------------------------------ FPMC


def fpmc_with(session_term, **tables):
    model = build("fpmc", 3, {"factors": 2, "session_term": session_term})
    empty = np.zeros((0, 2), dtype=np.float32)
    model.item_to_last = np.asarray(tables["item_to_last"], dtype=np.float32)
    model.last_to_item = np.asarray(tables["last_to_item"], dtype=np.float32)
    model.item_to_user = np.asarray(tables.get("item_to_user", empty), dtype=np.float32)
    model.user_to_item = np.asarray(tables.get("user_to_item", empty), dtype=np.float32)
    model.popularity = np.array([0, 1, 1, 1.0])
    return model


IL = [[0, 0], [1, 0], [0, 2], [1, 1]]  # v^{IL}_i
LI = [[0, 0], [3, 0], [0, 1], [1, 1]]  # v^{LI}_l


def test_fpmc_without_a_user_term_is_a_factorised_markov_chain_on_the_last_click():
    model = fpmc_with("none", item_to_last=IL, last_to_item=LI)
    z = model.score(batch_from_prefixes([np.array([3, 1]), np.array([1, 2])]))
    # last click 1: v^{LI}_1 = (3, 0) -> <(3,0), v^{IL}_i> = 3, 0, 3 ; last click 2: (0, 1) -> 0, 2, 1
    assert z[0, 1:].tolist() == pytest.approx([3, 0, 3], abs=1e-6)
    assert z[1, 1:].tolist() == pytest.approx([0, 2, 1], abs=1e-6)


def test_fpmc_prefix_mean_adds_the_session_as_user_term():
    IU = [[0, 0], [1, 0], [0, 1], [2, 2]]  # v^{IU}_i
    UI = [[0, 0], [1, 1], [0, 2], [4, 0]]  # rows averaged over the prefix into v^{UI}_u
    model = fpmc_with("prefix-mean", item_to_last=IL, last_to_item=LI, item_to_user=IU, user_to_item=UI)
    z = model.score(batch_from_prefixes([np.array([3, 1])]))[0]
    # user = mean(UI[3], UI[1]) = (2.5, 0.5); user term = 2.5, 0.5, 6 ; MC term (last 1) = 3, 0, 3
    assert z[1:].tolist() == pytest.approx([5.5, 0.5, 9.0], abs=1e-6)


def test_fpmc_sbpr_margin_with_a_trained_session_factor():
    config = build("fpmc", 3, {"factors": 2, "session_term": "train-only"}).config
    network = _FPMCNetwork(1, 3, config)
    with torch.no_grad():
        network.item_to_last.weight[:] = torch.tensor(IL, dtype=torch.float32)
        network.last_to_item.weight[:] = torch.tensor(LI, dtype=torch.float32)
        network.item_to_user.weight[:] = torch.tensor([[0, 0], [1, 0], [0, 1], [2, 2]], dtype=torch.float32)
        network.user_to_item.weight[:] = torch.tensor([[1.0, -1.0]])
    margin, _ = network.margin(torch.tensor([0]), torch.tensor([[3, 1]]), torch.tensor([3]), torch.tensor([2]))
    # MC: <(3,0), (1,1) - (0,2)> = 3 ; user: <(1,-1), (2,2) - (0,1)> = 2 - 1 = 1
    assert margin.tolist() == pytest.approx([4.0])


def test_fpmc_train_only_drops_the_session_factors_at_inference():
    split = synthetic()
    model = build("fpmc", split.n_items, {"session_term": "train-only", "epochs": 1}).fit(split.train_cases())
    assert model.user_to_item.shape == (0, 100) and model.item_to_user.shape == (0, 100)
    z = model.score(batch_from_prefixes([np.array([5, 7])]))[0]
    expected = model.last_to_item[7] @ model.item_to_last.T
    np.testing.assert_allclose(z[1:].numpy(), expected[1:], rtol=1e-5, atol=1e-6)


def test_epoch_count_is_selected_on_validation_and_reused_by_the_refit():
    from nextclick.runs.select import select_epochs

    split = synthetic()
    fit, valid = split.carve_validation(0.1)
    model = build("fpmc", split.n_items, {"epochs": 3, "patience": 1})
    selection = select_epochs(model, fit, valid)["epoch_selection"]
    history = selection["history"]
    best = max(history, key=lambda entry: entry["HR@20"])
    assert selection["selected_epochs"] == best["epoch"] == model.config.epochs
    # the kept parameters are those of the selected epoch
    from nextclick.evaluate import evaluate
    from nextclick.runs.select import validation_subset

    assert evaluate(model.score, validation_subset(valid)).metrics["HR@20"] == pytest.approx(best["HR@20"], abs=1e-6)


def test_training_is_reproducible():
    train = Cases.every_prefix(Sessions.from_lists([[1, 2, 3], [2, 3, 4], [4, 1], [3, 4, 1, 2]]), 1)
    first = build("bpr-mf", 4, {"epochs": 2}).fit(train)
    second = build("bpr-mf", 4, {"epochs": 2}).fit(train)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)
