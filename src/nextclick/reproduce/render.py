"""A paper's tables and figures drawn from result files, ours beside the published numbers, with the
state of each (reproduced / within noise / short). No torch, no dataset: result.json and ranks.npz only.

Numbers are percent. With several seeds a cell shows mean ± standard deviation over them; the state
compares the mean with the published number: at or above it is "reproduced", below it by at most one
standard error "within noise", else "short". The standard error is the larger of two: that of one test
reading (the spread of hit@K or reciprocal rank@K over the test cases, seeds averaged per case, over
sqrt(cases): the published number is one such reading, and the noise docs/dsan.md and docs/sriem.md
weigh gaps with) and that of the mean over seeds (std / sqrt(seeds), two seeds or more). Published
numbers measured on another preprocessing of the data are shown and never judged ("other split").
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nextclick import atomic
from nextclick.published import OTHER_SPLITS, VARIANTS, published
from nextclick.report import length_table, typical_epoch, computed_on
from nextclick.report.load import label as result_label
from nextclick.reproduce import significance
from nextclick.reproduce.plan import RunSpec, item_runs, row_on, row_runs, sweep_runs, unique

UP, DOWN = "▲", "▼"
STATES = ("reproduced", "within noise", "short")


@dataclass
class Measure:
    """The runs behind one number (one per seed) and the results of those present."""

    runs: list[RunSpec]
    results: list[dict]
    present: list[RunSpec]
    ranks: list[np.ndarray] = field(default_factory=list)  # per-case test ranks of the present runs that kept them

    def values(self, metric: str) -> list[float]:
        return [100 * r["test"][metric] for r in self.results if metric in r["test"]]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) >= 2 else None

    def standard_error(self, metric: str) -> float | None:
        """The larger of one test reading's and the seeds' standard error (module docstring); None when
        neither is known (one seed without its ranks)."""
        spread = self.std(metric)
        over_seeds = None if spread is None else spread / math.sqrt(len(self.values(metric)))
        return max((e for e in (over_seeds, self.reading_error(metric)) if e is not None), default=None)

    def reading_error(self, metric: str) -> float | None:
        """Standard error of one test reading, in points: the per-case values' std over sqrt(cases)."""
        if not self.ranks or len({len(r) for r in self.ranks}) != 1:
            return None
        values = significance.per_case(self.ranks, metric)
        return 100 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else None

    def seeds(self) -> str:
        return ", ".join(str(run.seed) for run in self.present) or "—"


