"""The Python API (nextclick/__init__.py, nextclick/api.py): raw ids in and out through the run's
vocabulary, the same answers as the command line, and arguments documented where help() shows them."""

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

import nextclick
from nextclick import api
from nextclick.cli import main
from nextclick.data.benchmarks import resolve
from nextclick.data.sessions import Split, Vocab
from nextclick.models.config import ConfigError
from nextclick.models import REGISTRY


def raw_id_split() -> Split:
    """The synthetic split with raw item ids that are not the indices (index i is item 1000 + 7 i), as a
    prepared log's are."""
    split = resolve("synthetic")
    ids = np.concatenate([[0], 1000 + 7 * np.arange(1, split.n_items + 1)])
    return Split(name="synthetic-raw-ids", train=split.train, test=split.test, vocab=Vocab(ids),
                 protocol=split.protocol, provenance={})


@pytest.fixture(scope="module")
def split() -> Split:
    return raw_id_split()


@pytest.fixture(scope="module")
def run(split) -> api.Run:
    return nextclick.train(nextclick.build("s-pop", split), split, progress=False)


@pytest.fixture(scope="module")
def saved(run, tmp_path_factory):
    return nextclick.save(run, tmp_path_factory.mktemp("api") / "s-pop")


def test_importing_nextclick_loads_no_heavy_library():
    heavy = ("torch", "scipy", "polars", "matplotlib", "numpy")
    code = f"import sys, nextclick; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_building_the_command_line_parser_and_naming_models_loads_no_torch():
    code = ("import sys; from nextclick.cli import build_parser; from nextclick.models import REGISTRY; "
            "build_parser(); assert 'dsan' in REGISTRY and len(REGISTRY) > 10; "
            "print('torch' in sys.modules, 'polars' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert REGISTRY["pop"].__name__ == "Pop"  # a class is imported when it is asked for


def test_recommend_takes_and_returns_raw_ids_through_the_vocabulary(run, split):
    session = [int(i) for i in split.vocab.decode(split.test.prefix(0))]
    items, scores = nextclick.recommend(run, session, k=5)
    assert len(items) == 5 and np.all(np.diff(scores) <= 0)
    assert set(items.tolist()) <= set(split.vocab.ids[1:].tolist())
    indices, _ = run.model.recommend([split.vocab.encode(session)], k=5)
    assert items.tolist() == split.vocab.decode(indices[0]).tolist()


def test_exclude_seen_leaves_out_the_session_items_and_still_returns_k(run, split):
    top, _ = nextclick.recommend(run, [1007], k=3)
    session = [int(i) for i in top[:2]]  # S-POP ranks the session's own items first: the case that matters
    items, _ = nextclick.recommend(run, session, k=10, exclude_seen=True)
    assert len(items) == 10 and not set(session) & set(items.tolist())


@pytest.mark.parametrize("session, k, error, words", [
    ([], 5, ValueError, "empty session"),
    ([1007, "x"], 5, ValueError, "must be integers"),
    ([1007, 1.5], 5, ValueError, "must be integers"),
    ([1007, True], 5, ValueError, "must be integers"),
    ([1008], 5, KeyError, "unknown item id 1008"),
    ([1007], 0, ValueError, "k must be an integer"),
    ([1007] * 10_001, 5, ValueError, "at most 10,000 clicks"),
])
def test_bad_sessions_and_k_are_refused_with_a_message_naming_the_problem(run, session, k, error, words):
    with pytest.raises(error, match=words):
        nextclick.recommend(run, session, k=k)


def test_a_saved_run_loads_back_and_recommends_the_same(run, saved, split):
    loaded = nextclick.load(saved)
    assert loaded.dataset == run.dataset and loaded.protocol == run.protocol
    np.testing.assert_array_equal(loaded.vocab.ids, split.vocab.ids)
    for a, b in zip(nextclick.recommend(run, [1007, 1014], k=7), nextclick.recommend(loaded, [1007, 1014], k=7)):
        np.testing.assert_array_equal(a, b)


def test_saving_over_a_checkpoint_needs_overwrite(run, saved):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        nextclick.save(run, saved)
    assert nextclick.save(run, saved, overwrite=True) == saved


def test_the_command_line_recommends_exactly_what_the_api_does(run, saved, capsys):
    assert main(["recommend", str(saved), "1007", "1014", "-k", "6", "--exclude-seen", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    items, scores = nextclick.recommend(run, [1007, 1014], k=6, exclude_seen=True)
    assert [row["item"] for row in printed] == items.tolist()
    np.testing.assert_allclose([row["score"] for row in printed], scores, rtol=1e-6)


def test_evaluate_gives_the_command_lines_result_dict(run, split, saved, capsys):
    evaluation = nextclick.evaluate_run(run, split)
    assert main(["evaluate", str(saved), "--dataset", "synthetic", "--json", "-q"]) == 2  # other vocabulary
    assert "numbers its items differently" in capsys.readouterr().err
    cli_run = nextclick.load(saved)
    same = nextclick.evaluate_run(cli_run, split)
    assert same.summary().keys() == evaluation.summary().keys()
    assert {k: v for k, v in same.summary().items() if "second" not in k} == \
        {k: v for k, v in evaluation.summary().items() if "second" not in k}
    assert evaluation.by_length() == same.by_length()


def test_evaluate_on_the_run_s_own_split_by_default():
    split = resolve("synthetic")
    run = nextclick.train(nextclick.build("pop", split), split, progress=False)
    assert run.dataset == "synthetic"
    assert nextclick.evaluate_run(run).metrics == nextclick.evaluate_run(run, split).metrics


def test_paired_test_of_a_model_with_itself_finds_no_difference_and_needs_the_same_cases(run, split):
    evaluation = nextclick.evaluate_run(run, split)
    assert nextclick.paired_test(evaluation, evaluation)["HR@20"] == {"mean_difference": 0.0, "t": 0.0, "p": 1.0}
    fewer = Split(split.name, split.train, split.test.select(np.arange(100)), split.vocab, split.protocol)
    with pytest.raises(ValueError, match="same test cases"):
        nextclick.paired_test(evaluation, nextclick.evaluate_run(run, fewer))


def test_build_applies_overrides_and_a_seed_and_refuses_unknown_keys(split):
    first = nextclick.build("narm", split, hidden_size=16, seed=3)
    again = nextclick.build("narm", split.n_items, hidden_size="16", seed=3)
    assert first.config.hidden_size == 16
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert bool((a == b).all())
    with pytest.raises(ConfigError, match="unknown option 'hiden_size'"):
        nextclick.build("narm", split, hiden_size=16)
    with pytest.raises(ConfigError, match="unknown model"):
        nextclick.build("nope", split)
    with pytest.raises(ValueError, match="built for 10 items"):
        nextclick.train(nextclick.build("pop", 10), split, progress=False)


def test_explain_reads_an_attention_model_in_raw_ids_and_refuses_others(run, split):
    narm = nextclick.train(nextclick.build("narm", split, hidden_size=8, embedding_size=8), split, epochs=1,
                           max_batches=2, progress=False)
    explanation = nextclick.explain_session(narm, [1007, 1014, 1021], k=3)
    assert explanation.items == [1007, 1014, 1021] and len(explanation.recommendations) == 3
    assert explanation.weights.shape == (3,)
    with pytest.raises(ValueError, match="no attention"):
        nextclick.explain_session(run, [1007])


def test_the_api_reports_the_cut_offs_every_evaluation_does():
    from nextclick.evaluate import DEFAULT_KS

    assert api.DEFAULT_KS == DEFAULT_KS


@pytest.mark.parametrize("name", [n for n in nextclick.__all__ if n not in ("Run", "__version__")])
def test_every_public_function_documents_every_argument(name):
    function = getattr(nextclick, name)
    doc = inspect.getdoc(function)
    assert doc, f"{name} has no docstring"
    for parameter in inspect.signature(function).parameters.values():
        words = parameter.name if parameter.kind is not parameter.VAR_KEYWORD else f"**{parameter.name}"
        assert f"{words}:" in doc, f"help(nextclick.{name}) does not explain {parameter.name!r}"


def test_the_version_is_the_installed_distribution_s(capsys):
    from importlib.metadata import version

    assert nextclick.__version__ == version("nextclick")
    assert main(["--version"]) == 0  # answered before the parser is built (start-up)
    assert capsys.readouterr().out.strip() == f"nextclick {nextclick.__version__}"
    from nextclick.cli import build_parser

    with pytest.raises(SystemExit) as exit_:  # and `nextclick --help` lists it
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"nextclick {nextclick.__version__}"
