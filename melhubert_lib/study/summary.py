"""The run's results summary: Markdown tables generated from `results/`, so no number in it is typed by hand.

`melhubert summary --scale default` prints it; `make figures` writes it to `figures/summary.md`, which the README
links to. pandas' `to_markdown` needs the tabulate package, which the environment does not carry; the few lines of
`markdown_table` do the same for plain columns.
"""

from __future__ import annotations

import pandas as pd

from ..compression.levels import RESULTS_FILE
from ..compression.methods import CHECKPOINT_RESULTS_FILE
from ..data.workspace import Workspace
from ..probes.judging import DOWNSTREAM_FILE, score_intervals
from ..probes.task_aware import RESULTS_FILE as TASK_AWARE_FILE


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table of `table`'s columns (values as they print)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


COMPRESSION_TABLES = {RESULTS_FILE: "the study's runs", CHECKPOINT_RESULTS_FILE: "runs from other checkpoints "
                      "(imported, FLASH)", TASK_AWARE_FILE: "Q3's task-aware head and layer pruning"}


def compression_summary(ws: Workspace, name: str = RESULTS_FILE) -> pd.DataFrame:
    """Every compression level in results table `name`: run, level, stage, setting, size, cost and held-out SSL
    loss, rounded."""
    levels = pd.read_csv(ws.results / name)
    out = pd.DataFrame({
        "run": levels.run, "level": levels.level,
        "stage": levels["stage"].fillna("") if "stage" in levels else "",
        "setting": levels.setting.map("{:g}".format),
        "params (M)": (levels.params / 1e6).map("{:.2f}".format),
        "non-zero (M)": (levels.nonzero_params / 1e6).map("{:.2f}".format),
        "GMACs/s": (levels.macs_per_second / 1e9).map("{:.3f}".format),
        "RTF": levels.rtf.map("{:.4f}".format),
        "SSL loss after": levels.loss_after.map("{:.3f}".format),
    })
    return out.sort_values(["run", "level"], kind="stable")


def downstream_summary(ws: Workspace) -> pd.DataFrame:
    """Every judged source's headline test score per task: mean over probe seeds with its 95 % interval (%)."""
    scores = pd.read_csv(ws.results / DOWNSTREAM_FILE)
    sources = list(dict.fromkeys(scores.source))
    table = pd.concat([score_intervals(ws, list(dict.fromkeys(rows.source)), [task], headline=True)
                       for task, rows in scores.groupby("task", sort=False)])
    cell = table.apply(lambda r: f"{100 * r.value:.1f} ({100 * r.value_lo:.1f}-{100 * r.value_hi:.1f})", axis=1)
    wide = table.assign(cell=cell, column=table.task + " " + table.metric).pivot(
        index="source", columns="column", values="cell").reindex(sources)
    return wide.fillna("").reset_index()


def results_summary(ws: Workspace) -> str:
    """The Markdown summary of the workspace's results (each part only where its results file exists)."""
    parts = [f"# Results summary: scale `{ws.scale.name}`", "",
             f"Generated from `work/{ws.scale.name}/results/` by `melhubert summary`; do not edit by hand.", ""]
    if (ws.results / DOWNSTREAM_FILE).is_file():
        parts += ["## Downstream test scores (%, mean over probe seeds, 95 % interval over test utterances and seeds)",
                  "", markdown_table(downstream_summary(ws)), ""]
    for name, title in COMPRESSION_TABLES.items():
        if (ws.results / name).is_file():
            parts += [f"## Compression levels: {title} (`{name}`)", "", markdown_table(compression_summary(ws, name)),
                      ""]
    if len(parts) == 4:
        raise FileNotFoundError(f"{ws.results}: no results yet; run `make figures` (or the notebooks) at this scale")
    return "\n".join(parts)
