"""The repeat/explore decoder (models/repeat.py) alone and on every model that offers it."""

import numpy as np
import pytest
import torch

from model_contract import check_forward_backward, synthetic
from nextclick import checkpoint
from nextclick.data.batches import Batch, make_batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build
from nextclick.models.repeat import RepeatExplore, session_clicks, session_stats

MODELS = ["dsan", "narm", "sr-iem", "stamp", "sr-gnn", "gc-san", "csrm", "cosan", "danser"]
MODES = ["mix", "new-only"]


def decoder_inputs(n_items=12, d=6, seed=0):
    """queries (3, 4), table (N + 1, 4), session (3, d), item rows (N + 1, d), items (3, 5)."""
    torch.manual_seed(seed)
    items = torch.tensor([[0, 0, 3, 5, 3], [7, 2, 2, 9, 4], [0, 0, 0, 0, 11]])  # right-aligned, 0 = padding
    return torch.randn(3, 4), torch.randn(n_items + 1, 4), torch.randn(3, d), torch.randn(n_items + 1, d), items


@pytest.mark.parametrize("mode", MODES)
def test_the_mixture_is_a_distribution_over_the_items_and_padding_gets_no_mass(mode):
    decoder = RepeatExplore(6, 6, mode)
    out = decoder(*decoder_inputs())
    probabilities = out.scores.exp()
    assert torch.allclose(probabilities.sum(1), torch.ones(3), atol=1e-5)
    assert (probabilities[:, 0] == 0).all()
    assert ((out.click_weights == 0) == (decoder_inputs()[4] == 0)).all()  # padding clicks get no attention
    assert torch.allclose(out.click_weights.sum(1), torch.ones(3))


def test_new_only_explores_no_item_of_the_session_and_mix_may():
    queries, table, session, rows, items = decoder_inputs()
    for mode, expected_zero in (("new-only", True), ("mix", False)):
        decoder = RepeatExplore(6, 6, mode)
        with torch.no_grad():
            decoder.mode_out.bias.fill_(-50.0)  # p_repeat ~ 0: what is left is the explore side
        probabilities = decoder(queries, table, session, rows, items).scores.exp()
        in_session = probabilities.gather(1, items)[items != 0]
        assert bool((in_session < 1e-12).all()) == expected_zero


