"""results/INDEX.md: where to find each model's number. One table of the headline run per dataset and
model (the run the docs cite, named in results/manifest.json) with its test HR@20 / MRR@20 and a link
to the run's folder; one table of every run. Made from result files and the manifest alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nextclick.report.load import run_name
from nextclick.report.tables import markdown

INDEX_METRICS = ("HR@20", "MRR@20")


class ManifestError(ValueError):
    """The manifest names a run the results do not have: its link would lead nowhere."""


def runs_by_model(results: Sequence[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """{(dataset, model): {run id: result}}."""
    runs: dict[tuple[str, str], dict[str, dict]] = {}
    for result in results:
        runs.setdefault((result.get("dataset", "?"), result.get("model", "?")), {})[run_name(result)] = result
    return runs


def headlines(results: Sequence[dict], manifest: dict) -> dict[tuple[str, str], dict | None]:
    """{(dataset, model): the headline result} for every dataset and model among `results`: the run the
    manifest names; where it names none, the only run (None where there are several to choose from)."""
    chosen: dict[tuple[str, str], dict | None] = {}
    for (dataset, model), runs in runs_by_model(results).items():
        named = manifest.get(dataset, {}).get(model)
        if named is not None and named not in runs:
            raise ManifestError(f"the manifest names {dataset} {model} run {named!r}, which is not among the "
                                f"results ({', '.join(sorted(runs))})")
        chosen[(dataset, model)] = runs[named] if named is not None else (
            next(iter(runs.values())) if len(runs) == 1 else None)
    return chosen


def _scores(result: dict) -> str:
    return " / ".join(f"{100 * result['test'][m]:.2f}" for m in INDEX_METRICS)


def _link(result: dict, index_dir: Path) -> str:
    """The run's folder relative to the index, as a markdown link target."""
    return Path(os.path.relpath(Path(result["_path"]).parent, index_dir)).as_posix() + "/"


def index_markdown(results: Sequence[dict], manifest: dict, index_path: str | Path) -> str:
    """The whole INDEX.md: headline table (rows: models, columns: datasets), the manifest's notes, and
    every run by dataset and model (headline first)."""
    index_dir = Path(index_path).parent
    chosen = headlines(results, manifest)
    datasets = sorted({dataset for dataset, _ in chosen})
    models = sorted({model for _, model in chosen})
    metrics = " / ".join(INDEX_METRICS)
    lines = ["# Results", "",
             "Made by `make report` from the result files and `manifest.json` alone. Each run has a folder",
             "`<dataset>/<model>/<run id>/` (result.json, ranks.npz, and its curves and click weights), its id",
             "the settings it asked for that differ from the defaults. Test metrics in percent,",
             "validation-selected, test evaluated once; every table of them: docs/results.md.", "",
             f"## Headline runs ({metrics})", "",
             "The run the docs cite for each model (`manifest.json`); the link leads to its folder.", ""]
    rows = []
    for model in models:
        cells = [model]
        for dataset in datasets:
            if (dataset, model) not in chosen:
                cells.append("")
            elif chosen[(dataset, model)] is None:
                cells.append("no headline named in manifest.json")
            else:
                result = chosen[(dataset, model)]
                cells.append(f"[{_scores(result)}]({_link(result, index_dir)})")
        rows.append(cells)
    lines += [markdown(["model", *datasets], rows), ""]
    notes = [(dataset, model, text) for dataset, by_model in sorted(manifest.get("notes", {}).items())
             for model, text in sorted(by_model.items()) if (dataset, model) in chosen]
    if notes:
        lines += ["Why these runs:", ""] + [f"- {dataset} {model}: {text}" for dataset, model, text in notes] + [""]
    lines += ["## Every run", ""]
    rows = []
    for (dataset, model), runs in sorted(runs_by_model(results).items()):
        headline = chosen[(dataset, model)]
        for run, result in sorted(runs.items(), key=lambda item: (item[1] is not headline, item[0])):
            rows.append([dataset, model, f"[{run}]({_link(result, index_dir)})",
                         *(f"{100 * result['test'][m]:.2f}" for m in INDEX_METRICS),
                         "yes" if result is headline else ""])
    lines += [markdown(["dataset", "model", "run", *INDEX_METRICS, "headline"], rows), ""]
    return "\n".join(lines)
