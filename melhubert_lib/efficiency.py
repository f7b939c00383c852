"""Cost of a model: parameters (total and non-zero), MACs per second of audio, CPU real-time factor, memory.

Linear and convolution MACs come from `torch.utils.flop_counter.FlopCounterMode` (it reports 2 FLOPs
per MAC); CPU `scaled_dot_product_attention` counts zero there, so the two attention matmuls
(Q K^T and A V: 2 x T^2 x heads x head_dim MACs per layer) are added in closed form; FLASH's attention is plain
matrix products and counted.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from . import model as model_module
from .data.atomic import write_text_atomic
from .data.provenance import code_version
from .model import MelHuBERT

EFFICIENCY_CACHE = "efficiency"  # folder under a workspace's cache: one measurement per checkpoint and setting


@dataclass
class MacCount:
    """MACs of one forward pass over `seconds` of audio, split by source."""

    seconds: float
    linear_and_conv: int  # every op the flop counter counts (FLASH's attention matmuls too)
    attention: int

    @property
    def total(self) -> int:
        """All MACs of the pass."""
        return self.linear_and_conv + self.attention

    @property
    def per_second(self) -> float:
        """MACs per second of audio."""
        return self.total / self.seconds


def attention_macs(model: MelHuBERT, frames: int) -> int:
    """Closed-form MACs of the score and context matmuls of every layer for one utterance of `frames` (none for
    FLASH layers, whose attention is plain matrix products that the flop counter counts)."""
    cfg = model.config
    if cfg.block != "transformer":
        return 0
    return sum(2 * frames * frames * h * cfg.head_dim for h in cfg.heads)


@torch.no_grad()
def _flop_counts(model: MelHuBERT, frames: int) -> dict[str, dict]:
    """The flop counter's counts (per module, and "Global") of one eval-mode pass at batch 1 over `frames` frames."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, frames, model.config.input_dim))
    model.train(was_training)
    return counter.get_flop_counts()


def _counted_macs(counts: dict[str, dict]) -> int:
    """MACs of every op the counter sees (CPU scaled_dot_product_attention, which it counts as zero, left out)."""
    return sum(v for op, v in counts["Global"].items() if "scaled_dot_product" not in str(op)) // 2


def count_macs(model: MelHuBERT, seconds: float = 10.0) -> MacCount:
    """Dense MACs of one forward pass (batch 1, no masking) over `seconds` of audio."""
    frames = model.config.frames(seconds)
    counted = _counted_macs(_flop_counts(model, frames))
    return MacCount(seconds=seconds, linear_and_conv=counted, attention=attention_macs(model, frames))


def sparse_macs(model: MelHuBERT, seconds: float = 10.0) -> int:
    """MACs when zero weights are skipped: the dense count less each linear/conv layer's MACs on its zero weights.

    Everything else (the attention matmuls, FLASH's attention included) stays dense.
    """
    frames = model.config.frames(seconds)
    counts = _flop_counts(model, frames)
    skipped = 0.0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv1d):
            flops = sum(counts.get(f"{type(model).__name__}.{name}", {}).values())
            zeros = 1.0 - float(torch.count_nonzero(module.weight)) / module.weight.numel()
            skipped += flops / 2 * zeros
    return int(round(_counted_macs(counts) - skipped)) + attention_macs(model, frames)


@dataclass
class Efficiency:
    """What running a checkpoint costs: sizes, MACs per second of audio, CPU speed and memory."""

    params: int
    nonzero_params: int
    macs_per_second: float  # dense
    sparse_macs_per_second: float  # zero weights skipped (differs from dense only for weight-pruned models)
    rtf: float  # median wall seconds per second of audio (batch 1, `seconds`, `threads`; from `process_speed`)
    rtf_iqr: float
    seconds: float
    threads: int
    peak_memory_mb: float  # peak resident memory of a fresh process that loads the model and runs one pass

    def to_json(self) -> str:
        """The fields as JSON."""
        return json.dumps(asdict(self), indent=2)


