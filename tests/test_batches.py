import numpy as np

from nextclick.data.batches import batch_from_prefixes, make_batch
from nextclick.data.sessions import Cases, Sessions


def cases():
    return Cases.every_prefix(Sessions.from_lists([[1, 2, 3, 4, 5], [6, 7]]), 1)


def test_batches_are_right_aligned_with_left_padding():
    batch = make_batch(cases())
    assert batch.items.tolist() == [[1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 0, 1], [0, 0, 0, 6]]
    assert batch.labels.tolist() == [5, 4, 3, 2, 7]
    assert batch.lengths.tolist() == [4, 3, 2, 1, 1]


def test_max_length_keeps_the_most_recent_clicks():
    batch = make_batch(cases(), max_length=2)
    assert batch.items.tolist() == [[3, 4], [2, 3], [1, 2], [0, 1], [0, 6]]
    assert batch.full_lengths.tolist() == [4, 3, 2, 1, 1]
    assert batch.lengths.tolist() == [2, 2, 2, 1, 1]


def test_left_aligned_view_moves_padding_to_the_right():
    batch = make_batch(cases())
    assert batch.left_aligned().tolist() == [[1, 2, 3, 4], [1, 2, 3, 0], [1, 2, 0, 0], [1, 0, 0, 0], [6, 0, 0, 0]]


def test_a_subset_of_cases_is_gathered_in_order():
    batch = make_batch(cases(), np.array([4, 0]))
    assert batch.items.tolist() == [[0, 0, 0, 6], [1, 2, 3, 4]]


def test_batch_of_512_matches_a_plain_python_construction():
    rng = np.random.default_rng(0)
    sessions = Sessions.from_lists([rng.integers(1, 100, rng.integers(2, 30)).tolist() for _ in range(300)])
    all_cases = Cases.every_prefix(sessions, 1)
    picked = rng.choice(len(all_cases), 512, replace=False)
    batch = make_batch(all_cases, picked, max_length=10)
    for row, c in enumerate(picked):
        prefix = all_cases.prefix(c)[-10:].tolist()
        expected = [0] * (batch.items.shape[1] - len(prefix)) + prefix
        assert batch.items[row].tolist() == expected


def test_raw_prefixes_become_a_batch_and_empty_sessions_are_refused():
    batch = batch_from_prefixes([np.array([3, 4]), np.array([5])])
    assert batch.items.tolist() == [[3, 4], [0, 5]]
    try:
        batch_from_prefixes([np.array([], dtype=int)])
    except ValueError as error:
        assert "at least one click" in str(error)
    else:
        raise AssertionError("empty session accepted")
