"""What the downstream probes read: every layer of a frozen upstream over a task's split, cached on disk.

A `FeatureSource` is a checkpoint (all hidden states: the input projection and every layer) or a
floor (the log-Mel input alone, or with neighbouring frames stacked). Its layers are computed once
per split and stored in float16 under `cache/layers/<source key>-<fingerprint>/` (`layers_dir`: the
frames read, the precision of the model's pass, `DownstreamScale.precision`, and the code that computes the
layers), so training probes for any task and seed never re-runs the upstream. Utterance-level tasks store the
per-layer mean over frames only: mean pooling commutes with the Featurizer's weighted sum, so the pooled cache is
exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import model as model_module
from ..data import representations
from ..data.corpus import LABELED_SPLITS
from ..data.features import FeatureStats
from ..data.frames import FrameStore, cached
from ..data.provenance import code_version, fingerprint
from ..data.representations import stacked_hidden_states
from ..data.tasks import TASKS, TaskData
from ..data.workspace import Workspace, clip_inputs, frames_version, model_inputs
from ..model import MelHuBERT
from ..training.pretrain import resolve_precision


@dataclass(frozen=True)
class FeatureSource:
    """A frozen upstream: a model's hidden states, or log-Mel frames with `context` neighbours each side."""

    name: str  # label in result tables
    key: str  # cache folder name, derived from the content (weights) for models
    model: MelHuBERT | None = None
    context: int = 0  # log-Mel sources only

    @property
    def input_stats(self) -> FeatureStats | None:
        """The input normalisation the model was trained with (None: the workspace's)."""
        return self.model.feature_stats if self.model is not None else None

    @property
    def frame_ms(self) -> int | None:
        """The model's frame rate (None: the scale's)."""
        return self.model.config.frame_ms if self.model is not None else None

    def layers(self, inputs: FrameStore, precision: str) -> FrameStore:
        """Per-utterance (T, n_layers, D) float16 features of model inputs; a model runs in `precision` ("float32" or
        "bfloat16")."""
        if self.model is None:
            feats = stack_context(inputs, self.context) if self.context else inputs
            return feats.map(lambda f: f[:, None, :].astype(np.float16))
        return stacked_hidden_states(self.model, inputs, dtype=np.float16, precision=precision)


def stack_context(store: FrameStore, width: int) -> FrameStore:
    """Concatenate each frame with its `width` neighbours on either side (zeros beyond the edges)."""

    def stack(f: np.ndarray) -> np.ndarray:
        padded = np.pad(f, ((width, width), (0, 0)))
        return np.concatenate([padded[i : i + len(f)] for i in range(2 * width + 1)], axis=1)

    return store.map(stack)


FLOOR_CONTEXT = 4  # log-Mel frames stacked on either side in the context floor
FLOORS = ("log-Mel", f"log-Mel +-{FLOOR_CONTEXT} frames", "untrained")  # the one definition of the floors


def logmel_source(context: int = 0) -> FeatureSource:
    """The log-Mel floor (SUPERB's FBANK row), optionally with +-`context` frames stacked."""
    name = f"log-Mel +-{context} frames" if context else "log-Mel"
    return FeatureSource(name, f"logmel-ctx{context}", context=context)


def floor_sources(untrained: MelHuBERT) -> list[FeatureSource]:
    """The floors every comparison is drawn against, named as `FLOORS`: log-Mel, log-Mel with +-FLOOR_CONTEXT frames
    stacked, and the untrained network (`untrained`: the baseline's architecture with random weights)."""
    return [logmel_source(), logmel_source(FLOOR_CONTEXT), model_source(untrained, FLOORS[2])]


def model_source(model: MelHuBERT, name: str) -> FeatureSource:
    """A model as a feature source; its cache key is its content hash (configuration, weights, input statistics)."""
    return FeatureSource(name, f"model-{model.content_hash()}", model=model.eval())


def task_features(ws: Workspace, source: FeatureSource, task: TaskData, split: str) -> FrameStore:
    """Cached layers of `source` over one split: (T, L, D) per utterance, or (1, L, D) pooled for utterance tasks."""
    pooled = task.spec.kind == "utterance"
    seconds = clip_seconds(ws, task)
    name = task.cache_name(split) + (f"-first{seconds:g}s" if seconds is not None else "")
    path = layers_dir(ws, source) / f"{name}-{'pooled' if pooled else 'frames'}.frames"

    def build() -> FrameStore:
        feats = source.layers(split_inputs(ws, task, split, source.input_stats, source.frame_ms),
                              feature_precision(ws))
        return mean_pool(feats) if pooled else feats

    return cached(Path(path), build)


def layers_dir(ws: Workspace, source: FeatureSource) -> Path:
    """The cache folder of a source's layers: its content key, the frames it reads, the precision of the upstream's
    pass and the code that computes them."""
    code = code_version(__name__, representations, model_module)
    precision = feature_precision(ws) if source.model is not None else "float32"
    return ws.cache / "layers" / f"{source.key}-{fingerprint(frames_version(ws), precision, code)}"


def feature_precision(ws: Workspace) -> str:
    """The precision the upstream's pass for the probes runs in on this CPU: the scale's `DownstreamScale.precision`,
    "auto" resolved to bfloat16 where the CPU multiplies it natively."""
    return resolve_precision(ws.scale.downstream.precision, torch.device("cpu"))


def split_inputs(ws: Workspace, task: TaskData, split: str, stats: FeatureStats | None = None,
                 frame_ms: int | None = None) -> FrameStore:
    """Model inputs (normalised, stacked log-Mel) of one split of a task, in the order of its labels.

    `stats` and `frame_ms`: a model's own input normalisation and frame rate (None: the workspace's). A task with
    `clip_seconds` reads the first that many seconds of each clip.
    """
    seconds = clip_seconds(ws, task)  # checked for every task, so a crop asked of a sequence task is refused
    if task.spec.source == "librispeech":
        return model_inputs(ws, LABELED_SPLITS[split], stats, frame_ms)
    items = task.splits[split]
    inputs = clip_inputs(ws, task.cache_name(split), items.paths, items.ids, stats, frame_ms)
    if seconds is None:
        return inputs
    keep = max(1, round(seconds * 1000 / (frame_ms or ws.scale.frame_ms)))
    return inputs.map(lambda f: f[:keep])  # in memory: a few seconds per clip


def clip_seconds(ws: Workspace, task: TaskData) -> float | None:
    """The seconds of each clip `task` reads (the workspace scale's `DownstreamScale.clip_seconds`; None: whole
    clips). Every task named there must be an utterance-level task: another one's labels cover the whole utterance."""
    clips = ws.scale.downstream.clip_seconds
    wrong = [name for name in clips if name not in TASKS or TASKS[name].kind != "utterance"]
    if wrong:
        utterance_tasks = [name for name, spec in TASKS.items() if spec.kind == "utterance"]
        raise ValueError(f"DownstreamScale.clip_seconds names {wrong}: only utterance-level tasks "
                         f"({', '.join(utterance_tasks)}) can read part of each clip")
    return clips.get(task.spec.name)


def mean_pool(store: FrameStore) -> FrameStore:
    """Mean over each utterance's frames, kept as one (1, L, D) frame per utterance (computed in float32)."""
    return store.map(lambda f: f.astype(np.float32).mean(axis=0, keepdims=True).astype(np.float16))