# glibc hands freed blocks above 128 KiB back to the kernel, so every large activation of the next pass is
# page-faulted in again (0.8 ms per 500 x 1024 FFN activation, a fixed cost no compression removes). CPU
# inference normally runs on a caching allocator (jemalloc or tcmalloc in PyTorch's CPU tuning guide); the
# timing process gets the same behaviour from glibc's own tunables. Other C libraries ignore the variable.
CACHING_MALLOC = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824"}


@dataclass
class ProcessSpeed:
    """Speed and memory of a model measured in a fresh process (batch 1, `seconds` of audio, `threads` threads)."""

    rtf: float  # median wall seconds per second of audio, after warm-up
    rtf_iqr: float
    peak_memory_mb: float  # peak resident memory after loading the model and running one pass


def process_speed(model: MelHuBERT, seconds: float = 10.0, threads: int = 1, min_run_time: float = 1.0,
                  sparse_kernels: bool = False) -> ProcessSpeed:
    """Measure `model` in a fresh Python process with a caching allocator, so that neither this process's
    memory nor its heap history colours the result; `sparse_kernels` runs pruned linear layers as CSR products."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        args = [tmp, str(seconds), str(threads), str(min_run_time)] + (["--sparse-kernels"] if sparse_kernels else [])
        return ProcessSpeed(**run_timing_process(__name__, args))


def run_timing_process(module: str, args: Sequence[str]) -> dict:
    """Run `python -m module args` under the caching allocator (`CACHING_MALLOC`) and return the JSON object its
    last line of output prints; a failure raises with the process's error output."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
                         env={**os.environ, **CACHING_MALLOC})
    if out.returncode != 0:
        raise RuntimeError(f"timing process {module} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(model: MelHuBERT, seconds: float = 10.0, threads: int = 1, cache_dir: Path | None = None) -> Efficiency:
    """Every cost figure of `model` (see `Efficiency`).

    With `cache_dir`, a checkpoint measured before with the same weights, `seconds` and `threads` (keyed by
    `MelHuBERT.content_hash` and the version of the code that runs and measures it) gets its stored figures back:
    the compression driver measures every level it writes, and judging that level downstream reports the same
    measurement instead of timing it again.
    """
    code = code_version(__name__, model_module)
    name = f"{model.content_hash()}-{code}-{seconds:g}s-{threads}t.json"
    path = None if cache_dir is None else Path(cache_dir) / name
    if path is not None and path.is_file():
        return Efficiency(**json.loads(path.read_text()))
    speed = process_speed(model, seconds, threads)
    cost = Efficiency(
        params=model.num_parameters(), nonzero_params=model.num_parameters(nonzero=True),
        macs_per_second=count_macs(model, seconds).per_second,
        sparse_macs_per_second=sparse_macs(model, seconds) / seconds, rtf=speed.rtf, rtf_iqr=speed.rtf_iqr,
        seconds=seconds, threads=threads, peak_memory_mb=speed.peak_memory_mb,
    )
    if path is not None:
        write_text_atomic(path, cost.to_json())
    return cost


@torch.no_grad()
def _speed_probe(directory: str, seconds: float, threads: int, min_run_time: float, sparse_kernels: bool) -> None:
    """Body of the fresh process: load, one pass (peak memory), then timed passes; prints ProcessSpeed as JSON."""
    torch.set_num_threads(threads)
    model = MelHuBERT.from_pretrained(directory).eval()
    if sparse_kernels:
        from .compression.weight_pruning import with_sparse_kernels

        model = with_sparse_kernels(model)
    frames = model.config.frames(seconds)
    x = torch.randn(1, frames, model.config.input_dim)
    model(x)
    peak = _peak_rss_mb()
    timer = benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
    timer.timeit(2)  # warm-up
    timed = timer.blocked_autorange(min_run_time=min_run_time)
    print(json.dumps(asdict(ProcessSpeed(timed.median / seconds, timed.iqr / seconds, peak))))


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Linux: VmHWM from /proc (it restarts at exec; ru_maxrss would carry the parent's peak over a fork).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


if __name__ == "__main__":
    _speed_probe(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                 "--sparse-kernels" in sys.argv[5:])
