"""The baseline MelHuBERT of a scale: k-means targets, then one or more pretraining iterations.

Iteration 1 learns stage-1 targets (k-means on MFCC + deltas or on log-Mel); each later iteration
re-clusters a hidden layer of the previous model and pretrains a fresh model on those targets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from .. import model as model_module
from ..data import features as features_module
from ..data import representations
from ..data import targets as targets_module
from ..data.atomic import build_lock, write_json_atomic
from ..data.features import FeatureStats, frames_per_stack, stack_frames
from ..data.frames import FrameStore, cached, is_store
from ..data.provenance import code_version, differing_parts, fingerprint, plain
from ..data.representations import stacked_hidden_states
from ..data.targets import Codebook, fit_codebook
from ..data.workspace import Workspace, feature_stats, frames_version, model_inputs, raw_frames
from ..model import MelHuBERT, MelHuBERTConfig, preset
from ..scales import PretrainScale
from .pretrain import SSLData, TrainResult, train

PARTS = ("pretrain-train", "pretrain-valid")
PROVENANCE_FILE = "provenance.json"


@dataclass
class TargetSet:
    """Cluster labels of the pretraining split's two parts, and the codebook that made them."""

    name: str
    codebook: Codebook | None  # None: the labels are a model's own cluster head's (`head_targets`)
    labels: dict[str, FrameStore]  # part -> (T, 1) labels


@dataclass
class BaselineResult:
    """The baseline's iterations: target sets and training runs, last one is the final model."""

    targets: list[TargetSet]
    runs: list[TrainResult]

    @property
    def model_dir(self) -> Path:
        """Directory of the final baseline checkpoint."""
        return self.runs[-1].model_dir


def _target_set(ws: Workspace, name: str, part_frames: Callable[[str], FrameStore], recipe: dict) -> TargetSet:
    """Fit (or load) a codebook on the train part's frames and label both parts; cached under targets/<name>.

    `part_frames(part)` computes the frames to cluster, only when the set is (re)made. A stored set made from another
    `recipe` (settings, input frames, code) is made again, with a message that names what changed. The processes of
    one torchrun job make it once (`build_lock`)."""
    with build_lock(ws.targets_dir(name)):
        return _locked_target_set(ws, name, part_frames, recipe)


def _locked_target_set(ws: Workspace, name: str, part_frames: Callable[[str], FrameStore], recipe: dict) -> TargetSet:
    folder = ws.targets_dir(name)
    book_path, stamp = folder / "codebook.npz", folder / PROVENANCE_FILE
    recipe = plain(recipe)
    complete = book_path.is_file() and all(is_store(folder / f"{p}.frames") for p in PARTS)
    if complete:
        stored = json.loads(stamp.read_text()) if stamp.is_file() else {}
        changed = differing_parts(stored, recipe)
        if not changed:
            labels = {p: FrameStore.load(folder / f"{p}.frames") for p in PARTS}
            return TargetSet(name, Codebook.load(book_path), labels)
        print(f"targets {name}: made from other {', '.join(changed)}; fitting them again", file=sys.stderr)
        book_path.unlink()  # the set is incomplete until the new codebook is written
    t = ws.scale.targets
    frames = {p: part_frames(p) for p in PARTS}
    book = fit_codebook(frames["pretrain-train"], t.n_clusters, t.max_frames, seed=ws.seed)
    labels = {p: book.assign_store(frames[p], out=folder / f"{p}.frames") for p in PARTS}
    write_json_atomic(stamp, recipe)
    book.save(book_path)  # written last: its presence marks a complete target set
    return TargetSet(name, book, labels)


def _recipe(ws: Workspace, *code: ModuleType, **parts: object) -> dict:
    """What a target set is made from: the k-means settings, seed, frame rate, the workspace's frames, the k-means code
    and the `code` modules that compute the clustered frames, and the set's own `parts`."""
    return {"kmeans": ws.scale.targets, "seed": ws.seed, "frame_ms": ws.scale.frame_ms, "frames": frames_version(ws),
            "code": code_version(targets_module, *code), **parts}


def acoustic_targets(ws: Workspace, kind: str | None = None) -> TargetSet:
    """Stage-1 targets: k-means on MFCC + deltas ('mfcc') or log-Mel ('fbank') at the model frame rate."""
    kind = kind or ws.scale.targets.feature
    factor = frames_per_stack(ws.scale.frame_ms)

    def stacked(part: str) -> FrameStore:
        raw = raw_frames(ws, part, kind)
        path = ws.cache / f"{kind}-{part}-stacked{factor}-{fingerprint(raw.key, code_version(features_module))}.frames"
        return cached(path, lambda: raw.map(lambda f: stack_frames(torch.from_numpy(f), factor).numpy(), out=path))

    return _target_set(ws, f"stage1-{kind}-k{ws.scale.targets.n_clusters}", stacked,
                       _recipe(ws, features_module, kind=kind))


def hidden_targets(ws: Workspace, model: MelHuBERT, layer: int, name: str) -> TargetSet:
    """Stage-2 targets: k-means on hidden layer `layer` of a trained model (the layer streamed to a memory-mapped
    store beside the targets, so that no process holds it whole)."""

    def hidden(part: str) -> FrameStore:
        inputs = model_inputs(ws, part)
        path = _hidden_cache(ws, model, layer, part, inputs)
        store = cached(path, lambda: stacked_hidden_states(model, inputs, [layer], out=path))
        return FrameStore(store.data[:, 0], store.offsets, store.utt_ids)  # (T, 1, D) -> (T, D), still mapped

    return _target_set(ws, name, hidden, _recipe(ws, representations, model_module,
                                                 model=model.content_hash(), layer=layer))


