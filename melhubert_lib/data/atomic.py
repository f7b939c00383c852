"""Crash-safe writes: everything the suite writes goes to a temporary name and is renamed into place."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block finishes.

    Works for files and directories. On any exception (including KeyboardInterrupt) the
    temporary is removed and whatever was at `path` before is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's process id in the name lets a later writer tell an abandoned temporary from one in progress
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and tmp.is_dir():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


@contextmanager
def build_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock beside `path` while it is built, so that the processes of one torchrun job (all of
    which ask for the same artefacts at once) build it once: the others wait, then find it made. A single process
    (WORLD_SIZE unset or 1) takes no lock and leaves no lock file."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write an indented JSON file atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
