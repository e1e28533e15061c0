"""What every command needs from the machine, in one small module: the device, the thread count, the
memory allocator's policy, the provenance a result records (machine, git commit) and the pace of
progress bars. Nothing here knows about models, training or data. Torch is imported by the functions
that use it, so that commands without torch (`recommend` on a statistical run) can set the allocator."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# what stays in the process: allocations up to this size come from the heap, and up to this much free
# memory at its top is kept for the next allocation instead of being given back to the kernel
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of returning it to the kernel and asking again.

    By default an allocation above 32 MB is a fresh mmap, released when freed: a training step's
    (N, d) gradient tables and blocks of (B, N) scores are that size, and every step page-faults them in
    again. On SR-IEM's diginetica batch (256 cases, 43k items, one thread) that was 27% of the step:
    0.68 against 0.49 s with this policy (same with glibc's tunables set in the environment). The price:
    the process keeps up to KEEP_FREED_BYTES of its own freed memory. NEXTCLICK_KEEP_FREED_MEMORY=0 in
    the environment leaves glibc's defaults (to measure without it, or on a machine short of memory).
    False where nothing changed, as where there is no glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux") or os.environ.get("NEXTCLICK_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; other names must be devices this machine has."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def set_threads(threads: int | None = None) -> int:
    """Torch's intra-op threads: `threads`, or every core when None."""
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def progress_interval() -> float:
    """Seconds between progress-bar refreshes: lively on a terminal, sparse in a log file."""
    return 0.5 if sys.stderr.isatty() else 60.0


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# the vector units speed depends on: AVX-512 doubles a core's float32 width over AVX2, and bf16 arithmetic
# (AVX-512 BF16, AMX) is what makes --precision bf16 / bf16-scores pay (docs/scale.md)
SPEED_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_features() -> list[str]:
    """Which of SPEED_FEATURES the CPU reports (Linux; empty where /proc/cpuinfo cannot be read): the same
    model name covers CPUs with and without AVX-512 (this project's 'AMD EPYC' has been both), so a
    speed figure records them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [feature for feature in SPEED_FEATURES if feature in flags]
    except OSError:
        pass
    return []


def memory_bytes() -> int | None:
    """The machine's memory (Linux), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(threads: int | None = None, device: torch.device | str = "cpu") -> dict:
    """The machine a number was measured on: cpu, cores, threads, torch, and the device used."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
        # other work on the machine slows a run down: record it so numbers can be read fairly
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    device = torch.device(device)
    if device.type == "cuda":  # the device the run computed on, not merely one the machine has
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def git_commit() -> str | None:
    """HEAD (with -dirty for uncommitted changes), or $NEXTCLICK_GIT_COMMIT where it is set: a copy of
    the tree run elsewhere (a container, a remote GPU machine) may carry no .git, or a stale one."""
    if os.environ.get("NEXTCLICK_GIT_COMMIT"):
        return os.environ["NEXTCLICK_GIT_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None