def _hidden_cache(ws: Workspace, model: MelHuBERT, layer: int, part: str, inputs: FrameStore) -> Path:
    """Where a model's hidden layer over a pretraining part is cached: keyed on the model, its inputs (their cache
    key holds the frames, normalisation and frame rate) and the code that computes it."""
    key = fingerprint(model.content_hash(), layer, inputs.key, code_version(representations, model_module))
    return ws.cache / f"hidden-{part}-layer{layer}-{key}.frames"


def head_targets(ws: Workspace, model: MelHuBERT) -> TargetSet:
    """Targets for a checkpoint trained elsewhere (an imported one, whose k-means labels are not released): its own
    cluster head's most likely cluster for every unmasked frame of the pretraining split, in the cluster ids the
    head was trained on. Cached under targets/head-<model hash>; the provenance file, written last, marks them
    complete."""
    with build_lock(ws.targets_dir(f"head-{model.content_hash()}")):
        return _locked_head_targets(ws, model)


def _locked_head_targets(ws: Workspace, model: MelHuBERT) -> TargetSet:
    name = f"head-{model.content_hash()}"
    folder, last = ws.targets_dir(name), model.config.depth
    recipe = plain({"model": model.content_hash(), "frames": frames_version(ws),
                    "code": code_version(representations, model_module)})
    stamp = folder / PROVENANCE_FILE
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return TargetSet(name, None, {p: FrameStore.load(folder / f"{p}.frames") for p in PARTS})
    stamp.unlink(missing_ok=True)
    head = model.eval().cluster_head

    @torch.no_grad()
    def most_likely(hidden: np.ndarray) -> np.ndarray:
        return head(torch.from_numpy(hidden[:, 0])).argmax(-1).numpy().astype(np.int16)[:, None]

    labels = {}
    for part in PARTS:
        inputs = model_inputs(ws, part, model.feature_stats, model.config.frame_ms)
        path = _hidden_cache(ws, model, last, part, inputs)
        hidden = cached(path, lambda inputs=inputs, path=path: stacked_hidden_states(model, inputs, [last], out=path))
        labels[part] = hidden.map(most_likely, out=folder / f"{part}.frames")
    write_json_atomic(stamp, recipe)
    return TargetSet(name, None, labels)


def ssl_data(ws: Workspace, targets: TargetSet, stats: FeatureStats | None = None,
             frame_ms: int | None = None) -> dict[str, SSLData]:
    """Model inputs paired with a target set, for both parts of the pretraining split (`stats`, `frame_ms`: a model's
    own input normalisation and frame rate; None: the workspace's)."""
    return {p: SSLData(model_inputs(ws, p, stats, frame_ms), targets.labels[p]) for p in PARTS}


def baseline_config(ws: Workspace, model_preset: str | None = None) -> MelHuBERTConfig:
    """The scale's model preset (or `model_preset`) at the scale's frame rate, with K set to the scale's cluster
    count."""
    return preset(model_preset or ws.scale.model_preset, n_clusters=ws.scale.targets.n_clusters,
                  frame_ms=ws.scale.frame_ms)


def pretrain_baseline(ws: Workspace, name: str = "baseline", sched: PretrainScale | None = None,
                      seed: int | None = None, stop_after: int | None = None,
                      model_preset: str | None = None, targets: TargetSet | None = None) -> BaselineResult:
    """Run (or resume) every target iteration of the baseline; runs live in runs/<name>-iter<i>.

    `model_preset` pretrains another architecture on the same corpus (e.g. "default-flash"; give it its own `name`);
    with `targets` (say the baseline's last target set) it trains once on exactly those instead of making its own
    iterations, so the two architectures differ in nothing else."""
    sched = sched or ws.scale.pretrain
    config = baseline_config(ws, model_preset)  # an unknown preset is refused before any work
    seed = ws.seed if seed is None else seed
    iterations = sched.iterations if targets is None else 1
    target_sets = [acoustic_targets(ws) if targets is None else targets]
    runs: list[TrainResult] = []
    for it in range(1, iterations + 1):
        if it > 1:
            prev = MelHuBERT.from_pretrained(runs[-1].model_dir)
            layer = sched.stage2_layer if sched.stage2_layer >= 0 else max(1, prev.config.depth // 2)
            target_sets.append(hidden_targets(ws, prev, layer, f"{name}-iter{it - 1}-layer{layer}"))
        data = ssl_data(ws, target_sets[-1])
        torch.manual_seed(seed)
        model = MelHuBERT(config, feature_stats(ws))
        runs.append(train(model, data["pretrain-train"], data["pretrain-valid"], sched,
                          ws.run_dir(f"{name}-iter{it}"), seed=seed, stop_after=stop_after))
        if runs[-1].steps < sched.steps:
            break
    return BaselineResult(target_sets, runs)


def untrained_model(ws: Workspace, seed: int | None = None) -> MelHuBERT:
    """The baseline architecture with random weights (a floor for every probe)."""
    torch.manual_seed(ws.seed if seed is None else seed)
    return MelHuBERT(baseline_config(ws), feature_stats(ws)).eval()


def label_counts(targets: TargetSet) -> np.ndarray:
    """How often each cluster occurs in the training part (empty clusters show as zeros)."""
    return np.bincount(targets.labels["pretrain-train"].data[:, 0], minlength=targets.codebook.n_clusters)
