"""nextclick reproduce: a paper's runs found by their ids, present and missing listed with their bench
commands, ours beside the published number with mean ± std over seeds, the paired t-test mark, the
rendered markdown and PNGs, and the command line. Results are written to a tmp folder by the writers a
bench uses (atomic.write_json, bench.write_ranks), their metrics computed from the ranks by evaluate."""

import json
import subprocess
import sys

import numpy as np
import pytest

from nextclick import atomic
from nextclick.evaluate import metrics_from_ranks
from nextclick.reproduce import PAPERS, listing, missing_runs, paper_runs, run_missing, select_items, train_plan
from nextclick.reproduce.plan import RunSpec, row_runs
from nextclick.reproduce.render import judge, render_paper, write_paper, write_summary
from nextclick.reproduce.significance import compare
from nextclick.runs.bench import write_ranks

CASES = 400
TOY = {
    "name": "toy", "title": "Toy paper", "proposed": "DSAN",
    "items": [
        {"id": "table2", "kind": "metrics", "title": "Table 2: toy", "datasets": ["retailrocket"],
         "metrics": ["HR@20", "MRR@20"],
         "rows": [{"label": "POP", "model": "pop"},
                  {"label": "S-POP", "model": "s-pop"},
                  {"label": "DSAN", "model": "dsan", "settings": {"epochs": 30, "refit": True}, "seeds": [1, 2, 3]}]},
        {"id": "figure2", "kind": "by_length", "title": "Figure 2: toy by length", "datasets": ["retailrocket"],
         "metrics": ["HR@20"], "rows": [{"label": "POP", "model": "pop"}]},
        {"id": "figure4", "kind": "sweep", "title": "Figure 4: toy sweep", "dataset": "retailrocket", "model": "dsan",
         "settings": {"epochs": 30, "refit": True}, "parameter": "alpha", "metrics": ["HR@20"],
         "points": [[1.0, {"alpha": 1.0}], [2.0, {"alpha": 2.0}]], "reference": {"label": "learned", "seeds": [1]}},
    ],
}


def write_result(results_dir, run: RunSpec, ranks: np.ndarray, seconds: float = 10.0) -> None:
    """A result.json and ranks.npz where bench writes them, with the fields the report reads."""
    folder = run.folder(results_dir)
    test = {"cases": len(ranks), **metrics_from_ranks(ranks)}
    by_length = {str(n): {"cases": len(part), **metrics_from_ranks(part)}
                 for n, part in zip((2, 3, 4, 5), np.array_split(ranks, 4))}
    write_ranks(folder / "ranks.npz", ranks)
    atomic.write_json(folder / "result.json", {
        "model": run.model, "run_id": run.identity, "dataset": run.dataset, "seed": run.seed, "test": test,
        "test_by_length": by_length, "machine": {"device": "cpu", "threads": 2},
        "history": [{"epoch": 0, "seconds": seconds, "cases_per_second": 40.0}]})


def ranks_with_hit_rate(hit_rate: float, seed: int) -> np.ndarray:
    """Ranks of which about `hit_rate` are in the top 20 (the rest far below)."""
    generator = np.random.default_rng(seed)
    return np.where(generator.random(CASES) < hit_rate, generator.integers(1, 21, CASES), 500).astype(np.int32)


@pytest.fixture
def toy_results(tmp_path):
    """POP (seed 1) far below DSAN, DSAN seeds 1 and 2 (seed 3 missing), S-POP missing."""
    results = tmp_path / "results"
    pop = row_runs(TOY["items"][0]["rows"][0], "retailrocket")[0]
    write_result(results, pop, ranks_with_hit_rate(0.2, 0))
    dsan = row_runs(TOY["items"][0]["rows"][2], "retailrocket")
    for run in dsan[:2]:
        write_result(results, run, ranks_with_hit_rate(0.6, run.seed))
    return results


