"""Training examples for next-item prediction: user sequences as catalogue positions, batching, augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.dataset import Dataset
from recsys.splits import SplitData


@dataclass(frozen=True)
class TrainingData:
    """Training sequences (catalogue positions, oldest first, ≥ 2 items) and which items training has seen."""

    item_ids: list[str]
    sequences: list[np.ndarray]
    seen: np.ndarray  # bool [n_items]

    @property
    def n_targets(self) -> int:
        return int(sum(len(s) - 1 for s in self.sequences))

    def target_counts(self) -> np.ndarray:
        """How often each catalogue item is a training target (the next item of a sequence prefix)."""
        targets = np.concatenate([s[1:] for s in self.sequences]) if self.sequences else np.zeros(0, np.int64)
        return np.bincount(targets, minlength=len(self.item_ids)).astype(np.float64)


def build_training_data(dataset: Dataset, split: SplitData) -> TrainingData:
    """Sequences from the train split only (valid / test targets never leak into training)."""
    item_ids = dataset.items["item_id"].to_list()
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    seen = np.zeros(len(item_ids), dtype=bool)
    sequences = []
    for history in split.train_histories().values():
        rows = np.array([position[i] for i in history if i in position], dtype=np.int64)
        seen[rows] = True
        if len(rows) >= 2:
            sequences.append(rows)
    return TrainingData(item_ids, sequences, seen)


def augment(sequence: np.ndarray, rng: np.random.Generator, crop_prob: float, mask_prob: float,
            reverse_prob: float = 0.0) -> np.ndarray:
    """Random item deletion (`mask_prob` per item), random cropping of the oldest part (`crop_prob`) and, with
    `reverse_prob`, the sequence read backwards; at least two items always remain. An option at 0 draws nothing
    from `rng`, so turning one on leaves the others' draws as they were."""
    if mask_prob > 0 and len(sequence) > 2:
        keep = rng.random(len(sequence)) >= mask_prob
        if keep.sum() >= 2:
            sequence = sequence[keep]
    if crop_prob > 0 and len(sequence) > 2 and rng.random() < crop_prob:
        sequence = sequence[rng.integers(0, len(sequence) - 1):]
    if reverse_prob > 0 and rng.random() < reverse_prob:
        sequence = sequence[::-1].copy()
    return sequence


def length_buckets(lengths: list[int], batch_size: int, rng: np.random.Generator, pool: int = 32) -> list[np.ndarray]:
    """Shuffled batches of indices whose lengths are close (sorted within pools of `pool` batches): far less
    padding than random batches, with the batch order still random."""
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sequence_batches(data: TrainingData, batch_size: int, max_len: int, rng: np.random.Generator,
                     crop_prob: float = 0.0, mask_prob: float = 0.0, reverse_prob: float = 0.0,
                     users: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """(inputs [B, T], lengths [B], targets [B, T] with -100 on padding): every position predicts the next item
    (of the sequence as `augment` left it). `users`: only these sequences (rows of `data.sequences`; default all)."""
    chosen = data.sequences if users is None else [data.sequences[i] for i in users]
    sequences = [augment(s, rng, crop_prob, mask_prob, reverse_prob)[-(max_len + 1):] for s in chosen]
    for rows in length_buckets([len(s) for s in sequences], batch_size, rng):
        seqs = [sequences[i] for i in rows]
        width = max(len(s) - 1 for s in seqs)
        inputs = torch.zeros(len(seqs), width, dtype=torch.long)
        targets = torch.full((len(seqs), width), -100, dtype=torch.long)
        for row, s in enumerate(seqs):
            inputs[row, :len(s) - 1] = torch.from_numpy(s[:-1])
            targets[row, :len(s) - 1] = torch.from_numpy(s[1:])
        yield inputs, torch.tensor([len(s) - 1 for s in seqs]), targets


def single_target_batches(data: TrainingData, batch_size: int, max_len: int, rng: np.random.Generator,
                          per_user: int = 1, crop_prob: float = 0.0, mask_prob: float = 0.0,
                          users: np.ndarray | None = None) -> Iterator[tuple[list[np.ndarray], torch.Tensor]]:
    """(histories, targets [B]): `per_user` random (history prefix → next item) examples per user and epoch,
    for the towers that read the history as text. `users`: only these sequences (default all)."""
    examples = []
    for s in (data.sequences if users is None else [data.sequences[i] for i in users]):
        for t in rng.integers(1, len(s), size=per_user):
            examples.append((augment(s[:t], rng, crop_prob, mask_prob)[-max_len:], int(s[t])))
    for rows in length_buckets([len(h) for h, _ in examples], batch_size, rng):
        chunk = [examples[i] for i in rows]
        yield [h for h, _ in chunk], torch.tensor([t for _, t in chunk])
