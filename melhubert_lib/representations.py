"""Hidden states of a model over a whole set of utterances, batched and without gradients."""

from __future__ import annotations

import numpy as np
import torch

from .batching import collate, eval_batches
from .frames import FrameStore
from .model import MelHuBERT


@torch.no_grad()
def hidden_states(model: MelHuBERT, feats: FrameStore, layers: list[int] | None = None,
                  batch_seconds: float = 120.0, dtype: np.dtype = np.float32) -> dict[int, FrameStore]:
    """Unmasked hidden states per utterance: {layer: FrameStore}; layer 0 is the encoder input.

    `layers` defaults to all (0..depth). Utterances are processed whole, sorted by length.
    """
    was_training = model.training
    model.eval()
    layers = list(range(model.config.depth + 1)) if layers is None else layers
    top = max(layers)
    per_sec = 1000 // model.config.frame_ms
    lengths = feats.lengths()
    arrays: dict[int, list[np.ndarray | None]] = {layer: [None] * len(feats) for layer in layers}
    for crops in eval_batches(lengths, int(lengths.max(initial=1)), int(batch_seconds * per_sec)):
        batch = collate(crops, feats)
        out = model(batch.feats, batch.lengths, n_layers=top)
        for layer in layers:
            h = out.hidden_states[layer]
            for row, c in enumerate(crops):
                arrays[layer][c.index] = h[row, : c.length].numpy().astype(dtype)
    model.train(was_training)
    return {layer: FrameStore.from_arrays(arrays[layer], feats.utt_ids) for layer in layers}
