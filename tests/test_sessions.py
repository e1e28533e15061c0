import numpy as np
import pytest

from nextclick.data.sessions import Cases, Protocol, Sessions, Split, Vocab


def test_sessions_hold_flat_items_and_offsets():
    s = Sessions.from_lists([[1, 2, 3], [4], [5, 6]])
    assert s.items.dtype == np.int32 and s.offsets.dtype == np.int64
    assert s.offsets.tolist() == [0, 3, 4, 6]
    assert s[2].tolist() == [5, 6]
    assert s.lengths.tolist() == [3, 1, 2]


def test_select_gathers_sessions_in_the_given_order():
    s = Sessions.from_lists([[1, 2, 3], [4], [5, 6]], times=[10, 20, 30])
    picked = s.select(np.array([2, 0]))
    assert picked.to_lists() == [[5, 6], [1, 2, 3]]
    assert picked.times.tolist() == [30, 10]


def test_inconsistent_offsets_are_rejected():
    with pytest.raises(ValueError):
        Sessions(np.array([1, 2, 3]), np.array([0, 2]))


def test_every_prefix_emits_longest_first_and_respects_min_prefix():
    s = Sessions.from_lists([[1, 2, 3, 4], [5], [6, 7]])
    cases = Cases.every_prefix(s, min_prefix=1)
    assert [c.tolist() for c in map(cases.prefix, range(len(cases)))] == [[1, 2, 3], [1, 2], [1], [6]]
    assert cases.labels.tolist() == [4, 3, 2, 7]
    two = Cases.every_prefix(s, min_prefix=2)
    assert two.labels.tolist() == [4, 3]


def test_a_case_must_leave_a_label():
    s = Sessions.from_lists([[1, 2]])
    with pytest.raises(ValueError):
        Cases(s, np.array([0]), np.array([2]))


def test_vocab_encodes_and_decodes_external_ids_and_names_unknown_ones():
    vocab = Vocab(np.array([0, 500, 7, 42]))
    assert vocab.encode([42, 500]).tolist() == [3, 1]
    assert vocab.decode(np.array([2])).tolist() == [7]
    with pytest.raises(KeyError, match="99"):
        vocab.encode([99])
    with pytest.raises(KeyError, match="0"):
        Vocab.identity(5).encode([0])


def toy_split(train: Sessions) -> Split:
    """A split around `train` (items below 50) with a one-case test set, for the validation carves."""
    return Split("toy", train, Cases.whole_sessions(Sessions.from_lists([[1, 2]])), Vocab.identity(50),
                 Protocol("toy", min_prefix=1))


def test_validation_is_the_last_tenth_of_training_sessions_in_file_order():
    train = Sessions.from_lists([[i, i + 1, i + 2] for i in range(1, 21)])
    split = toy_split(train)
    fit, valid = split.carve_validation(0.1)
    assert len(fit.sessions) == 18 and len(valid.sessions) == 2
    assert valid.sessions.to_lists() == [[19, 20, 21], [20, 21, 22]]
    assert len(fit) == 18 * 2 and len(valid) == 2 * 2


def test_random_case_validation_partitions_the_training_cases_reproducibly():
    train = Sessions.from_lists([[i, i + 1, i + 2, i + 3] for i in range(1, 41)])
    split = toy_split(train)
    fit, valid = split.carve_random_cases(0.1, seed=3)
    everything = split.train_cases()
    assert len(valid) == round(0.1 * len(everything)) and len(fit) + len(valid) == len(everything)
    pairs = lambda cases: set(zip(cases.session.tolist(), cases.length.tolist()))
    assert pairs(fit) | pairs(valid) == pairs(everything) and not pairs(fit) & pairs(valid)
    again_fit, again_valid = split.carve_random_cases(0.1, seed=3)
    assert pairs(again_valid) == pairs(valid)
    assert valid.labels.tolist() == [train.to_lists()[s][k] for s, k in zip(valid.session, valid.length)]


def test_random_session_validation_holds_out_whole_sessions_from_every_period_in_file_order():
    train = Sessions.from_lists([[i, i + 1, i + 2, i + 3] for i in range(1, 41)])
    split = toy_split(train)
    fit, valid = split.carve_random_sessions(0.1, seed=3)
    fit_sessions, valid_sessions = fit.sessions.to_lists(), valid.sessions.to_lists()
    assert len(valid_sessions) == 4 and len(fit_sessions) == 36
    assert sorted(fit_sessions + valid_sessions) == sorted(train.to_lists())  # a partition of sessions
    assert not {tuple(s) for s in fit_sessions} & {tuple(s) for s in valid_sessions}
    assert fit_sessions == sorted(fit_sessions) and valid_sessions == sorted(valid_sessions)  # file order kept
    assert len(fit) == 36 * 3 and len(valid) == 4 * 3  # every prefix of every session, on one side only
    assert valid_sessions != train.to_lists()[-4:]  # not the last-sessions carve
    assert split.carve_random_sessions(0.1, seed=3)[1].sessions.to_lists() == valid_sessions
    assert split.carve_random_sessions(0.1, seed=4)[1].sessions.to_lists() != valid_sessions


def test_carve_dispatches_by_name_and_rejects_unknown_carves():
    train = Sessions.from_lists([[i, i + 1, i + 2] for i in range(1, 21)])
    split = toy_split(train)
    pairs = lambda cases: list(zip(cases.session.tolist(), cases.length.tolist()))
    assert pairs(split.carve("last-sessions", 0.1)[1]) == pairs(split.carve_validation(0.1)[1])
    assert pairs(split.carve("random-cases", 0.1, seed=5)[1]) == pairs(split.carve_random_cases(0.1, seed=5)[1])
    with pytest.raises(ValueError, match="random-sessions"):
        split.carve("first-sessions", 0.1)


def test_ragged_positions_number_the_elements_of_each_group():
    from nextclick.data.sessions import ragged_positions

    group, position = ragged_positions(np.array([2, 0, 3]))
    assert group.tolist() == [0, 0, 2, 2, 2] and position.tolist() == [0, 1, 0, 1, 2]
    group, position = ragged_positions(np.array([], dtype=np.int64))
    assert len(group) == len(position) == 0


def test_vocab_lookup_marks_unknown_ids_and_encode_names_the_first():
    vocab = Vocab(np.array([0, 50, 7, 900]))
    indices, known = vocab.lookup([900, 3, 7, 1000])
    assert known.tolist() == [True, False, True, False] and indices[known].tolist() == [3, 2]
    assert vocab.encode([7, 50]).tolist() == [2, 1]
    with pytest.raises(KeyError, match="unknown item id 3"):
        vocab.encode([50, 3, 1000])
    dense = Vocab.identity(5)
    assert dense.lookup([0, 5, 6])[1].tolist() == [False, True, False]
    with pytest.raises(KeyError, match="ids 1..5"):
        dense.encode([6])
