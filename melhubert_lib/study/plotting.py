"""One figure style for the whole suite, and atomic saving of every figure as PNG and PDF and of its tidy table."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..data.atomic import atomic_path

METHOD_COLOURS = {
    "baseline": "#000000",
    "weight pruning": "#1b9e77",
    "head pruning": "#d95f02",
    "low-rank": "#7570b3",
    "distillation": "#e7298a",
    "first-N layers": "#66a61e",
    "layer pruning": "#a6761d",
    "anytime": "#17becf",
    "combined": "#e31a1c",
    "FLASH": "#6a3d9a",
    "log-Mel": "#999999",
    "log-Mel +-4 frames": "#bbbbbb",
    "untrained": "#e6ab02",
    "pretrained": "#1f78b4",
}


def set_style() -> None:
    """Seaborn's paper theme with readable fonts (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, name: str, figures_dir: str | os.PathLike,
                data: pd.DataFrame | None = None) -> list[Path]:
    """Write `figures_dir/name.png` and `.pdf` atomically, and the tidy table the figure is drawn from (each point
    with its estimate and interval bounds) as `figures_dir/data/name.csv` when given; return the paths."""
    written = []
    for ext in ("png", "pdf"):
        path = Path(figures_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext)
        written.append(path)
    if data is not None:
        written.append(save_table(data, name, figures_dir))
    return written


def save_table(data: pd.DataFrame, name: str, figures_dir: str | os.PathLike) -> Path:
    """Write a tidy results table as `figures_dir/data/name.csv` atomically (beside the figures); return its path."""
    path = Path(figures_dir) / "data" / f"{name}.csv"
    with atomic_path(path) as tmp:
        data.to_csv(tmp, index=False, float_format="%.6g")
    return path


def plot_ssl_levels(ax: plt.Axes, table: pd.DataFrame, x: str, label: str, colour: str, marker: str = "o") -> None:
    """A compression run's held-out SSL loss against column `x` of its level table (`CompressionRun.table()`): after
    fine-tuning (solid) and right after the compression step (dashed)."""
    ax.plot(table[x], table.loss_after, marker=marker, color=colour, label=f"{label}: fine-tuned")
    ax.plot(table[x], table.loss_before, marker=marker, ls="--", alpha=0.6, color=colour,
            label=f"{label}: before fine-tuning")
