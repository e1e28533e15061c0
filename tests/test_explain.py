"""Explanations: DSAN's sparse attention on planted noise (spurious clicks get less target attention,
some exactly zero), and the click weights of every attention model (DSAN, SR-IEM, NARM) as a user reads
them from `nextclick explain`."""

import json

import numpy as np
import pytest
import torch

from nextclick import checkpoint
from nextclick.cli import main
from nextclick.data.batches import Batch, batch_from_prefixes, iterate_batches
from nextclick.data.benchmarks import resolve
from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.explain import explain, plot, summarise
from nextclick.models import build
from nextclick.training.loop import TrainOptions, train_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # the faithful DSAN (d = 100, batch 512) on the default-size synthetic log with 20% planted noise;
    # measured (docs/dsan.md): after 3 epochs spurious clicks average ~0.20 target attention vs ~0.23
    # for intent clicks, and alpha_target has grown to ~1.85, where exact zeros are common; after 2
    # epochs zeros are still rare (<1%), and from epoch 5 on the two means converge
    data = generate(SyntheticConfig(spurious_rate=0.2))
    fit, valid = data.split.carve_validation()
    torch.manual_seed(1)
    model = build("dsan", data.split.n_items)
    train_model(model, fit, valid, TrainOptions(epochs=3, patience=3, progress=False, quiet=True))
    directory = tmp_path_factory.mktemp("dsan")
    checkpoint.save(directory, model, data.split.vocab, data.split.protocol, data.split.name)
    return data, model, directory


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """DSAN after a few batches (d = 16): its explanations have the shape of a trained one's, in a second."""
    split = resolve("synthetic")
    fit, _ = split.carve_validation()
    torch.manual_seed(1)
    model = build("dsan", split.n_items, {"embedding_dim": 16})
    train_model(model, fit, None, TrainOptions(epochs=1, max_batches=5, progress=False, quiet=True, device="cpu"))
    directory = tmp_path_factory.mktemp("dsan-quick")
    checkpoint.save(directory, model, split.vocab, split.protocol, split.name)
    return split, directory


@pytest.mark.slow  # trains the faithful DSAN for three epochs (about 40 s on one core)
def test_spurious_clicks_get_less_target_attention_and_some_get_none(trained):
    data, model, _ = trained
    test = data.split.test
    spurious_weights, intent_weights = [], []
    for start, batch in zip(range(0, len(test), 500), iterate_batches(test, 500)):
        attention = model.attention(batch)
        index = np.arange(start, min(start + 500, len(test)))
        # flag of every kept click, right-aligned like the batch
        begins = test.sessions.offsets[test.session[index]]
        width = batch.items.shape[1]
        columns = np.arange(width)
        source = (begins + test.length[index])[:, None] - width + columns[None, :]
        real = batch.items.numpy() != 0
        flags = np.where(real, data.spurious_test[np.clip(source, 0, None)], False)
        weights = attention.target_attention.cpu().numpy()  # on the model's device (a GPU when there is one)
        spurious_weights.append(weights[real & flags])
        intent_weights.append(weights[real & ~flags])
    spurious = np.concatenate(spurious_weights)
    intent = np.concatenate(intent_weights)
    assert len(spurious) > 100
    assert spurious.mean() < intent.mean()
    assert (spurious == 0.0).sum() > 0


def test_explain_command_writes_a_heatmap_and_json(quick, tmp_path, capsys):
    split, directory = quick
    session = split.test.sessions[0].tolist()
    code = main(["explain", str(directory), *map(str, session), "--out", str(tmp_path / "why")])
    assert code == 0
    assert (tmp_path / "why.png").stat().st_size > 1000
    explanation = json.loads((tmp_path / "why.json").read_text())
    n = len(session)
    assert explanation["model"] == "dsan" and explanation["weights_name"] == "target attention"
    assert explanation["items"] == session
    assert len(explanation["weights"]) == n
    assert len(explanation["pairs"]) == n + 1 and explanation["pair_labels"][-1] == "target"
    assert 1 < explanation["alpha_self"] < 2 and 1 < explanation["alpha_target"] < 2
    assert "alpha_target" in capsys.readouterr().out


def test_explaining_a_model_without_attention_is_a_clear_error(tmp_path, capsys):
    data = generate(SyntheticConfig(n_sessions=100))
    model = build("pop", data.split.n_items).fit(data.split.train_cases())
    checkpoint.save(tmp_path, model, data.split.vocab, data.split.protocol, data.split.name)
    assert main(["explain", str(tmp_path), "1", "2"]) == 2
    error = capsys.readouterr().err
    assert "no attention" in error and all(name in error for name in ("dsan", "narm", "sr-iem"))


