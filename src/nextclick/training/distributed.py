"""Data-parallel training on the one trainer: the ordinary `nextclick train` command under torchrun.

    torchrun --standalone --nproc_per_node 2 -m nextclick.cli train narm -d retailrocket

torchrun starts N copies of the command with RANK, WORLD_SIZE and LOCAL_RANK in their environment.
Each joins one process group (gloo on the CPU, nccl on GPUs, one GPU per process: cuda:LOCAL_RANK),
and training.loop.train_model then differs from one process in five places only:

- the model is wrapped in DistributedDataParallel, which averages the gradients of every step over
  the processes (after the wrap every process holds rank 0's weights);
- every global batch of the epoch order (the configured batch size, drawn exactly as one process
  draws it) is dealt out by rank, process r taking cases r, r + N, r + 2N, ... of it
  (data/streams.PrefixStream); so N processes take the optimizer steps one process with the same
  batch size would, each step averaging N shares of (nearly) equal size. A last global batch with
  fewer cases than processes is left out, so that every process takes the same steps;
- validation, the selection of the epoch, checkpoints, train.jsonl and the printed lines are rank 0's;
  the others wait for its verdict (one broadcast number: the epoch's selection score) and stop
  together with it;
- each process draws its own dropout (rank r reseeds its torch generator with seed + r), and its
  random state goes into the epoch's commit beside rank 0's (safetensors `rng.torch.rank<r>`), so a
  killed run resumes exactly under torchrun with the same number of processes (state.json records it);
- the loss and cases/s of an epoch are summed over the processes.

One process (no torchrun, or WORLD_SIZE=1) never touches any of this: its results are unchanged.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from nextclick.runtime import resolve_device

# rank 0 validates and checkpoints while the others wait in a collective call: allow a long validation
TIMEOUT = timedelta(seconds=float(os.environ.get("NEXTCLICK_DISTRIBUTED_TIMEOUT", 3 * 3600)))


@dataclass(frozen=True)
class Group:
    """This process's place among the torchrun processes."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, checkpoints, logs and prints."""
        return self.rank == 0

    def device(self, name: str = "auto") -> torch.device:
        """The device of this process: its own GPU (cuda:LOCAL_RANK) where `name` means a GPU."""
        device = resolve_device(name)
        if device.type == "cuda" and device.index is None:
            if self.local_rank >= torch.cuda.device_count():  # else CUDA's "invalid device ordinal", mid-start
                raise ValueError(f"torchrun started {self.local_world_size} processes on this machine but it has "
                                 f"{torch.cuda.device_count()} GPU(s): one process per GPU (--nproc_per_node "
                                 f"{torch.cuda.device_count()}), or --device cpu")
            return torch.device("cuda", self.local_rank)
        return device

    def threads(self) -> int:
        """Torch threads per process when none are asked for: the cores shared among this node's processes."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process among several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def start(device_name: str = "auto") -> Group | None:
    """Join the process group torchrun described in the environment; None when not launched by it.
    The backend follows the device: nccl for GPUs, gloo for the CPU."""
    if not launched():
        return None
    if not dist.is_initialized():
        group = _from_environment()
        device = group.device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return current()


def stop(finished: bool = True) -> None:
    """Leave the process group (at the end of a command that started it). A process that `finished`
    first meets the others at a barrier, so that none closes its connections while another still has a
    collective call in flight; one leaving on an error does not wait (the others may never come)."""
    if dist.is_available() and dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()  # anything still holding the group (a reference cycle) is freed now, not in teardown


def leave(code: int) -> None:
    """End a torchrun process with `code` without the interpreter's teardown. A CI run saw a process that
    had trained, left the group and returned 0 abort at exit in gloo's C++ teardown ("terminate called
    without an active exception", SIGABRT): torchrun then fails the whole command although every file
    was written. Everything the command writes is written by now; only the streams need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _from_environment() -> Group:
    return Group(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                 local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))


def current() -> Group | None:
    """The process group this process trains in, None when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    environment = _from_environment() if "RANK" in os.environ else None
    return Group(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=environment.local_rank if environment else 0,
                 local_world_size=environment.local_world_size if environment else dist.get_world_size())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model in DistributedDataParallel (which first gives every process rank 0's weights). Unused
    parameters are allowed: a model's training forward may leave some out (a decoder the loss skips)."""
    return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def _communication_device(group: Group, device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_value(group: Group, value: float, device: torch.device) -> float:
    """Rank 0's `value` on every process (the epoch's selection score: everyone then takes the same
    decision to keep the epoch or stop)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=_communication_device(group, device))
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def sum_over_processes(group: Group, values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (an epoch's loss total and cases)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=_communication_device(group, device))
    dist.all_reduce(tensor)
    return tensor.tolist()


def random_states(group: Group, device: torch.device) -> dict[str, torch.Tensor]:
    """Every process's torch generator state(s), gathered for rank 0's commit as `rng.torch.rank<r>`
    (and `rng.cuda.rank<r>`); rank 0's own are saved as `rng.torch` / `rng.cuda`, as one process saves
    them. A collective call: every process makes it at the same point. Empty on the other ranks."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    gathered: dict[str, torch.Tensor] = {}
    where = _communication_device(group, device)
    for kind, state in states.items():
        mine = state.to(where)
        everyone = [torch.empty_like(mine) for _ in range(group.world_size)]
        dist.all_gather(everyone, mine)
        if group.main:
            gathered.update({f"rng.{kind}.rank{rank}": value.cpu() for rank, value in enumerate(everyone) if rank})
    return gathered


def barrier(group: Group | None) -> None:
    if group is not None:
        dist.barrier()
