"""Environment pins, crash-safe writes, scales and the command line."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from melhubert_lib import efficiency
from melhubert_lib.cli import main
from melhubert_lib.data.atomic import atomic_path, write_json_atomic
from melhubert_lib.data.frames import FrameStore, cached
from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.scales import get_scale

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_pins_exactly_the_lock_file():
    lock = {line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    env_text = (ROOT / "environment.yml").read_text()
    env = {m.group(1) for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-]+==\S+)$", env_text, re.M)}
    assert lock and env == lock


def test_the_stack_that_belongs_together_is_pinned():
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    for pin in ("torch==2.8.0", "torchaudio==2.8.0", "s3prl==0.4.18"):
        assert pin in lock


def test_an_interrupted_write_leaves_the_old_file_untouched(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text('{"new": ')
            raise KeyboardInterrupt
    assert target.read_text().strip().startswith('{\n  "old": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_interrupted_directory_write_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "a").write_text("second")
            raise RuntimeError("crash")
    assert (target / "a").read_text() == "first"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("third")
    assert (target / "a").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_frame_store_roundtrip(tmp_path):
    store = FrameStore.from_arrays([np.ones((3, 2)), np.zeros((5, 2))], ["a", "b"])
    store.save(tmp_path / "s.npz")
    loaded = FrameStore.load(tmp_path / "s.npz")
    assert loaded.utt_ids == ["a", "b"] and loaded.lengths().tolist() == [3, 5]
    assert (loaded[0] == 1).all() and (loaded[1] == 0).all()


def test_frames_with_nan_are_never_cached(tmp_path):
    bad = FrameStore.from_arrays([np.ones((3, 2)), np.array([[1.0, np.nan]]), np.ones((2, 2))], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"s\.npz.*1 utterances.*\(b\)"):
        bad.save(tmp_path / "s.npz")
    with pytest.raises(ValueError, match="NaN"):
        cached(tmp_path / "s.npz", lambda: bad)
    assert list(tmp_path.iterdir()) == []


def test_unknown_scale_names_the_parameter_and_the_choices():
    with pytest.raises(ValueError, match=r"scale.*smoke, default, paper|smoke, default, paper.*scale"):
        get_scale("huge")


def test_cli_rejects_an_unknown_stage(capsys):
    with pytest.raises(SystemExit):
        main(["fly"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_refuses_zero_pretraining_steps_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--steps", "0", "--work-dir", str(tmp_path)])
    assert exit_info.value.code != 0
    assert "--steps: must be >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_are_one_line_on_stderr_and_tracebacks_need_debug(capsys, tmp_path):
    missing = tmp_path / "no-checkpoint"
    with pytest.raises(SystemExit) as exit_info:
        main(["efficiency", str(missing)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("melhubert: error: ") and err.count("\n") == 1 and "no-checkpoint" in err
    assert "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="no-checkpoint"):
        main(["--debug", "efficiency", str(missing)])


def test_cli_reports_an_unexpected_error_with_its_type_and_the_debug_hint(capsys, tmp_path, monkeypatch):
    ckpt = MelHuBERT(preset("smoke")).save_pretrained(tmp_path / "ckpt")

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(efficiency, "measure", broken)
    with pytest.raises(SystemExit) as exit_info:
        main(["efficiency", str(ckpt)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err == "melhubert: error: RuntimeError: boom second line (an unexpected error; rerun with --debug for " \
                  "the traceback)\n"


def test_committed_notebooks_store_the_outputs_their_checked_cells_compare():
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        checked = [c for c in cells if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked, f"{path.name} has no checked cell"
        for cell in checked:
            assert cell["execution_count"] is not None and cell["outputs"], f"{path.name}: a checked cell has no output"
            assert all(o["output_type"] != "error" for o in cell["outputs"])
        tags = [c.get("metadata", {}).get("tags", []) for c in cells]
        assert sum("parameters" in t for t in tags) == 1, f"{path.name} needs exactly one parameters cell"


def test_a_figure_is_written_with_the_table_it_is_drawn_from(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from melhubert_lib.study.plotting import save_figure

    table = pd.DataFrame({"source": ["a", "b"], "error": [0.25, 0.5], "error_lo": [0.2, 0.4], "error_hi": [0.3, 0.6]})
    fig, ax = plt.subplots()
    ax.plot(table.error)
    written = save_figure(fig, "demo", tmp_path, data=table)
    plt.close(fig)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == ["data/demo.csv", "demo.pdf", "demo.png"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "data" / "demo.csv"), table)
    assert not list(tmp_path.rglob(".*partial*"))  # no temporary left behind


def _parameterized_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('scale = "smoke"\nwork_dir = "w"\nfigures_dir = "f"\nlibrispeech = None\nn = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(repr(librispeech), n * 2)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_run_notebook_passes_corpora_and_parameters_and_writes_elsewhere(tmp_path):
    notebook = _parameterized_notebook(tmp_path / "nb.ipynb")
    original = notebook.read_bytes()
    libri = tmp_path / "LibriSpeech"
    main(["run-notebook", str(notebook), "--scale", "smoke", "--work-dir", str(tmp_path / "work"), "--figures-dir",
          str(tmp_path / "fig"), "--kernel", "python3", "--librispeech", str(libri), "--voxceleb1", "/elsewhere",
          "-p", "n", "21", "--output", str(tmp_path / "out" / "nb.ipynb")])
    assert notebook.read_bytes() == original  # the notebook itself is untouched
    executed = (tmp_path / "out" / "nb.ipynb").read_text()
    assert f"{str(libri.resolve())!r} 42" in executed.replace("\\\\", "\\")
    assert "voxceleb1" not in executed  # a corpus the notebook does not declare is not injected


def test_run_notebook_refuses_a_parameter_the_notebook_does_not_declare(tmp_path, capsys):
    notebook = _parameterized_notebook(tmp_path / "nb.ipynb")
    with pytest.raises(SystemExit):
        main(["run-notebook", str(notebook), "--scale", "smoke", "-p", "steps", "3", "--kernel", "python3"])
    err = capsys.readouterr().err
    assert "no parameter 'steps'" in err and "librispeech, n, scale" in err
    assert not list(tmp_path.glob(".*running*"))


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _make_plan(*overrides: str) -> str:
    """The commands `make figures` would run from scratch (dry run), continuation lines joined."""
    return subprocess.run(["make", "-n", "-B", "figures", *overrides], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.replace("\\\n", " ")


@pytest.mark.parametrize("overrides", [["SCALE=smoke"], ["LIBRISPEECH=/real/LibriSpeech"]])
def test_a_run_other_than_the_default_leaves_the_committed_notebooks_and_figures_alone(overrides):
    plan = _make_plan(*overrides)
    notebook_runs = [line for line in plan.splitlines() if " run-notebook " in line]
    outputs = [re.search(r"--output (\S+)", line) for line in notebook_runs]
    assert len(notebook_runs) == len(NOTEBOOKS) and all(outputs)
    written = [m.group(1) for m in outputs] + re.findall(r"--figures-dir (\S+)", plan)
    written += re.findall(r" summary .*--output (\S+)", plan)
    assert all(path.startswith("work/") for path in written), written


def test_the_default_run_writes_the_committed_notebooks_and_figures():
    plan = _make_plan()
    notebook_runs = [line for line in plan.splitlines() if " run-notebook " in line]
    assert len(notebook_runs) == len(NOTEBOOKS)
    assert all("--figures-dir figures " in line and "--output" not in line for line in notebook_runs)
    assert re.search(r" summary .*--output figures/summary.md", plan)
