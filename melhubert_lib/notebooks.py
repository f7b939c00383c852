"""Headless notebook runs: papermill for `make figures`, nbval at smoke scale for `make test`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from .scales import get_scale

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


def notebook_parameters(scale: str, work_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                        relative_to: str | os.PathLike | None = None) -> dict:
    """The parameters every notebook of the suite accepts; paths relative to the notebook's folder if given."""
    get_scale(scale)  # a clear error for an unknown scale before any kernel starts

    def place(p: str | os.PathLike) -> str:
        p = Path(p).resolve()
        return os.path.relpath(p, Path(relative_to).resolve()) if relative_to is not None else str(p)

    return {"scale": scale, "work_dir": place(work_dir), "figures_dir": place(figures_dir)}


def run_notebook(path: str | os.PathLike, scale: str, work_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                 kernel: str = "melhubert") -> Path:
    """Execute a notebook with papermill and replace it with the executed copy only if every cell succeeded."""
    path = Path(path)
    params = notebook_parameters(scale, work_dir, figures_dir, relative_to=path.parent)
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.running.ipynb")
    try:
        papermill.execute_notebook(str(path), str(tmp), parameters=params, kernel_name=kernel,
                                   cwd=str(path.parent), progress_bar=False, log_output=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def validate_notebooks(paths: list[str | os.PathLike], kernel: str = "melhubert", scale: str = "smoke") -> int:
    """Run nbval over smoke-scale copies of the notebooks (checked cells compare their stored outputs).

    The copies get the smoke parameters injected and share one temporary work and figures folder, so
    the notebooks run in order as in `make figures` without touching the committed figures.
    """
    with tempfile.TemporaryDirectory(prefix="melhubert-nbval-") as tmp:
        tmp = Path(tmp)
        params = notebook_parameters(scale, tmp / "work", tmp / "figures")
        copies = []
        for path in paths:
            path = Path(path)
            copy = tmp / path.name
            nb = load_notebook_node(str(path))  # adds the metadata papermill expects on every cell
            nb = parameterize_notebook(nb, params, kernel_name=kernel)
            nbformat.write(nb, copy)
            copies.append(str(copy))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               f"--nbval-sanitize-with={SANITIZE}", f"--rootdir={tmp}", *copies]
        return subprocess.run(cmd, cwd=tmp).returncode