def test_runs_are_found_by_their_id_and_missing_ones_listed_with_their_command(toy_results):
    text = listing(TOY, TOY["items"], toy_results)
    assert "present  retailrocket/pop/default" in text
    assert "present  retailrocket/dsan/epochs=30,refit=true,seed=2" in text
    assert "missing  retailrocket/dsan/epochs=30,refit=true,seed=3" in text
    assert "nextclick bench dsan -d retailrocket --epochs 30 --refit --seed 3" in text
    assert "missing  retailrocket/s-pop/default\n      nextclick bench s-pop -d retailrocket" in text
    assert "missing  retailrocket/dsan/alpha=2,epochs=30,refit=true" in text
    assert "7 runs needed: 3 present, 4 missing (results folder: %s)\n" % toy_results in text
    assert text.rstrip().splitlines()[-1].startswith("missing runs: ")


def test_a_missing_run_is_given_the_median_training_time_of_committed_cpu_runs_of_its_model_dataset_and_refit(tmp_path):
    results = tmp_path / "results"
    dsan = row_runs(TOY["items"][0]["rows"][2], "retailrocket")  # refit runs, seeds 1-3
    for run, hours, device in ((dsan[0], 2.0, "cpu"), (dsan[1], 4.0, "cpu"),
                               (RunSpec("dsan", "retailrocket", (("alpha", 1.0), ("epochs", 30), ("refit", True))), 0.1, "cuda")):
        write_result(results, run, ranks_with_hit_rate(0.6, run.seed))
        path = run.result_path(results)
        result = json.loads(path.read_text())
        # a resumed run: its wall time is the last process's; its epochs, validation passes and refit are summed
        result.update(wall_seconds=60.0, settings=dict(run.settings), machine={"device": device, "threads": 2},
                      history=[{"epoch": 0, "seconds": hours * 1800 - 100, "valid_seconds": 100.0}],
                      refit={"train_seconds": hours * 1800})
        path.write_text(json.dumps(result))
    calibrated = RunSpec("dsan", "retailrocket", (("calibration", "repeats"), ("epochs", 30), ("refit", True)))
    write_result(results, calibrated, ranks_with_hit_rate(0.6, 1))  # a calibration's wall time is not training's
    path = calibrated.result_path(results)
    path.write_text(json.dumps({**json.loads(path.read_text()), "wall_seconds": 60.0, "calibration": {},
                                "settings": {"refit": True}}))
    text = listing(TOY, TOY["items"], results)
    # seed 3 and alpha=2 (alpha=1 ran on a GPU, which gives no CPU time): the median of the two CPU refit runs
    assert "--seed 3\n      about 3.0 h on a CPU (median of 2 committed CPU runs)" in text
    assert "nextclick bench pop -d retailrocket\n      no committed CPU run like it" in text
    assert text.rstrip().endswith("missing runs: 6.0 h of CPU time at the pace of the committed runs like them "
                                  "(2 with no such run to estimate from)")
    plan = train_plan(missing_runs(paper_runs(TOY), results), results)
    assert "--seed 3\n     about 3.0 h on a CPU" in plan and plan.endswith("in all: 6.0 h of CPU time at the pace of "
                                                                          "the committed runs like them (2 with no "
                                                                          "such run to estimate from)")
    # without a refit run like it, a refit run is estimated at twice the runs without
    for run in dsan[:2]:
        path = run.result_path(results)
        path.write_text(json.dumps({**json.loads(path.read_text()), "settings": {"epochs": 30}}))
    assert "about 6.0 h on a CPU (median of 2 committed CPU runs without refit, doubled)" in listing(TOY, TOY["items"], results)
    for run in dsan[:2]:  # results written before `settings` was recorded name the refit in train_options
        path = run.result_path(results)
        result = json.loads(path.read_text())
        del result["settings"]
        path.write_text(json.dumps({**result, "train_options": {"refit": True}}))
    assert "about 3.0 h on a CPU (median of 2 committed CPU runs)" in listing(TOY, TOY["items"], results)


def test_table_shows_mean_and_std_over_seeds_beside_the_published_number_and_the_t_test_mark(toy_results, tmp_path):
    sections = render_paper(TOY, toy_results, tmp_path / "docs", [TOY["items"][0]])
    text = sections[0].markdown
    values = [100 * json.loads((run.result_path(toy_results)).read_text())["test"]["HR@20"]
              for run in row_runs(TOY["items"][0]["rows"][2], "retailrocket")[:2]]
    ours = f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
    dsan_row = next(line for line in text.splitlines() if line.startswith("| DSAN |"))
    assert dsan_row.startswith(f"| DSAN | 1, 2 | {ours} | 56.54 | {np.mean(values) - 56.54:+.2f} |")
    pop_row = next(line for line in text.splitlines() if line.startswith("| POP |"))
    assert "▼" in pop_row  # far below DSAN on the same cases: p < 0.01
    assert "▼" not in dsan_row and "▲" not in dsan_row
    assert "| S-POP | — | — | 38.03 |" in text  # missing: the published number still shown
    assert "seed=3 (missing)" not in text and "epochs=30,refit=true](" in text  # the row links its seed-1 run


