"""Tables, plots and the index from result files alone: pooled per-length metrics are exact, tables show
what was run, runs are found by their folders, and no dataset is ever read."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nextclick import report
from nextclick.cli import main


def result(model: str, by_length: dict, **extra) -> dict:
    cases = sum(v["cases"] for v in by_length.values())
    test = {m: sum(v[m] * v["cases"] for v in by_length.values()) / cases for m in ("HR@20", "MRR@20")}
    test.update({"HR@10": test["HR@20"] / 2, "MRR@10": test["MRR@20"] / 2, "cases": cases, "seconds": 1.5})
    return {"model": model, "dataset": "toy", "test": test, "test_by_length": by_length, **extra}


def write_run(results_dir: Path, result: dict, run: str = "default") -> Path:
    """`result` where bench keeps it: <results>/<dataset>/<model>/<run id>/result.json."""
    folder = results_dir / result["dataset"] / result["model"] / run
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result))
    return folder / "result.json"


def at(result: dict, run: str) -> dict:
    """`result` as `report.load` gives it back from run `run`'s folder."""
    result["_path"] = f"results/{result['dataset']}/{result['model']}/{run}/result.json"
    return result


BY_LENGTH = {
    "1": {"cases": 10, "HR@20": 0.5, "MRR@20": 0.2},
    "2": {"cases": 30, "HR@20": 0.1, "MRR@20": 0.1},
    "7": {"cases": 20, "HR@20": 0.4, "MRR@20": 0.3},
    "8": {"cases": 60, "HR@20": 0.2, "MRR@20": 0.0},
    "20+": {"cases": 5, "HR@20": 1.0, "MRR@20": 1.0},
}


def test_pooled_ranges_are_case_weighted_means():
    pooled = report.pool(BY_LENGTH)
    assert list(pooled) == ["1", "2", "6-9", "20+"]  # empty ranges are left out
    assert pooled["6-9"]["cases"] == 80
    assert pooled["6-9"]["HR@20"] == pytest.approx((20 * 0.4 + 60 * 0.2) / 80)
    assert pooled["6-9"]["MRR@20"] == pytest.approx(20 * 0.3 / 80)


def test_length_table_has_a_row_per_range_and_the_overall_row():
    table = report.length_table([result("narm", BY_LENGTH)])
    lines = table.splitlines()
    assert lines[0] == "| prefix length | cases | narm default HR@20 | narm default MRR@20 |"
    assert lines[4].startswith("| 6-9 | 80 | 25.00 | 7.50 |")
    assert lines[-1].startswith("| all | 125 |")


def test_summary_shows_epochs_for_neural_models_and_fit_time_for_statistical_ones():
    neural = result("narm", BY_LENGTH, selected_epoch=4, train_seconds=100.0, train_cases_per_second=1234.0,
                    seconds_per_epoch=20.0)
    statistical = result("sknn", BY_LENGTH, fit_seconds=0.25)
    rows = report.summary_table([neural, statistical]).splitlines()[2:]
    assert rows[0].endswith("| 4 | 100.0 | 1,234 | 20 | 1.5 | CPU |")
    assert rows[1].endswith("| — | 0.2 | — | — | 1.5 | CPU |")


def test_summary_speed_is_the_median_epoch_so_one_paused_epoch_does_not_count():
    history = [{"epoch": e, "seconds": s, "cases_per_second": 1000.0 * 20 / s} for e, s in enumerate([20, 22, 2000, 21])]
    run = result("narm", BY_LENGTH, selected_epoch=3, train_seconds=2063.0, train_cases_per_second=38.8,
                 seconds_per_epoch=515.75, history=history)
    row = report.summary_table([run]).splitlines()[2]
    assert row.endswith("| 3 | 2,063.0 | 931 | 22 | 1.5 | CPU |")  # medians of 1000, 909, 10, 952 and of 20, 22, 2000, 21


def test_summary_says_where_each_result_was_computed_so_speeds_are_not_compared_across_devices():
    on_cpu = result("narm", BY_LENGTH, machine={"device": "cpu", "threads": 1})
    on_gpu = result("narm", BY_LENGTH, machine={"device": "NVIDIA H100 80GB HBM3", "threads": 2})
    rows = report.summary_table([on_cpu, on_gpu]).splitlines()[2:]
    assert rows[0].endswith("| CPU, 1 thread |") and rows[1].endswith("| NVIDIA H100 80GB HBM3 |")


