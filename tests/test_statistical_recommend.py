"""Statistical models recommend in numpy (models/base.py): from a loaded checkpoint they return the items
and scores that their tensor scores (the evaluator's) rank first, equal scores by item index, and
loading and recommending imports no torch, on the command line or through the API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_contract import fitted, synthetic

from nextclick import checkpoint
from nextclick.data.batches import batch_from_prefixes
from nextclick.models.base import largest_in_rows, top_items

# the models whose scoring is plain numpy (BPR-MF and FPMC score with torch: they import it)
NUMPY_MODELS = ("pop", "s-pop", "item-knn", "sknn", "v-sknn", "stan")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    split, folder = synthetic(), tmp_path_factory.mktemp("statistical")
    return {name: str(checkpoint.save(folder / name, fitted(name), split.vocab, split.protocol, split.name))
            for name in NUMPY_MODELS}


def sessions() -> list[np.ndarray]:
    """Test prefixes of every length, one session longer than S-POP's DSAN window (20), one repeating."""
    test = synthetic().test
    chosen = [np.flatnonzero(test.length == n)[0] for n in np.unique(test.length)]
    prefixes = [test.prefix(c) for c in chosen]
    return prefixes + [np.concatenate(prefixes), np.array([3, 3, 3, 7, 3])]


def ranked_by_tensor_scores(model, prefixes: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: `score(batch)` as the evaluator gets it, ranked by a stable descending sort (equal
    scores by item index); its values must be torch.topk's."""
    scores = model.score(batch_from_prefixes(prefixes, model.max_length))[:, 1:]
    values, columns = torch.sort(scores, dim=1, descending=True, stable=True)
    assert torch.equal(values[:, :k], torch.topk(scores, k, dim=1).values)
    return columns[:, :k].numpy() + 1, values[:, :k].numpy()


@pytest.mark.parametrize("name", NUMPY_MODELS)
@pytest.mark.parametrize("k", [20, 600])
def test_a_loaded_statistical_model_recommends_what_its_tensor_scores_rank_first_ties_by_item_index(
        name, k, checkpoints):
    model, prefixes = fitted(name), sessions()
    loaded, _, _ = checkpoint.load(checkpoints[name])
    items, scores = loaded.recommend(prefixes, k=k)
    expected_items, expected_scores = ranked_by_tensor_scores(model, prefixes, min(k, model.n_items))
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(items, expected_items)
    if name == "pop" and k == model.n_items:  # the tie rule is exercised: POP's whole list has items of equal clicks
        assert (np.diff(scores[0]) == 0).any()


def test_top_items_ranks_equal_scores_by_item_index_and_never_returns_padding():
    scores = np.array([[-np.inf, 1.0, 3.0, 1.0, 3.0, 2.0, 1.0],
                       [-np.inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    items, values = top_items(scores, 4)
    assert items.tolist() == [[2, 4, 5, 1], [1, 2, 3, 4]]
    assert values.tolist() == [[3.0, 3.0, 2.0, 1.0], [0.0] * 4]
    assert top_items(scores, 6)[0].tolist() == [[2, 4, 5, 1, 3, 6], [1, 2, 3, 4, 5, 6]]


@pytest.mark.parametrize("values", ["distinct", "few", "mostly -inf", "one hot"])
def test_top_items_on_wide_rows_reads_blocks_and_ranks_as_a_stable_sort_of_the_whole_row(values):
    rng = np.random.default_rng(len(values))
    width = 64 * 50 + 37  # blocks of BLOCK columns and a partial one: the block path
    scores = {"distinct": lambda: rng.random((9, width)),
              "few": lambda: rng.integers(0, 4, (9, width)).astype(float),  # ties across many blocks
              "mostly -inf": lambda: np.where(rng.random((9, width)) < 0.995, -np.inf, rng.random((9, width))),
              "one hot": lambda: np.eye(9, width) * 2.0}[values]()
    scores[:, 0] = -np.inf
    for k in (1, 7, 20):
        items, top = top_items(scores, k)
        expected = np.argsort(-scores[:, 1:], axis=1, kind="stable")[:, :k] + 1
        np.testing.assert_array_equal(items, expected)
        np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))


def test_largest_in_rows_keeps_exactly_k_per_row_and_breaks_ties_by_position():
    values = np.array([[5.0, 1.0, 1.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    assert largest_in_rows(values, 3).astype(int).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert largest_in_rows(values, 3, ties_to_last=True).astype(int).tolist() == [[1, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


SESSION = [3, 7, 3, 12]


def in_fresh_python(code: str) -> tuple[list, bool]:
    """Run `code` in a new interpreter; it prints one JSON line of results. Returns (results, whether torch
    or numba was imported: numba's compiled forms are for long-lived processes, base.use_compiled)."""
    script = f"import json, sys\n{code}\nprint(json.dumps(['torch' in sys.modules or 'numba' in sys.modules, results]))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    torch_loaded, results = json.loads(done.stdout.strip().splitlines()[-1])
    return results, torch_loaded


def expected_lists(k: int) -> list[list[list]]:
    """[[item id, score] ...] per model, from the tensor scores in this process."""
    vocab = synthetic().vocab
    lists = []
    for name in NUMPY_MODELS:
        items, scores = ranked_by_tensor_scores(fitted(name), [vocab.encode(SESSION)], k)
        lists.append([[int(i), float(s)] for i, s in zip(vocab.decode(items[0]), scores[0])])
    return lists


def test_recommending_from_statistical_checkpoints_on_the_command_line_imports_no_torch(checkpoints):
    code = ("import contextlib, io\nfrom nextclick.cli import main\nresults = []\n"
            f"for path in {[checkpoints[n] for n in NUMPY_MODELS]!r}:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            f"        assert main(['recommend', path, *{[str(i) for i in SESSION]!r}, '-k', '5', '--json']) == 0\n"
            "    results.append([[r['item'], r['score']] for r in json.loads(out.getvalue())])")
    results, torch_loaded = in_fresh_python(code)
    assert not torch_loaded
    assert results == expected_lists(5)


def test_loading_and_recommending_statistical_checkpoints_through_the_api_imports_no_torch(checkpoints):
    code = ("import nextclick\nresults = []\n"
            f"for path in {[checkpoints[n] for n in NUMPY_MODELS]!r}:\n"
            f"    items, scores = nextclick.recommend(nextclick.load(path), {SESSION!r}, k=5)\n"
            "    results.append([[int(i), float(s)] for i, s in zip(items, scores)])")
    results, torch_loaded = in_fresh_python(code)
    assert not torch_loaded
    assert results == expected_lists(5)
