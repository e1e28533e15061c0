import numpy as np

from nextclick.data.synthetic import SyntheticConfig, generate


def test_generation_is_deterministic_per_seed():
    a, b = generate(SyntheticConfig(n_sessions=300)), generate(SyntheticConfig(n_sessions=300))
    c = generate(SyntheticConfig(n_sessions=300, seed=5))
    assert a.split.train.to_lists() == b.split.train.to_lists()
    assert a.split.train.to_lists() != c.split.train.to_lists()


def test_spurious_clicks_are_recorded_and_come_from_other_categories():
    data = generate(SyntheticConfig(n_sessions=500))
    train = data.split.train
    assert len(data.spurious_train) == len(train.items)
    rate = data.spurious_train.mean()
    assert 0.05 < rate < 0.25
    # a spurious click's category differs from its session's first click (the intent)
    session_of = train.session_of_click()
    first_category = data.category[train.items[train.offsets[session_of]]]
    assert np.all(data.category[train.items[data.spurious_train]] != first_category[data.spurious_train])
    assert not data.spurious_train[train.offsets[:-1]].any()  # first clicks are intent clicks


def test_test_set_is_every_prefix_of_the_last_sessions():
    data = generate(SyntheticConfig(n_sessions=200, test_fraction=0.1))
    test = data.split.test
    assert len(test.sessions) == 20
    assert len(test) == int((test.sessions.lengths - 1).sum())
