"""Hidden states of a model over a whole set of utterances, batched and without gradients."""

from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np
import torch

from ..model import MelHuBERT
from .atomic import atomic_path
from .batching import collate, eval_batches
from .frames import DATA_NAME, FrameStore, write_index


@torch.no_grad()
def stacked_hidden_states(model: MelHuBERT, feats: FrameStore, layers: list[int] | None = None,
                          batch_seconds: float = 120.0, dtype: np.dtype = np.float32,
                          out: str | os.PathLike | None = None, precision: str = "float32") -> FrameStore:
    """Unmasked hidden states per utterance as one (T, len(layers), D) matrix each; layer 0 is the encoder input.

    `layers` defaults to all (0..depth). Utterances are processed whole, sorted by length, and written
    straight into one preallocated array (no per-utterance copies to concatenate afterwards): in memory, or with
    `out` into a memory-mapped store there (written atomically), so no process holds them whole. `precision`
    "bfloat16" runs the model under autocast (the states are converted to `dtype` either way).
    """
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision={precision!r}: choose 'float32' or 'bfloat16' (resolve 'auto' first)")
    was_training = model.training
    model.eval()
    layers = list(range(model.config.depth + 1)) if layers is None else layers
    per_sec = 1000 // model.config.frame_ms
    lengths = feats.lengths()
    shape = (int(feats.offsets[-1]), len(layers), model.config.d_model)
    out_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    with atomic_path(out) if out is not None else nullcontext() as tmp:
        if tmp is None:
            data = np.empty(shape, dtype=dtype)
        else:
            tmp.mkdir(parents=True)
            data = np.lib.format.open_memmap(tmp / DATA_NAME, mode="w+", dtype=dtype, shape=shape)
        for crops in eval_batches(lengths, int(lengths.max(initial=1)), int(batch_seconds * per_sec)):
            batch = collate(crops, feats)
            device = batch.feats.device.type
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                output = model(batch.feats, batch.lengths, n_layers=max(layers))
            # (B, T, len(layers), D) in the stored dtype, each layer converted as it is copied in (with the copies
            # below, 0.3 of the time of converting, then stacking); then one copy per utterance, not one per layer
            first = output.hidden_states[layers[0]]
            h = torch.empty(*first.shape[:2], len(layers), first.shape[2], dtype=out_dtype)
            for column, layer in enumerate(layers):
                h[:, :, column] = output.hidden_states[layer]
            h = h.numpy()
            for row, c in enumerate(crops):
                start = int(feats.offsets[c.index]) + c.start
                data[start : start + c.length] = h[row, : c.length]
        if tmp is not None:
            data.flush()
            del data
            write_index(tmp, feats.offsets, feats.utt_ids)
    model.train(was_training)
    if out is not None:
        return FrameStore.load(out)
    return FrameStore(data, feats.offsets.copy(), list(feats.utt_ids))


def hidden_states(model: MelHuBERT, feats: FrameStore, layers: list[int] | None = None,
                  batch_seconds: float = 120.0, dtype: np.dtype = np.float32) -> dict[int, FrameStore]:
    """Unmasked hidden states per utterance: {layer: FrameStore}; layer 0 is the encoder input."""
    layers = list(range(model.config.depth + 1)) if layers is None else layers
    stacked = stacked_hidden_states(model, feats, layers, batch_seconds, dtype)
    return {layer: FrameStore(np.ascontiguousarray(stacked.data[:, column]), stacked.offsets, stacked.utt_ids)
            for column, layer in enumerate(layers)}
