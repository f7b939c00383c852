"""SUPERB-style probes on frozen features: s3prl's Featurizer (softmax weights over layers) + a task head.

Heads: PR, a linear layer with CTC over phones; ASR, a small BiLSTM with character CTC; SID and KS,
mean pooling + a linear layer; PC (the baseline's frame-level learning check), a linear layer on every
frame. Each probe trains on the train split, keeps the epoch with the best dev score and reports test.
The probe standardises its input per layer and dimension with train-split statistics before the
Featurizer (a fixed affine map, stored in the probe: it changes no information, only conditioning), so
a trained probe can be applied to fresh hidden states of the same upstream. This is the suite's one
probe system: every probe, the baseline's checks included, trains here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz.distance import Levenshtein
from s3prl.nn import Featurizer
from torch import nn

from ..data.frames import FrameStore
from ..data.tasks import SPLITS, TaskData
from ..data.workspace import Workspace
from ..model import padded_frames
from ..scales import DownstreamScale
from .bootstrap import RateCounts
from .layer_features import FeatureSource, task_features
from .stacked_probes import CLIP_NORM, StackedLinearProbes

BATCH_FRAMES = 4_000  # sequence and frame tasks: frames per batch (small batches: more updates per second on CPU)
BATCH_UTTERANCES = 64  # utterance tasks
IGNORE = -100  # frame-task label of padding frames (cross-entropy's ignore_index)


@dataclass(frozen=True)
class LayerLayout:
    """The three facts s3prl's Featurizer reads from an upstream (it keeps nothing else)."""

    num_layers: int
    hidden_sizes: list[int]
    downsample_rates: list[int]


@dataclass
class TaskResult:
    """One probe: its metrics on dev (selection) and test, and the Featurizer's learned layer weights.

    `dev` and `test` map metric name -> value: the task's metric, plus CER for ASR.
    """

    source: str
    task: str
    metric: str  # the task's headline metric (a key of dev and test)
    seed: int
    dev: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    layer_weights: list[float]
    train_seconds: float
    probe: Probe | None = field(default=None, repr=False, compare=False)  # the selected epoch's probe
    # per metric and test utterance, in split order: errors (edits, misclassified frames, or 1 if misclassified) and
    # units (reference tokens, frames, or 1): what bootstrap intervals resample
    test_errors: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    test_units: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