def test_narm_without_its_local_encoder_is_a_clear_error(tmp_path, capsys):
    data = generate(SyntheticConfig(n_sessions=100))
    model = build("narm", data.split.n_items, {"encoder": "global", "embedding_size": 8, "hidden_size": 8})
    checkpoint.save(tmp_path, model, data.split.vocab, data.split.protocol, data.split.name)
    assert main(["explain", str(tmp_path), "1", "2"]) == 2
    assert "encoder=global has no attention" in capsys.readouterr().err


SMALL = {"sr-iem": ("sr-iem", {"embedding_size": 16, "attention_size": 8}),
         "sr-iem-code": ("sr-iem", {"variant": "code", "embedding_size": 16, "attention_size": 16}),
         "narm": ("narm", {"embedding_size": 8, "hidden_size": 8}),
         "narm-local": ("narm", {"encoder": "local", "embedding_size": 8, "hidden_size": 8}),
         "dsan": ("dsan", {"embedding_dim": 8}),
         "dsan-ns": ("dsan", {"variant": "ns", "embedding_dim": 8}),
         "stamp": ("stamp", {"embedding_size": 8}),
         "sr-gnn": ("sr-gnn", {"hidden_size": 8}),
         "gc-san": ("gc-san", {"hidden_size": 8}),
         "danser": ("danser", {"hidden_size": 8}),
         "bert4rec": ("bert4rec", {"hidden_size": 8, "heads": 2, "inner_size": 16}),
         "cosan": ("cosan", {"embedding_size": 8}),
         "csrm": ("csrm", {"embedding_size": 8, "hidden_size": 8, "memory_slots": 16, "neighbours": 4})}


# STAMP's a_i and SR-GNN's readout alpha are not normalised (their papers); BERT4Rec's appended [mask]
# also attends to itself, so the clicks hold less than all of its attention
UNNORMALISED = {"stamp", "sr-gnn"}
MASK_ATTENDS_TO_ITSELF = {"bert4rec"}


def _read_three_sessions(name):
    torch.manual_seed(0)
    model_name, overrides = SMALL[name]
    model = build(model_name, 30, overrides)
    sessions = [[3, 7, 7, 12, 5], [9], [4, 4, 8]]
    return model, sessions, model.click_weights(batch_from_prefixes([np.array(s) for s in sessions], model.max_length))


@pytest.mark.parametrize("name", SMALL)
def test_click_weights_fall_on_the_real_clicks_alone_whatever_the_padding(name):
    model, sessions, read = _read_three_sessions(name)
    real = read.items != 0
    assert (read.weights[~real] == 0).all()
    assert sorted(read.items[0][real[0]].tolist()) == sorted(sessions[0])
    for row, session in enumerate(sessions):  # the same weights as the session read alone: padding changes nothing
        alone = model.click_weights(batch_from_prefixes([np.array(session)], model.max_length))
        assert torch.allclose(read.weights[row][real[row]], alone.weights[0], atol=1e-5)
    assert model.training  # explaining leaves a model in the mode it was in


@pytest.mark.parametrize("name", sorted(set(SMALL) - UNNORMALISED))
def test_click_weights_are_a_distribution_over_the_clicks_read(name):
    _, sessions, read = _read_three_sessions(name)
    assert (read.weights >= 0).all()
    totals = read.weights.sum(dim=1)
    if name in MASK_ATTENDS_TO_ITSELF:
        assert (totals > 0).all() and (totals < 1).all()
    else:
        assert torch.allclose(totals, torch.ones(len(sessions)), atol=1e-5)


def test_sr_iem_explanation_gives_importance_and_the_affinity_it_averages(tmp_path, capsys):
    data = generate(SyntheticConfig(n_sessions=200))
    torch.manual_seed(0)
    model = build("sr-iem", data.split.n_items, SMALL["sr-iem-code"][1])
    checkpoint.save(tmp_path / "model", model, data.split.vocab, data.split.protocol, data.split.name)
    session = data.split.test.sessions[0].tolist()[:10]
    assert main(["explain", str(tmp_path / "model"), *map(str, session), "--out", str(tmp_path / "why")]) == 0
    assert (tmp_path / "why.png").stat().st_size > 1000
    explanation = json.loads((tmp_path / "why.json").read_text())
    assert explanation["model"] == "sr-iem" and explanation["weights_name"] == "importance (beta)"
    pairs = np.array(explanation["pairs"])
    assert pairs.shape == (len(session), len(session)) and (np.diag(pairs) == 0).all()
    # the code form's importance is softmax of each row's mean affinity to the other clicks
    alpha = pairs.sum(axis=1) / (len(session) - 1)
    assert np.allclose(explanation["weights"], np.exp(alpha) / np.exp(alpha).sum(), atol=1e-5)
    assert "importance (beta)" in capsys.readouterr().out


