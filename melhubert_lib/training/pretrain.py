"""Masked-prediction training of MelHuBERT: pretraining, and fine-tuning after compression.

Adam, gradient clipping, optional warm-up + cosine decay, length-bucketed random crops, gradient
accumulation, held-out validation, TensorBoard, a tqdm bar, atomic checkpoints every N steps and
exact resume. Runs as one process or under torchrun (DistributedDataParallel; NCCL on GPUs, gloo
on CPUs): every process builds the same global batch and mask and trains on its share, with the
loss normalised by the global count of masked frames so the update equals the single-process one
(exactly so without dropout; with dropout each process draws its own dropout masks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from .. import model as model_module
from ..data import batching
from ..data.atomic import atomic_path, write_text_atomic
from ..data.batching import Batch, collate, epoch_batches, eval_batches
from ..data.frames import FrameStore
from ..data.provenance import code_version, differing_parts, fingerprint
from ..model import MelHuBERT, MelHuBERTConfig, compute_span_mask
from ..scales import PretrainScale

TRAIN_LOSS_TAG = "mel_hubert_masked_prediction/train-loss"
STATE_NAME = "trainer_state.pt"
EVAL_SEED = 1234


@dataclass
class SSLData:
    """Model inputs (normalised, stacked log-Mel) and cluster targets of one set of utterances."""

    feats: FrameStore
    targets: FrameStore

    def __post_init__(self) -> None:
        if not np.array_equal(self.feats.lengths(), self.targets.lengths()):
            raise ValueError("features and targets disagree on frames per utterance; rebuild the targets")

    def head(self, n: int) -> SSLData:
        """The first `n` utterances (a subset to score with)."""
        n = min(n, len(self.feats))
        return SSLData(*(FrameStore.from_arrays([store[i] for i in range(n)], store.utt_ids[:n])
                         for store in (self.feats, self.targets)))

    def content_hash(self) -> str:
        """A short hash of the inputs and the targets."""
        return fingerprint(self.feats.content_hash(), self.targets.content_hash())


@dataclass
class PartLoss:
    """An objective's result on one micro-batch: the per-frame loss summed over its counted frames, and how many of
    those frames the model got right."""

    summed: torch.Tensor
    correct: float


@dataclass
class StepResult:
    """One update's loss and accuracy per counted frame of the global batch."""

    loss: float
    accuracy: float


class Objective:
    """What a training step minimises; the default is masked prediction of the cluster targets.

    `frames` counts the frames the global batch's loss averages over; `__call__` returns a micro-batch's `PartLoss`.
    """

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters of the objective itself (prediction heads); none for masked prediction."""
        return []

    def state_dict(self) -> dict:
        """State to checkpoint beside the model (for an exact resume)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def to(self, device: torch.device) -> Objective:
        """Move any modules the objective holds to `device`."""
        return self

    def frames(self, batch: Batch, mask: torch.Tensor) -> int:
        """Masked, non-padded frames of the batch."""
        return int(((batch.targets >= 0) & mask).sum())

    def __call__(self, model: torch.nn.Module, part: Batch, mask: torch.Tensor,
                 device: torch.device) -> PartLoss:
        """Summed cross-entropy over the masked frames and the count of correct argmaxes."""
        out = model(part.feats.to(device), part.lengths, part.targets.to(device), mask.to(device))
        return PartLoss(out.training_loss * out.n_masked, float(out.correct))


@dataclass
class SSLMetrics:
    """Held-out masked-prediction loss and accuracy (fixed masks, so comparable across models)."""

    loss: float
    accuracy: float
    n_frames: int


