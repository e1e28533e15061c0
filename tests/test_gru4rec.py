"""GRU4Rec (models/gru4rec.py) as its authors' official PyTorch code trains it."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.data.streams import StreamOptions
from nextclick.models import build
from nextclick.models.gru4rec import PRESETS, AdagradMomentum, SessionParallelStream

SESSIONS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]


def stream(n_sample, batch_size=2):
    cases = Cases.every_prefix(Sessions.from_lists(SESSIONS), 1)
    sampling = np.r_[0.0, np.ones(9)]
    return SessionParallelStream(cases, StreamOptions(batch_size=batch_size, shuffle=False), n_sample, sampling)


def test_sessions_run_side_by_side_and_a_finished_slot_takes_the_next_session():
    steps = list(stream(n_sample=3).batches(0))
    assert [s.items.tolist() for s in steps] == [[1, 4], [2, 6], [7], [8]]
    assert [s.labels.tolist() for s in steps] == [[2, 5], [3, 7], [8], [9]]
    assert steps[0].reset.all() and steps[1].reset.tolist() == [False, True]  # slot 2 took session 3: zeroed
    assert steps[2].keep.tolist() == [False, True]  # session 1 ended, nothing left to take its slot
    assert all(len(s.samples) == 3 and (s.samples >= 1).all() for s in steps)
    assert stream(n_sample=3).cases(0) == 2 + 1 + 3


def test_without_samples_the_last_lone_session_is_dropped_as_in_the_official_iterator():
    assert [s.items.tolist() for s in stream(n_sample=0).batches(0)] == [[1, 4], [2, 6]]


def test_the_carried_state_is_the_gru_over_each_sessions_prefix():
    torch.manual_seed(0)
    model = build("gru4rec", 9, {"hidden_size": 6, "n_sample": 2}).train()
    model.prepare(Sessions.from_lists(SESSIONS))
    prefixes = [[[1], [4]], [[1, 2], [6]], [[6, 7]], [[6, 7, 8]]]
    for step, expected in zip(stream(n_sample=2).batches(0), prefixes):
        model(step, step.labels)
        with torch.no_grad():
            reference = model._final_state(batch_from_prefixes([np.array(p) for p in expected]))
        torch.testing.assert_close(model._hidden, reference)


def test_losses_are_the_official_formulas():
    torch.manual_seed(0)
    scores = torch.randn(3, 7)
    model = build("gru4rec", 9, {"loss": "bpr-max", "elu_param": 0.5, "bpreg": 1.5})
    elu = torch.nn.functional.elu(scores, 0.5)
    expected = 0.0
    for i in range(3):
        negatives = [j for j in range(7) if j != i]
        weights = torch.softmax(elu[i, negatives], 0)
        expected += -torch.log((torch.sigmoid(elu[i, i] - elu[i, negatives]) * weights).sum()) \
            + 1.5 * (elu[i, negatives] ** 2 * weights).sum()
    torch.testing.assert_close(model._bpr_max(scores), expected)
    cross = build("gru4rec", 9, {"logq": 1.0, "sample_alpha": 0.5})
    cross.popularity.copy_(torch.arange(10.0) + 1)
    columns = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    prior = torch.cat([cross.popularity[columns[:3]], cross.popularity[columns[3:]] ** 0.5])
    corrected = scores - torch.log(prior)
    torch.testing.assert_close(cross._cross_entropy(scores, columns, 3),
                               -torch.log_softmax(corrected, 1).diagonal().sum())


def test_adagrad_with_momentum_moves_only_the_rows_a_sparse_gradient_names():
    table = torch.nn.Embedding(5, 2, sparse=True)
    before = table.weight.detach().clone()
    optimizer = AdagradMomentum(table.parameters(), lr=0.1, momentum=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        table(torch.tensor([1, 3, 3])).sum().backward()
        optimizer.step()
    moved = (table.weight.detach() != before).any(dim=1)
    assert moved.tolist() == [False, True, False, True, False]
    # row 1: gradient 1 each step -> acc 1, 2; momentum m1 = -0.1/1, m2 = 0.5 m1 - 0.1/sqrt(2)
    m1 = -0.1 / (1 + 1e-6) ** 0.5
    m2 = 0.5 * m1 - 0.1 / (2 + 1e-6) ** 0.5
    torch.testing.assert_close(table.weight[1].detach() - before[1], torch.full((2,), m1 + m2))


@pytest.mark.parametrize("dataset, hidden, loss", [("diginetica", 512, "bpr-max"), ("retailrocket", 224, "bpr-max"),
                                                  ("yoochoose", 480, "cross-entropy")])
def test_presets_are_the_authors_published_best_settings(dataset, hidden, loss):
    assert PRESETS[dataset]["hidden_size"] == hidden and PRESETS[dataset]["loss"] == loss
    build("gru4rec", 10, PRESETS[dataset])  # every value is a valid config value


def test_a_preset_is_a_named_set_of_config_values_that_set_overrides(tmp_path, capsys):
    from nextclick.cli import main

    argv = ["bench", "gru4rec", "--preset", "retailrocket", "--set", "n_sample=16", "--epochs", "1", "--max-batches", "5",
            "-q", "--threads", "1", "--results-dir", str(tmp_path / "results"), "-o", str(tmp_path / "run")]
    assert main(argv) == 0
    [path] = (tmp_path / "results" / "synthetic" / "gru4rec").glob("*/result.json")
    config = __import__("json").loads(path.read_text())["config"]
    assert config["hidden_size"] == 224 and config["loss"] == "bpr-max" and config["n_sample"] == 16
    assert main(["bench", "gru4rec", "--preset", "mars", "-q"]) == 2
    assert "no preset 'mars'; its presets: diginetica, retailrocket, yoochoose" in capsys.readouterr().err
