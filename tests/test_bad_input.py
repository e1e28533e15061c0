"""Bad input of every kind gets one line on stderr and exit code 2, before anything is written; work is
bounded whatever a session, a request or a checkpoint asks for (issue 33, part A).

The table tests run the CLI in-process on the embedded synthetic dataset with tiny checkpoints made
once per module; a handful run the real `nextclick` entry point to prove no traceback escapes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextclick import checkpoint
from nextclick.cli import main
from nextclick.data.batches import batch_from_prefixes
from nextclick.data.benchmarks import DataError, load_split, resolve
from nextclick.data.padded import MAX_REQUEST_CLICKS
from nextclick.data.readers import read_log
from nextclick.models import REGISTRY, build
from nextclick.models.config import MAX_SESSION_LENGTH, ConfigError, config_from_overrides, limit_of
from nextclick.training.loop import TrainOptions

# ---------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny checkpoints on the synthetic split (bad input never reaches the weights' values)."""
    split = resolve(None)
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for name, overrides in (("dsan", {"embedding_dim": 8}), ("narm", {"embedding_size": 8, "hidden_size": 8}),
                            ("s-pop", {})):
        torch.manual_seed(0)
        model = build(name, split.n_items, overrides)
        if not model.neural:
            model.fit(split.train_cases())
        made[name] = checkpoint.save(root / name, model, split.vocab, split.protocol, split.name)
    return made


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory: whatever a command writes by default lands here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, workdir: Path, *argv: str) -> str:
    """Run the CLI; assert exit 2, one line on stderr and nothing written; the line."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}: {captured.err}{captured.out}"
    assert len(lines) == 1 and lines[0].startswith("nextclick: error: "), captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in workdir.iterdir()) == [], f"{argv} wrote {list(workdir.iterdir())}"
    return lines[0]


def tampered(source: Path, destination: Path, edit=None, **files: bytes) -> Path:
    """A copy of checkpoint `source` with config.json edited by `edit(meta)` and/or files replaced."""
    shutil.copytree(source, destination)
    if edit is not None:
        meta = json.loads((destination / "config.json").read_text())
        edit(meta)
        (destination / "config.json").write_text(json.dumps(meta))
    for name, content in files.items():
        path = destination / name.replace("_", ".")
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
    return destination


# ---------------------------------------------------------------------------------------------------
# every numeric option: 0, -1 and a non-number, on every command that has it

NEEDS = {  # each command's positional arguments ({dsan} and {s-pop} are checkpoints)
    "train": ["dsan"], "bench": ["s-pop", "--results-dir", "results"], "speed": ["dsan", "--results-dir", "results"],
    "demo": ["--out", "demo"], "curve": ["{dsan}"], "evaluate": ["{s-pop}"], "recommend": ["{dsan}", "1", "2"],
    "explain": ["{dsan}", "1", "2", "--out", "explanation"],
}
# (command, option, values it refuses); 0 is allowed where it means "off"
NUMERIC_OPTIONS = [
    *[(command, option, ("0", "-1", "x", "1.5"))
      for command in ("train", "bench") for option in ("--epochs", "--patience", "--batch-size", "--max-batches")],
    *[(command, "--length-buckets", ("-1", "x")) for command in ("train", "bench")],
    *[(command, "--seed", ("-1", "x")) for command in ("train", "bench")],
    ("bench", "--grid-workers", ("0", "-1", "x")),
    *[(command, "--threads", ("0", "-1", "x"))
      for command in ("train", "bench", "speed", "demo", "curve", "evaluate", "explain")],
    ("speed", "--batches", ("0", "-1", "x", "100001")),
    ("speed", "--batch-size", ("0", "-1", "x")),
    ("speed", "--reference-batches", ("-1", "x")),
    ("demo", "--epochs", ("0", "-1", "x")),
    ("evaluate", "--batch-size", ("0", "-1", "x")),
    ("recommend", "-k", ("0", "-1", "x", "1001")),
    ("explain", "-k", ("0", "-1", "x", "1001")),
]


@pytest.mark.parametrize("command,option,value",
                         [(c, o, v) for c, o, values in NUMERIC_OPTIONS for v in values],
                         ids=lambda x: str(x))
def test_out_of_range_numeric_options_are_one_line_errors(command, option, value, checkpoints, workdir, capsys):
    argv = [a.format(**{k: str(p) for k, p in checkpoints.items()}) for a in NEEDS[command]]
    quiet = [] if command in ("recommend", "speed") else ["-q"]
    line = refused(capsys, workdir, command, *argv, option, value, *quiet)
    assert option in line and repr(value) in line


@pytest.mark.parametrize("argv", [
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--test-days", "0"],
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--gap-minutes", "-1"],
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--max-bad-fraction", "1.5"],
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--test-days", "nan"],
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--fraction", "0"],
    ["data", "prepare", "srgnn", "-i", "log.csv", "-o", "out", "--fraction", "1/0"],
    ["data", "bench-prepare", "--clicks", "0"],
    ["data", "bench-prepare", "--seed", "-1"],
    ["data", "bench-prepare", "--fraction", "2"],
    ["demo", "--model", "nosuch", "--epochs", "1", "--out", "demo"],  # before S-POP's half of the demo is written
    ["train", "nosuch"], ["bench", "nosuch"], ["speed", "nosuch"],
    ["train", "s-pop", "--device", "gpu"],
    ["bench", "s-pop", "--device", "cuda:x"],
    ["speed", "dsan", "--device", "tpu"],
    ["train", "dsan", "--select", "HR@7"],
    ["train", "dsan", "--validation", "test"],
    ["nosuchcommand"],
], ids=lambda argv: " ".join(argv[:2] + argv[-2:]))
def test_other_bad_options_are_one_line_errors(argv, workdir, capsys):
    refused(capsys, workdir, *argv, "-q") if argv[0] in ("train", "bench") else refused(capsys, workdir, *argv)


# ---------------------------------------------------------------------------------------------------
# every model's config values: below their limit, above it, of the wrong type


def _numeric_fields(config_class) -> list[str]:
    hints = typing.get_type_hints(config_class)
    return [f.name for f in dataclasses.fields(config_class)
            if {int, float} & ({hints[f.name]} | set(typing.get_args(hints[f.name])))]


def test_every_numeric_config_value_of_every_model_has_a_limit():
    missing = [f"{name}.{field}" for name, cls in REGISTRY.items() for field in _numeric_fields(cls.Config)
               if limit_of(cls.Config, field) is None]
    assert missing == []


def _bad_values(config_class, field: str) -> list[str]:
    limit = limit_of(config_class, field)
    below = limit.low - 1 if limit.integer else (limit.low if limit.open_low else limit.low - 0.5)
    return [str(below), str(limit.high + 1)]  # wrong types: test_config_limits_refuse_nan_infinity_and_json_types


CONFIG_CASES = [(name, field, value) for name, cls in sorted(REGISTRY.items())
                for field in _numeric_fields(cls.Config) for value in _bad_values(cls.Config, field)]


@pytest.mark.parametrize("model,field,value", CONFIG_CASES, ids=lambda x: str(x))
def test_out_of_range_config_values_are_refused_before_training(model, field, value, workdir, capsys):
    line = refused(capsys, workdir, "train", model, "--set", f"{field}={value}", "-q")
    assert repr(field) in line


@pytest.mark.parametrize("argv", [
    ["train", "dsan", "--set", "embedding_dim=-5"], ["train", "dsan", "--set", "max_length=0"],
    ["train", "narm", "--set", "encoder=bidirectional"], ["train", "dsan", "--set", "nosuch=1"],
    ["bench", "dsan", "--set", "embedding_dim=0", "--results-dir", "results"],
    ["speed", "dsan", "--set", "max_positions=0", "--results-dir", "results"],
    ["speed", "dsan", "--batches", "100000", "--results-dir", "results"],  # more batches than the split holds
    ["bench", "narm", "--grid", "hidden_size=100,0", "--results-dir", "results"],
])
def test_bad_config_values_on_every_command_that_takes_them(argv, workdir, capsys):
    refused(capsys, workdir, *argv, "-q") if argv[0] != "speed" else refused(capsys, workdir, *argv)


def test_a_model_built_from_a_config_object_checks_it_too():
    from nextclick.models.dsan import DSAN, DSANConfig

    with pytest.raises(ConfigError, match="embedding_dim"):
        DSAN(10, DSANConfig(embedding_dim=-5))
    with pytest.raises(ConfigError, match="neighbours"):
        REGISTRY["sknn"](10, REGISTRY["sknn"].Config(neighbours=0))


def test_config_limits_refuse_nan_infinity_and_json_types():
    dsan = REGISTRY["dsan"].Config
    for overrides in ({"lr": float("nan")}, {"lr": "nan"}, {"w_k": float("inf")}, {"embedding_dim": True},
                      {"embedding_dim": "x"}, {"embedding_dim": "2.5"}, {"dropout": "x"},
                      {"embedding_dim": [8]}, {"dropout": {"p": 0.1}}, {"embedding_dim": 10**12}):
        with pytest.raises(ConfigError):
            config_from_overrides(dsan, overrides)
    assert config_from_overrides(dsan, {"max_length": None, "alpha": "none"}).alpha is None


# ---------------------------------------------------------------------------------------------------
# TrainOptions: library callers get the same checks as the command line


@pytest.mark.parametrize("options", [
    {"epochs": 0}, {"epochs": -1}, {"patience": -1}, {"patience": 0}, {"batch_size": -5}, {"batch_size": 0},
    {"max_batches": 0}, {"length_buckets": -1}, {"eval_batch_size": 0}, {"seed": -1}, {"epochs": 2.5},
    {"epochs": True}, {"select_metric": "HR@7"}, {"validation": "test"}, {"ks": ()}, {"ks": (0,)},
], ids=lambda o: str(o))
def test_train_options_refuse_values_the_loop_cannot_honour(options):
    with pytest.raises(ValueError):
        TrainOptions(**options)


def test_train_options_accept_their_defaults_and_none():
    TrainOptions()
    TrainOptions(epochs=None, batch_size=None, max_batches=None, length_buckets=0, patience=1)


# ---------------------------------------------------------------------------------------------------
# serving requests: k, the number of clicks, the catalogue


def test_k_beyond_the_catalogue_returns_the_whole_catalogue(checkpoints, workdir, capsys):
    assert main(["recommend", str(checkpoints["dsan"]), "1", "2", "-k", "1000", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == resolve(None).n_items == len({r["item"] for r in items})


def test_a_request_may_give_at_most_the_documented_number_of_clicks(checkpoints, workdir, capsys):
    too_many = ["1"] * (MAX_REQUEST_CLICKS + 1)
    for command in ("recommend", "explain"):
        line = refused(capsys, workdir, command, checkpoints["dsan"], *too_many)
        assert f"{MAX_REQUEST_CLICKS:,}" in line
    assert main(["recommend", str(checkpoints["dsan"]), *(["1", "2"] * (MAX_REQUEST_CLICKS // 2)), "--json"]) == 0


@pytest.mark.parametrize("command", ["recommend", "explain"])
@pytest.mark.parametrize("item", ["99999999999999999999999", "x", "1.5", "-5", "601"])
def test_bad_item_ids_are_one_line_errors(command, item, checkpoints, workdir, capsys):
    assert item in refused(capsys, workdir, command, checkpoints["dsan"], "1", item)


def test_library_recommend_and_explain_refuse_k_below_one(checkpoints):
    from nextclick.explain import explain

    model, vocab, _ = checkpoint.load(checkpoints["dsan"])
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be"):
            model.recommend([np.array([1, 2])], k=k)
        with pytest.raises(ValueError, match="k must be"):
            explain(model, vocab, [1, 2], k=k)


# ---------------------------------------------------------------------------------------------------
# bounded work: session length


def test_every_model_reads_at_most_the_session_length_cap():
    for name, cls in REGISTRY.items():
        for overrides in ({}, {"max_length": None} if "max_length" in _numeric_fields(cls.Config) else {}):
            model = build(name, 20, overrides)
            assert 1 <= model.max_length <= MAX_SESSION_LENGTH, name
    assert build("dsan", 20, {"max_positions": 100}).max_length == 100  # at most one click per position row
    assert build("narm", 20, {"truncate": "first"}).max_length == MAX_SESSION_LENGTH


def test_a_long_request_keeps_its_most_recent_clicks():
    session = np.arange(1, MAX_REQUEST_CLICKS + 1) % 50 + 1
    batch = batch_from_prefixes([session], build("dsan", 50).max_length)
    assert batch.items.shape == (1, MAX_SESSION_LENGTH)
    assert batch.items[0].tolist() == session[-MAX_SESSION_LENGTH:].tolist()
    assert batch.full_lengths.tolist() == [MAX_REQUEST_CLICKS]  # positions still count from the session start


def test_dsan_trains_and_scores_a_twenty_thousand_click_session_quickly():
    """Training and evaluation batches are capped too (uncapped: 264 s and 9.75 GB for this session)."""
    from nextclick.data.sessions import Cases, Sessions

    torch.manual_seed(0)
    model = build("dsan", 50, {"embedding_dim": 8})
    cases = Cases.whole_sessions(Sessions.from_lists([list(np.arange(1, 20_002) % 50 + 1)]))
    batch = model.collate(cases, np.arange(1))
    assert batch.items.shape == (1, MAX_SESSION_LENGTH)
    loss = model(batch, batch.labels)[1]
    loss.backward()
    with torch.no_grad():
        scores = model(batch)[0]
    assert scores.shape == (1, 51) and torch.isfinite(loss)


def test_no_published_prefix_is_longer_than_the_cap(benchmarks_dir):
    """The cap changes no benchmark result: every training session and test prefix fits in it."""
    for split in sorted(benchmarks_dir.iterdir()):
        for name in ("train.txt", "test.txt"):
            longest = max(len(line.split(b"\t")[0].split()) for line in (split / name).read_bytes().splitlines())
            assert longest <= MAX_SESSION_LENGTH, f"{split.name}/{name}: {longest} clicks"


# ---------------------------------------------------------------------------------------------------
# tampered checkpoints: checked before anything is allocated


def _set(path: str, value):
    def edit(meta):
        target, *keys = path.split(".")
        if not keys:
            meta[target] = value
        else:
            meta[target][keys[0]] = value
    return edit


def _drop(key: str):
    return lambda meta: meta.pop(key)


TAMPERINGS = {
    "n_items as a string": ("dsan", _set("n_items", "600"), {}),
    "n_items true": ("dsan", _set("n_items", True), {}),
    "huge n_items": ("dsan", _set("n_items", 10**12), {}),
    "n_items off by one": ("dsan", _set("n_items", 601), {}),
    "n_items negative": ("s-pop", _set("n_items", -1), {}),
    "model a number": ("dsan", _set("model", 5), {}),
    "unknown model": ("dsan", _set("model", "nosuch"), {}),
    "config a list": ("dsan", _set("config", [1, 2]), {}),
    "no config": ("dsan", _drop("config"), {}),
    "no n_items": ("narm", _drop("n_items"), {}),
    "a size as text": ("dsan", _set("config.embedding_dim", "eight"), {}),
    "a size as a list": ("narm", _set("config.hidden_size", [8]), {}),
    "a huge size": ("dsan", _set("config.embedding_dim", 10**9), {}),
    "a size that disagrees with the weights": ("dsan", _set("config.embedding_dim", 16), {}),
    "a shape that disagrees (narm)": ("narm", _set("config.hidden_size", 9), {}),
    "dropout out of range": ("narm", _set("config.context_dropout", 2), {}),
    "an unknown config key": ("dsan", _set("config.nosuch", 1), {}),
    "dataset a number": ("s-pop", _set("dataset", 5), {}),
    "protocol a number": ("s-pop", _set("protocol", 5), {}),
    "config.json a list": ("dsan", None, {"config_json": b"[]"}),
    "config.json not JSON": ("dsan", None, {"config_json": b"{not json"}),
    "config.json binary": ("dsan", None, {"config_json": b"\xff\xfe\x00"}),
    "weights garbage": ("dsan", None, {"model_safetensors": b"garbage"}),
    "weights of another model": ("dsan", None, {"model_safetensors": "narm"}),
    "weights missing": ("narm", None, {"model_safetensors": None}),
    "statistical weights garbage": ("s-pop", None, {"model_safetensors": b"\x08" + b"\x00" * 7 + b"{}"}),
    "vocab missing": ("dsan", None, {"vocab_safetensors": None}),
    "vocab of another size": ("s-pop", None, {"vocab_safetensors": "small"}),
}


def _replacement(value, checkpoints, tmp_path) -> bytes | None:
    if value == "narm":
        return (checkpoints["narm"] / "model.safetensors").read_bytes()
    if value == "small":
        from safetensors.torch import save_file

        save_file({"ids": torch.arange(11)}, str(tmp_path / "small.safetensors"))
        return (tmp_path / "small.safetensors").read_bytes()
    return value


@pytest.mark.parametrize("command", ["recommend", "evaluate", "explain"])
@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_tampered_checkpoints_are_one_line_errors(case, command, checkpoints, tmp_path_factory, workdir, capsys):
    name, edit, files = TAMPERINGS[case]
    elsewhere = tmp_path_factory.mktemp("tampered")
    replaced = {k: _replacement(v, checkpoints, elsewhere) for k, v in files.items()}
    broken = tampered(checkpoints[name], elsewhere / "run", edit, **replaced)
    argv = {"recommend": [broken, "1", "2"], "evaluate": [broken, "-q"], "explain": [broken, "1", "2", "--out", "x"]}
    refused(capsys, workdir, command, *argv[command])


@pytest.mark.parametrize("name", sorted(n for n, cls in REGISTRY.items() if cls.neural))
def test_expected_shapes_match_a_built_model(name):
    """checkpoint.load predicts a neural model's shapes from two tiny builds; they match the real model's."""
    model = build(name, 37)
    actual = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert checkpoint._parameter_shapes(type(model), 37, model.config) == actual


STATISTICAL = sorted(name for name, cls in REGISTRY.items() if not cls.neural)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of every statistical model, fitted on a small synthetic split."""
    from nextclick.data.synthetic import SyntheticConfig, generate

    split = generate(SyntheticConfig(n_items=40, n_sessions=120)).split
    root = tmp_path_factory.mktemp("fitted")
    made = {}
    for name in STATISTICAL:
        overrides = {"epochs": 1} if "epochs" in _numeric_fields(REGISTRY[name].Config) else {}
        model = build(name, split.n_items, overrides).fit(split.train_cases())
        made[name] = checkpoint.save(root / name, model, split.vocab, split.protocol, split.name)
    return made