class Probe(nn.Module):
    """Standardisation, the Featurizer over the layers, an optional BiLSTM, then a linear output layer."""

    def __init__(self, layout: LayerLayout, n_out: int, mean: torch.Tensor, std: torch.Tensor, lstm_hidden: int = 0,
                 lstm_layers: int = 1) -> None:
        super().__init__()
        self.register_buffer("mean", mean)  # (L, D) train-split statistics of the features
        self.register_buffer("std", std)
        self.featurizer = Featurizer(layout)
        width = layout.hidden_sizes[0]
        self.lstm = (nn.LSTM(width, lstm_hidden, lstm_layers, batch_first=True, bidirectional=True)
                     if lstm_hidden else None)
        self.out = nn.Linear(2 * lstm_hidden if lstm_hidden else width, n_out)

    def forward(self, layers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, L, D) features and (B,) lengths -> (B, T, n_out) logits."""
        return self.head(self.standardize_(layers.permute(2, 0, 1, 3).clone()), lengths)

    def standardize_(self, layers: torch.Tensor) -> torch.Tensor:
        """Layer-major (L, B, T, D) features put in the probe's standard units in place, and returned (the same units
        for every seed's probe of one upstream and task)."""
        return layers.sub_(self.mean[:, None, None]).div_(self.std[:, None, None])

    def head(self, layers: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardised layer-major (L, B, T, D) features -> (B, T, n_out) logits."""
        hs, _ = self.featurizer(list(layers.unbind(0)), [lengths] * layers.shape[0])
        if self.lstm is not None:
            # padded rather than packed: packed LSTM backward is ~18x slower on CPU; batches are grouped by
            # length and padding is zero, so the backward direction starts from a few zero frames at most
            hs = self.lstm(hs.masked_fill(padded_frames(lengths, hs.shape[1])[..., None], 0.0))[0]
        return self.out(hs)

    def layer_weights(self) -> list[float]:
        """Softmax weight of each layer ([1.0] for a single-layer source)."""
        if not hasattr(self.featurizer, "weights"):
            return [1.0]
        return F.softmax(self.featurizer.weights.detach(), dim=-1).tolist()


def evaluate_source(ws: Workspace, source: FeatureSource, tasks: list[TaskData],
                    settings: DownstreamScale | None = None, seeds: tuple[int, ...] | None = None,
                    layer: int | None = None) -> list[TaskResult]:
    """Train and score a probe per task and seed on `source`'s cached layers (all seeds of a task in one pass).

    `layer`: the probes read that one hidden state (0 = the encoder input) instead of the Featurizer's weighted sum
    over all of them. The cached layers follow the workspace's scale (its clip lengths and feature precision, which
    key the cache), not `settings`."""
    settings = settings or ws.scale.downstream
    if settings.clip_seconds != ws.scale.downstream.clip_seconds:
        raise ValueError(f"settings.clip_seconds={settings.clip_seconds}: the clips' length is read from the "
                         "workspace's scale (its caches are keyed on it); open the workspace with that scale instead")
    seeds = tuple(seeds if seeds is not None else settings.seeds)
    results = []
    for task in tasks:
        feats = {s: task_features(ws, source, task, s) for s in SPLITS}
        if layer is not None:
            n_layers = feats["train"].data.shape[1]
            if not 0 <= layer < n_layers:
                raise ValueError(f"layer={layer}: source {source.name!r} has hidden states 0 to {n_layers - 1}")
            # a copy: the cache is read-only, and a single-layer slice of it would be the cache itself
            feats = {s: FrameStore(np.array(f.data[:, layer : layer + 1]), f.offsets, f.utt_ids)
                     for s, f in feats.items()}
        results += train_probes(source.name, task, feats, settings, seeds)
    return results


def train_probes(source: str, task: TaskData, feats: dict[str, FrameStore], settings: DownstreamScale,
                 seeds: tuple[int, ...], order_seed: int | None = None) -> list[TaskResult]:
    """Train one probe per seed in a single pass over the data; each selects its own epoch on dev.

    The seeds differ in their probes' initialisation; they share the batches (shuffled by `order_seed`, default the
    first seed) and each batch is read and standardised once for all of them. A seed's probe is computed as it would
    be alone with the same batch order, up to the rounding of the stacked matrix products: the seeds share no
    parameter, optimiser or gradient clipping, but a long training can amplify those last bits into scores a few
    tenths of a point apart.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: give one or more distinct probe seeds (DownstreamScale.seeds)")
    start = time.perf_counter()
    if task.spec.kind == "frame":
        _check_frame_labels(source, task, feats)
    _, n_layers, width = feats["train"].data.shape
    layout = LayerLayout(n_layers, [width] * n_layers, [1] * n_layers)
    name = task.spec.name
    by_length = task.spec.kind != "utterance"
    lstm = settings.asr_hidden if name == "ASR" else 0
    stats = _layer_stats(feats["train"])
    probes = []
    for seed in seeds:
        torch.manual_seed(seed)
        probes.append(Probe(layout, len(task.vocabulary), *stats, lstm, settings.asr_layers))
    lr = settings.learning_rates[name]
    trainer = _SeparateProbes(probes, lr) if lstm else _StackedProbes(probes, lr)
    data = {s: _Split(feats[s], task.splits[s].labels, probes[0].standardize_) for s in SPLITS}
    gen = torch.Generator().manual_seed(seeds[0] if order_seed is None else order_seed)
    best: list[tuple[float, int, dict[str, torch.Tensor], dict[str, float]] | None] = [None] * len(seeds)
    for epoch in range(1, settings.epochs[name] + 1):
        trainer.set_lr(epoch_lr(settings, name, epoch))
        for batch in data["train"].batches(gen, by_length):
            trainer.step(batch)
        for i, dev in enumerate(_score(trainer, data["dev"], task)):
            key = dev.metrics[task.spec.select_metric] * (1 if task.spec.lower_is_better else -1)
            if best[i] is None or key < best[i][0]:
                best[i] = (key, epoch, trainer.snapshot(i), dev.metrics)
    for i, (_, _, state, _) in enumerate(best):
        trainer.restore(i, state)
    tests = _score(trainer, data["test"], task)
    trainer.write_back()
    seconds = (time.perf_counter() - start) / len(seeds)  # each seed's share of the pass
    return [TaskResult(source, name, task.spec.metric, seed, dev, test.metrics, epoch, probe.layer_weights(), seconds,
                       probe.eval(), test.errors, test.units)
            for seed, probe, (_, epoch, _, dev), test in zip(seeds, probes, best, tests, strict=True)]


