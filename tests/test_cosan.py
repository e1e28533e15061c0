"""CoSAN (models/cosan.py): the neighbour search, an index of training sessions only, the collaborative items."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes, make_batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build
from nextclick.models.cosan import NeighbourBatch, SessionIndex, session_neighbours, training_neighbours

from model_contract import check_forward_backward

TRAIN = [[1, 2, 3], [2, 3, 4, 5], [1, 5], [6, 7], [3, 2, 1, 6], [8, 9, 8], [2, 4], [10, 11]]
TINY = {"embedding_size": 8, "neighbours": 3}


def direct(prefix: list[int], sessions: list[list[int]], k: int, own: int = -1) -> list[tuple[float, int]]:
    """The k most similar sessions holding the prefix's last item, by the formula, most recent first on ties."""
    seen = set(prefix)
    found = [(len(seen & set(s)) / np.sqrt(len(seen) * len(set(s))), c) for c, s in enumerate(sessions)
             if prefix[-1] in s and c != own]
    return sorted(found, key=lambda pair: (-round(pair[0], 9), -pair[1]))[:k]


def test_neighbours_are_the_most_similar_sessions_holding_the_click_by_the_prefix_so_far():
    index = SessionIndex.build(Sessions.from_lists(TRAIN), 11)
    prefixes = [[2, 3, 1], [5, 4, 2, 1, 6], [9], [12 - 1, 10, 3]]
    items = batch_from_prefixes([np.array(p) for p in prefixes]).items.numpy()
    found, weights = session_neighbours(items, index, 3)
    for row, prefix in enumerate(prefixes):
        for position in range(len(prefix)):
            column = items.shape[1] - len(prefix) + position
            expected = direct(prefix[:position + 1], TRAIN, 3)
            np.testing.assert_array_equal(found[row, column, :len(expected)], [c + 1 for _, c in expected])
            np.testing.assert_allclose(weights[row, column, :len(expected)], [w for w, _ in expected], rtol=1e-6)
            assert (found[row, column, len(expected):] == 0).all() and (weights[row, column, len(expected):] == 0).all()
    assert (found[items == 0] == 0).all()


def test_a_clicks_neighbours_never_see_the_clicks_after_it():
    index = SessionIndex.build(Sessions.from_lists(TRAIN), 11)
    short, longer = batch_from_prefixes([np.array([2, 3]), np.array([2, 3, 4, 5, 1])], 5).items.numpy()[:, None]
    found_short, _ = session_neighbours(short, index, 3)
    found_long, _ = session_neighbours(longer, index, 3)
    np.testing.assert_array_equal(found_short[0, -2:], found_long[0, :2])  # [0 0 0 2 3] and [2 3 4 5 1]


def test_training_clicks_never_retrieve_their_own_session():
    train = Sessions.from_lists(TRAIN)
    index = SessionIndex.build(train, 11)
    found, weights = training_neighbours(train, index, 3)
    owner = train.session_of_click()
    assert not (found == owner[:, None] + 1).any()
    assert (found[train.offsets[7]:train.offsets[8]] == 0).all()  # items 10, 11 are in no other session
    for click in range(len(train.items)):
        session, start = owner[click], train.offsets[owner[click]]
        prefix = list(train.items[start:click + 1])
        expected = direct(prefix, TRAIN, 3, own=session)
        np.testing.assert_array_equal(found[click, :len(expected)], [c + 1 for _, c in expected])


def test_the_index_holds_the_training_sessions_only_and_a_batch_reads_each_clicks_neighbours():
    train = Sessions.from_lists(TRAIN)
    model = build("cosan", 11, TINY)
    model.prepare(train)
    assert model.session_table.num_embeddings == len(TRAIN) + 1 and len(model.index_session_sizes) == len(TRAIN)
    assert int(model.index_session_sizes.sum()) == len(model.index_item_sessions) == sum(len(set(s)) for s in TRAIN)
    cases = Cases.every_prefix(train, 1)
    batch = model.collate(cases, np.arange(len(cases)))
    assert isinstance(batch, NeighbourBatch)
    for row in range(len(cases)):
        prefix = cases.prefix(row)
        items = batch_from_prefixes([prefix]).items.numpy()
        expected, weights = session_neighbours(items, model._session_index(), 3, own=cases.session[row:row + 1])
        width = len(prefix)
        np.testing.assert_array_equal(batch.neighbours[row, -width:].numpy(), expected[0])
        np.testing.assert_allclose(batch.similarities[row, -width:].numpy(), weights[0])
    # a prefix that is no training session (test, validation) finds training sessions only, its own included
    # in none: the index never grew
    test = make_batch(Cases.whole_sessions(Sessions.from_lists([[2, 3, 4, 1]])))
    _, found, _ = model._neighbours(test)
    assert int(found.max()) <= len(TRAIN) and len(model.index_session_sizes) == len(TRAIN)