def test_narm_explanation_of_a_long_session_names_the_clicks_its_encoder_read(tmp_path):
    data = generate(SyntheticConfig(n_sessions=200))
    vocab = data.split.vocab
    model = build("narm", data.split.n_items, {**SMALL["narm"][1], "max_length": 3, "truncate": "first"})
    session = [int(i) for i in vocab.decode(np.array([5, 6, 7, 8, 9]))]
    explanation = explain(model, vocab, session, k=3)
    assert explanation.items == session[:3]  # the official code keeps the first clicks
    assert explanation.pairs is None and len(explanation.weights) == 3
    assert plot(explanation, tmp_path / "narm.png").stat().st_size > 1000


def test_sr_iem_paper_form_importance_is_uniform_because_its_sigmoids_saturate():
    # the paper's equations at its sizes (d = 200, l = 100): Q, K in (0, 1)^100 make QK^T ~ 25, where
    # float32 sigmoid is exactly 1, so C is the constant 1/sqrt(d), beta = 1/t, and W_q, W_k get no gradient
    torch.manual_seed(0)
    model = build("sr-iem", 30)
    batch = batch_from_prefixes([np.array([3, 7, 7, 12, 5]), np.array([4, 8])], model.max_length)
    read = model.click_weights(batch)
    real = read.items != 0
    assert torch.equal(read.weights[real], (1.0 / real.sum(1, keepdim=True)).expand_as(real)[real])
    model(batch, torch.tensor([1, 2]))[1].backward()
    assert model.query.weight.grad.abs().max() == 0 and model.key.weight.grad.abs().max() == 0
    assert model.embedding.weight.grad.abs().max() > 0


@pytest.mark.slow  # the trained DSAN of the fixture above
def test_test_set_summary_tells_uniform_from_sparse_weights(trained, tmp_path, capsys):
    data, dsan, _ = trained
    sparse = summarise(dsan, data.split.test)
    assert sparse["cases"] == len(data.split.test) and sparse["weights_name"] == "target attention"
    assert sparse["zero_weight_share"] > 0 and sparse["uniform_share"] < 0.5
    assert sparse["peak_over_uniform"]["median"] > 1 and 1 < sparse["mean_alpha_target"] < 2
    split = resolve("synthetic")
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "paper", build("sr-iem", split.n_items), split.vocab, split.protocol, split.name)
    assert main(["explain", str(tmp_path / "paper"), "--test", "--threads", "1", "--out", str(tmp_path / "weights")]) == 0
    uniform = json.loads((tmp_path / "weights.json").read_text())
    assert uniform["dataset"] == "synthetic" and uniform["cases"] == len(split.test)
    assert uniform["uniform_share"] == 1.0 and uniform["zero_weight_share"] == 0
    assert uniform["peak_over_uniform"] == {"median": 1.0, "p90": 1.0, "max": 1.0}
    assert "100.0% of sessions" in capsys.readouterr().out
    assert main(["explain", str(tmp_path / "paper"), "5", "--test"]) == 2
    assert "not both" in capsys.readouterr().err


def test_out_keeps_its_dots_so_an_explanation_never_replaces_a_result(quick, tmp_path):
    split, directory = quick
    result = tmp_path / "narm.json"
    result.write_text("{}")  # a benchmark result beside the explanation
    session = [str(i) for i in split.test.sessions[0].tolist()]
    assert main(["explain", str(directory), *session, "--out", str(tmp_path / "narm.why")]) == 0
    assert main(["explain", str(directory), "--test", "-d", "synthetic", "--out", str(tmp_path / "narm.weights")]) == 0
    assert result.read_text() == "{}"
    assert all((tmp_path / name).exists() for name in ("narm.why.png", "narm.why.json", "narm.weights.json"))


def test_dsan_ablations_explain_only_the_layers_they_have():
    no_self = build("dsan", 30, {"variant": "ns", "embedding_dim": 8})
    read = no_self.click_weights(batch_from_prefixes([np.array([3, 7, 5])], no_self.max_length))
    assert read.pairs is None and "alpha_self" not in read.scalars and "alpha_target" in read.scalars
    no_target = build("dsan", 30, {"variant": "nt", "embedding_dim": 8})
    with pytest.raises(ValueError, match="no target attention"):
        no_target.click_weights(batch_from_prefixes([np.array([3, 7, 5])], no_target.max_length))