def test_states_follow_one_standard_error():
    assert judge(56.60, None, 56.54, True) == "reproduced"
    assert judge(56.50, 0.05, 56.54, True) == "within noise"
    assert judge(56.40, 0.05, 56.54, True) == "short"
    assert judge(56.50, None, 56.54, True) == "short"  # no standard error known: no noise to be within
    assert judge(40.0, None, 56.54, False) == "other split"
    assert judge(None, None, 56.54, True) == "missing"


def test_one_seed_below_the_paper_by_less_than_one_test_reading_s_standard_error_is_within_noise(toy_results):
    from nextclick.reproduce.render import Results

    pop = Results(toy_results).measure(row_runs(TOY["items"][0]["rows"][0], "retailrocket"))
    hits = (pop.ranks[0] <= 20).astype(float)
    expected = 100 * hits.std(ddof=1) / np.sqrt(CASES)  # binomial: about 2 points on 400 cases at HR .2
    assert pop.standard_error("HR@20") == pytest.approx(expected)
    ours = pop.mean("HR@20")
    assert judge(ours, pop.standard_error("HR@20"), ours + 0.9 * expected, True) == "within noise"
    assert judge(ours, pop.standard_error("HR@20"), ours + 1.1 * expected, True) == "short"


def test_paired_test_is_scipys_ttest_rel():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 30, 30, 2, 3])
    b = np.array([30, 30, 30, 30, 30, 30, 1, 1, 1, 1, 4, 2])
    # scipy.stats.ttest_rel on the hits@20 and reciprocal ranks@20 of these ranks
    assert compare([a], [b], "HR@20")["t"] == pytest.approx(1.4832396974191326)
    assert compare([a], [b], "HR@20")["p"] == pytest.approx(0.16608681351829555)
    assert compare([a], [b], "MRR@20")["p"] == pytest.approx(0.15915174572867652)
    assert compare([a], [a], "MRR@20") == {"mean_difference": 0.0, "t": 0.0, "p": 1.0}


def test_render_writes_markdown_and_png(toy_results, tmp_path):
    docs = tmp_path / "docs"
    sections = render_paper(TOY, toy_results, docs)
    readme = write_paper(TOY, sections, toy_results, docs)
    summary = write_summary([(TOY, sections)], toy_results, docs)
    assert (docs / "reproduction" / "toy" / "figure2_retailrocket.png").stat().st_size > 0
    assert (docs / "reproduction" / "toy" / "figure4.png").stat().st_size > 0  # the reference alone is drawn
    text = readme.read_text()
    assert "## Table 2: toy" in text and "nextclick bench s-pop -d retailrocket" in text
    assert "![Figure 2: toy by length, retailrocket](figure2_retailrocket.png)" in text
    assert "| table2 | Table 2: toy | short so far (2 of 5 runs missing) |" in summary.read_text()


def test_speed_table_gives_the_ratio_to_the_papers_model_on_the_same_machine(tmp_path):
    speed = {"name": "toy", "title": "Toy", "proposed": "SR-IEM", "items": [
        {"id": "table3", "kind": "speed", "title": "Table 3: toy", "datasets": ["diginetica"],
         "rows": [{"label": "SR-IEM", "model": "sr-iem"}, {"label": "SR-GNN", "model": "sr-gnn"}],
         "published_ratio": {"SR-GNN": [2.6, 3.1]}}]}
    results = tmp_path / "results"
    write_result(results, RunSpec("sr-iem", "diginetica"), ranks_with_hit_rate(0.5, 1), seconds=10.0)
    write_result(results, RunSpec("sr-gnn", "diginetica"), ranks_with_hit_rate(0.5, 2), seconds=30.0)
    section = render_paper(speed, results, tmp_path / "docs")[0]
    assert "| SR-GNN | 30 | 1 | CPU, 2 threads | 3.0x | 2.6-3.1x | reproduced |" in section.markdown
    assert section.state == "reproduced"


