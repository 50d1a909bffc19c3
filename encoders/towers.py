"""The two towers: a PEFT BERT item tower (item text → head → L2-normalised vector, optional ID fusion) and
a user tower (a sequence model over item vectors, the same PEFT BERT over the history as text, or both)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from encoders.lora import base_model
from encoders.pooling import pool
from encoders.sequence_model import SequenceModel
from recsys.config import TowerConfig


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, mode: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA ("auto" or "bf16"); a no-op on CPU or with "no"."""
    enabled = device.type == "cuda" and mode in ("auto", "bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class AdaptedBert(nn.Module):
    """A BERT backbone whose top layers carry adapters; the frozen lower part (embeddings + lower layers)
    can be run once per text and cached, the upper part runs with gradients into the adapters."""

    def __init__(self, model: nn.Module, top_layers: int | None, pooling: str = "mean") -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        total = int(base_model(model).config.num_hidden_layers)
        self.split = 0 if top_layers is None else max(0, total - top_layers)

    @property
    def hidden_size(self) -> int:
        return int(base_model(self.model).config.hidden_size)

    def _mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        if base_model(self.model).config._attn_implementation == "sdpa":
            return attention_mask[:, None, None, :].bool()
        return (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states after the embeddings and the frozen lower layers (no gradients)."""
        bert = base_model(self.model)
        with torch.no_grad():
            hidden = bert.embeddings(input_ids=input_ids)
            mask = self._mask(attention_mask)
            for layer in bert.encoder.layer[: self.split]:
                hidden = layer(hidden, mask)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled output of the adapted upper layers, from cached lower states."""
        mask = self._mask(attention_mask)
        for layer in base_model(self.model).encoder.layer[self.split:]:
            hidden = layer(hidden, mask)
        return pool(hidden.float(), attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled [B, hidden] for tokenised texts."""
        return self.upper(self.lower(input_ids, attention_mask), attention_mask)


class MoEAdaptor(nn.Module):
    """Gated mixture of linear experts over the pooled BERT output (UniSRec's MoE adaptor)."""

    def __init__(self, hidden: int, dim: int, experts: int) -> None:
        super().__init__()
        self.center = nn.Parameter(torch.zeros(experts, hidden))
        self.proj = nn.Parameter(torch.randn(experts, hidden, dim) / math.sqrt(hidden))
        self.gate = nn.Linear(hidden, experts, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.gate(x), dim=-1)  # [N, E]
        experts = torch.einsum("neh,ehd->ned", x[:, None, :] - self.center[None], self.proj)
        return (weights[..., None] * experts).sum(dim=1)


class TwoTowerModel(nn.Module):
    """Item tower + user tower sharing one PEFT BERT and one output space.

    item vector = normalise(head(BERT(item text)) + id_embedding · seen_in_training)
    user vector = normalise(sequence model over item vectors | user head(BERT(history text)) | gated fusion)
    """

    def __init__(self, bert: AdaptedBert | None, n_items: int, config: TowerConfig, temperature: float = 0.05,
                 learn_temperature: bool = True, hidden_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.bert = bert  # None when serving a sequence tower from precomputed item vectors
        hidden = bert.hidden_size if bert is not None else int(hidden_size or 0)
        self.item_head = (MoEAdaptor(hidden, config.dim, config.moe_experts) if config.item_head == "moe"
                          else nn.Linear(hidden, config.dim))
        self.id_embedding = nn.Embedding(n_items, config.dim) if config.id_embedding else None
        if self.id_embedding is not None:
            nn.init.zeros_(self.id_embedding.weight)
        self.register_buffer("id_mask", torch.zeros(n_items), persistent=True)
        mode = config.user_tower
        self.sequence = (SequenceModel(config.dim, config.max_history, config.seq_layers, config.seq_heads,
                                       config.seq_dropout) if mode in ("sequence", "fusion") else None)
        self.user_head = nn.Linear(hidden, config.dim) if mode in ("text", "fusion") else None
        self.fusion_gate = nn.Parameter(torch.zeros(())) if mode == "fusion" else None
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)

    # ---- item tower -------------------------------------------------------------------------------
    def item_vectors(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Pooled BERT features of catalogue items at `positions` → L2-normalised item vectors."""
        vectors = self.item_head(features.float())
        if self.id_embedding is not None:
            vectors = vectors + self.id_embedding(positions) * self.id_mask[positions, None]
        return F.normalize(vectors, dim=-1)

    def text_only_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """Item vectors for items unknown at training time (no ID embedding)."""
        return F.normalize(self.item_head(features.float()), dim=-1)

    # ---- user tower -------------------------------------------------------------------------------
    def sequence_states(self, item_vectors: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, dim] unnormalised states; `history` holds rows of `item_vectors` (right-padded)."""
        return self.sequence(item_vectors[history], lengths)

    def text_user(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """History rendered as text → PEFT BERT → user head: [B, dim] unnormalised."""
        return self.user_head(self.bert(input_ids, attention_mask))

    def fuse(self, sequence_state: torch.Tensor | None, text_state: torch.Tensor | None) -> torch.Tensor:
        """Combine the available user states into an L2-normalised user vector."""
        if sequence_state is None:
            return F.normalize(text_state, dim=-1)
        if text_state is None:
            return F.normalize(sequence_state, dim=-1)
        gate = torch.sigmoid(self.fusion_gate)
        return F.normalize(gate * F.normalize(sequence_state, dim=-1) + (1 - gate) * F.normalize(text_state, dim=-1),
                           dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        """Inverse temperature of the contrastive softmax (clamped to [1, 100])."""
        return self.log_scale.exp().clamp(1.0, 100.0)
