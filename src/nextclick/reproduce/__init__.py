"""`nextclick reproduce dsan|sriem|narm`: every table and figure of the three seed papers, ours beside
the published numbers, from the committed result files.

    nextclick reproduce dsan --list          # what each table needs: present runs, missing ones with their command
    nextclick reproduce dsan                 # render docs/reproduction/dsan/ (markdown + PNG) and docs/reproduction.md
    nextclick reproduce dsan --table 3       # one table (or --figure 4)
    nextclick reproduce dsan --run           # print the plan, train the missing runs one at a time, then render

manifests/ says what each item needs (plain data); plan.py finds runs by their id
(nextclick.runs.identity) and gives the bench command of each missing one; render.py draws and judges
(reproduced / within noise / short); significance.py holds the paired t-test on the stored ranks.
Rendering imports neither torch nor a dataset: it runs in seconds on a fresh clone. `--run` starts
`nextclick bench ... --resume` as a child process per run, so training goes through the same code
(and checkpoints) as a bench typed by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from nextclick.reproduce.manifests import PAPERS
from nextclick.reproduce.plan import RunSpec, cost_summary, cost_text, listing, missing_runs, paper_runs, select_items
from nextclick.reproduce.render import Results, render_paper, section_markdown, write_paper, write_summary

__all__ = ["PAPERS", "RunSpec", "listing", "missing_runs", "paper", "paper_runs", "render", "run_missing",
           "select_items", "train_plan"]


def paper(name: str) -> dict:
    if name not in PAPERS:
        raise ValueError(f"no manifest for {name!r}; papers: {', '.join(PAPERS)}")
    return PAPERS[name]


def render(name: str, results_dir: str | Path = "results", out_root: str | Path = "docs",
           items: list[dict] | None = None, root: str | Path = ".", echo: Callable[[str], None] = print) -> list[Path]:
    """Draw a paper's items under out_root/reproduction/<paper>/; for the whole paper also its README.md and
    out_root/reproduction.md (every paper's state). For one table or figure, its markdown goes to `echo`
    and its PNGs are written, the README left as it is. Returns the files written."""
    chosen = paper(name)
    results = Results(results_dir)
    sections = render_paper(chosen, results_dir, out_root, items, root, results=results)
    written = [figure for section in sections for figure in section.figures]
    if items is not None and len(items) < len(chosen["items"]):
        for section in sections:
            echo(section_markdown(chosen, section))
        return written
    written.append(write_paper(chosen, sections, results_dir, out_root))
    every = [(p, sections if p is chosen else render_paper(p, results_dir, out_root, None, root, draw=False,
                                                          results=Results(results_dir)))
             for p in PAPERS.values()]
    written.append(write_summary(every, results_dir, out_root))
    return written


def train_plan(runs: Sequence[RunSpec], results_dir: str | Path) -> str:
    lines = [f"{len(runs)} runs to train, one at a time (each `nextclick bench ... --resume`: an interrupted run "
             "continues from its checkpoint; results go to "
             f"{results_dir}/<dataset>/<model>/<run id>/):"]
    for i, run in enumerate(runs, 1):
        lines.append(f"  {i}. {run.name}\n     {run.command()}\n     {cost_text(run, results_dir)}")
    if runs:
        lines.append(cost_summary(list(runs), results_dir, label="in all"))
    return "\n".join(lines)


def run_missing(runs: Sequence[RunSpec], results_dir: str | Path, extra: Sequence[str] = (),
                launch: Callable[[list[str]], int] | None = None) -> int:
    """Train each run in turn with `python -m nextclick.cli bench <its arguments> --resume <extra>`;
    stops at the first that fails (its checkpoint stays for the next --run). Returns 0 or that exit code."""
    launch = launch or (lambda argv: subprocess.call(argv))
    for i, run in enumerate(runs, 1):
        argv = [sys.executable, "-m", "nextclick.cli", *run.bench_arguments(), "--resume",
                "--results-dir", str(results_dir), *extra]
        print(f"[{i}/{len(runs)}] {run.name}", flush=True)
        code = launch(argv)
        if code != 0:
            print(f"{run.name} failed (exit {code}); its checkpoint is kept: the same command continues it",
                  file=sys.stderr)
            return code
        if not run.result_path(results_dir).is_file():
            print(f"{run.name}: the bench wrote no {run.result_path(results_dir)} (the manifest's settings and "
                  "the run id disagree)", file=sys.stderr)
            return 1
    return 0
