"""Cached item-text states: the frozen lower BERT layers run once per item, the adapted upper layers run for
the periodic catalogue bank refresh (no gradients) and for the positives of each step (with gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from encoders.towers import AdaptedBert, autocast
from recsys.progress import pass_bar

if TYPE_CHECKING:  # (see encoders.text_encoder)
    from transformers import PreTrainedTokenizerBase

FP32_STATE_BYTES = 1 << 30
"""Cached lower-layer token states above this size (in fp32) are stored in fp16."""


class ItemTextCache:
    """Tokenised item texts and their lower-layer token states, kept in memory on `device`."""

    def __init__(self, bert: AdaptedBert, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                 max_length: int, device: torch.device, batch_size: int = 128, precision: str = "auto",
                 progress: bool = False) -> None:
        self.bert = bert
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        tokens = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length,
                           return_tensors="pt")
        self.input_ids = tokens["input_ids"].to(device)
        self.attention_mask = tokens["attention_mask"].to(device)
        self.lengths = self.attention_mask.sum(1)
        n, t = self.input_ids.shape
        # large catalogues keep the cached token states in fp16 (100k items × 40 tokens × 384: 3 GB, not 6)
        dtype = torch.float16 if n * t * bert.hidden_size * 4 > FP32_STATE_BYTES else torch.float32
        self.states = torch.zeros(n, t, bert.hidden_size, device=device, dtype=dtype)
        order = torch.argsort(self.lengths, descending=True)
        with torch.no_grad(), tqdm(total=n, desc="caching lower BERT layers", unit="item",
                                   disable=not progress) as bar:
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                width = int(self.lengths[rows].max())
                with autocast(device, precision):
                    hidden = bert.lower(self.input_ids[rows, :width], self.attention_mask[rows, :width])
                self.states[rows, :width] = hidden.to(dtype)
                bar.update(len(rows))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def features(self, positions: torch.Tensor) -> torch.Tensor:
        """Pooled adapted features [len(positions), hidden] (gradients flow when enabled by the caller)."""
        width = int(self.lengths[positions].max())
        with autocast(self.device, self.precision):
            return self.bert.upper(self.states[positions, :width].float(),
                                   self.attention_mask[positions, :width]).float()

    @torch.no_grad()
    def bank(self, progress: bool = False) -> torch.Tensor:
        """Pooled features of the whole catalogue [n, hidden] with the current adapters (eval mode). `progress`: a
        bar that shows only when the pass takes over `SLOW_PASS_SECONDS` and clears when it ends (training
        refreshes the bank every epoch; on a large catalogue a refresh is minutes of adapted top layers)."""
        was_training = self.bert.training
        self.bert.eval()
        out = torch.empty(len(self), self.bert.feature_size, device=self.device)
        order = torch.argsort(self.lengths, descending=True)
        with pass_bar(len(self), "encoding the catalogue (adapted layers)", "item", progress) as bar:
            for start in range(0, len(self), self.batch_size):
                rows = order[start:start + self.batch_size]
                out[rows] = self.features(rows)
                bar.update(len(rows))
        self.bert.train(was_training)
        return out


def encode_texts(bert: AdaptedBert, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
                 device: torch.device, batch_size: int = 128, precision: str = "auto") -> np.ndarray:
    """Pooled adapted BERT features for arbitrary texts (e.g. new items), float32 [n, hidden]."""
    if not texts:
        return np.zeros((0, bert.feature_size), dtype=np.float32)
    cache = ItemTextCache(bert, tokenizer, texts, max_length, device, batch_size, precision)
    return cache.bank().cpu().numpy()