def test_the_loss_is_minus_log_of_the_mixture_at_the_target_plus_the_weighted_mode_loss():
    inputs = decoder_inputs()
    labels = torch.tensor([5, 1, 11])  # a repeat, a new item, a repeat
    for weight in (0.0, 2.0):
        decoder = RepeatExplore(6, 6, "mix", mode_weight=weight)
        out = decoder(*inputs, labels, need_scores=True)
        nll = -out.scores.gather(1, labels.unsqueeze(1)).mean()
        repeated = torch.tensor([1.0, 0.0, 1.0])
        mode = torch.nn.functional.binary_cross_entropy(out.repeat_probability, repeated)
        assert torch.allclose(out.loss, nll + weight * mode, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_the_explore_weight_adds_the_explore_sides_own_cross_entropy_at_the_targets_it_may_rank(mode):
    queries, table, session, rows, items = decoder_inputs()
    labels = torch.tensor([5, 1, 11])  # a repeat, a new item, a repeat
    explore = queries @ table.T
    explore[:, 0] = -torch.inf
    if mode == "new-only":
        explore = explore.scatter(1, items, -torch.inf)
    explore_nll = -torch.log_softmax(explore, 1).gather(1, labels.unsqueeze(1)).squeeze(1)
    if mode == "new-only":
        explore_nll = torch.where(torch.tensor([False, True, False]), explore_nll, 0.0)  # repeats cannot be explored
    torch.manual_seed(0)
    plain = RepeatExplore(6, 6, mode)
    torch.manual_seed(0)
    weighted = RepeatExplore(6, 6, mode, explore_weight=0.5)
    for need_scores in (True, False):  # the loss from the scores, and from the blocked normaliser alone
        base = plain(queries, table, session, rows, items, labels, need_scores=need_scores).loss
        out = weighted(queries, table, session, rows, items, labels, need_scores=need_scores)
        assert torch.allclose(out.loss, base + 0.5 * explore_nll.sum() / 3, atol=1e-5)
        assert torch.isfinite(out.loss)


@pytest.mark.parametrize("mode", MODES)
def test_with_explore_own_the_models_scores_learn_from_their_own_cross_entropy_alone(mode):
    """The mixture's loss reaches the explore side detached: the gradient on the model's queries and
    item table is that of the weighted explore cross-entropy, the loss value is unchanged, and the
    repeat side and the mode still learn from the mixture."""
    queries, table, session, rows, items = decoder_inputs()
    labels = torch.tensor([5, 1, 11])
    losses, grads = {}, {}
    for own in (False, True):
        torch.manual_seed(0)
        decoder = RepeatExplore(6, 6, mode, explore_weight=0.5, explore_own=own)
        q, t = queries.clone().requires_grad_(), table.clone().requires_grad_()
        for need_scores in (True, False):
            loss = decoder(q, t, session, rows, items, labels, need_scores=need_scores).loss
            losses[own, need_scores] = loss.detach()
            q.grad = t.grad = None
            decoder.zero_grad()
            loss.backward()
            grads[own, need_scores] = (q.grad.clone(), t.grad.clone(), decoder.attend.weight.grad.clone())
    q, t = queries.clone().requires_grad_(), table.clone().requires_grad_()
    explore = (q @ t.T).index_fill(1, torch.tensor([0]), -torch.inf)
    if mode == "new-only":
        explore = explore.scatter(1, items, -torch.inf)
    at_target = torch.log_softmax(explore, 1).gather(1, labels.unsqueeze(1)).squeeze(1)
    (-0.5 * at_target[torch.isfinite(at_target)].sum() / 3).backward()  # the weighted explore cross-entropy alone
    for need_scores in (True, False):
        assert torch.allclose(losses[True, need_scores], losses[False, need_scores])
        own_q, own_t, own_attend = grads[True, need_scores]
        assert torch.allclose(own_q, q.grad, atol=1e-5) and torch.allclose(own_t, t.grad, atol=1e-5)
        assert not torch.allclose(own_q, grads[False, need_scores][0])  # the mixture no longer moves them
        assert own_attend.abs().sum() > 0  # ... but still trains the repeat side


def test_explore_own_needs_an_explore_weight():
    with pytest.raises(ValueError, match="repeat_explore_weight > 0"):
        RepeatExplore(6, 6, "mix", explore_own=True)
    from nextclick.models.config import ConfigError

    with pytest.raises(ConfigError, match="repeat_explore_weight > 0"):
        build("narm", 30, {"repeat": "mix", "repeat_explore_own": True})


def test_a_target_off_the_session_gives_finite_gradients_in_new_only_mode():
    queries, table, session, rows, items = decoder_inputs()
    queries.requires_grad_()
    decoder = RepeatExplore(6, 6, "new-only")
    decoder(queries, table, session, rows, items, torch.tensor([1, 2, 11]), need_scores=False).loss.backward()
    for parameter in [queries, *decoder.parameters()]:
        assert torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("mode", MODES)
def test_the_training_loss_without_the_scores_equals_the_loss_from_them_with_the_same_gradients(mode):
    """Training computes the explore normaliser block by block (layers.inner_product_logsumexp) and
    never builds the (B, N + 1) scores; loss and gradients are those of the dense mixture."""
    labels = torch.tensor([5, 1, 11])  # new-only: 5 and 11 are repeats, whose explore mass is zero
    results = []
    for need_scores in (True, False):
        queries, table, session, rows, items = decoder_inputs()
        queries.requires_grad_(), table.requires_grad_()
        torch.manual_seed(0)
        decoder = RepeatExplore(6, 6, mode)
        loss = decoder(queries, table, session, rows, items, labels, need_scores=need_scores).loss
        loss.backward()
        results.append((loss, queries.grad, table.grad))
    for dense, blocked in zip(*results):
        assert torch.allclose(dense, blocked, atol=1e-5)


def test_the_attention_over_real_clicks_equals_its_formula_computed_over_the_padded_batch():
    """a_j = softmax_j(v . tanh(W_c e_j + W_s s + recency[min(t - j, 15)] + count[min(n_j, 7)])) over the
    real clicks, computed directly on the padded (B, L) layout."""
    queries, table, session, item_rows, items = decoder_inputs()
    decoder = RepeatExplore(6, 6, "mix")
    with torch.no_grad():
        decoder.recency.weight.normal_()
        decoder.count.weight.normal_()
        weights = decoder(queries, table, session, item_rows, items).click_weights
        mask = items != 0
        recency = (4 - torch.arange(5)).clamp(max=15)
        counts = ((items.unsqueeze(2) == items.unsqueeze(1)) & mask.unsqueeze(1)).sum(2)
        features = (decoder.click(item_rows[items]) + decoder.session(session).unsqueeze(1)
                    + decoder.recency(recency).unsqueeze(0) + decoder.count(counts.clamp(max=7)))
        logits = decoder.attend(torch.tanh(features)).squeeze(2).masked_fill(~mask, -torch.inf)
    assert torch.allclose(weights, torch.softmax(logits, dim=1), atol=1e-6)


def test_more_recent_and_more_frequent_clicks_can_be_told_apart():
    """Two clicks of the same item at different distances from the end get different attention once
    the recency vectors differ; a twice-clicked item sums two clicks' weights."""
    decoder = RepeatExplore(6, 6, "mix")
    with torch.no_grad():
        decoder.recency.weight.copy_(torch.linspace(2, -2, decoder.recency.weight.shape[0]).unsqueeze(1).expand_as(decoder.recency.weight))
    queries, table, session, _, items = decoder_inputs()
    no_item_signal = torch.zeros(13, 6)  # only recency and count speak
    out = decoder(queries, table, session, no_item_signal, items)
    weights = out.click_weights[1]  # session 7 2 2 9 4
    assert weights[4] != weights[0]
    repeat_mass = torch.zeros(13).scatter_add_(0, items[1], weights)
    assert torch.isclose(repeat_mass[2], weights[1] + weights[2])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_models_with_the_decoder_keep_the_contract(name, mode, tmp_path):
    split = synthetic()
    torch.manual_seed(0)
    model = build(name, split.n_items, {"repeat": mode})
    batch = make_batch(split.test, np.arange(16), model.max_length)
    scores = check_forward_backward(model.train(), batch)
    assert torch.allclose(scores.exp().sum(1), torch.ones(len(batch)), atol=1e-4)
    assert not model.inner_product  # a mixture: serving ranks it exactly
    model.eval()
    with torch.no_grad():
        before = model.score(batch)
    loaded = checkpoint.load(checkpoint.save(tmp_path / name, model, split.vocab, split.protocol, split.name))[0]
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.score(batch), before)
    assert "repeat probability" in model.click_weights(batch).scalars


