"""Mixed precision (`TrainOptions.precision="bf16"`, `--precision bf16`): the forward pass under bf16 autocast,
float32 weights, gradients and optimizer state, float32 normalisers, float32 evaluation; "bf16-scores": only
the blocked losses' products with the catalogue in bf16; fp32 stays the reference, unchanged by the option."""

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F
from model_contract import QUICK, pop_hit_rate, synthetic, synthetic_validation

from nextclick.cli import main
from nextclick.evaluate import evaluate
from nextclick.models import build
from nextclick.models.layers import alpha_entmax, inner_product_cross_entropy
from nextclick.training.loop import PRECISIONS, TrainOptions, epoch_stream, train_model, train_step

# batches of one epoch: enough for each model to clear POP's validation HR@20 by nine points or more on the
# synthetic data, in seconds (DSAN and NARM at higher learning rates than QUICK's, to get there sooner)
BATCHES = {"dsan": 30, "narm": 20, "sr-iem": 20}
SETTINGS = {"dsan": {"lr": 1e-2}, "narm": {"lr": 2e-2}}


def trained(name: str, precision: str | None):
    """`name` trained for BATCHES[name] batches from seed 0 and validated; precision None: left at its default."""
    split, fit, valid, _ = synthetic_validation()
    torch.manual_seed(0)
    model = build(name, split.n_items, {**QUICK[name], **SETTINGS.get(name, {})})
    chosen = {} if precision is None else {"precision": precision}
    options = TrainOptions(epochs=1, max_batches=BATCHES[name], progress=False, quiet=True, device="cpu", **chosen)
    return model, train_model(model, fit, valid, options)


# DSAN's pair takes 5-10 s on two cores (bf16 is emulated on CPUs without bf16 units): make test-slow runs
# it; make test keeps DSAN's bf16 step below and the NARM and SR-IEM pairs
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "dsan" else n for n in sorted(BATCHES)])
def test_bf16_training_keeps_float32_weights_and_reaches_the_fp32_accuracy(name):
    split, _, _, pop_valid = synthetic_validation()
    runs = {precision: trained(name, precision) for precision in PRECISIONS}
    tested = {precision: evaluate(m.score, split.test).metrics["HR@20"] for precision, (m, _) in runs.items()}
    valid = {precision: r.best_valid["HR@20"] for precision, (_, r) in runs.items()}
    for low in ("bf16", "bf16-scores"):
        model, result = runs[low]
        assert all(math.isfinite(epoch["loss"]) for epoch in result.history)
        for parameter_name, parameter in model.named_parameters():
            assert parameter.dtype == torch.float32, parameter_name
            assert parameter.grad is None or parameter.grad.dtype == torch.float32, parameter_name
        # the same model to within bf16's rounding of the forward pass: well under a point apart here
        assert valid[low] == pytest.approx(valid["fp32"], abs=0.02), low
        assert tested[low] == pytest.approx(tested["fp32"], abs=0.02), low
        assert valid[low] > pop_valid + 0.05 and tested[low] > pop_hit_rate() + 0.05, low


def test_a_bf16_scores_step_keeps_the_encoder_in_float32_and_makes_the_catalogue_products_in_bf16(monkeypatch):
    import nextclick.models.layers as layers

    split = synthetic()
    torch.manual_seed(0)
    model = build("dsan", split.n_items, QUICK["dsan"])
    model.prepare(split.train)
    seen, tables = [], []
    model.query.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    score_blocks = layers._score_blocks
    monkeypatch.setattr(layers, "_score_blocks", lambda queries, table, excluded, low_table=None: (
        tables.append(None if low_table is None else low_table.dtype), score_blocks(queries, table, excluded, low_table))[1])
    batch = next(epoch_stream(model, split.train_cases(), TrainOptions(batch_size=64)).batches(0))
    loss = train_step(model, model.optimizer(), batch, torch.device("cpu"), "bf16-scores")
    assert seen and set(seen) == {torch.float32}  # no autocast: the encoder's matmuls stay float32
    assert tables == [torch.bfloat16]  # the loss's products with the catalogue: bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert layers.autocast_dtype("cpu") is None  # and only inside the step
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_a_bf16_step_runs_matmuls_in_bf16_and_keeps_weights_gradients_and_optimizer_state_in_float32():
    split = synthetic()
    torch.manual_seed(0)
    model = build("dsan", split.n_items, QUICK["dsan"])
    model.prepare(split.train)
    optimizer = model.optimizer()
    seen = []
    model.query.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = next(epoch_stream(model, split.train_cases(), TrainOptions(batch_size=64)).batches(0))
    loss = train_step(model, optimizer, batch, torch.device("cpu"), "bf16")
    assert torch.bfloat16 in seen  # autocast was on: the query layer's matmul gave bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    trained_parameters = [p for p in model.parameters() if p.grad is not None]
    assert trained_parameters and all(p.dtype == p.grad.dtype == torch.float32 for p in trained_parameters)
    assert all(value.dtype == torch.float32 for state in optimizer.state.values() for value in state.values()
               if torch.is_tensor(value) and value.is_floating_point())
    assert not torch.is_autocast_enabled("cpu")  # the backward pass and what follows run outside autocast


