"""DSAN: shapes, masking, alpha range, and the fast paths agreeing with the reference paths."""

import numpy as np
import pytest
import torch
from entmax import entmax_bisect

from nextclick.data.batches import Batch, batch_from_prefixes, make_batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build
from nextclick.models.layers import alpha_entmax, alpha_entmax_numpy

N_ITEMS = 40


def model(**overrides):
    torch.manual_seed(0)
    return build("dsan", N_ITEMS, {"embedding_dim": 12, "max_positions": 64, **overrides})


def batch(sessions=((1, 2, 3, 4, 5), (6, 7), (8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18), (3, 3, 9))):
    return make_batch(Cases.whole_sessions(Sessions.from_lists([list(s) for s in sessions])))


def pad_left(b: Batch, width: int) -> Batch:
    extra = width - b.items.shape[1]
    return Batch(torch.nn.functional.pad(b.items, (extra, 0)), b.lengths, b.labels, b.full_lengths)


def test_forward_and_backward_shapes():
    m = model()
    b = batch()
    with torch.no_grad():
        torch.manual_seed(1)  # the same dropout masks in both calls
        scores, plain_loss = m(b, b.labels)
    assert scores.shape == (4, N_ITEMS + 1)  # the target-token row trains as a negative but is no candidate
    torch.manual_seed(1)
    loss = m(b, b.labels)[1]  # training: computed without the scores, over the same N + 2 rows
    assert torch.allclose(loss, plain_loss)
    assert torch.isinf(scores[:, 0]).all()
    loss.backward()
    assert m.query.weight.grad is not None and m.alpha_head.weight.grad is not None
    assert m.item_embedding.weight.grad[0].abs().sum() == 0  # padding row never learns


def test_padding_never_receives_weight_and_the_target_token_is_no_target_key():
    m = model()
    b = pad_left(batch(), 30)
    attention = m.attention(b)
    padding = b.items == 0
    assert (attention.self_attention[:, :, :-1][padding.unsqueeze(1).expand(-1, 31, -1)] == 0).all()
    assert (attention.target_attention[padding] == 0).all()
    assert attention.target_attention.shape == b.items.shape  # the token is not among the keys
    assert torch.allclose(attention.target_attention.sum(1), torch.ones(4), atol=1e-5)


def test_adaptive_alphas_stay_between_one_and_two():
    m = model()
    for scale in (0.0, 1.0, 50.0):
        with torch.no_grad():
            m.alpha_head.weight.mul_(scale if scale else 0.0)
        a = m.attention(batch())
        for alpha in (a.alpha_self, a.alpha_target):
            assert ((alpha > 1) & (alpha < 2)).all() or ((alpha >= 1.0001) & (alpha < 2)).all()


def test_length_grouped_encoding_gives_the_reference_scores():
    """The official code pads every batch to one global width (285 on Retailrocket); we encode
    length groups at their own width. Same weights -> same scores."""
    fast = model()
    reference = model(group_by_length=False)
    reference.load_state_dict(fast.state_dict())
    b = batch()
    expected = reference.score(pad_left(b, 285))
    assert torch.allclose(fast.score(b), expected, atol=1e-5)


def test_by_default_length_groups_are_used_on_the_cpu(length_group_calls):
    calls = length_group_calls
    model().score(batch())
    assert calls
    calls.clear()
    model(group_by_length=False).score(batch())
    assert not calls


def test_left_padding_does_not_change_a_sessions_scores():
    m = model(group_by_length=False)
    b = batch()
    assert torch.allclose(m.score(b), m.score(pad_left(b, 40)), atol=1e-5)


def _entmax_and_gradients(fast: bool, alpha: float, dtype: torch.dtype):
    torch.manual_seed(1)
    x = (torch.randn(6, 9, 17) * 3).to(dtype)
    x[:, :, :5] = -torch.inf  # masked keys
    x.requires_grad_(True)
    a = torch.full((6, 9, 1), alpha, dtype=dtype, requires_grad=True)
    y = alpha_entmax(x, a, dim=-1, fast=True) if fast else entmax_bisect(x, a, dim=-1, n_iter=100)
    (y * torch.randn(y.shape).to(dtype)).sum().backward()
    return y.detach().double(), x.grad.nan_to_num().double(), a.grad.double()


@pytest.mark.parametrize("alpha", [1.05, 1.3, 1.5, 1.8, 2.0])
def test_fast_entmax_finds_the_reference_threshold_and_gradients(alpha):
    # in float64 Newton's threshold is the bisection's to rounding
    for fast, reference in zip(_entmax_and_gradients(True, alpha, torch.float64),
                               _entmax_and_gradients(False, alpha, torch.float64)):
        assert torch.allclose(fast, reference, atol=1e-10)
    # in float32 it is as close to the float64 answer as the reference's own float32 bisection: the alpha
    # gradient near alpha = 1 (a sum of p^(2-alpha) log p terms) carries ~1e-4 of float32 noise in both
    truth = _entmax_and_gradients(False, alpha, torch.float64)
    fast = _entmax_and_gradients(True, alpha, torch.float32)
    reference = _entmax_and_gradients(False, alpha, torch.float32)
    for f, r, t in zip(fast, reference, truth):
        assert (f - t).abs().max() <= max(1e-5, 2 * (r - t).abs().max())
    assert (fast[0][:, :, :5] == 0).all()


