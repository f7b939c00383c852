"""Resident memory and first-batch latency of pretraining data against corpus hours: memory-mapped stores
(how the suite reads frames) against the same store read whole into memory (how it read them before).

For each size it writes a store of random stacked 20 ms frames (80 values, 50 frames a second, utterances of 2-20 s)
with `FrameWriter`, then, in a fresh process per measurement, opens it, draws the paper scale's batches (15 s crops,
480 s of audio a step, 4 micro-batches) and collates the first batch as rank 0 of 8 processes would (its rows only),
then 20 more. It prints the process's peak resident memory above its start, the time to the first batch, and the
ratio of the in-memory reading to the memory-mapped one. The 960 h store is a sparse file of the full size (its
pages read as zeros and cost no disk), so its latency is a lower bound; the in-memory reading is skipped there
(it needs 55 GB).
Usage: python benchmarks/frame_store_memory.py [--hours 2 8 32 960] [--dir /tmp/frame-stores]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from melhubert_lib.data.frames import DATA_NAME, FrameStore, FrameWriter, npy_header, write_index

FRAME_RATE, DIM = 50, 80
CROP_FRAMES, BATCH_FRAMES, GRAD_ACCUM, WORLD = 15 * FRAME_RATE, 32 * 15 * FRAME_RATE, 4, 8


def utterance_lengths(hours: float, seed: int = 0) -> np.ndarray:
    """Frames of utterances of 2-20 s that add up to `hours`."""
    rng = np.random.default_rng(seed)
    total, lengths = int(hours * 3600 * FRAME_RATE), []
    while sum(lengths) < total:
        lengths += list(rng.integers(2 * FRAME_RATE, 20 * FRAME_RATE + 1, size=1000))
    lengths = np.array(lengths)
    return lengths[: int(np.searchsorted(np.cumsum(lengths), total)) + 1]


def write_random_store(path: Path, hours: float) -> None:
    """A store of random frames, written utterance by utterance."""
    rng = np.random.default_rng(1)
    with FrameWriter(path) as writer:
        for i, n in enumerate(utterance_lengths(hours)):
            writer.append(f"utt{i:07d}", rng.standard_normal((int(n), DIM), dtype=np.float32))


def write_sparse_store(path: Path, hours: float) -> None:
    """A store of the full size whose data file is sparse (zeros that take no disk)."""
    lengths = utterance_lengths(hours)
    path.mkdir(parents=True)
    header = {"descr": "<f4", "fortran_order": False, "shape": (int(lengths.sum()), DIM)}
    with open(path / DATA_NAME, "wb") as fh:
        fh.write(npy_header(header))
        fh.truncate(fh.tell() + int(lengths.sum()) * DIM * 4)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    write_index(path, offsets, [f"utt{i:07d}" for i in range(len(lengths))])


def measure(path: str, in_memory: bool) -> dict:
    """In this process: peak resident memory above the start and seconds to the first collated batch."""
    import resource
    import time

    from melhubert_lib.data.batching import collate, epoch_batches
    from melhubert_lib.training.pretrain import rank_rows

    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    store = FrameStore.load(path)
    if in_memory:
        store = FrameStore(np.array(store.data), store.offsets, store.utt_ids)
    batches = epoch_batches(store.lengths(), CROP_FRAMES, BATCH_FRAMES, seed=0, epoch=0)
    for i, crops in enumerate(batches[:21]):
        collate(crops, store, rows=rank_rows(len(crops), GRAD_ACCUM, 0, WORLD))
        if i == 0:
            first = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"first_batch_s": first, "peak_rss_mb": (peak - start_rss) / 1024}


def main() -> None:
    """Measure each store format's first-batch time and memory at every size asked for, one process each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[2, 8, 32, 960])
    parser.add_argument("--dir", default=None, help="where the stores are written (default: a temporary folder)")
    parser.add_argument("--measure", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1] == "memory")))
        return
    root = Path(args.dir or tempfile.mkdtemp(prefix="frame-stores-"))
    print(f"{'hours':>6} {'GB on disk':>10} {'mapped: MB':>10} {'s':>6} {'in memory: MB':>13} {'s':>6} {'MB ratio':>8}")
    for hours in args.hours:
        path = root / f"{hours:g}h.frames"
        shutil.rmtree(path, ignore_errors=True)
        sparse = hours > 100
        (write_sparse_store if sparse else write_random_store)(path, hours)
        size = (path / DATA_NAME).stat().st_size / 1e9
        runs = {}
        for mode in ("mapped",) if sparse else ("mapped", "memory"):
            out = subprocess.run([sys.executable, __file__, "--measure", str(path), mode], check=True,
                                 capture_output=True, text=True).stdout
            runs[mode] = json.loads(out.strip().splitlines()[-1])
        mem = runs.get("memory", {"peak_rss_mb": float("nan"), "first_batch_s": float("nan")})
        print(f"{hours:6g} {size:10.2f} {runs['mapped']['peak_rss_mb']:10.0f} {runs['mapped']['first_batch_s']:6.2f} "
              f"{mem['peak_rss_mb']:13.0f} {mem['first_batch_s']:6.2f} "
              f"{mem['peak_rss_mb'] / runs['mapped']['peak_rss_mb']:8.1f}", flush=True)
        shutil.rmtree(path)
    if args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
