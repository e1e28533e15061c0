"""DSAN's training step with its encoder under torch.compile against eager, as docs/scale.md
("torch.compile") reads them.

    .venv/bin/python scripts/compile_dsan_step.py eager fp32
    .venv/bin/python scripts/compile_dsan_step.py compile fp32
    .venv/bin/python scripts/compile_dsan_step.py compile bf16-scores fast_entmax=true

Argument 1 is eager or compile (`DSAN._encode_group` wrapped by torch.compile with dynamic shapes: the
batch is encoded in groups of similar length, each of another shape), argument 2 the precision, the
rest KEY=VALUE config overrides. Retailrocket, 2 threads, glibc's malloc keeping freed memory as the CLI
has it, batch 512: 15 warm-up steps (the compilations), then 30 timed steps of the batches training
draws. Run it with nothing else on the cores (the benchmark queue paused).
"""

import sys
import time

import torch

from nextclick.data.benchmarks import resolve
from nextclick.models import build
from nextclick.runtime import keep_freed_memory, set_threads
from nextclick.training.loop import TrainOptions, epoch_stream, train_step


def main() -> None:
    set_threads(2)
    keep_freed_memory()
    mode, precision = sys.argv[1], sys.argv[2]
    overrides = dict(pair.split("=", 1) for pair in sys.argv[3:])
    split = resolve("retailrocket", None)
    cases = split.train_cases()
    torch.manual_seed(1)
    model = build("dsan", split.n_items, overrides)
    model.prepare(cases.sessions)
    optimizer = model.optimizer()
    model.train()
    if mode == "compile":
        model._encode_group = torch.compile(model._encode_group, dynamic=True)
    batches = epoch_stream(model, cases, TrainOptions(batch_size=512, seed=1, progress=False, quiet=True,
                                                      precision=precision)).batches(0)
    device = torch.device("cpu")
    start = time.perf_counter()
    for _ in range(15):
        train_step(model, optimizer, next(batches), device, precision)
    warmup = time.perf_counter() - start
    start, cases_timed = time.perf_counter(), 0
    for _ in range(30):
        batch = next(batches)
        cases_timed += len(batch)
        train_step(model, optimizer, batch, device, precision)
    print(f"{mode}, {precision}, {overrides or 'defaults'}: {cases_timed / (time.perf_counter() - start):,.0f} "
          f"cases/s over 30 steps; 15 warm-up steps took {warmup:.0f} s")


if __name__ == "__main__":
    main()