def test_run_trains_each_missing_run_through_bench_with_resume(toy_results, tmp_path):
    missing = [run for run in paper_runs(TOY) if not run.result_path(toy_results).is_file()]
    launched = []

    def launch(argv):
        launched.append(argv)
        run = missing[len(launched) - 1]
        write_result(toy_results, run, ranks_with_hit_rate(0.5, 9))  # what the bench would write
        return 0

    assert run_missing(missing, toy_results, ["--device", "cpu"], launch) == 0
    assert [argv[3:5] for argv in launched] == [["bench", run.model] for run in missing]
    assert all(argv[-5:] == ["--resume", "--results-dir", str(toy_results), "--device", "cpu"] for argv in launched)
    assert run_missing(paper_runs(TOY)[:1], toy_results, launch=lambda argv: 3) == 3  # a failure stops the plan


def test_every_manifest_command_gives_the_run_id_its_entry_expects():
    """The bench command printed for a run lands its result where the manifest looks: parse it with the
    CLI and compute its id as bench does."""
    from nextclick.cli import build_parser
    from nextclick.cli.common import model_overrides, train_options
    from nextclick.models import model_class
    from nextclick.models.config import config_from_overrides
    from nextclick.runs.bench import requested_settings
    from nextclick.runs.identity import run_id

    parser = build_parser()
    for paper in PAPERS.values():
        for run in paper_runs(paper):
            args = parser.parse_args(run.bench_arguments())
            cls = model_class(args.model)
            config = config_from_overrides(cls.Config, model_overrides(args))
            assert run_id(requested_settings(cls, config, train_options(args))) == run.identity, run.command()


def test_select_items_and_unknown_names():
    assert [item["id"] for item in select_items(PAPERS["dsan"], table="3")] == ["table3"]
    assert [item["id"] for item in select_items(PAPERS["dsan"], figure="heatmaps")] == ["heatmaps"]
    with pytest.raises(ValueError, match="its tables: table2, table3"):
        select_items(PAPERS["dsan"], table="9")


