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

from ..scales import get_scale

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


def notebook_parameters(scale: str, work_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                        relative_to: str | os.PathLike | None = None) -> dict:
    """The parameters every notebook of the suite accepts; paths relative to the notebook's folder if given."""
    get_scale(scale)  # a clear error for an unknown scale before any kernel starts

    def place(p: str | os.PathLike) -> str:
        p = Path(p).resolve()
        return os.path.relpath(p, Path(relative_to).resolve()) if relative_to is not None else str(p)

    return {"scale": scale, "work_dir": place(work_dir), "figures_dir": place(figures_dir)}


CORPUS_PARAMETERS = ("librispeech", "voxceleb1", "speech_commands")  # given to every notebook that declares them


def run_notebook(path: str | os.PathLike, scale: str, work_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                 kernel: str = "melhubert", output: str | os.PathLike | None = None,
                 corpora: dict[str, str | os.PathLike | None] | None = None, parameters: dict | None = None) -> Path:
    """Execute a notebook with papermill; write it to `output`, or replace it, only if every cell succeeded.

    `corpora` (librispeech, voxceleb1, speech_commands: real corpus folders) go to the notebooks that declare
    them; `parameters` set further notebook parameters, each of which the notebook must declare.
    """
    path = Path(path)
    declared = papermill.inspect_notebook(str(path))
    unknown = sorted(set(parameters or {}) - declared.keys())
    if unknown:
        raise ValueError(f"{path}: no parameter {', '.join(map(repr, unknown))}; it declares "
                         f"{', '.join(sorted(declared))}")
    bad_corpora = sorted(set(corpora or {}) - set(CORPUS_PARAMETERS))
    if bad_corpora:
        raise ValueError(f"corpora {bad_corpora}: choose among {', '.join(CORPUS_PARAMETERS)}")
    params = notebook_parameters(scale, work_dir, figures_dir, relative_to=path.parent)
    params |= {name: str(Path(folder).resolve()) for name, folder in (corpora or {}).items()
               if folder is not None and name in declared}
    params |= parameters or {}
    target = Path(output) if output is not None else path
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.running.ipynb")
    try:
        papermill.execute_notebook(str(path), str(tmp), parameters=params, kernel_name=kernel,
                                   cwd=str(path.parent), progress_bar=False, log_output=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


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
