"""A light causal transformer over item-tower embeddings (SASRec-like user tower)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm self-attention + feed-forward block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout.p if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + self.dropout(self.out(attn.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class SequenceModel(nn.Module):
    """Histories of item vectors (right-padded, oldest first) → one vector per position.

    Attention is causal, so position t only sees items ≤ t: training predicts every next item at once and
    inference reads the last real position. Positions count from the start of the (truncated) history."""

    def __init__(self, dim: int, max_len: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.max_len = max_len
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.input_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, item_vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """item_vectors [B, T, dim] (T ≤ max_len), lengths [B] ≥ 1 → states [B, T, dim] (unnormalised)."""
        b, t, _ = item_vectors.shape
        positions = torch.arange(t, device=item_vectors.device)
        x = self.dropout(self.input_norm(item_vectors + self.position(positions)[None]))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        valid = positions[None, :] < lengths[:, None]  # [B, T]
        mask = (causal[None] & valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)[None]
        mask = mask[:, None]  # [B, 1, T, T]; the diagonal keeps padded rows finite
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.final_norm(x))

    def last(self, item_vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The state at each history's last real position: [B, dim]."""
        states = self.forward(item_vectors, lengths)
        return states[torch.arange(states.shape[0], device=states.device), lengths - 1]