def test_command_line_help_and_list(tmp_path, capsys):
    from nextclick.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    assert "--run" in capsys.readouterr().out
    assert main(["reproduce", "sriem", "--list", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing  yoochoose1_64/sr-iem/attention_size=200,loss=ce,refit=true,seed=3,shuffle=false,variant=code" in out
    assert not (tmp_path / "docs").exists()


def test_the_command_imports_no_torch(tmp_path):
    """`nextclick reproduce` runs where only the result files are: neither torch nor a dataset."""
    code = ("import sys, nextclick.reproduce.render; from nextclick.cli import main; "
            f"main(['reproduce', 'dsan', '--list', '--results-dir', {str(tmp_path)!r}]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def synthetic_result(results_dir, model: str, ranks: np.ndarray, seed: int = 1):
    run = RunSpec(model=model, dataset="synthetic", seed=seed)
    write_result(results_dir, run, ranks)
    return run.folder(results_dir)


def test_compare_tests_side_a_against_side_b_overall_and_by_repeat_from_the_result_files(tmp_path, capsys):
    from nextclick.cli import main
    from nextclick.data.benchmarks import resolve

    test = resolve("synthetic").test
    generator = np.random.default_rng(0)
    worse = generator.integers(1, 60, len(test)).astype(np.int32)
    better = np.where(test.repeats(), 1, worse).astype(np.int32)  # every repeat target first, the rest the same
    a = [synthetic_result(tmp_path, "dsan", better, seed) for seed in (1, 2)]
    b = synthetic_result(tmp_path, "pop", worse)
    out = tmp_path / "compare.json"
    assert main(["compare", *map(str, a), "--against", str(b / "result.json"), "--by-repeat", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "synthetic/dsan/default, synthetic/dsan/seed=2" in printed and "synthetic/pop/default" in printed
    rows = {(row["group"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    repeats = int(test.repeats().sum())
    assert rows["repeat targets", "HR@20"]["cases"] == repeats and rows["new targets", "HR@20"]["cases"] == len(test) - repeats
    assert rows["new targets", "MRR@20"]["mean_difference"] == 0.0 and rows["new targets", "MRR@20"]["p"] == 1.0
    assert rows["repeat targets", "MRR@20"]["a"] == 1.0 and rows["repeat targets", "MRR@20"]["p"] < 0.01
    assert rows["all", "HR@20"] == {"group": "all", "cases": len(test), "metric": "HR@20",
                                    "a": float((better <= 20).mean()), "b": float((worse <= 20).mean()),
                                    **compare([better], [worse], "HR@20")}


def test_compare_refuses_runs_on_other_test_cases_and_folders_without_ranks(tmp_path, capsys):
    from nextclick.cli import main

    ours = synthetic_result(tmp_path, "dsan", np.ones(10, dtype=np.int32))
    other = RunSpec(model="pop", dataset="diginetica")
    write_result(tmp_path, other, np.ones(10, dtype=np.int32))
    assert main(["compare", str(ours), "--against", str(other.folder(tmp_path))]) == 2
    assert "different datasets (diginetica, synthetic)" in capsys.readouterr().err
    shorter = synthetic_result(tmp_path, "pop", np.ones(8, dtype=np.int32))
    assert main(["compare", str(ours), "--against", str(shorter)]) == 2
    assert "different numbers of cases ([8, 10])" in capsys.readouterr().err
    (shorter / "ranks.npz").unlink()
    assert main(["compare", str(ours), "--against", str(shorter)]) == 2
    assert "no ranks.npz beside result.json" in capsys.readouterr().err


TOY_TIME_TABLE = {"name": "toy", "title": "Toy", "proposed": "SR-IEM", "items": [
    {"id": "table3", "kind": "speed", "title": "Table 3: toy", "datasets": ["synthetic"],
     "rows": [{"label": "SR-IEM", "model": "sr-iem", "settings": {"variant": "code", "refit": True}},
              {"label": "SR-GNN", "model": "sr-gnn"}, {"label": "CSRM", "model": "csrm"}],
     "published_ratio": {"SR-GNN": [2.6, 3.1], "CSRM": [2.6, 4.9]}}]}


def test_a_time_table_is_judged_on_its_rows_timed_one_after_the_other(tmp_path):
    from nextclick.reproduce.timing import measure_item, read_timing

    results = tmp_path / "results"
    item = TOY_TIME_TABLE["items"][0]
    [path] = measure_item(TOY_TIME_TABLE, item, results, batches=2, threads=1, progress=lambda line: None)
    assert path == results / "speed" / "synthetic" / "toy-table3.json"
    timing = read_timing(results, "toy", "table3", "synthetic")
    rows = {row["label"]: row for row in timing["rows"]}
    assert rows["SR-IEM"]["overrides"] == {"variant": "code"}  # refit is a training option, not the step's
    assert rows["SR-IEM"]["config"]["variant"] == "code"
    for row in rows.values():  # every prefix of every training session, as the papers train
        assert row["epoch_cases"] == rows["SR-IEM"]["epoch_cases"] > 0
        assert row["seconds_per_epoch"] == pytest.approx(row["epoch_cases"] / row["cases_per_second"], abs=0.06)
    assert timing["machine"]["threads"] == 1

    # judged on that file: the ratio to SR-IEM's estimated epoch against the paper's range
    timing["rows"] = [{**row, "seconds_per_epoch": s} for row, s in zip(timing["rows"], [10.0, 30.0, 20.0])]
    atomic.write_json(path, timing)
    section = render_paper(TOY_TIME_TABLE, results, tmp_path / "docs")[0]
    assert "| SR-GNN |" in section.markdown and "| 3.0x | 2.6-3.1x | reproduced |" in section.markdown
    assert "| 2.0x | 2.6-4.9x | short |" in section.markdown
    assert section.state.startswith("short")
    assert "From the benchmark runs" in section.markdown  # the runs' own epochs, shown but not judged


def test_time_asks_for_a_time_table(tmp_path, capsys):
    from nextclick.cli import main

    assert main(["reproduce", "dsan", "--table", "2", "--time", "--results-dir", str(tmp_path)]) == 2
    assert "--time measures time tables, and none was chosen; dsan's: none" in capsys.readouterr().err
