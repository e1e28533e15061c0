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

from nextclick.training.loop import train_step
from profile_dsan_step import training_setup  # scripts/ is on the path when a script of it runs


def main() -> None:
    mode, precision = sys.argv[1], sys.argv[2]
    overrides = dict(pair.split("=", 1) for pair in sys.argv[3:])
    model, optimizer, batches = training_setup(precision, overrides)
    if mode == "compile":
        model._encode_group = torch.compile(model._encode_group, dynamic=True)
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