@dataclass
class Cell:
    """One number of a table: ours against the published one, and its state."""

    item: str
    dataset: str
    row: str
    metric: str
    ours: float | None
    standard_error: float | None
    seeds: int
    paper: float | None
    state: str
    proposed: bool = False

    @property
    def gap(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


@dataclass
class Section:
    """One table or figure: its markdown, the PNGs it wrote, its cells and a one-line state."""

    item: dict
    markdown: str
    figures: list[Path] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    state: str = ""
    detail: str = ""
    needed: int = 0
    missing: list[RunSpec] = field(default_factory=list)


class Results:
    """Result files read once per rendering (tables share their headline runs)."""

    def __init__(self, results_dir: str | Path):
        self.results_dir = Path(results_dir)
        self._results: dict[str, dict | None] = {}
        self._ranks: dict[str, np.ndarray | None] = {}

    def result(self, run: RunSpec) -> dict | None:
        if run.name not in self._results:
            path = run.result_path(self.results_dir)
            result = json.loads(path.read_text()) if path.is_file() else None
            if result is not None:
                result["_path"] = str(path)
                result["_label"] = result_label(result)
            self._results[run.name] = result
        return self._results[run.name]

    def ranks(self, run: RunSpec) -> np.ndarray | None:
        if run.name not in self._ranks:
            path = run.ranks_path(self.results_dir)
            self._ranks[run.name] = np.load(path)["ranks"] if path.is_file() else None
        return self._ranks[run.name]

    def measure(self, runs: Sequence[RunSpec]) -> Measure:
        present = [run for run in runs if self.result(run) is not None]
        ranks = [r for r in (self.ranks(run) for run in present) if r is not None]
        return Measure(list(runs), [self.result(run) for run in present], present, ranks)


def published_number(item: dict, row: dict, dataset: str) -> tuple[dict | None, bool]:
    """(the published row for this manifest row on this dataset, whether it is on our split)."""
    row = row_on(row, dataset)
    key = row.get("published")
    if isinstance(key, dict):
        key = key.get(dataset)
    key = key or row.get("model")
    other = item.get("other_split", {}).get(dataset)
    if other is not None:
        return OTHER_SPLITS.get(dataset, {}).get(other, {}).get(key), False
    return VARIANTS.get(dataset, {}).get(key) or published(dataset, key or ""), True


def judge(ours: float | None, standard_error: float | None, paper: float | None, comparable: bool) -> str:
    if ours is None:
        return "missing"
    if paper is None:
        return "no published value"
    if not comparable:
        return "other split"
    if ours >= paper - 1e-9:
        return "reproduced"
    if standard_error is not None and paper - ours <= standard_error:
        return "within noise"
    return "short"


def number(measure: Measure, metric: str) -> str:
    mean, spread = measure.mean(metric), measure.std(metric)
    if mean is None:
        return "—"
    return f"{mean:.2f}" if spread is None else f"{mean:.2f} ± {spread:.2f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from nextclick.report import markdown as table

    return table(header, rows)


def link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def mark(results: Results, measure: Measure, proposed: Measure | None, metric: str) -> str:
    """▲ / ▼ where the paired t-test over the test cases puts this row above / below the paper's model
    (p < 0.01); "" where it does not, or where ranks are missing or on other cases."""
    if proposed is None or measure is proposed or not measure.present or not proposed.present:
        return ""
    if {run.name for run in measure.present} == {run.name for run in proposed.present}:
        return ""
    ours = [results.ranks(run) for run in measure.present]
    theirs = [results.ranks(run) for run in proposed.present]
    if any(r is None for r in ours + theirs) or len({r.shape for r in ours + theirs}) != 1:
        return ""
    test = significance.compare(ours, theirs, metric)
    if test["p"] >= significance.LEVEL:
        return ""
    return f" {UP}" if test["mean_difference"] > 0 else f" {DOWN}"


def summarise(section: Section, proposed_label: str) -> None:
    """The section's one-line state, from its comparable cells."""
    judged = [c for c in section.cells if c.state in STATES]
    counts = {state: sum(1 for c in judged if c.state == state) for state in STATES}
    if not section.cells:
        state = section.state or "drawn"
    elif not judged:
        state = "not measured yet" if all(c.state == "missing" for c in section.cells) else "nothing comparable"
    else:
        state = next(s for s in ("short", "within noise", "reproduced") if counts[s])
    if section.missing:  # a judgement of the runs present only: "so far"
        state += f"{' so far' if state in STATES else ''} ({len(section.missing)} of {section.needed} runs missing)"
    section.state = state
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    other = sum(1 for c in section.cells if c.state == "other split")
    if other:
        parts.append(f"{other} on another split")
    lacking = sum(1 for c in section.cells if c.state == "missing")
    if lacking:
        parts.append(f"{lacking} not measured")
    headline = [c for c in section.cells if c.proposed and c.ours is not None and c.paper is not None
                and c.state != "other split"]
    gaps = [f"{c.dataset} {c.metric} {c.ours:.2f} vs {c.paper:.2f} ({c.gap:+.2f}"
            + (f", SE {c.standard_error:.2f}" if c.standard_error is not None else "")
            + (f", {c.seeds} seeds" if c.seeds > 1 else ", 1 seed")
            + f"; {c.state})" for c in headline]
    if gaps:
        parts.append(f"{proposed_label}: " + "; ".join(gaps))
    others = [f"{c.row} {c.dataset} {c.metric} {c.gap:+.2f}" for c in section.cells
              if c.state == "short" and not c.proposed and c.gap is not None]
    if others:
        parts.append("short elsewhere: " + ", ".join(others))
    section.detail = "; ".join(parts) if parts else section.detail


def metrics_section(paper: dict, item: dict, results: Results, out_dir: Path) -> Section:
    metrics = item["metrics"]
    section = Section(item, "")
    lines = []
    for dataset in item["datasets"]:
        measures = [(row, results.measure(row_runs(row, dataset))) for row in item["rows"]]
        proposed = next((m for row, m in measures if row["label"] == paper["proposed"]), None)
        comparable_here = dataset not in item.get("other_split", {})
        header = ["model", "seeds"] + [f"{m} {w}" for m in metrics for w in ("ours", "paper", "gap")] + ["run"]
        body = []
        for row, measure in measures:
            paper_row, comparable = published_number(item, row, dataset)
            cells = [row["label"], measure.seeds() if row_on(row, dataset).get("model") else "not in nextclick"]
            for metric in metrics:
                ours = measure.mean(metric)
                theirs = 100 * paper_row[metric] if paper_row and metric in paper_row else None
                error = measure.standard_error(metric)  # per-case values over the whole test set: computed once
                state = judge(ours, error, theirs, comparable)
                if row_on(row, dataset).get("model") is not None:
                    section.cells.append(Cell(item["id"], dataset, row["label"], metric, ours,
                                              error, len(measure.values(metric)), theirs,
                                              state, proposed=row["label"] == paper["proposed"]))
                gap = "" if ours is None or theirs is None else f"{ours - theirs:+.2f}" if comparable else "n/c"
                cells += [number(measure, metric) + (mark(results, measure, proposed, metric) if ours is not None else ""),
                          "—" if theirs is None else f"{theirs:.2f}", gap]
            runs = unique(measure.runs)
            cells.append(", ".join(f"[{run.identity}]({link(run.folder(results.results_dir).resolve(), out_dir.resolve())}/)"
                                   if run in measure.present else f"{run.identity} (missing)"
                                   for run in runs if run.seed == runs[0].seed) if runs else "")
            body.append(cells)
        sources = sorted({published_number(item, row, dataset)[0]["source"] for row in item["rows"]
                          if published_number(item, row, dataset)[0]})
        title = f"### {dataset}" + ("" if comparable_here else " (published numbers on another split: not comparable)")
        lines += [title, "", markdown(header, body), "",
                  f"Published: {', '.join(sources) or 'none'}. Gap = ours - paper, in points"
                  + ("" if comparable_here else " (n/c: not comparable, another split)") + ".", ""]
    section.markdown = "\n".join(lines)
    return section


def by_machine(measure: Measure) -> dict[str, tuple[float, list[int]]]:
    """{computed on: (mean seconds of the median epoch, seeds)} over the runs that recorded epoch times:
    times are compared only between runs on the same kind of machine."""
    grouped: dict[str, list[tuple[float, int]]] = {}
    for run, result in zip(measure.present, measure.results):
        seconds = typical_epoch(result)[1]
        if seconds is not None:
            grouped.setdefault(computed_on(result), []).append((seconds, run.seed))
    return {machine: (statistics.fmean(s for s, _ in values), [seed for _, seed in values])
            for machine, values in grouped.items()}


def speed_section(paper: dict, item: dict, results: Results, out_dir: Path) -> Section:
    """Seconds per training epoch of each row, and its ratio to the paper's model. Judged on the rows
    timed back to back in one process (reproduce/timing.py) where that file exists; the benchmark runs'
    own epoch times are shown too, their ratios only between runs on the same kind of machine."""
    from nextclick.reproduce.timing import command, read_timing

    section = Section(item, "")
    lines = []
    ratios = item.get("published_ratio", {})
    for dataset in item["datasets"]:
        timing = read_timing(results.results_dir, paper["name"], item["id"], dataset)
        lines += [f"### {dataset}", ""]
        if timing is not None:
            lines += one_run_table(paper, item, timing, ratios, section)
        else:
            lines += [f"Not timed in one run yet: `{command(paper['name'], item['id'])}`.", ""]
        lines += runs_table(paper, item, dataset, results, ratios, section if timing is None else None)
    section.markdown = "\n".join(lines)
    return section


def expected_ratio(published_range: list[float] | None) -> str:
    return "—" if not published_range else f"{published_range[0]:g}-{published_range[1]:g}x"


def judged_ratio(value: float, published_range: list[float] | None) -> tuple[str, str]:
    """A time ratio as shown, and its state against the paper's range ("drawn" without one)."""
    if not published_range:
        return f"{value:.1f}x", "drawn"
    return f"{value:.1f}x", "reproduced" if value >= published_range[0] else "short"


def one_run_table(paper: dict, item: dict, timing: dict, ratios: dict, section: Section) -> list[str]:
    """The rows timed one after the other in one process: estimated seconds per epoch and their ratios."""
    rows = {row["label"]: row for row in timing["rows"]}
    base = rows.get(paper["proposed"])
    body = []
    for label, row in rows.items():
        published_range = ratios.get(label)
        ratio, state, value = "—", "reference" if row is base else "drawn", None
        if row is not base and base is not None:
            value = row["seconds_per_epoch"] / base["seconds_per_epoch"]
            ratio, state = judged_ratio(value, published_range)
            if published_range:
                section.cells.append(Cell(item["id"], timing["dataset"], label, "time ratio", value, None, 1,
                                          published_range[0], state))
        body.append([label, f"{row['cases_per_second']:,.0f}", f"{row['epoch_cases']:,}", f"{row['seconds_per_epoch']:,.0f}",
                     str(row["batch_size"]), ratio, expected_ratio(published_range), state])
    machine = timing["machine"]
    where = f"{machine['device'] if machine['device'] != 'cpu' else machine['cpu']}, {machine['threads']} threads"
    return ([f"Timed in one run ({where}, load {machine['load_average_1m']}, at {str(timing['git_commit'])[:7]}; "
             f"results/speed/{timing['dataset']}/{paper['name']}-{item['id']}.json): {timing['what']}.", "",
             markdown(["model", "training cases/s", "cases per epoch", "s/epoch (estimated)", "batch",
                       f"time / {paper['proposed']}'s", "paper's ratio", "state"], body), ""])


def runs_table(paper: dict, item: dict, dataset: str, results: Results, ratios: dict,
               section: Section | None) -> list[str]:
    """The benchmark runs' median epochs; judged (cells added to `section`) only when given one."""
    measures = [(row, results.measure(row_runs(row, dataset))) for row in item["rows"]]
    proposed = next((m for row, m in measures if row["label"] == paper["proposed"]), None)
    base = by_machine(proposed) if proposed else {}
    body = []
    for row, measure in measures:
        published_range = ratios.get(row["label"])
        expected = expected_ratio(published_range)
        if row_on(row, dataset).get("model") is None:
            body.append([row["label"], "not in nextclick", "—", "—", "—", expected, "—"])
            continue
        times = by_machine(measure)
        if not times:
            body.append([row["label"], "—", measure.seeds(), "—", "—", expected,
                         "missing" if not measure.results else "no epoch times"])
            if measure is not proposed and section is not None:
                section.cells.append(Cell(item["id"], dataset, row["label"], "time ratio", None, None, 0,
                                          published_range[0] if published_range else None, "missing"))
            continue
        for machine, (seconds, seeds) in times.items():
            ratio, state, value = "—", "reference" if measure is proposed else "drawn", None
            if measure is not proposed:
                if machine in base:
                    value = seconds / base[machine][0]
                    ratio, state = judged_ratio(value, published_range)
                else:
                    ratio, state = f"no {paper['proposed']} run here", "not comparable (machines differ)"
                if published_range and section is not None:
                    section.cells.append(Cell(item["id"], dataset, row["label"], "time ratio", value, None,
                                              len(seeds), published_range[0], state))
            body.append([row["label"], f"{seconds:,.0f}", ", ".join(map(str, seeds)), machine, ratio, expected, state])
    return ["From the benchmark runs (each run's median epoch, validation excluded):", "",
            markdown(["model", "s/epoch (median epoch)", "seeds", "computed on",
                      f"time / {paper['proposed']}'s", "paper's ratio", "state"], body), ""]


def by_length_section(paper: dict, item: dict, results: Results, out_dir: Path) -> Section:
    from nextclick.report import plot_by_length

    section = Section(item, "", state="drawn")
    lines = []
    for dataset in item["datasets"]:
        shown, runs = [], []
        for row in item["rows"]:
            measure = results.measure(row_runs(row, dataset))
            if measure.results:
                shown.append({**measure.results[0], "_label": row["label"]})
                runs.append(f"{row['label']} `{measure.present[0].identity}` (seed {measure.present[0].seed})")
            elif row_on(row, dataset).get("model") is not None:
                runs.append(f"{row['label']} missing")
        if not shown:
            lines += [f"### {dataset}", "", "No run present yet.", ""]
            continue
        png = out_dir / f"{item['id']}_{dataset}.png"
        plot_by_length(shown, png, item["metrics"], title=f"{dataset}: {item['title']}")
        section.figures.append(png)
        lines += [f"### {dataset}", "", length_table(shown, item["metrics"]), "", "Runs: " + "; ".join(runs) + ".", "",
                  f"![{item['title']}, {dataset}]({png.name})", ""]
    section.markdown = "\n".join(lines)
    return section


def sweep_section(paper: dict, item: dict, results: Results, out_dir: Path) -> Section:
    section = Section(item, "", state="drawn")
    points, reference_runs = sweep_runs(item)
    reference = results.measure(reference_runs) if reference_runs else None
    metrics = item["metrics"]
    body, drawn = [], []
    for x, runs in points:
        measure = results.measure(runs)
        body.append([f"{x:g}"] + [number(measure, m) for m in metrics] + [measure.seeds(), runs[0].identity
                                                                         + ("" if measure.present else " (missing)")])
        if measure.results:
            drawn.append((x, measure))
    if reference is not None:
        body.append([item["reference"]["label"]] + [number(reference, m) for m in metrics]
                    + [reference.seeds(), reference_runs[0].identity + ("" if reference.present else " (missing)")])
    lines = [markdown([item["parameter"]] + [f"{m} ours" for m in metrics] + ["seeds", "run"], body), ""]
    if drawn or (reference is not None and reference.results):
        png = out_dir / f"{item['id']}.png"
        plot_sweep(item, drawn, reference, png)
        section.figures.append(png)
        lines += [f"![{item['title']}]({png.name})", ""]
    section.markdown = "\n".join(lines)
    return section


def plot_sweep(item: dict, drawn: list[tuple[float, Measure]], reference: Measure | None, path: Path) -> Path:
    """PNG: one panel per metric, ours at each value of the parameter (error bars: std over seeds), the
    reference run (the parameter at its default, or learned) as a dashed line with its spread shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = item["metrics"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        xs = [x for x, _ in drawn]
        axis.errorbar(xs, [m.mean(metric) for _, m in drawn], yerr=[m.std(metric) or 0.0 for _, m in drawn],
                      marker="o", capsize=3, label=f"{item['parameter']} fixed")
        if reference is not None and reference.results:
            mean, spread = reference.mean(metric), reference.std(metric) or 0.0
            axis.axhline(mean, linestyle="--", color="0.3", label=item["reference"]["label"])
            if spread:
                axis.axhspan(mean - spread, mean + spread, color="0.85")
        every = [x for x, _ in item["points"]]
        axis.set_xticks(every)
        axis.set_xlim(min(every) - 0.05 * (max(every) - min(every)), max(every) + 0.05 * (max(every) - min(every)))
        axis.set_xlabel(item["parameter"])
        axis.set_ylabel(f"test {metric} (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{item['dataset']}: {item['title']} ({len(drawn)} of {len(item['points'])} values measured)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_figure(path, figure, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def explain_section(paper: dict, item: dict, results: Results, out_dir: Path, root: Path) -> Section:
    files = [root / path for path in item["files"]]
    present = all(path.is_file() for path in files)
    lines = [f"Made by `{item['command']}` (needs the run's checkpoint).", ""]
    for path in files:
        if path.suffix == ".png" and path.is_file():
            lines += [f"![{item['title']}]({link(path, out_dir)})", ""]
        lines.append(f"- {link(path, out_dir)}: {'present' if path.is_file() else 'missing'}")
    return Section(item, "\n".join(lines + [""]), state="present" if present else "missing")


def render_item(paper: dict, item: dict, results: Results, out_dir: Path, root: Path, draw: bool = True) -> Section:
    kind = item["kind"]
    if kind == "metrics":
        section = metrics_section(paper, item, results, out_dir)
    elif kind == "speed":
        section = speed_section(paper, item, results, out_dir)
    elif kind == "by_length":
        section = by_length_section(paper, item, results, out_dir) if draw else Section(item, "", state="drawn")
    elif kind == "sweep":
        section = sweep_section(paper, item, results, out_dir) if draw else Section(item, "", state="drawn")
    elif kind == "explain":
        section = explain_section(paper, item, results, out_dir, root)
    else:
        raise ValueError(f"unknown item kind {kind!r} in {paper['name']}'s manifest")
    runs = unique(item_runs(item))
    section.needed = len(runs)
    section.missing = [run for run in runs if results.result(run) is None]
    summarise(section, paper["proposed"])
    return section


LEGEND = ("Percent. Ours: mean ± standard deviation over the seeds listed (one number: one seed), each run "
          "selected on validation and tested once. Gap = ours - paper. {up} / {down}: a paired t-test over the "
          "test cases (hit@K or reciprocal rank@K, seeds averaged per case) puts the row above / below "
          "{proposed} at p < 0.01. State: reproduced (at or above the paper), within noise (below by at most "
          "one standard error: the larger of one test reading's, from the per-case ranks, and the mean's over "
          "seeds), short (below by more).")


def paper_markdown(paper: dict, sections: list[Section], results_dir: Path) -> str:
    lines = [f"# Reproduction: {paper['title']}", "",
             f"Written by `nextclick reproduce {paper['name']}` from the result files under `{results_dir}/` "
             f"alone (manifest: src/nextclick/reproduce/manifests/{paper['name']}.py). Nothing here is typed by hand.",
             "", LEGEND.format(up=UP, down=DOWN, proposed=paper["proposed"]), ""]
    for section in sections:
        lines.append(section_markdown(paper, section))
    return "\n".join(lines)


def section_markdown(paper: dict, section: Section) -> str:
    """One table or figure: title, state, notes, the table (and figure links), its missing runs."""
    item = section.item
    lines = [f"## {item['title']}", "", f"State: **{section.state}**" + (f". {section.detail}" if section.detail else ""), ""]
    if item.get("note"):
        lines += [item["note"], ""]
    if item.get("published_note"):
        lines += [f"Published: {item['published_note']}.", ""]
    lines.append(section.markdown)
    if section.missing:
        lines += ["Missing runs (`nextclick reproduce " + paper["name"] + " --run` trains them):", ""]
        lines += [f"    {run.command()}" for run in section.missing] + [""]
    return "\n".join(lines)


def summary_markdown(papers: list[tuple[dict, list[Section]]], results_dir: Path) -> str:
    lines = ["# Reproduction of the seed papers", "",
             f"Written by `nextclick reproduce dsan|sriem|narm` from the result files under `{results_dir}/` "
             "alone. Each table and figure in detail, with its missing runs and their commands: "
             "docs/reproduction/<paper>/README.md.", "",
             "States: reproduced = at or above the published number; within noise = below it by at most one "
             "standard error (the larger of one test reading's, from the per-case ranks, and the mean's over "
             "seeds); short = below by more; other split = published on another preprocessing, not judged. A table "
             "is as short as its shortest comparable number, and judged \"so far\" while runs are missing; the paper's "
             "own model is given with its gaps.", ""]
    for paper, sections in papers:
        rows = [[s.item["id"], s.item["title"], s.state, s.detail or "—",
                 f"{s.needed - len(s.missing)} / {s.needed}" if s.item["kind"] != "explain" else "(files)"]
                for s in sections]
        lines += [f"## {paper['title']}", "", markdown(["item", "what", "state", "detail", "runs present"], rows),
                  "", f"Details: [reproduction/{paper['name']}/README.md](reproduction/{paper['name']}/README.md)", ""]
    return "\n".join(lines)


def render_paper(paper: dict, results_dir: str | Path, out_root: str | Path, items: list[dict] | None = None,
                 root: str | Path = ".", draw: bool = True, results: Results | None = None) -> list[Section]:
    """Every item (or the given ones) of a paper as sections; PNGs written under out_root/reproduction/<paper>/."""
    results = results or Results(results_dir)
    out_dir = Path(out_root) / "reproduction" / paper["name"]
    return [render_item(paper, item, results, out_dir, Path(root), draw) for item in (items or paper["items"])]


def write_paper(paper: dict, sections: list[Section], results_dir: str | Path, out_root: str | Path) -> Path:
    path = Path(out_root) / "reproduction" / paper["name"] / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, paper_markdown(paper, sections, Path(results_dir)))
    return path


def write_summary(papers: list[tuple[dict, list[Section]]], results_dir: str | Path, out_root: str | Path) -> Path:
    path = Path(out_root) / "reproduction.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, summary_markdown(papers, Path(results_dir)))
    return path


__all__ = ["Cell", "Measure", "Results", "Section", "judge", "published_number", "render_paper",
           "write_paper", "write_summary"]