def test_fp32_training_is_unchanged_by_the_option():
    default, default_result = trained("sr-iem", None)  # precision left at its default
    explicit, explicit_result = trained("sr-iem", "fp32")
    for key, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key
    assert default_result.history[0]["loss"] == explicit_result.history[0]["loss"]
    # and an fp32 step is the plain step the trainer took before the option (forward, backward, step), bit for bit
    split = synthetic()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build("dsan", split.n_items, QUICK["dsan"]))
        models[-1].prepare(split.train)
    optimizers = [m.optimizer() for m in models]
    batches = epoch_stream(models[0], split.train_cases(), TrainOptions(batch_size=64)).batches(0)
    for _, batch in zip(range(3), batches):
        torch.manual_seed(1)
        train_step(models[0], optimizers[0], batch, torch.device("cpu"), "fp32")
        torch.manual_seed(1)
        _, loss = models[1](batch, batch.labels)
        optimizers[1].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[1].step()
    for key, value in models[0].state_dict().items():
        assert torch.equal(value, models[1].state_dict()[key]), key


def test_normalisers_take_bf16_inputs_to_float32():
    torch.manual_seed(0)
    scores = torch.randn(4, 9) * 3
    alpha = torch.full((4, 1), 1.3)
    low = alpha_entmax(scores.bfloat16(), alpha.bfloat16(), fast=True)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, alpha_entmax(scores.bfloat16().float(), alpha.bfloat16().float(), fast=True))
    # the blocked loss under autocast: bf16 matmuls, a float32 loss close to the float32 one, float32 gradients
    queries, table = torch.randn(6, 5, requires_grad=True), torch.randn(30, 5, requires_grad=True)
    labels = torch.randint(1, 30, (6,))
    reference_scores = queries @ table.T
    reference = F.cross_entropy(torch.cat([torch.full((6, 1), -torch.inf), reference_scores[:, 1:]], dim=1), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = inner_product_cross_entropy(queries, table, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)
    loss.backward()
    assert queries.grad.dtype == torch.float32 and table.grad.dtype == torch.float32
    expected = torch.autograd.grad(reference, (queries, table))
    torch.testing.assert_close(queries.grad, expected[0], atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(table.grad, expected[1], atol=5e-2, rtol=5e-2)


def test_dsan_alpha_stays_float32_and_above_one_under_autocast():
    torch.manual_seed(0)
    model = build("dsan", 20, QUICK["dsan"])
    with torch.no_grad():
        model.alpha_head.bias.fill_(-5.0)  # sigmoid ~ 0.0067: in bf16, 1 + that rounds to exactly 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        alpha = model._alpha(torch.zeros(3, 2 * model.config.embedding_dim))
    assert alpha.dtype == torch.float32 and (alpha > 1.005).all()


def test_precision_is_validated():
    with pytest.raises(ValueError, match="unknown precision 'fp16': choose one of fp32, bf16"):
        TrainOptions(precision="fp16")
    assert TrainOptions().precision == "fp32"


def test_the_python_api_trains_in_the_precision_asked_and_records_it():
    import nextclick

    split = synthetic()
    quick = dict(epochs=1, max_batches=2, progress=False)
    run = nextclick.train(nextclick.build("narm", split, hidden_size=8, embedding_size=8), split, precision="bf16", **quick)
    assert run.record["precision"] == "bf16" and all(p.dtype == torch.float32 for p in run.model.parameters())
    assert nextclick.train(nextclick.build("pop", split), split, progress=False).record["precision"] == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        nextclick.train(nextclick.build("narm", split, hidden_size=8), split, precision="fp16", **quick)


def test_a_bf16_run_has_its_own_run_id_records_its_precision_and_resumes_only_in_it(tmp_path, capsys, monkeypatch,
                                                                                   tiny_model):
    monkeypatch.chdir(tmp_path)
    tiny = ("bench", "tiny", "-q", "--threads", "1", "--max-batches", "5", "--epochs", "1")
    assert main([*tiny, "--precision", "bf16"]) == 0
    assert main([*tiny]) == 0
    capsys.readouterr()
    results = tmp_path / "results" / "synthetic" / "tiny"
    bf16 = json.loads((results / "epochs=1,max_batches=5,precision=bf16" / "result.json").read_text())
    fp32 = json.loads((results / "epochs=1,max_batches=5" / "result.json").read_text())
    assert bf16["run_id"] == "epochs=1,max_batches=5,precision=bf16" and bf16["train_options"]["precision"] == "bf16"
    assert fp32["train_options"]["precision"] == "fp32"
    run = tmp_path / "runs" / "synthetic" / "tiny" / bf16["run_id"]
    assert json.loads((run / "config.json").read_text())["train_options"]["precision"] == "bf16"
    # a resume under the other precision is refused, naming it
    assert main([*tiny, "-o", str(run), "--resume"]) == 2
    assert "precision bf16 (now fp32)" in capsys.readouterr().err


def test_a_run_saved_before_the_option_resumes_as_fp32_and_refuses_bf16():
    from nextclick.runs.guard import changed_settings

    saved = {"model": "tiny", "dataset": "synthetic", "config": {}, "train_options": {"seed": 1}}
    wanted = {"model": "tiny", "dataset": "synthetic", "config": {}, "train_options": {"seed": 1, "precision": "fp32"}}
    assert changed_settings(saved, wanted) == []
    wanted["train_options"]["precision"] = "bf16"
    assert changed_settings(saved, wanted) == ["precision fp32 (now bf16)"]


def test_grid_candidate_records_name_a_precision_only_when_it_is_not_fp32():
    from nextclick.runs.search import candidate_settings

    split = synthetic()
    model = build("sr-iem", split.n_items, QUICK["sr-iem"])
    assert "precision" not in candidate_settings(model, split, TrainOptions())  # as records made before the option
    assert candidate_settings(model, split, TrainOptions(precision="bf16"))["precision"] == "bf16"


def test_speed_times_bf16_training_and_names_its_file_by_it(tmp_path, capsys):
    code = main(["speed", "sr-iem", "--set", "embedding_size=8", "--batches", "2", "--batch-size", "64",
                 "--threads", "1", "--device", "cpu", "--precision", "bf16", "--results-dir", str(tmp_path)])
    assert code == 0 and "in bf16" in capsys.readouterr().out
    written = tmp_path / "speed" / "synthetic" / "sr-iem" / "batch_size=64,embedding_size=8,precision=bf16.json"
    result = json.loads(written.read_text())
    assert result["precision"] == "bf16" and result["fast_path"]["cases"] == 128
    assert main(["speed", "sr-iem", "--evaluation", "--precision", "bf16", "--results-dir", str(tmp_path)]) == 2
    assert "always runs in fp32" in capsys.readouterr().err


def test_the_repeat_decoder_refuses_bf16_before_training_and_trains_under_bf16_scores():
    split = synthetic()
    model = build("narm", split.n_items, {**QUICK["narm"], "repeat": "mix"})
    with pytest.raises(ValueError, match="does not support the repeat decoder"):
        train_model(model, split.train_cases(), None, TrainOptions(epochs=1, max_batches=1, quiet=True, device="cpu",
                                                                    precision="bf16"))
    result = train_model(model, split.train_cases(), None, TrainOptions(epochs=1, max_batches=3, quiet=True,
                                                                         device="cpu", precision="bf16-scores"))
    assert all(math.isfinite(epoch["loss"]) for epoch in result.history)


def test_the_command_line_offers_the_precisions_the_loop_knows():
    from nextclick.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "bench", "speed"):
        option = next(a for a in subcommands.choices[command]._actions if "--precision" in a.option_strings)
        assert tuple(option.choices) == PRECISIONS and option.default == "fp32", command