def test_report_command_writes_the_length_and_history_plots(tmp_path, capsys):
    history = [{"epoch": e, "valid": {"HR@20": 0.1 * e, "MRR@20": 0.05 * e}} for e in range(3)]
    write_run(tmp_path / "results", result("narm", BY_LENGTH, selected_epoch=2, history=history), "refit=true")
    code = main(["report", str(tmp_path / "results"), "--by-length", str(tmp_path / "len.png"),
                 "--history", str(tmp_path / "h.png")])
    assert code == 0
    assert (tmp_path / "len_toy.png").stat().st_size > 1000 and (tmp_path / "h.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "| 6-9 | 80 |" in out and "| toy | narm | refit=true |" in out  # the run named by its folder


def test_comparison_puts_ours_beside_the_published_number_with_the_gap():
    ours = result("sr-iem", BY_LENGTH)
    ours["dataset"] = "diginetica"
    ours["test"].update({"HR@20": 0.5, "MRR@20": 0.18})
    lines = report.comparison_table([ours, result("unknown-model", BY_LENGTH)]).splitlines()
    assert len(lines) == 3  # header, rule, and only the model with a published row
    assert lines[2] == ("| diginetica | sr-iem | default | 50.00 | 52.35 | -2.35 | 18.00 | 17.64 | +0.36 "
                        "| SR-IEM (SIGIR 2020) Table 2 |")


def test_report_skips_files_that_are_not_bench_results(tmp_path, capsys):
    good, other = write_run(tmp_path, result("narm", BY_LENGTH)), tmp_path / "narm.speed.json"
    other.write_text(json.dumps({"fast_path": {}}))
    assert main(["report", str(good), str(other)]) == 0
    assert "skipped" in capsys.readouterr().err
    assert main(["report", str(other)]) == 2


def test_repeat_table_shows_where_the_hits_come_from():
    with_split = result("s-pop", BY_LENGTH, test_by_repeat={
        "repeat": {"cases": 25, "share": 0.2, "HR@20": 1.0, "MRR@20": 0.5},
        "new": {"cases": 100, "share": 0.8, "HR@20": 0.01, "MRR@20": 0.001}})
    lines = report.repeat_table([with_split, result("old-file", BY_LENGTH)]).splitlines()
    assert lines[0] == "| model | run | repeat share | HR@20 repeat | HR@20 new | MRR@20 repeat | MRR@20 new |"
    assert lines[2] == "| s-pop | default | 20.0 | 100.00 | 1.00 | 50.00 | 0.10 |" and len(lines) == 3


def test_report_never_loads_a_dataset(tmp_path, monkeypatch, capsys):
    """A result older than `test_by_repeat` keeps lacking it: the report does not rebuild it from the
    ranks and the split's test cases (scripts/migrate_results.py did that once, into the files)."""
    import nextclick.data.benchmarks as benchmarks

    def no_data(*args, **kwargs):
        raise AssertionError("the report read a dataset")

    monkeypatch.setenv("NEXTCLICK_DATA", str(tmp_path / "no-data"))
    (tmp_path / "no-data").mkdir()
    for name in ("resolve", "load_split", "available"):
        monkeypatch.setattr(benchmarks, name, no_data)
    old = result("s-pop", BY_LENGTH)
    old["dataset"] = "synthetic"  # a split that needs no data directory, so only the patches stop a read
    path = write_run(tmp_path / "results", old)
    np.savez_compressed(path.with_name("ranks.npz"), ranks=np.ones(125, dtype=np.int32))
    assert main(["report", str(tmp_path / "results")]) == 0
    assert "repeat targets" not in capsys.readouterr().out
    assert "test_by_repeat" not in report.load([path])[0]


def test_report_imports_neither_torch_nor_scipy_nor_the_data_loaders(tmp_path):
    path = write_run(tmp_path, result("narm", BY_LENGTH))
    script = ("import sys; from nextclick import report; report.main([sys.argv[1], '--index', sys.argv[2]]); "
              "print(sorted(m for m in ('torch', 'scipy', 'nextclick.data.benchmarks') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "INDEX.md")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_index_links_each_models_headline_run_and_lists_every_run(tmp_path, capsys):
    results = tmp_path / "results"

    def scored(model: str, hr: float, dataset: str = "toy") -> dict:
        r = result(model, BY_LENGTH)
        r["test"].update({"HR@20": hr, "MRR@20": hr / 2})
        r["dataset"] = dataset
        return r

    write_run(results, scored("narm", 0.40), "default")
    write_run(results, scored("narm", 0.50), "truncate=first,validation=random-cases")
    write_run(results, scored("s-pop", 0.30), "default")  # one run: the headline without a manifest entry
    write_run(results, scored("s-pop", 0.20, dataset="other"), "variant=dsan-code")
    (results / "manifest.json").write_text(json.dumps({
        "toy": {"narm": "truncate=first,validation=random-cases"}, "elsewhere": {"narm": "default"},
        "notes": {"toy": {"narm": "the official code's protocol"}}}))
    assert main(["report", str(results), "--index", str(results / "INDEX.md")]) == 0
    index = (results / "INDEX.md").read_text()
    assert "| model | other | toy |" in index
    assert "| narm |  | [50.00 / 25.00](toy/narm/truncate=first,validation=random-cases/) |" in index
    assert "| s-pop | [20.00 / 10.00](other/s-pop/variant=dsan-code/) | [30.00 / 15.00](toy/s-pop/default/) |" in index
    assert "- toy narm: the official code's protocol" in index
    every = index[index.index("## Every run"):].splitlines()
    assert every[5:7] == ["| toy | narm | [truncate=first,validation=random-cases](toy/narm/truncate=first,validation="
                          "random-cases/) | 50.00 | 25.00 | yes |",
                          "| toy | narm | [default](toy/narm/default/) | 40.00 | 20.00 |  |"]  # headline first
    assert (results / "toy" / "narm" / "truncate=first,validation=random-cases").is_dir()  # the link leads there

    (results / "manifest.json").write_text(json.dumps({"toy": {"narm": "refit=true"}}))
    assert main(["report", str(results), "--index", str(results / "INDEX.md")]) == 2  # a link to no run
    assert "refit=true" in capsys.readouterr().err


def test_seed_table_pools_only_runs_whose_ids_differ_in_the_seed_alone():
    def run(seed: int, hr: float, identity: str) -> dict:
        r = at(result("sr-iem", BY_LENGTH, seed=seed), identity)
        r["test"].update({"HR@20": hr, "MRR@20": hr / 2})
        return r

    seeds = [run(1, 0.70, "refit=true"), run(2, 0.71, "refit=true,seed=2"), run(3, 0.66, "refit=true,seed=3")]
    other_carve = run(2, 0.90, "refit=true,seed=2,validation=random-cases")  # a different run, not a seed
    lines = report.seed_table(seeds + [other_carve]).splitlines()
    assert lines[0].startswith("| dataset | model | run (any seed) | seeds |")
    assert lines[2:] == ["| toy | sr-iem | refit=true | 1, 2, 3 | 69.00 | 5.00 | 34.50 | 2.50 |"]
    assert report.seed_table([run(1, 0.70, "default"), run(2, 0.72, "seed=2")]).splitlines()[2].startswith(
        "| toy | sr-iem | default | 1, 2 |")  # seed=N alone: the default run's seeds
    assert report.seed_table([run(1, 0.70, "default"), run(1, 0.70, "default")]) == ""  # one seed is no spread


def test_seed_table_counts_a_run_handed_in_twice_once_and_skips_a_seed_that_scored_two_ways():
    def run(seed: int, hr: float, identity: str, seconds: float = 10.0) -> dict:
        r = at(result("sr-iem", BY_LENGTH, seed=seed), identity)
        r["test"].update({"HR@20": hr, "MRR@20": hr / 2, "seconds": seconds})
        return r

    seeds = [run(1, 0.70, "refit=true"), run(2, 0.71, "refit=true,seed=2"), run(3, 0.66, "refit=true,seed=3")]
    again = run(1, 0.70, "refit=true", seconds=12.5)  # the same scores from another results tree: the same run
    lines = report.seed_table(seeds + [again]).splitlines()
    assert lines[2:] == ["| toy | sr-iem | refit=true | 1, 2, 3 | 69.00 | 5.00 | 34.50 | 2.50 |"]
    assert report.seed_table(seeds + [run(1, 0.72, "refit=true")]) == ""  # which is seed 1's number is unclear


def test_click_weight_summaries_get_their_own_table_not_a_skip_note(tmp_path, capsys):
    good = write_run(tmp_path, result("dsan", BY_LENGTH), "epochs=30")
    weights = good.with_name("click_weights.json")  # beside the result of the run it explains
    weights.write_text(json.dumps({
        "dataset": "toy", "model": "dsan", "weights_name": "target attention", "uniform_share": 0.0,
        "peak_over_uniform": {"median": 3.5, "p90": 9.25, "max": 20.0}, "zero_weight_share": 0.4,
        "last_click_mean_weight": 0.7, "mean_alpha_target": 1.7}))
    assert main(["report", str(tmp_path)]) == 0  # a folder: its result.json and click_weights.json files
    captured = capsys.readouterr()
    assert "skipped" not in captured.err
    assert "| toy | dsan | epochs=30 | target attention | 0.0 | 3.50 | 9.25 | 40.0 | 0.700 | 1.700 |" in captured.out
    assert main(["report", str(weights)]) == 2  # summaries alone are no benchmark report


def test_grid_table_lists_every_candidate_and_marks_the_chosen_one():
    result = {"grid": {"metric": "HR@20", "grid": {"lr": ["0.001", "0.01"]}, "chosen": {"lr": "0.01"},
                       "candidates": [{"lr": "0.001", "HR@20": 0.5, "MRR@20": 0.2, "selected_epoch": 3, "epochs_run": 7},
                                      {"lr": "0.01", "HR@20": 0.6, "MRR@20": 0.25, "selected_epoch": 1, "epochs_run": 5}]}}
    lines = report.grid_table(result).splitlines()
    assert lines[0] == "| lr | valid HR@20 | valid MRR@20 | selected epoch | epochs run |"
    assert lines[2] == "| 0.001 | 50.00 | 20.00 | 3 | 7 |"
    assert lines[3] == "| **0.01** | **60.00** | **25.00** | **1** | **5** |"