@dataclass(frozen=True)
class Plateau:
    """Stop a run once its held-out loss stopped falling: none of the last `patience` evaluations beat the best
    one before them by more than `tol` nats (the held-out loss uses fixed masks, so it is already smooth)."""

    patience: int = 2
    tol: float = 1e-3

    def reached(self, losses: list[float]) -> bool:
        """True when `losses` (held-out, in evaluation order) have plateaued."""
        if self.patience < 1:
            raise ValueError(f"plateau patience must be at least 1, got {self.patience}")
        if len(losses) <= self.patience:
            return False
        return min(losses[-self.patience:]) > min(losses[: -self.patience]) - self.tol


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model_dir: Path
    steps: int
    metrics: pd.DataFrame  # tidy: step, split, metric, value
    final: SSLMetrics

    @property
    def initial(self) -> SSLMetrics:
        """Held-out metrics of the model as it was handed to `train` (the step-0 evaluation, kept across resumes)."""
        rows = self.metrics[(self.metrics.step == 0) & (self.metrics.split == "valid")].set_index("metric").value
        return SSLMetrics(loss=float(rows["loss"]), accuracy=float(rows["accuracy"]), n_frames=self.final.n_frames)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes."""
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise one CPU/GPU process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(device)
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world=world, device=device)


@torch.no_grad()
def evaluate_ssl(model: MelHuBERT, data: SSLData, max_seconds: float = 15.0, batch_seconds: float = 120.0,
                 device: torch.device | str = "cpu") -> SSLMetrics:
    """Masked-prediction loss/accuracy on held-out data with masks fixed by a constant seed."""
    was_training = model.training
    model.eval()
    per_sec = 1000 // model.config.frame_ms
    gen = torch.Generator().manual_seed(EVAL_SEED)
    total, correct, frames = 0.0, 0, 0
    for crops in eval_batches(data.feats.lengths(), int(max_seconds * per_sec), int(batch_seconds * per_sec)):
        batch = collate(crops, data.feats, data.targets)
        mask = compute_span_mask(tuple(batch.targets.shape), model.config.mask_prob, model.config.mask_span,
                                 batch.lengths, gen)
        out = model(batch.feats.to(device), batch.lengths, batch.targets.to(device), mask)
        total += float(out.loss) * out.n_masked
        correct += out.correct
        frames += out.n_masked
    model.train(was_training)
    return SSLMetrics(loss=total / max(frames, 1), accuracy=correct / max(frames, 1), n_frames=frames)


def lr_factor(step: int, sched: PretrainScale) -> float:
    """Learning-rate multiplier at a step: linear warm-up, then constant or cosine decay to zero."""
    if sched.warmup_steps and step < sched.warmup_steps:
        return (step + 1) / sched.warmup_steps
    if sched.decay == "constant":
        return 1.0
    if sched.decay == "cosine":
        span = max(1, sched.steps - sched.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - sched.warmup_steps) / span)))
    raise ValueError(f"decay={sched.decay!r}: choose 'constant' or 'cosine'")


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("step-*") if (p / STATE_NAME).is_file())


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively (CPU: AVX-512 BF16 or AMX tiles; CUDA: bf16 support)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: `precision` itself, or for "auto" bfloat16 where `device` has it natively."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


def crop_frames(sched: PretrainScale, frame_ms: int) -> int:
    """Frames of one training crop at the model's frame rate."""
    return int(sched.crop_seconds * (1000 // frame_ms))


def check_chunking(cfg: MelHuBERTConfig, sched: PretrainScale) -> None:
    """Refuse, before any work, a FLASH model whose chunk does not divide the training crop (every crop would end in
    a chunk of padding)."""
    crop = crop_frames(sched, cfg.frame_ms)
    if cfg.block == "flash" and crop % cfg.chunk:
        raise ValueError(f"FLASH chunk={cfg.chunk} frames does not divide the training crop of {crop} frames "
                         f"(crop_seconds={sched.crop_seconds} at {cfg.frame_ms} ms): choose a chunk that divides it")


def train(
    model: MelHuBERT,
    train_data: SSLData,
    valid_data: SSLData,
    sched: PretrainScale,
    run_dir: str | os.PathLike,
    seed: int = 0,
    stop_after: int | None = None,
    keep_checkpoints: int = 2,
    prepare: Callable[[MelHuBERT], None] | None = None,
    objective: Objective | None = None,
    plateau: Plateau | None = None,
    provenance: dict | None = None,
) -> TrainResult:
    """Train `model` on masked prediction; resume from the latest checkpoint in `run_dir` if there is one.

    `stop_after` ends the run early at that step (after its checkpoint), as an interruption would;
    calling `train` again continues it. The finished model is saved to `run_dir/model`. `prepare` is
    applied to the model about to train (fresh or resumed), e.g. to register gradient masks.
    `objective` replaces masked prediction (distillation); validation still reports the SSL metrics.
    `plateau` ends the run (as finished) at the first evaluation where the held-out loss has stopped falling;
    `sched.steps` is then the most it may take. A precision of "auto" is resolved for this device first, and the
    resolved one is part of the schedule a resumed run must match. So is the run's provenance: the hashes of the
    model's configuration and of the training and held-out data, the version of the training code, and whatever the
    caller adds in `provenance` (e.g. the checkpoint a compression level starts from); a resume with other
    provenance is refused, naming what differs.
    """
    check_chunking(model.config, sched)
    objective = objective or Objective()
    run_dir = Path(run_dir)
    info = init_distributed()
    sched = dataclasses.replace(sched, precision=resolve_precision(sched.precision, info.device))
    torch.manual_seed(seed)
    schedule_json = json.dumps(dataclasses.asdict(sched), sort_keys=True)
    # the architecture too: a run folder that trained another shape (say a Transformer where FLASH is asked for) is
    # refused instead of resumed
    provenance = {"code": code_version(__name__, model_module, batching), "train_data": train_data.content_hash(),
                  "valid_data": valid_data.content_hash(),
                  "model_config": hashlib.sha1(model.config.to_json().encode()).hexdigest()[:16], **(provenance or {})}
    ckpts = _checkpoints(run_dir)
    if ckpts:
        resumed = MelHuBERT.from_pretrained(ckpts[-1])
        resumed.feature_stats = resumed.feature_stats or model.feature_stats  # checkpoints from before stats were kept
        model = resumed
    model.to(info.device).train()
    if prepare is not None:
        prepare(model)
    objective.to(info.device)
    optimizer = torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=sched.lr, fused=True)
    step, metrics_rows = 0, []
    if ckpts:
        state = torch.load(ckpts[-1] / STATE_NAME, weights_only=True, map_location=info.device)
        if state.get("schedule") != schedule_json:
            raise ValueError(
                f"{run_dir}: the run was started with another schedule ({state.get('schedule')}); resuming it with "
                f"{schedule_json} would mix the two. Use a new run name or folder, or the original settings."
            )
        changed = differing_parts(state.get("provenance") or {}, provenance)
        if changed:
            raise ValueError(
                f"{run_dir}: the run was started from other {', '.join(changed)} than it is asked to resume with "
                f"({'none recorded' if state.get('provenance') is None else 'recorded in its checkpoints'}); its "
                "result would mix the two. Delete the run folder (or `make clean-work`) to train it afresh."
            )
        optimizer.load_state_dict(state["optimizer"])
        objective.load_state_dict(state.get("objective", {}))
        step = int(state["step"])
        metrics_path = run_dir / "metrics.csv"
        if metrics_path.is_file():
            old = pd.read_csv(metrics_path)
            metrics_rows = old[old.step <= step].to_dict("records")
    wrapped = DistributedDataParallel(model) if info.world > 1 else model
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step) if info.is_main else None

    per_sec = 1000 // model.config.frame_ms
    crop = crop_frames(sched, model.config.frame_ms)
    batch_frames = int(sched.batch_seconds * per_sec)
    lengths = train_data.feats.lengths()
    evaluated: tuple[int, SSLMetrics] | None = None  # the latest validation of this call: (step, metrics)
    if step == 0:  # the untrained starting point of the validation curve
        val = evaluate_ssl(model, valid_data, device=info.device)
        evaluated = (0, val)
        metrics_rows += [_row(0, "valid", "loss", val.loss), _row(0, "valid", "accuracy", val.accuracy)]
    epoch, index = _locate(step, lengths, crop, batch_frames, seed)
    batches = epoch_batches(lengths, crop, batch_frames, seed, epoch)
    last_stop = sched.steps if stop_after is None else min(sched.steps, stop_after)
    plateaued = plateau is not None and plateau.reached(_valid_losses(metrics_rows))
    bar = tqdm(total=sched.steps, initial=step, desc=f"train {run_dir.name}", disable=not info.is_main,
               unit="step", dynamic_ncols=True)
    while step < last_stop and not plateaued:
        if index == len(batches):
            epoch, index = epoch + 1, 0
            batches = epoch_batches(lengths, crop, batch_frames, seed, epoch)
        crops = batches[index]  # each process reads the features of its own rows only (targets: all, to count)
        batch = collate(crops, train_data.feats, train_data.targets,
                        rows=rank_rows(len(crops), sched.grad_accum, info.rank, info.world))
        index += 1
        for group in optimizer.param_groups:
            group["lr"] = sched.lr * lr_factor(step, sched)
        result = _train_step(wrapped, model, optimizer, batch, sched, seed, step, info, objective)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.3f}", acc=f"{result.accuracy:.3f}")
        if step % sched.log_every == 0 or step == sched.steps:
            metrics_rows += [_row(step, "train", "loss", result.loss), _row(step, "train", "accuracy", result.accuracy),
                             _row(step, "train", "lr", optimizer.param_groups[0]["lr"])]
            if writer:
                writer.add_scalar(TRAIN_LOSS_TAG, result.loss, step)
                writer.add_scalar("mel_hubert_masked_prediction/train-accuracy", result.accuracy, step)
                writer.add_scalar("mel_hubert_masked_prediction/lr", optimizer.param_groups[0]["lr"], step)
        if step % sched.eval_every == 0 or step == sched.steps:
            val = evaluate_ssl(model, valid_data, device=info.device)
            evaluated = (step, val)
            metrics_rows += [_row(step, "valid", "loss", val.loss), _row(step, "valid", "accuracy", val.accuracy)]
            plateaued = plateau is not None and plateau.reached(_valid_losses(metrics_rows))
            if writer:
                writer.add_scalar("mel_hubert_masked_prediction/valid-loss", val.loss, step)
                writer.add_scalar("mel_hubert_masked_prediction/valid-accuracy", val.accuracy, step)
        if (step % sched.checkpoint_every == 0 or step == last_stop or plateaued) and info.is_main:
            _save_checkpoint(run_dir, model, optimizer, step, metrics_rows, keep_checkpoints,
                             {"schedule": schedule_json, "provenance": provenance, "objective": objective.state_dict()})
        if info.world > 1:
            dist.barrier()
    bar.close()
    if writer:
        writer.close()
    model_dir = run_dir / "model"
    if (step >= sched.steps or plateaued) and info.is_main:
        model.save_pretrained(model_dir)
    if info.world > 1:
        dist.barrier()  # every process may read the finished model next
    # the model has not changed since a validation at this step (each takes a pass over the held-out set)
    final = evaluated[1] if evaluated is not None and evaluated[0] == step else evaluate_ssl(
        model, valid_data, device=info.device)
    return TrainResult(run_dir, model_dir, step, pd.DataFrame(metrics_rows), final)