def test_session_stats_count_length_distinct_items_and_repeats_at_the_real_clicks():
    items = torch.tensor([[0, 0, 3, 4, 3], [0, 0, 0, 0, 7], [1, 2, 2, 2, 2]])  # right-aligned, 0 = padding
    expected = torch.tensor([
        # log(1 + clicks), distinct / clicks, last click seen before, last two the same, log(1 + largest count)
        [np.log1p(3), 2 / 3, 1.0, 0.0, np.log1p(2)],
        [np.log1p(1), 1.0, 0.0, 0.0, np.log1p(1)],
        [np.log1p(5), 2 / 5, 1.0, 1.0, np.log1p(4)],
    ], dtype=torch.float32)
    assert torch.allclose(session_stats(items, session_clicks(items, 13)), expected)
    padded = torch.nn.functional.pad(items, (3, 0))
    assert torch.equal(session_stats(items, session_clicks(items, 13)), session_stats(padded, session_clicks(padded, 13)))  # padding adds nothing


def test_the_mode_reads_the_session_stats_only_when_asked():
    queries, table, session, rows, items = decoder_inputs()
    torch.manual_seed(0)
    plain = RepeatExplore(6, 6, "mix")
    torch.manual_seed(0)
    with_stats = RepeatExplore(6, 6, "mix", mode_stats=True)
    assert plain.mode_hidden.in_features == 12 and with_stats.mode_hidden.in_features == 12 + 5
    out = with_stats(queries, table, session, rows, items, torch.tensor([5, 1, 11]), need_scores=True)
    assert torch.allclose(out.scores.exp().sum(1), torch.ones(3), atol=1e-5)
    out.loss.backward()
    assert with_stats.mode_hidden.weight.grad[:, 12:].abs().sum() > 0  # the statistics' columns are trained


