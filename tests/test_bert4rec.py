"""BERT4Rec (models/bert4rec.py): the Cloze masks, the mask-last samples, the appended [mask] at inference."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.data.streams import StreamOptions
from nextclick.models import build
from nextclick.models.bert4rec import MaskedBatch, cloze_masks

from model_contract import check_forward_backward

TINY = {"hidden_size": 8, "heads": 2, "inner_size": 16}


def labelled(prefixes, labels) -> Batch:
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    return Batch(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


def cases_of(sessions: list[list[int]]) -> Cases:
    return Cases.every_prefix(Sessions.from_lists(sessions), 1)


def test_a_cloze_sample_masks_round_n_times_p_of_its_tokens_and_a_mask_last_sample_only_the_last():
    lengths = np.array([1, 2, 3, 5, 8, 10])
    real = np.arange(10)[None, :] >= (10 - lengths)[:, None]  # right-aligned
    rng = np.random.default_rng(0)
    masks = cloze_masks(real, 0.6, 0.0, rng)
    assert not (masks & ~real).any()  # never padding
    np.testing.assert_array_equal(masks.sum(1), np.maximum(1, np.rint(lengths * 0.6)))  # 1, 1, 2, 3, 5, 6
    last = cloze_masks(real, 0.6, 1.0, rng)
    assert last[:, -1].all() and last.sum() == len(lengths)
    draws = [cloze_masks(real, 0.6, 0.0, np.random.default_rng(s)) for s in range(30)]
    assert np.stack(draws)[:, -1, :].any(0).all()  # every position of a long row gets its turn


def test_masked_batches_are_prefix_plus_label_with_masks_where_the_targets_were():
    model = build("bert4rec", 20, {**TINY, "mask_probability": 0.5, "mask_last_ratio": 0.3})
    cases = cases_of([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11]])
    stream = model.training_stream(cases, StreamOptions(batch_size=16, seed=1))
    assert stream.cases(0) == len(cases)  # a training case is one sequence, however many tokens it masks
    batch = next(iter(stream.batches(0)))
    assert isinstance(batch, MaskedBatch) and len(batch) == len(cases)
    order = stream.order(0)
    for row, case in enumerate(order):
        expected = np.append(cases.prefix(case), cases.labels[case])
        tokens = batch.items[row, -len(expected):].numpy()
        hidden = batch.mask_rows == row
        columns = batch.mask_columns[hidden].numpy() - (batch.items.shape[1] - len(expected))
        assert hidden.sum() >= 1 and (tokens[columns] == model.mask_token).all()
        np.testing.assert_array_equal(batch.targets[hidden].numpy(), expected[columns])
        kept = np.setdiff1d(np.arange(len(expected)), columns)
        np.testing.assert_array_equal(tokens[kept], expected[kept])
        assert (batch.items[row, :-len(expected)] == 0).all()
    again = next(iter(model.training_stream(cases, StreamOptions(batch_size=16, seed=1)).batches(0)))
    assert torch.equal(again.items, batch.items)  # the same masks for the same seed and epoch (resume)
    other = next(iter(stream.batches(1)))
    assert not torch.equal(other.mask_columns, batch.mask_columns) or not torch.equal(other.items, batch.items)


def test_the_dsan_preset_trains_on_mask_last_samples_only():
    model = build("bert4rec", 20, {**build("bert4rec", 20).presets["dsan"], **TINY})
    cases = cases_of([[1, 2, 3, 4, 5, 6], [7, 8, 9]])
    batch = next(iter(model.training_stream(cases, StreamOptions(batch_size=16, seed=1)).batches(0)))
    assert torch.equal(batch.mask_rows, torch.arange(len(cases)))
    assert (batch.mask_columns == batch.items.shape[1] - 1).all()
    assert torch.equal(batch.targets, batch.labels)


def test_scores_read_the_appended_mask_token_at_position_zero():
    torch.manual_seed(0)
    model = build("bert4rec", 12, TINY).eval()
    batch = labelled([[3, 5, 3, 7], [4]], [1, 2])
    with torch.no_grad():
        tokens = torch.tensor([[3, 5, 3, 7, 13], [0, 0, 0, 4, 13]])  # [mask] = n_items + 1
        states = model.input_norm(model.embedding(tokens) + model.positions(torch.tensor([4, 3, 2, 1, 0])))
        for block in model.blocks:
            states = block(states, (tokens != 0)[:, None, None, :])
        query = model.transform_norm(torch.nn.functional.gelu(model.transform(states[:, -1])))
        expected = query @ model.embedding.weight[:13].T + model.item_bias
    scores = model.score(batch)
    torch.testing.assert_close(scores[:, 1:], expected[:, 1:])
    assert torch.isneginf(scores[:, 0]).all() and scores.shape == (2, 13)


def test_a_mask_last_sample_is_trained_on_exactly_what_inference_scores():
    """In evaluation mode, the Cloze loss of mask-last samples equals the next-click cross-entropy of the
    same prefixes scored with the appended [mask]."""
    torch.manual_seed(0)
    model = build("bert4rec", 20, {**TINY, "mask_last_ratio": 1.0}).eval()
    cases = cases_of([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11]])
    masked = next(iter(model.training_stream(cases, StreamOptions(batch_size=16, seed=1)).batches(0)))
    plain = batch_from_prefixes([cases.prefix(c) for c in model.training_stream(cases, StreamOptions(16)).order(0)])
    with torch.no_grad():
        _, cloze = model(masked)
        scores, next_click = model(plain, masked.labels)
    torch.testing.assert_close(cloze, next_click)


@pytest.mark.parametrize("overrides", [{}, {"mask_diagonal": True, "head_norm": False, "layers": 1}])
def test_forward_backward_and_padding_does_not_change_scores(overrides):
    torch.manual_seed(0)
    model = build("bert4rec", 12, {**TINY, **overrides})
    batch = labelled([[1, 2, 1, 3], [4], [5, 6, 7, 8, 9, 5]], [2, 3, 4])
    check_forward_backward(model, batch)
    alone = model.score(batch_from_prefixes([np.array([4])]))
    torch.testing.assert_close(model.score(batch)[1:2], alone, rtol=1e-5, atol=1e-6)
    weights = model.click_weights(batch)
    assert (weights.weights[1, :-1] == 0).all() and weights.pairs.shape == (3, 7, 7)


def test_a_tiny_cloze_training_learns_a_deterministic_successor():
    """Sessions walk a ring of 12 items (i -> i + 1): after 42 Cloze steps the loss on held-out masks has
    fallen and the appended [mask] ranks the successor of the last click first far more often than
    chance (1 in 12)."""
    torch.manual_seed(0)
    n = 12
    sessions = [[(start + step) % n + 1 for step in range(5)] for start in range(n) for _ in range(4)]
    cases = cases_of(sessions)
    model = build("bert4rec", n, {"hidden_size": 16, "heads": 2, "inner_size": 32, "dropout": 0.0, "weight_std": 0.1,
                                  "attention_dropout": 0.0, "lr": 1e-2, "weight_decay": 0.0, "mask_last_ratio": 0.3})
    held_out = next(iter(model.training_stream(cases, StreamOptions(batch_size=len(cases), seed=5)).batches(0)))
    with torch.no_grad():
        before = model.eval()(held_out)[1]
    stream = model.train().training_stream(cases, StreamOptions(batch_size=64, seed=0))
    optimizer = model.optimizer()
    for epoch in range(14):
        for batch in stream.batches(epoch):
            _, loss = model(batch, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        assert model.eval()(held_out)[1] < 0.8 * before
    prefixes = [np.array([(start + step) % n + 1 for step in range(length)]) for start in range(n) for length in (1, 3)]
    top = model.recommend(prefixes, k=1)[0][:, 0]
    successors = np.array([p[-1] % n + 1 for p in prefixes])
    assert (top == successors).mean() > 0.5


def test_encoding_in_length_groups_gives_the_hidden_states_of_the_whole_batch():
    torch.manual_seed(0)
    model = build("bert4rec", 30, TINY).eval()
    prefixes = [np.arange(1, n + 1) % 30 + 1 for n in (1, 2, 3, 5, 7, 12, 20, 30)]
    tokens = model._prefix_tokens(batch_from_prefixes(prefixes))
    with torch.no_grad():
        grouped, whole = model._encode_grouped(tokens), model._encode(tokens)[0]
    real = tokens != 0
    torch.testing.assert_close(grouped[real], whole[real], rtol=1e-5, atol=1e-5)


def test_under_torchrun_each_process_masks_its_share_of_every_global_batch():
    model = build("bert4rec", 20, TINY)
    cases = cases_of([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11], [12, 13, 14, 15]])
    shares = [next(iter(model.training_stream(cases, StreamOptions(batch_size=8, seed=1, rank=rank, world_size=2))
                        .batches(0))) for rank in (0, 1)]
    whole = model.training_stream(cases, StreamOptions(batch_size=8, seed=1)).order(0)[:8]  # the first global batch
    assert [len(share) for share in shares] == [4, 4]
    torch.testing.assert_close(torch.cat([shares[0].labels, shares[1].labels]),
                               torch.from_numpy(np.concatenate([cases.labels[whole[0::2]], cases.labels[whole[1::2]]])).long())


@pytest.mark.parametrize("overrides", [{}, {"mask_diagonal": True, "layers": 3}])
def test_the_last_block_computing_only_the_appended_masks_row_gives_the_full_computations_state(overrides):
    torch.manual_seed(0)
    model = build("bert4rec", 30, {**TINY, **overrides}).eval()
    prefixes = [np.arange(1, n + 1) % 30 + 1 for n in (1, 2, 3, 5, 7, 12, 20, 30)]
    tokens = model._prefix_tokens(batch_from_prefixes(prefixes))
    with torch.no_grad():
        full = model._encode(tokens)[0][:, -1]
        torch.testing.assert_close(model._encode(tokens, last_only=True)[0][:, -1], full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model._encode_grouped(tokens, last_only=True), full, rtol=1e-5, atol=1e-5)