def test_fast_entmax_model_scores_like_the_reference_model():
    fast = model(fast_entmax=True)
    reference = model()
    reference.load_state_dict(fast.state_dict())
    assert torch.allclose(fast.score(batch()), reference.score(batch()), atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 1.0001, 1.3, 1.5, 2.0])
def test_numpy_entmax_gives_the_torch_newton_form_s_weights_and_zero_to_masked_keys(alpha):
    torch.manual_seed(0)
    x = torch.randn(9, 9) * 3
    x[:, :3] = -torch.inf
    # against the float64 answer, as close as torch's float32 Newton form (near alpha = 1 the exponent
    # 1 / (alpha - 1) magnifies float32 rounding in both: 1e-4 at alpha 1.0001)
    def torch_form(scores):
        if alpha == 1.0:
            return torch.softmax(scores, dim=-1).numpy()
        return alpha_entmax(scores, torch.tensor(alpha, dtype=scores.dtype), fast=True).numpy()

    truth = torch_form(x.double())
    torch_error = np.abs(torch_form(x) - truth).max()
    got = alpha_entmax_numpy(x.numpy(), alpha)
    assert np.abs(got - truth).max() <= max(1e-6, 2 * torch_error)
    assert (got[:, :3] == 0).all() and np.allclose(got.sum(1), 1, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"variant": "ns"}, {"variant": "nt"}, {"variant": "da"}, {"alpha": 1.0},
                                       {"alpha": 1.5}, {"max_length": 4}, {"max_positions": 8}])
def test_numpy_query_vectors_are_query_vectors_alone_and_in_a_padded_batch(overrides, monkeypatch):
    monkeypatch.setenv("NEXTCLICK_COMPILED", "1")  # tests/conftest.py turns the compiled encoder off elsewhere
    m = model(fast_entmax=True, **overrides)
    in_numpy = m.numpy_query_vectors()
    sessions = [np.array(s) for s in ([5], [1, 2, 3, 4, 5], [3, 3, 9], list(range(1, 21)), list(range(1, 40)))]
    expected = m.query_vectors(batch_from_prefixes(sessions, m.max_length)).numpy()
    assert in_numpy.compiled is not None  # numba, from the serve extra that make install installs
    for encode in (in_numpy, in_numpy.in_numpy):  # compiled, and numpy calls (without numba)
        assert np.allclose(encode(sessions), expected, atol=2e-5), overrides
        for session, vector in zip(sessions, expected):
            assert np.allclose(encode([session])[0], vector, atol=2e-5), (overrides, session)


def test_numpy_query_vectors_refuse_item_indices_outside_the_catalogue(monkeypatch):
    monkeypatch.setenv("NEXTCLICK_COMPILED", "1")  # the compiled encoder reads its tables without bounds checks
    m = model(fast_entmax=True)
    in_numpy = m.numpy_query_vectors()
    for bad in ([1, m.n_items + 1], [-1, 2]):
        with pytest.raises(IndexError, match="item indices"):
            in_numpy([np.array([3]), np.array(bad)])


def test_numpy_query_vectors_are_offered_only_where_the_torch_path_would_give_the_same_vectors():
    assert model().numpy_query_vectors() is None  # the reference bisection: `serve --set fast_entmax=false`
    assert model(fast_entmax=True, repeat="mix").numpy_query_vectors() is None  # no inner product


@pytest.mark.parametrize("overrides", [{"variant": "ns"}, {"variant": "nt"}, {"variant": "da"}, {"alpha": 1.0},
                                       {"alpha": 1.4}, {"alpha": 2.0}, {"w_k": 1.0}, {"max_length": 3}])
def test_paper_variants_run_forward_and_backward(overrides):
    m = model(**overrides)
    b = batch()
    m(b, b.labels)[1].backward()
    with torch.no_grad():
        assert m(b)[0].shape == (4, N_ITEMS + 1)


def test_sparsemax_variant_gives_exact_zeros():
    m = model(alpha=2.0)
    with torch.no_grad():
        m.query.weight.mul_(20)  # peaked scores make sparsemax drop keys
    a = m.attention(batch())
    assert (a.self_attention == 0).any()


def test_positions_count_from_the_session_start_even_when_truncated():
    m = model(max_length=2)
    b = make_batch(Cases.whole_sessions(Sessions.from_lists([[1, 2, 3, 4, 5]])), max_length=2)
    tokens, positions = m._indices(b.items, b.full_lengths)
    assert tokens.tolist() == [[3, 4, N_ITEMS + 1]]
    assert positions.tolist() == [[3, 4, 5]]
