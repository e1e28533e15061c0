"""nextclick: session-based next-item recommendation with faithful models and honest evaluation.

    import nextclick
    split = nextclick.prepare("clicks.csv", "data/mylog", test_days=1)   # your log -> a split directory
    model = nextclick.build("narm", split, hidden_size=50)                # any of nextclick.model_names()
    run = nextclick.train(model, split, epochs=5)                          # epoch selected on validation
    evaluation = nextclick.evaluate_run(run)                               # HR@K, MRR@K over the test cases
    nextclick.save(run, "runs/mylog/narm")                                 # safetensors + JSON
    items, scores = nextclick.recommend(nextclick.load("runs/mylog/narm"), [214839, 214821], k=10)

Each function's help() lists its arguments; docs/tutorial.md walks through a whole log. The command
line (`nextclick --help`) calls the same functions. Importing this package loads no torch, scipy,
polars or matplotlib: the functions import them when first called.
"""

from nextclick.api import (Run, build, evaluate_run, explain_session, load, load_split, model_names, paired_test,
                           plot_by_length, prepare, recommend, save, train)


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source); a source tree that was
    never installed has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nextclick")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

__all__ = ["Run", "__version__", "build", "evaluate_run", "explain_session", "load", "load_split", "model_names",
           "paired_test", "plot_by_length", "prepare", "recommend", "save", "train"]
