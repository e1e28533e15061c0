import numpy as np
import torch

from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models import build


def fitted(name):
    # training clicks: item 1 x4, item 2 x3, item 3 x2, item 4 x1, item 5 x0
    train = Cases.every_prefix(Sessions.from_lists([[1, 2, 1], [1, 2, 3], [3, 1, 2], [4, 4]][:3] + [[4, 6]]), 1)
    return build(name, 6).fit(train)


def test_pop_ranks_by_training_clicks_for_every_session():
    model = fitted("pop")
    top, _ = model.recommend([np.array([6]), np.array([3, 3])], k=3)
    assert top.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_spop_ranks_session_items_by_count_then_global_popularity():
    model = fitted("s-pop")
    # session [4, 3, 4]: item 4 twice, item 3 once; then global order 1, 2, 6
    top, scores = model.recommend([np.array([4, 3, 4])], k=5)
    assert top.tolist() == [[4, 3, 1, 2, 6]]
    # ties inside the session are broken by global popularity: 3 (2 clicks) before 4 (2 clicks? no: 1)
    top, _ = model.recommend([np.array([4, 3])], k=2)
    assert top.tolist() == [[3, 4]]


def test_spop_never_scores_padding():
    model = fitted("s-pop")
    scores = model.score(batch_from_prefixes([np.array([2]), np.array([1, 2, 3])]))
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()


def test_spop_dsan_code_variant_ranks_only_prefix_items_by_global_popularity():
    train = Cases.every_prefix(Sessions.from_lists([[1, 2, 1], [1, 2, 3], [3, 1, 2], [4, 6]]), 1)
    model = build("s-pop", 6, {"variant": "dsan-code"}).fit(train)
    scores = model.score(batch_from_prefixes([np.array([4, 3, 4])]))[0]
    # item 3 (2 training clicks) above item 4 (1 click) although 4 occurs twice in the session
    assert scores[3] > scores[4] > scores[1]
    assert scores[1] == scores[2] == scores[5]  # everything outside the prefix ties at the bottom
