"""The contract every registered model keeps (models/base.py), checked on the synthetic split: one test
per behaviour, parametrised over the registry, so a new model is checked by registering it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_contract import check_forward_backward, fitted, pop_hit_rate, registered, synthetic
from nextclick import checkpoint
from nextclick.data.batches import make_batch
from nextclick.evaluate import evaluate
from nextclick.models import REGISTRY

MODELS = registered()
SOURCE = Path(__file__).resolve().parents[1] / "src" / "nextclick"


@pytest.mark.parametrize("name", MODELS)
def test_scores_have_one_column_per_item_and_padding_at_minus_infinity(name):
    model, split = fitted(name), synthetic()
    scores = model.score(make_batch(split.test, np.arange(37), model.max_length))
    assert scores.shape == (37, split.n_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", MODELS)
def test_left_padding_does_not_change_a_cases_scores(name):
    """A case scores the same alone in a batch as beside a much longer case (more padding on its left)."""
    model, test = fitted(name), synthetic().test
    short = np.flatnonzero(test.length <= 3)[:16]
    longest = int(np.argmax(test.length))
    alone = model.score(make_batch(test, short, model.max_length))
    padded = model.score(make_batch(test, np.append(short, longest), model.max_length))[: len(short)]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [m for m in MODELS if m != "pop"])
def test_beats_pop_on_the_synthetic_test_set(name):
    model = fitted(name)
    hit_rate = evaluate(model.score, synthetic().test, max_length=model.max_length).metrics["HR@20"]
    assert hit_rate > pop_hit_rate(), (name, hit_rate, pop_hit_rate())


@pytest.mark.parametrize("name", MODELS)
def test_a_checkpoint_round_trip_gives_identical_scores(name, tmp_path):
    model, split = fitted(name), synthetic()
    path = checkpoint.save(tmp_path / name, model, split.vocab, split.protocol, split.name)
    loaded, vocab, meta = checkpoint.load(path)
    assert meta["model"] == name and type(loaded) is type(model) and loaded.config == model.config
    batch = make_batch(split.test, np.arange(50), model.max_length)
    assert torch.equal(loaded.score(batch), model.score(batch))


@pytest.mark.parametrize("name", MODELS)
def test_inner_product_models_score_by_their_query_and_item_vectors(name):
    model, split = fitted(name), synthetic()
    if not hasattr(model, "query_vectors"):
        assert not hasattr(model, "item_vectors")
        pytest.skip(f"{name} scores are not inner products")
    batch = make_batch(split.test, np.arange(40), model.max_length)
    query, items = model.query_vectors(batch), model.item_vectors()
    assert query.shape[1] == items.shape[1] and items.shape[0] == split.n_items + 1
    torch.testing.assert_close((query @ items.T)[:, 1:], model.score(batch)[:, 1:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [m for m in MODELS if REGISTRY[m].neural])
def test_neural_forward_returns_scores_and_a_loss_with_finite_gradients(name):
    model, split = fitted(name), synthetic()
    copy = type(model)(model.n_items, model.config)
    copy.load_state_tensors(model.state_tensors())
    check_forward_backward(copy.train(), make_batch(split.test, np.arange(24), copy.max_length))


def test_models_import_neither_the_trainer_nor_the_evaluator_nor_the_runs():
    upward = ("nextclick.training", "nextclick.runs", "nextclick.evaluate", "nextclick.measure", "nextclick.cli",
              "nextclick.checkpoint", "nextclick.report", "nextclick.explain")
    for path in (SOURCE / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(upward) for n in names), (path.name, names)


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    tool = SOURCE.parents[2] / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip("../shared/tools/import_cycles.py not found beside the checkout")
    done = subprocess.run([sys.executable, str(tool), str(SOURCE)], capture_output=True, text=True)
    assert done.returncode == 0 and "cycle" not in done.stdout, done.stdout
