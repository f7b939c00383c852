"""Tidy result tables on disk: rows appended to a CSV, earlier rows with the same key replaced, atomically."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .atomic import atomic_path


def append_rows(path: str | os.PathLike, rows: pd.DataFrame, key: list[str],
                replace: list[str] | None = None) -> pd.DataFrame:
    """Merge `rows` into the CSV at `path` (created if absent); rows whose `key` columns match are replaced.

    With `replace` (a part of the key, e.g. source and task), every stored row that shares those columns with a new
    row goes, not only exact key matches: a re-judged source keeps no rows of its earlier weights or seeds.
    """
    path = Path(path)
    missing = [k for k in key if k not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the key columns {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        return _merge(path, rows, key, replace)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`'s lock file: two notebooks appending to one table at once lose no row."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _merge(path: Path, rows: pd.DataFrame, key: list[str], replace: list[str] | None) -> pd.DataFrame:
    if path.is_file():
        old = pd.read_csv(path)
        if not old.empty:
            absent = [k for k in key if k not in old.columns]
            if absent:
                raise ValueError(f"{path} was written by another version of the suite (no columns {absent}); "
                                 "delete it and run the notebook that writes it again")
            match = replace or key
            keys = pd.MultiIndex.from_frame(rows[match].astype(str))
            stale = pd.MultiIndex.from_frame(old[match].astype(str)).isin(keys)
            rows = pd.concat([old[~stale], rows], ignore_index=True)
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)
    return rows
