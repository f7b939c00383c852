"""Finding the checkpoints of a compression run's levels, for the benchmarks that time or judge them."""

from __future__ import annotations

import json
from pathlib import Path


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
