"""Item–item contrastive pre-stage: before the towers train, the adapted BERT and the item head learn to put
items that follow each other in the train split's sequences close together, text path only (no ID block).

Each step takes a batch of (item, other item) pairs, encodes every distinct item of the batch through the
adapted upper layers (gradients into the adapters) and applies, per pair, a softmax over the batch's items (the
anchor itself left out): in-batch negatives only, all encoded with the current adapters (negatives from a stale
cached bank would differ from the fresh positives in a way the model could learn instead of the items).
Collaborative signal then lives in the text path too, the path new and rarely bought items take."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def item_pairs(sequences: Sequence[np.ndarray], window: int) -> np.ndarray:
    """(item, other item) pairs, int64 [n, 2]: every occurrence of two items at most `window` steps apart in a
    sequence, in both directions (an item never pairs with itself). Repeats are kept: how often two items go
    together is the signal, and one-off pairs are mostly noise."""
    chunks = []
    for gap in range(1, window + 1):
        firsts = [s[:-gap] for s in sequences if len(s) > gap]
        seconds = [s[gap:] for s in sequences if len(s) > gap]
        if firsts:
            forward = np.stack([np.concatenate(firsts), np.concatenate(seconds)], axis=1)
            chunks += [forward, forward[:, ::-1]]
    if not chunks:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(chunks).astype(np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def pair_batches(pairs: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled [≤ batch_size, 2] batches covering every pair once."""
    order = rng.permutation(len(pairs))
    for start in range(0, len(order), batch_size):
        yield pairs[order[start:start + batch_size]]


def pair_loss(vectors: torch.Tensor, batch: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax cross-entropy of each pair's second item among `vectors` (L2-normalised [n, d], the batch's
    distinct items; `batch` holds row indices into it) for its first item's vector, the anchor left out."""
    anchors, positives = batch[:, 0], batch[:, 1]
    logits = scale * (vectors[anchors] @ vectors.T)
    logits[torch.arange(len(batch), device=logits.device), anchors] = -1e4
    return F.cross_entropy(logits.float(), positives)
