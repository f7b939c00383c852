"""Finding the checkpoints of a compression run's levels, for the benchmarks that time or judge them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melhubert_lib.data.workspace import Workspace
from melhubert_lib.model import MelHuBERT
from melhubert_lib.training import baseline


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that measures one checkpoint on some tasks: --scale, --work-dir, --checkpoint and
    --tasks."""
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the scale's baseline)")
    parser.add_argument("--tasks", default="PR,SID,KS")


def chosen_checkpoint(ws: Workspace, args: argparse.Namespace) -> MelHuBERT:
    """The checkpoint `--checkpoint` names, or the scale's pretrained baseline (trained first if it is not yet)."""
    return MelHuBERT.from_pretrained(args.checkpoint or baseline.pretrain_baseline(ws).model_dir)


def level_records(run_dir: Path) -> list[dict]:
    """The `level.json` records of a run's completed levels, in level order."""
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("level-*/level.json"))]


def checkpoint(run_dir: Path, record: dict) -> Path:
    """The model folder a level record names (recorded relative to the workspace)."""
    return run_dir.parent.parent / record["model_dir"]


def strongest(run_dir: Path) -> Path | None:
    """Checkpoint of the last completed level of a compression run (None before its first compressed level)."""
    records = level_records(run_dir)
    return checkpoint(run_dir, records[-1]) if len(records) >= 2 else None


def level_with_setting(run_dir: Path, setting: float) -> Path | None:
    """Checkpoint of the level of a compression run whose setting is `setting` (e.g. sparsity 0.9), if any."""
    for record in level_records(run_dir):
        if abs(record["setting"] - setting) < 1e-9:
            return checkpoint(run_dir, record)
    return None


def level_checkpoint(run_dir: Path, level: int) -> Path | None:
    """Checkpoint of level `level` (0 = the run's start) of a compression run, if completed."""
    path = run_dir / f"level-{level:02d}" / "level.json"
    return checkpoint(run_dir, json.loads(path.read_text())) if path.exists() else None