@pytest.mark.parametrize("name", ["dsan", "sr-iem"])
def test_models_with_the_mode_statistics_keep_the_contract(name, tmp_path):
    split = synthetic()
    torch.manual_seed(0)
    model = build(name, split.n_items, {"repeat": "mix", "repeat_mode_stats": True})
    batch = make_batch(split.test, np.arange(16), model.max_length)
    scores = check_forward_backward(model.train(), batch)
    assert torch.allclose(scores.exp().sum(1), torch.ones(len(batch)), atol=1e-4)
    loaded = checkpoint.load(checkpoint.save(tmp_path / name, model.eval(), split.vocab, split.protocol, split.name))[0]
    with torch.no_grad():
        assert loaded.config.repeat_mode_stats and torch.equal(loaded.score(batch), model.score(batch))


@pytest.mark.parametrize("name", ["narm", "sr-iem"])
def test_a_truncating_model_reads_its_own_window_while_the_decoder_sees_the_whole_prefix(name):
    """SR-IEM reads its last 10 clicks, NARM its last 19; with the decoder on, an item clicked only before
    that window is still a repeat candidate, and the model's own encoder reads the same window as before."""
    torch.manual_seed(0)
    model = build(name, 40, {"repeat": "mix"}).eval()
    window = model.encoder_length
    session = [33] + list(range(1, window + 1))  # item 33 only before the window
    batch = make_batch(Cases.whole_sessions(Sessions.from_lists([session + [0]])), max_length=model.max_length)
    assert batch.items.shape[1] == window + 1
    with torch.no_grad():
        out = model._decoded(batch)
    assert out.click_weights[0, 0] > 0  # item 33 is weighed by the decoder's attention
    cut = batch.recent(window)
    assert isinstance(cut, Batch) and cut.items.shape[1] == window and int(cut.lengths[0]) == window


def test_the_decoder_off_builds_the_same_model_as_before():
    """Faithful configurations are untouched: the decoder is built after a model's own initialisation,
    so with it off the parameters (and the random stream) are those of the plain model."""
    for name in MODELS:
        torch.manual_seed(0)
        plain = build(name, 30)
        torch.manual_seed(0)
        off = build(name, 30, {"repeat": "off"})
        assert plain.repeat_decoder is None and off.repeat_decoder is None
        for (a, x), (b, y) in zip(plain.state_dict().items(), off.state_dict().items()):
            assert a == b and torch.equal(x, y)


def test_serving_ranks_a_decoder_equipped_model_by_its_mixture_not_its_explore_vectors():
    from nextclick.serve.index import ExactTopK

    split = synthetic()
    torch.manual_seed(0)
    model = build("sr-iem", split.n_items, {"repeat": "mix"}).eval()
    prefixes = [np.array([3, 7, 3]), np.array([5])]
    served, expected = ExactTopK(model).top(prefixes, 10), model.recommend(prefixes, 10)
    assert np.array_equal(served[0], expected[0]) and np.allclose(served[1], expected[1])