def test_the_collaborative_item_adds_alpha_times_the_weighted_neighbour_sessions():
    torch.manual_seed(0)
    model = build("cosan", 11, {**TINY, "neighbour_weight": 0.7, "blocks": 0}).eval()
    model.prepare(Sessions.from_lists(TRAIN))
    batch = batch_from_prefixes([np.array([2, 3, 1])])
    _, found, weights = model._neighbours(batch)
    expected = model.embedding(batch.items[:, -1])[0] + 0.7 * (
        weights[0, -1].unsqueeze(1) * model.session_table.weight[found[0, -1]]).sum(0)
    torch.testing.assert_close(model.query_vectors(batch)[0], expected)


@pytest.mark.parametrize("overrides", [{}, {"repeat": "mix"}, {"sample_size": 2, "blocks": 1}])
def test_forward_backward_and_padding_does_not_change_scores(overrides):
    torch.manual_seed(0)
    model = build("cosan", 11, {**TINY, **overrides})
    model.prepare(Sessions.from_lists(TRAIN))
    prefixes = [[1, 2, 1, 3], [4], [5, 6, 7, 8, 9, 5]]
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    batch = Batch(batch.items, batch.lengths, torch.tensor([2, 3, 4]), batch.full_lengths)
    check_forward_backward(model, batch)
    alone = model.score(batch_from_prefixes([np.array([4])]))
    torch.testing.assert_close(model.score(batch)[1:2], alone, rtol=1e-5, atol=1e-6)
    read = model.click_weights(batch_from_prefixes([np.array(p) for p in prefixes]))
    if model.config.blocks:
        torch.testing.assert_close(read.weights.sum(1), torch.ones(3))


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_last_block_computing_only_the_last_row_gives_the_full_computations_vector(blocks):
    torch.manual_seed(0)
    model = build("cosan", 11, {**TINY, "blocks": blocks}).eval()
    model.prepare(Sessions.from_lists(TRAIN))
    batch = batch_from_prefixes([np.array([1, 2, 1, 3]), np.array([4]), np.array([5, 6, 7, 8, 9, 5])])
    with torch.no_grad():
        full, _ = model._encode(batch, keep_weights=True)  # every row of every block
        torch.testing.assert_close(model._encode(batch), full)


def test_the_search_in_small_steps_finds_the_same_neighbours(monkeypatch):
    import nextclick.models.cosan as cosan

    index = SessionIndex.build(Sessions.from_lists(TRAIN), 11)
    items = batch_from_prefixes([np.array(p) for p in ([2, 3, 1], [5, 4, 2, 1, 6], [9], [3], [1, 2])]).items.numpy()
    whole = session_neighbours(items, index, 3, own=np.arange(5))
    monkeypatch.setattr(cosan, "PAIRS_PER_STEP", 4)
    for expected, found in zip(whole, session_neighbours(items, index, 3, own=np.arange(5))):
        np.testing.assert_array_equal(found, expected)


def test_a_checkpoint_of_a_trained_cosan_loads_with_its_index(tmp_path):
    """The session table and the index are sized by the training sessions: the checkpoint's config alone
    does not give their shapes, and loading takes them from the file."""
    from nextclick import checkpoint
    from nextclick.data.sessions import Protocol, Vocab

    torch.manual_seed(0)
    model = build("cosan", 11, TINY)
    model.prepare(Sessions.from_lists(TRAIN))
    path = checkpoint.save(tmp_path / "cosan", model, Vocab.identity(11), Protocol("test", 1), "test")
    loaded, _, _ = checkpoint.load(path)
    batch = batch_from_prefixes([np.array([2, 3, 1]), np.array([9])])
    assert torch.equal(loaded.score(batch), model.score(batch))
    assert loaded.session_table.num_embeddings == len(TRAIN) + 1