@pytest.mark.parametrize("name", STATISTICAL)
def test_statistical_state_of_the_wrong_shape_is_refused_on_load(name, fitted, tmp_path):
    """Each fitted array cut short (or, for item indices, pointing past the catalogue) is refused by
    checkpoint.load, not found out at the first score."""
    from safetensors.torch import load_file, save_file

    checkpoint.load(fitted[name])  # the untouched checkpoint loads
    tensors = load_file(str(fitted[name] / "model.safetensors"))
    for field, tensor in tensors.items():
        if len(tensor) < 2:
            continue
        changed = {**tensors, field: tensor[: len(tensor) // 2].contiguous()}
        if field.endswith("_items"):  # same length, an index beyond the catalogue
            changed[field] = torch.full_like(tensor, 41)
        broken = tampered(fitted[name], tmp_path / field)
        save_file(changed, str(broken / "model.safetensors"))
        with pytest.raises(checkpoint.CheckpointError, match=field):
            checkpoint.load(broken)


def test_a_huge_n_items_fails_before_any_allocation(checkpoints, tmp_path, monkeypatch):
    """n_items within MAX_ITEMS but disagreeing with the vocabulary: refused from the headers alone."""
    broken = tampered(checkpoints["dsan"], tmp_path / "run", _set("n_items", 9_000_000))
    built = []
    monkeypatch.setattr(REGISTRY["dsan"], "__init__", lambda *a, **k: built.append(1) or pytest.fail("allocated"))
    with pytest.raises(checkpoint.CheckpointError, match="vocab.safetensors"):
        checkpoint.load(broken)
    assert built == []


# ---------------------------------------------------------------------------------------------------
# the real entry point: no traceback escapes


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_the_installed_command_prints_one_line(tmp_path):
    argv = ["train", "dsan", "--set", "embedding_dim=-5", "-q"]  # past argparse, into the library
    done = subprocess.run([sys.executable, "-m", "nextclick.cli", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# evaluate --by-length in text


def test_evaluate_by_length_prints_a_table_in_text(checkpoints, workdir, capsys):
    assert main(["evaluate", str(checkpoints["s-pop"]), "--by-length", "-q", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "by prefix length:" in out
    rows = out.split("by prefix length:")[1].strip().splitlines()
    assert rows[0].split()[:3] == ["length", "cases", "HR@5"] and len(rows) >= 3
    assert sum(int(r.split()[1].replace(",", "")) for r in rows[1:]) == len(resolve(None).test)


# ---------------------------------------------------------------------------------------------------
# readers and the split loader fed random bytes: load or raise DataError, nothing else

FRAGMENTS = [b"1", b"2", b"-3", b"x", b";", b",", b"\t", b" ", b"\n", b"\r", b'"', b"\xff", b"9" * 30, b"1.5",
             b"2015-01-01", b"2014-04-07T10:51:09.277Z", b"view", b"1433221332117", b"0"]
LOG_BYTES = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join))
HEADERS = {"diginetica": b"session_id;user_id;item_id;timeframe;eventdate\n", "yoochoose": b"",
           "retailrocket": b"timestamp,visitorid,event,itemid,transactionid\n", "csv": b"session_id,item_id,timestamp\n",
           "parquet": b"PAR1"}
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _loads_or_data_error(read) -> None:
    try:
        read()
    except DataError:
        pass


@pytest.mark.parametrize("log_format", sorted(HEADERS))
def test_readers_given_random_bytes_load_or_raise_data_error(log_format):
    @FUZZ
    @given(body=LOG_BYTES, with_header=st.booleans())
    def check(body, with_header):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "log"
            path.write_bytes((HEADERS[log_format] if with_header else b"") + body)
            _loads_or_data_error(lambda: read_log(path, log_format))

    check()


SPLIT_META = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([
    b"{}", b"[]", b"1", b'{"protocol": 1}', b'{"protocol": {"name": "x", "min_prefix": "a"}}',
    b'{"protocol": {"nom": "x"}}', b'{"vocab": "x"}', b'{"vocab": [1, 1, 2]}', b'{"vocab": [true]}', b'{"vocab": [1]}']))


@FUZZ
@given(train=LOG_BYTES, test=LOG_BYTES, meta=SPLIT_META)
def test_split_loader_given_random_bytes_loads_or_raises_data_error(train, test, meta):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        (path / "train.txt").write_bytes(train)
        (path / "test.txt").write_bytes(test)
        if meta is not None:
            (path / "split.json").write_bytes(meta)
        _loads_or_data_error(lambda: load_split(path))


@pytest.mark.parametrize("stats", [b'{"steps": 5}', b'{"steps": [{"step": 1}], "recipe": "srgnn"}', b"not json"])
def test_a_hand_edited_stats_json_is_a_one_line_error(stats, tmp_path, capsys):
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("1 2 3\n2 3\n")
    (split / "test.txt").write_text("1\t2\n")
    (split / "stats.json").write_bytes(stats)
    assert main(["data", "stats", str(split)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_split_ids_beyond_the_catalogue_limit_are_refused_before_allocating(tmp_path):
    (tmp_path / "train.txt").write_text("1 2 3\n2 2000000000\n")
    (tmp_path / "test.txt").write_text("1\t2\n")
    with pytest.raises(DataError, match="dense indices"):
        load_split(tmp_path)