def _valid_losses(rows: list[dict]) -> list[float]:
    return [r["value"] for r in rows if r["split"] == "valid" and r["metric"] == "loss"]


def _row(step: int, split: str, metric: str, value: float) -> dict:
    return {"step": step, "split": split, "metric": metric, "value": float(value)}


def _locate(step: int, lengths: np.ndarray, crop_frames: int, batch_frames: int, seed: int) -> tuple[int, int]:
    """(epoch, index within the epoch) of the batch used at `step`."""
    epoch = 0
    while True:
        n = len(epoch_batches(lengths, crop_frames, batch_frames, seed, epoch))
        if step < n:
            return epoch, step
        step -= n
        epoch += 1


def _micro_batches(n_rows: int, grad_accum: int) -> list[torch.Tensor]:
    """The row indices of each micro-batch of an `n_rows` global batch (a process trains on every world-th row)."""
    return [m for m in torch.arange(n_rows).chunk(grad_accum) if len(m)]


def rank_rows(n_rows: int, grad_accum: int, rank: int, world: int) -> list[int]:
    """The rows of a global batch that process `rank` of `world` trains on, over all its micro-batches."""
    return [int(r) for micro in _micro_batches(n_rows, grad_accum) for r in micro[rank::world]]


def _train_step(wrapped: torch.nn.Module, model: MelHuBERT, optimizer: torch.optim.Optimizer, batch: Batch,
                sched: PretrainScale, seed: int, step: int, info: DistInfo,
                objective: Objective) -> StepResult:
    """One update over the global batch."""
    cfg = model.config
    gen = torch.Generator().manual_seed(_step_seed(seed, step))
    mask = compute_span_mask(tuple(batch.targets.shape), cfg.mask_prob, cfg.mask_span, batch.lengths, gen)
    n_total = objective.frames(batch, mask)
    torch.manual_seed(_step_seed(seed, step, info.rank + 1))  # dropout
    optimizer.zero_grad(set_to_none=True)
    micro_batches = _micro_batches(batch.feats.shape[0], sched.grad_accum)
    loss_sum, correct = torch.zeros((), device=info.device), torch.zeros((), device=info.device)
    for i, micro in enumerate(micro_batches):
        mine = micro[info.rank :: info.world]
        sync = i == len(micro_batches) - 1
        ctx = wrapped.no_sync() if (info.world > 1 and not sync) else nullcontext()
        with ctx:
            if len(mine) == 0:  # keep DDP's collective calls in step with a zero-contribution pass
                mine = micro[:1]
                scale = 0.0
            else:
                scale = 1.0
            with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=sched.precision == "bfloat16"):
                part = objective(wrapped, batch.select(mine.tolist()), mask[mine], info.device)
            part_sum = part.summed * scale
            (part_sum * info.world / max(n_total, 1)).backward()
            loss_sum += part_sum.detach()
            correct += part.correct * scale
    if info.world > 1:
        dist.all_reduce(loss_sum)
        dist.all_reduce(correct)
    loss = float(loss_sum) / max(n_total, 1)
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"non-finite training loss ({loss}) at step {step + 1}; no checkpoint was written for it. "
            "Lower the learning rate or add warm-up (PretrainScale.lr / warmup_steps) and resume."
        )
    torch.nn.utils.clip_grad_norm_(model.parameters(), sched.clip_norm)
    optimizer.step()
    return StepResult(loss, float(correct) / max(n_total, 1))


def _save_checkpoint(run_dir: Path, model: MelHuBERT, optimizer: torch.optim.Optimizer, step: int,
                     metrics_rows: list[dict], keep: int, run_state: dict) -> None:
    """Write metrics.csv and checkpoints/step-N (weights + config + optimizer) atomically; prune old ones."""
    with atomic_path(run_dir / "metrics.csv") as tmp:
        pd.DataFrame(metrics_rows, columns=["step", "split", "metric", "value"]).to_csv(tmp, index=False)
    target = run_dir / "checkpoints" / f"step-{step:08d}"
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "step": step, **run_state}, tmp / STATE_NAME)
    write_text_atomic(run_dir / "checkpoints" / "latest", target.name + "\n")
    ckpts = _checkpoints(run_dir)
    for old in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(old)
