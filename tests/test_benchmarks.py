"""The published splits load with exactly the counts of ../shared/data/README.md."""

import json

import pytest

from nextclick.data.benchmarks import DataError, load_split, resolve, save_split

EXPECTED = {
    # name: (train sessions, training cases under its protocol, test cases, items)
    "retailrocket": (126_168, 433_648, 15_132, 36_968),
    "diginetica": (186_670, 719_470, 60_858, 43_097),
    "yoochoose1_64": (116_167, 369_859, 55_898, 37_483),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_split_counts_match_the_data_readme(benchmarks_dir, name):
    split = load_split(benchmarks_dir / name)
    sessions, cases, test_cases, items = EXPECTED[name]
    assert len(split.train) == sessions
    assert len(split.train_cases()) == cases
    assert len(split.test) == test_cases
    assert split.n_items == items
    stats = json.loads((benchmarks_dir / name / "stats.json").read_text())
    assert split.stats()["train_clicks"] == stats["train_clicks"]


def test_retailrocket_trains_on_prefixes_of_length_two_or_more(benchmarks_dir):
    split = load_split(benchmarks_dir / "retailrocket")
    assert split.protocol.min_prefix == 2
    assert split.train_cases().length.min() == 2
    assert split.test.length.min() == 2


def test_yoochoose_reports_test_items_never_seen_in_training(benchmarks_dir):
    assert load_split(benchmarks_dir / "yoochoose1_64").stats()["test_items_unseen_in_train"] == 369


def test_saved_split_loads_back_identically(tmp_path):
    split = resolve("synthetic")
    loaded = load_split(save_split(split, tmp_path / "syn"))
    assert loaded.train.to_lists() == split.train.to_lists()
    assert loaded.test.labels.tolist() == split.test.labels.tolist()
    assert loaded.protocol == split.protocol


def test_malformed_split_files_give_a_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.txt").write_text("1 2 x\n")
    (tmp_path / "bad" / "test.txt").write_text("1\t2\n")
    with pytest.raises(DataError, match="train.txt:1"):
        load_split(tmp_path / "bad")
    (tmp_path / "bad" / "train.txt").write_text("1 2 3\n")
    (tmp_path / "bad" / "test.txt").write_text("1 2\n")
    with pytest.raises(DataError, match="TAB"):
        load_split(tmp_path / "bad")


def test_unknown_dataset_lists_what_is_available():
    with pytest.raises(DataError, match="synthetic"):
        resolve("no-such-dataset")


def test_data_directory_comes_from_the_environment(tmp_path, monkeypatch):
    from nextclick.data.benchmarks import available, data_dir

    (tmp_path / "benchmarks" / "tiny").mkdir(parents=True)
    (tmp_path / "benchmarks" / "tiny" / "train.txt").write_text("1 2 3\n")
    (tmp_path / "benchmarks" / "tiny" / "test.txt").write_text("1\t2\n")
    monkeypatch.setenv("NEXTCLICK_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert "tiny" in available()
    assert resolve("tiny").n_items == 3