def epoch_lr(settings: DownstreamScale, task: str, epoch: int) -> float:
    """The probe's learning rate in `epoch` (1-based) of `task`'s training under `settings.lr_schedule`."""
    lr = settings.learning_rates[task]
    if settings.lr_schedule == "linear":
        epochs = settings.epochs[task]
        return lr * (epochs - epoch + 1) / epochs
    return lr


def _check_frame_labels(source: str, task: TaskData, feats: dict[str, FrameStore]) -> None:
    """A frame task's labels must have one class per feature frame (another frame rate would misalign them)."""
    for s in SPLITS:
        labelled = np.array([len(x) for x in task.splits[s].labels])
        if list(feats[s].utt_ids) != list(task.splits[s].ids):
            raise ValueError(f"task {task.spec.name}, split {s}: source {source!r} gives its utterances in another "
                             "order than the labels")
        if not np.array_equal(labelled, feats[s].lengths()):
            raise ValueError(f"task {task.spec.name}, split {s}: the labels have one class per frame of the "
                             f"workspace's frame rate, and source {source!r} gives other frame counts (a model of "
                             "another frame rate?)")


class _Trainer:
    """What both probe trainers share: their optimisers, whose rate the training loop sets."""

    optimizers: list[torch.optim.Optimizer]

    def set_lr(self, lr: float) -> None:
        """Set every seed's learning rate."""
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr


class _StackedProbes(_Trainer):
    """Linear probes of all seeds as one `StackedLinearProbes` with one Adam (elementwise: per seed, as alone)."""

    def __init__(self, probes: list[Probe], lr: float) -> None:
        self.probes, self.stack = probes, StackedLinearProbes(probes)
        self.optimizers = [torch.optim.Adam(self.stack.parameters(), lr=lr)]

    def step(self, batch: _Batch) -> None:
        self.stack.train()
        loss = seeds_loss(self.stack(batch.feats), batch.lengths, batch.labels)
        optimizer = self.optimizers[0]
        optimizer.zero_grad()
        loss.backward()
        self.stack.clip_each_seed()
        optimizer.step()

    def logits(self, layers: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        self.stack.eval()
        return list(self.stack(layers).unbind(0))

    def snapshot(self, i: int) -> dict[str, torch.Tensor]:
        return self.stack.seed_state(i)

    def restore(self, i: int, state: dict[str, torch.Tensor]) -> None:
        self.stack.load_seed_state(i, state)

    def write_back(self) -> None:
        self.stack.write_back(self.probes)


class _SeparateProbes(_Trainer):
    """Probes with a BiLSTM: one module and one Adam per seed, sharing each standardised batch."""

    def __init__(self, probes: list[Probe], lr: float) -> None:
        self.probes = probes
        self.optimizers = [torch.optim.Adam(p.parameters(), lr=lr) for p in probes]

    def step(self, batch: _Batch) -> None:
        for probe, opt in zip(self.probes, self.optimizers, strict=True):
            probe.train()
            loss = logits_loss(probe.head(batch.feats, batch.lengths), batch.lengths, batch.labels)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(probe.parameters(), CLIP_NORM)
            opt.step()

    def logits(self, layers: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        return [probe.eval().head(layers, lengths) for probe in self.probes]

    def snapshot(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.probes[i].state_dict().items()}

    def restore(self, i: int, state: dict[str, torch.Tensor]) -> None:
        self.probes[i].load_state_dict(state)

    def write_back(self) -> None:
        """Nothing to do: the probes are the trained modules."""


def seed_errors(results: list[TaskResult], metric: str) -> RateCounts:
    """The test errors and units of one source's probe seeds for `metric`: what the bootstrap intervals take."""
    return RateCounts(np.stack([r.test_errors[metric] for r in results]),
                      np.stack([r.test_units[metric] for r in results]))


def _layer_stats(store: FrameStore, chunk: int = 32_768) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer and dimension mean and std over all frames (float64 sums over chunks: the store may be large)."""
    total = torch.zeros(store.data.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(store.data), chunk):
        x = torch.from_numpy(np.array(store.data[i : i + chunk])).double()  # a copy: the store may be read-only
        total += x.sum(0)
        total_sq += (x * x).sum(0)
    n = max(len(store.data), 1)
    mean = total / n
    std = (total_sq / n - mean**2).clamp_min(1e-10).sqrt()
    return mean.float(), std.float().clamp_min(1e-5)


@dataclass
class _Batch:
    feats: torch.Tensor  # (L, B, T, D): layer-major, standardised
    lengths: torch.Tensor  # (B,)
    labels: list[list[int]] | torch.Tensor
    rows: list[int]  # the utterances' indices in the split


@dataclass
class _Scored:
    metrics: dict[str, float]
    errors: dict[str, np.ndarray]  # per metric, per utterance
    units: dict[str, np.ndarray]


class _Split:
    """One split's features and labels, served in batches of standardised, layer-major features."""

    def __init__(self, store: FrameStore, labels: list, standardize_: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if len(store) != len(labels):
            raise ValueError(f"{len(store)} feature matrices for {len(labels)} labels")
        self.store, self.labels, self.standardize_ = store, labels, standardize_
        self.lengths = store.lengths()

    def batch(self, rows: list[int]) -> _Batch:
        lengths = torch.from_numpy(self.lengths[rows])
        data, offsets = self.store.data, self.store.offsets
        feats = torch.empty(data.shape[1], len(rows), int(lengths.max()), data.shape[2])
        # one converting copy per utterance, read from the store's memory (not the copy `store[i]` makes) straight
        # into the layer-major batch the probes read, zeros at the padding, then standardised in place: a third of
        # the time of copy, standardise, transpose
        with warnings.catch_warnings():  # torch warns that a read-only memory map is not writable: nothing writes
            warnings.simplefilter("ignore", UserWarning)
            for j, i in enumerate(rows):
                feats[:, j, : lengths[j]] = torch.from_numpy(data[offsets[i] : offsets[i + 1]]).permute(1, 0, 2)
                feats[:, j, lengths[j] :] = 0.0
        self.standardize_(feats)
        labels = [self.labels[i] for i in rows]
        if isinstance(labels[0], np.ndarray):  # frame labels: (B, T), padding frames ignored by the loss
            padded = torch.full(feats.shape[1:3], IGNORE, dtype=torch.long)
            for j, y in enumerate(labels):
                padded[j, : len(y)] = torch.from_numpy(y)
            return _Batch(feats, lengths, padded, rows)
        return _Batch(feats, lengths, labels if isinstance(labels[0], list) else torch.tensor(labels), rows)

    def batches(self, gen: torch.Generator | None, by_length: bool) -> list[_Batch]:
        """Shuffled (with `gen`) or ordered batches; with `by_length` (frame sequences) grouped by length."""
        order = torch.randperm(len(self.labels), generator=gen).tolist() if gen else list(range(len(self.labels)))
        if not by_length:
            return [self.batch(order[i : i + BATCH_UTTERANCES]) for i in range(0, len(order), BATCH_UTTERANCES)]
        lengths = self.lengths
        groups, current, longest = [], [], 0
        for i in sorted(order, key=lambda i: lengths[i]) if gen is None else _bucketed(order, lengths):
            if current and max(longest, lengths[i]) * (len(current) + 1) > BATCH_FRAMES:
                groups.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, int(lengths[i]))
        groups.append(current)
        if gen is not None:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()]
        return [self.batch(g) for g in groups]


def _bucketed(order: list[int], lengths: np.ndarray, bucket: int = 256) -> list[int]:
    """Shuffled order, sorted by length inside buckets of `bucket` utterances (little padding, still random)."""
    return [i for b in range(0, len(order), bucket) for i in sorted(order[b : b + bucket], key=lambda i: lengths[i])]


def probe_loss(probe: Probe, feats: torch.Tensor, lengths: torch.Tensor,
               labels: list[list[int]] | torch.Tensor) -> torch.Tensor:
    """The task loss of a batch: cross-entropy for class labels (a tensor: one per utterance, or (B, T) one per
    frame), CTC for label sequences (lists)."""
    return logits_loss(probe(feats, lengths), lengths, labels)


def logits_loss(logits: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]] | torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the first frame's logits for utterance classes (a 1-D tensor), of every frame's for frame
    classes (a (B, T) tensor), CTC for label sequences (lists)."""
    return seeds_loss(logits[None], lengths, labels)


def seeds_loss(logits: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]] | torch.Tensor) -> torch.Tensor:
    """The sum over seeds of each seed's batch loss, from (S, B, T, C) logits: a seed's gradient is its own loss's.

    A seed's loss is the batch mean of cross-entropy on the first frame (utterance classes, a 1-D tensor), the mean
    over the batch's frames of cross-entropy (frame classes, a (B, T) tensor, padding marked IGNORE), or the batch
    mean of CTC divided by the reference length (label sequences, lists; torch's reduction="mean")."""
    n_seeds, n_utts = logits.shape[:2]
    flat = logits.reshape(n_seeds * n_utts, *logits.shape[2:])
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:
        total = F.cross_entropy(flat.reshape(-1, flat.shape[-1]), labels.repeat(n_seeds, 1).reshape(-1),
                                ignore_index=IGNORE, reduction="sum")
        return total / (labels != IGNORE).sum().clamp_min(1)
    if isinstance(labels, torch.Tensor):
        return F.cross_entropy(flat[:, 0], labels.repeat(n_seeds), reduction="sum") / n_utts
    target_lengths = torch.tensor([len(t) for t in labels])
    targets = torch.cat([torch.tensor(t, dtype=torch.long) for t in labels]).repeat(n_seeds)
    log_probs = flat.log_softmax(-1).transpose(0, 1)
    per_utt = F.ctc_loss(log_probs, targets, lengths.repeat(n_seeds), target_lengths.repeat(n_seeds), blank=0,
                         reduction="none", zero_infinity=True)
    return (per_utt / target_lengths.clamp_min(1).repeat(n_seeds)).sum() / n_utts


@torch.no_grad()
def _score(trainer: _StackedProbes | _SeparateProbes, split: _Split, task: TaskData) -> list[_Scored]:
    """Per probe: accuracy (utterance and frame tasks) or error rates, edits per reference phone (PER), word (WER) or
    character (CER), with each utterance's errors (misclassified frames of a frame task, out of its frames as units);
    every batch is read and standardised once for all probes."""
    n, n_probes = len(split.labels), len(trainer.probes)
    kind = task.spec.kind
    metrics = task.spec.metrics
    errors = {m: np.zeros((n_probes, n)) for m in metrics}
    units = {m: np.ones((n_probes, n)) for m in metrics}
    for batch in split.batches(None, kind != "utterance"):
        for p, logits in enumerate(trainer.logits(batch.feats, batch.lengths)):
            if kind == "utterance":
                errors[task.spec.metric][p, batch.rows] = (logits[:, 0].argmax(-1) != batch.labels).float().numpy()
                continue
            if kind == "frame":
                valid = batch.labels != IGNORE
                wrong = (logits.argmax(-1) != batch.labels) & valid
                errors[task.spec.metric][p, batch.rows] = wrong.sum(1).double().numpy()
                units[task.spec.metric][p, batch.rows] = valid.sum(1).double().numpy()
                continue
            for row, hyp, ref in zip(batch.rows, greedy_ctc(logits, batch.lengths), batch.labels, strict=True):
                for metric, (h, r) in _units(hyp, ref, task).items():
                    errors[metric][p, row], units[metric][p, row] = Levenshtein.distance(r, h), len(r)
    scored = []
    for p in range(n_probes):
        rates = {m: errors[m][p].sum() / max(units[m][p].sum(), 1) for m in metrics}
        if kind != "sequence":
            rates = {task.spec.metric: 1.0 - rates[task.spec.metric]}  # accuracy
        scored.append(_Scored(rates, {m: errors[m][p] for m in metrics}, {m: units[m][p] for m in metrics}))
    return scored


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path per utterance with repeats collapsed and blanks (index 0) removed."""
    paths = logits.argmax(-1)
    out = []
    for path, n in zip(paths, lengths, strict=True):
        seq = torch.unique_consecutive(path[: int(n)]).tolist()
        out.append([t for t in seq if t != 0])
    return out


def _units(hyp: list[int], ref: list[int], task: TaskData) -> dict[str, tuple[list[str], list[str]]]:
    """(hypothesis, reference) units per metric: phones for PER; words and characters for WER and CER."""
    h, r = [task.vocabulary[t] for t in hyp], [task.vocabulary[t] for t in ref]
    if task.spec.name != "ASR":
        return {task.spec.metric: (h, r)}
    h_text, r_text = " ".join("".join(h).split()), " ".join("".join(r).split())
    return {"WER": (h_text.split(), r_text.split()), "CER": (list(h_text), list(r_text))}
