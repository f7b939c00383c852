"""Any checkpoint of the suite as an s3prl upstream.

`register()` adds the hub entry `melhubert_suite` to `s3prl.hub`, after which
`S3PRLUpstream("melhubert_suite", path_or_url=<checkpoint dir>)` builds it and s3prl's
`run_downstream.py -u melhubert_suite -k <checkpoint dir>` runs SUPERB recipes on it
(`melhubert s3prl-downstream ...` registers and then hands its arguments to s3prl). An exit of the model (its first
`n_layers` layers; an anytime model's exit head) is served with `n_layers=` or, through run_downstream's
`-g <file>`, a YAML file holding `n_layers: <k>`.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from s3prl import hub
from s3prl.upstream.interfaces import UpstreamBase
from torch.nn.utils.rnn import pad_sequence

from ..data.audio import SAMPLE_RATE
from ..data.features import model_input
from ..model import STATS_NAME, MelHuBERT

HUB_NAME = "melhubert_suite"
RECIPES = Path(__file__).with_name("s3prl_recipes")


class MelHuBERTUpstream(UpstreamBase):
    """s3prl upstream contract: a list of 16 kHz waveforms in, {"hidden_states": [(B, T, D), ...]} out."""

    def __init__(self, ckpt: str | os.PathLike, model_config: str | None = None, n_layers: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model = MelHuBERT.from_pretrained(ckpt)
        if self.model.feature_stats is None:
            raise ValueError(f"{ckpt}: no {STATS_NAME} in the checkpoint, so its input normalisation is unknown; "
                             "save the model with its feature_stats set (pretraining does this)")
        where = "n_layers"
        if n_layers is None and model_config:
            n_layers, where = _exit_from_config(model_config), f"{model_config}: n_layers"
        depth = self.model.config.depth
        if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, int)):
            raise ValueError(f"{where} must be a whole number of layers, got {n_layers!r}")
        if n_layers is not None and not 1 <= n_layers <= depth:
            raise ValueError(f"n_layers={n_layers}: {ckpt} has {depth} layers, serve an exit from 1 to {depth}")
        self.n_layers = n_layers  # None: every layer

    def get_downsample_rates(self, key: str) -> int:
        """Waveform samples per output frame (320 at the 20 ms frame rate)."""
        return SAMPLE_RATE * self.model.config.frame_ms // 1000

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Hidden states of every served layer (the input projection first) for a batch of waveforms."""
        bad = [i for i, w in enumerate(wavs) if not bool(torch.isfinite(w).all())]
        if bad:
            raise ValueError(f"wavs {bad} of the batch hold NaN or infinite samples; hidden states of them would be "
                             "too: check the audio they were read from")
        stats, frame_ms = self.model.feature_stats, self.model.config.frame_ms
        feats = [model_input(w.detach().float().cpu(), stats, frame_ms) for w in wavs]
        lengths = torch.tensor([len(f) for f in feats])
        device = next(self.model.parameters()).device
        out = self.model(pad_sequence(feats, batch_first=True).to(device), lengths.to(device), n_layers=self.n_layers)
        return {"hidden_states": out.hidden_states, "last_hidden_state": out.hidden_states[-1]}


def _exit_from_config(path: str) -> object:
    """`n_layers` as an upstream config file (YAML or JSON: `n_layers: <k>`) sets it, None when it sets none."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"upstream model_config {path!r} is no file: give a YAML file holding n_layers: <k>")
    config = yaml.safe_load(Path(path).read_text()) or {}
    return config.get("n_layers") if isinstance(config, dict) else None


def melhubert_suite(ckpt: str, *args: object, **kwargs: object) -> MelHuBERTUpstream:
    """s3prl hub entry: build the upstream from a checkpoint directory of this suite."""
    if not ckpt or not Path(ckpt).is_dir():
        raise FileNotFoundError(f"{HUB_NAME}: path_or_url / -k must be a checkpoint directory of this suite, "
                                f"got {ckpt!r}")
    kwargs.pop("refresh", None)
    return MelHuBERTUpstream(ckpt, *args, **kwargs)


def register() -> None:
    """Make `melhubert_suite` an s3prl hub entry (S3PRLUpstream and run_downstream look names up there)."""
    setattr(hub, HUB_NAME, melhubert_suite)


def run_downstream(argv: list[str]) -> None:
    """Run s3prl's own run_downstream.py (SUPERB recipes) with this suite's upstream registered.

    Configs for the recipes that run on this suite's corpus layouts are in `RECIPES`.
    """
    from s3prl.downstream.voxceleb1 import dataset as voxceleb1_dataset

    register()
    script = Path(hub.__file__).with_name("run_downstream.py")
    sys.argv = [str(script), *argv]
    with tempfile.TemporaryDirectory(prefix="s3prl-file-lists-") as file_lists:
        # s3prl's voxceleb1 recipe caches its file lists inside its install folder under the split name alone,
        # so a second corpus would silently reuse the first one's lists: every run builds its own
        voxceleb1_dataset.CACHE_PATH = file_lists
        runpy.run_path(str(script), run_name="__main__")
