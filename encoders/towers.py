"""The two towers: a PEFT BERT item tower (item text → head → L2-normalised vector, optional ID fusion) and
a user tower (a sequence model over item vectors, the same PEFT BERT over the history as text, or both)."""

from __future__ import annotations

import contextlib
import math
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from encoders.layer_stack import layer_stack
from encoders.lora import base_model, is_adapter_parameter
from encoders.neighbour_features import BorrowedShare, OwnNeighbours, own_features_twice
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
    """A BERT-family backbone whose top layers carry adapters (or, with `full`, are trained outright); the frozen
    lower part (embeddings + lower layers) can be run once per text and cached, the upper part runs with gradients
    (`encoders.layer_stack` says how each architecture's layers are run)."""

    def __init__(self, model: nn.Module, top_layers: int | None, pooling: str = "mean", full: bool = False,
                 pool_layers: int = 1) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.full = full
        self.stack = layer_stack(base_model(model))
        total = int(base_model(model).config.num_hidden_layers)
        self.split = 0 if top_layers is None else max(0, total - top_layers)
        if pool_layers > total - self.split + 1:
            raise ValueError(f"pool_layers {pool_layers}: the features can pool the adapted layers' outputs and "
                             f"their input, at most {total - self.split + 1} here (lora.top_layers "
                             f"{top_layers}); raise lora.top_layers or lower tower.pool_layers")
        self.pool_layers = pool_layers

    def tunes(self, name: str) -> bool:
        """True for the weights training changes (`name` relative to this module): adapters, or with `full`
        every weight of the upper layers."""
        if is_adapter_parameter(name):
            return True
        layer = self.stack.layer_index(name) if self.full and name.startswith("model.") else None
        return layer is not None and layer >= self.split

    @property
    def hidden_size(self) -> int:
        return int(base_model(self.model).config.hidden_size)

    @property
    def feature_size(self) -> int:
        """Width of the pooled features: the BERT's width × `pool_layers`."""
        return self.hidden_size * self.pool_layers

    def _mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        if base_model(self.model).config._attn_implementation == "sdpa":
            return attention_mask[:, None, None, :].bool()
        return (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states after the embeddings and the frozen lower layers (no gradients)."""
        bert = base_model(self.model)
        with torch.no_grad():
            hidden = self.stack.embed(bert, input_ids)
            if self.split:
                mask, inputs = self._mask(attention_mask), self.stack.layer_inputs(bert, hidden)
                for layer in self.stack.layers(bert)[: self.split]:
                    hidden = self.stack.run(layer, hidden, mask, inputs)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled output of the adapted upper layers, from cached lower states (with `pool_layers` N > 1: the
        pooled outputs of the last N layers side by side, the last layer's last)."""
        bert = base_model(self.model)
        mask, inputs = self._mask(attention_mask), self.stack.layer_inputs(bert, hidden)
        states = deque([hidden], maxlen=self.pool_layers)  # only the states pooled stay referenced
        for layer in self.stack.layers(bert)[self.split:]:
            hidden = self.stack.run(layer, hidden, mask, inputs)
            states.append(hidden)
        return torch.cat([pool(state.float(), attention_mask, self.pooling) for state in states], dim=-1)

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
        """`hidden_size`: the width of the pooled features when there is no `bert` (serving from item vectors)."""
        super().__init__()
        self.config = config
        self.bert = bert  # None when serving a sequence tower from precomputed item vectors
        hidden = bert.feature_size if bert is not None else int(hidden_size or 0)
        concat = config.id_embedding and config.id_fusion == "concat"  # (TowerConfig checks the shapes fit)
        self.id_dim = config.id_dim if concat else 0
        text_dim = config.dim - self.id_dim
        head_input = 2 * hidden if config.neighbour_features else hidden  # own features (+ the neighbours')
        self.item_head = (MoEAdaptor(head_input, text_dim, config.moe_experts) if config.item_head == "moe"
                          else nn.Linear(head_input, text_dim))
        if config.whiten:  # set from the catalogue's features when training starts (`set_whitening`)
            self.register_buffer("whiten_mean", torch.zeros(hidden), persistent=True)
            self.register_buffer("whiten_matrix", torch.eye(hidden), persistent=True)
        self.borrow = BorrowedShare.for_tower(config, hidden)  # new items' share from their text-nearest items
        self.own_neighbours = OwnNeighbours.for_tower(config, hidden)  # trained items' own (their own file)
        self.id_embedding = nn.Embedding(n_items, self.id_dim or config.dim) if config.id_embedding else None
        if self.id_embedding is not None:
            nn.init.zeros_(self.id_embedding.weight) if not concat else nn.init.normal_(self.id_embedding.weight,
                                                                                       std=0.1)
        self.suppress = nn.Parameter(torch.tensor([-1.0, 0.0])) if config.suppress_history else None  # β, decay
        self.register_buffer("id_mask", torch.zeros(n_items), persistent=True)
        mode = config.user_tower
        self.sequence = (SequenceModel(config.dim, config.max_history, config.seq_layers, config.seq_heads,
                                       config.seq_dropout) if mode in ("sequence", "fusion") else None)
        self.user_head = nn.Linear(hidden, config.dim) if mode in ("text", "fusion") else None
        self.fusion_gate = nn.Parameter(torch.zeros(())) if mode == "fusion" else None
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)

    # ---- item tower -------------------------------------------------------------------------------
    def set_whitening(self, features: torch.Tensor, shrinkage: float = 0.01) -> None:
        """With `whiten`: the ZCA whitening of pooled features like `features` [N, hidden] (their mean and
        covariance, the covariance shrunk towards its mean eigenvalue by `shrinkage`)."""
        x = features.detach().double()
        mean = x.mean(dim=0)
        cov = torch.cov((x - mean).T)
        values, vectors = torch.linalg.eigh(cov)
        values = values.clamp(min=0)
        values = values + max(shrinkage * float(values.mean()), 1e-6)  # (features with no spread: finite still)
        matrix = vectors @ torch.diag(values.rsqrt()) @ vectors.T
        self.whiten_mean.copy_(mean.float())
        self.whiten_matrix.copy_(matrix.float())

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        """The item head over the head's input (whitened first with `whiten`, each BERT-width block alike)."""
        features = features.float()
        if self.config.whiten:
            hidden = self.whiten_mean.shape[0]
            blocks = features.reshape(*features.shape[:-1], -1, hidden)
            features = ((blocks - self.whiten_mean) @ self.whiten_matrix).reshape(features.shape)
        return self.item_head(features).float()

    def item_vectors(self, features: torch.Tensor, positions: torch.Tensor,
                     without_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The item head's input for catalogue items at `positions` (pooled BERT features; with
        `neighbour_features`, followed by their neighbours' mean, `encoders.neighbour_features`) → L2-normalised
        item vectors. `without_ids`: a mask of the items computed without their ID embedding (training's
        `id_dropout`, drawn by the trainer); without one, training draws it here."""
        vectors = self._head(features)  # fp32 even under bf16 autocast
        if self.id_embedding is not None:
            ids = self.id_codes(positions)
            if without_ids is None and self.training and self.config.id_dropout > 0:
                without_ids = torch.rand(ids.shape[:-1], device=ids.device) < self.config.id_dropout
            if without_ids is not None:
                ids = ids * (~without_ids)[..., None]
            return self.with_id_codes(vectors, ids)
        return F.normalize(vectors, dim=-1)

    def with_id_codes(self, text_block: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The item head's output [n, dim − id_dim] with ID codes `ids` (`id_codes`) → L2-normalised item vectors:
        the codes as the last `id_dim` dimensions (`id_fusion` "concat") or added ("sum")."""
        vectors = torch.cat([text_block, ids], dim=-1) if self.id_dim else text_block + ids
        return F.normalize(vectors, dim=-1)

    def id_codes(self, positions: torch.Tensor) -> torch.Tensor:
        """ID embeddings of catalogue positions; zero for items unseen in training or added later."""
        n = self.id_mask.shape[0]
        known = (positions < n).float()
        safe = positions.clamp(max=n - 1)
        return self.id_embedding(safe) * (self.id_mask[safe] * known)[..., None]

    def text_block(self, features: torch.Tensor) -> torch.Tensor:
        """The item head's output [n, dim − id_dim] (not normalised) for pooled BERT features of texts, computed as
        for an item unknown at training time: its own features in the neighbour block, or with `neighbour_borrow` a
        share from its text-nearest items (`item_text_vectors` gives a trained item its own neighbours)."""
        return self._head(self._new_item_input(features))

    def _new_item_input(self, features: torch.Tensor) -> torch.Tensor:
        """The head's input for texts of items unknown at training time (see `text_block`)."""
        if self.config.neighbour_features:
            return own_features_twice(features)
        if self.borrow is not None:
            return self.borrow(features)
        return features

    def own_text_block(self, features: torch.Tensor, own_means: torch.Tensor, own_share: torch.Tensor) -> torch.Tensor:
        """The item head's output [n, dim − id_dim] for texts of catalogue items, given each row's own neighbours'
        means [n, hidden] and share [n] (`OwnNeighbours.lookup`): a row with a share > 0 mixes its features with
        them as training mixed the item (`OwnNeighbours.mix`), the others take a new item's text part
        (`text_block`). The ONNX export's trained graph computes this from its `own_means` / `own_share` inputs."""
        head_input = self._new_item_input(features)
        if self.own_neighbours is not None:
            mixed = self.own_neighbours.mix(features, own_means, own_share)
            head_input = torch.where((own_share > 0)[:, None], mixed, head_input)
        return self._head(head_input)

    @property
    def keeps_own_neighbours(self) -> bool:
        """Whether these towers hold each trained item's own neighbour share (neighbour features, trained or saved
        from stop 59 on): a trained item's new text is then mixed with its own neighbours (`item_text_vectors`)."""
        return self.own_neighbours is not None and self.own_neighbours.saved

    def borrowed_means(self) -> torch.Tensor | None:
        """The borrowed share's neighbour means (its bank's `values`), which `OwnNeighbours` reads when it keeps
        none of its own; None without a borrowed share."""
        return self.borrow.values if self.borrow is not None else None

    def text_only_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """Item vectors from pooled BERT features alone, for items unknown at training time (`text_block` with a
        zero ID block)."""
        vectors = self.text_block(features)
        if self.id_dim:
            vectors = F.pad(vectors, (0, self.id_dim))  # (traceable: the ONNX export keeps a dynamic batch)
        return F.normalize(vectors, dim=-1)

    def item_text_vectors(self, features: torch.Tensor, positions: torch.Tensor,
                          own_neighbours: bool = True) -> torch.Tensor:
        """Item vectors for (new) texts of catalogue items: `positions` their catalogue positions at training, −1
        for an item added after training. Each item's own ID code (`with_id_codes`; zero for −1 and for items
        unseen in training: `text_only_vectors`), so a changed text of a trained item keeps its ID block; the text
        part with neighbour features (`neighbour_mix`, `neighbour_features`): a trained item that had neighbours in
        the training sequences mixes its new features with its own neighbours' means at its own share, as training
        did (`OwnNeighbours`; the neighbours' features as the last catalogue bank left them), so this is
        `item_vectors` exactly; other items, and every item when the towers were saved without their own
        neighbours (or with `own_neighbours` False), take a new item's text part (`text_block`)."""
        if own_neighbours and self.keeps_own_neighbours and len(features):
            block = self.own_text_block(features, *self.own_neighbours.lookup(positions, self.borrowed_means()))
        else:
            block = self.text_block(features)
        if self.id_embedding is None:
            return F.normalize(block, dim=-1)
        codes = self.id_codes(positions.clamp(min=0)) * (positions >= 0)[..., None]
        return self.with_id_codes(block, codes)

    def history_penalty(self, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        """[B, T, dim]: at each position, minus β · Σ_{j ≤ t} decay^(t-j) · id_code(history_j) in the ID block
        (zero elsewhere); None without `suppress_history`. `positions` are catalogue positions [B, T]."""
        if self.suppress is None:
            return None
        b, t = positions.shape
        steps = torch.arange(t, device=positions.device)
        age = (steps[:, None] - steps[None, :]).float()
        decay = torch.sigmoid(self.suppress[1]) ** age.clamp(min=0) * (age >= 0)  # [T, T] causal
        valid = (steps[None, :] < lengths[:, None]).float()[..., None]
        pooled = torch.einsum("ts,bsd->btd", decay, self.id_codes(positions) * valid)
        block = -F.softplus(self.suppress[0]) * pooled
        return torch.cat([block.new_zeros(b, t, self.config.dim - self.id_dim), block], dim=-1)

    # ---- user tower -------------------------------------------------------------------------------
    def sequence_states(self, item_vectors: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, dim] unnormalised states; `history` holds rows of `item_vectors` (right-padded)."""
        return self.sequence(item_vectors[history], lengths)

    def text_user(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """History rendered as text → PEFT BERT → user head: [B, dim] unnormalised."""
        return self.user_head(self.bert(input_ids, attention_mask))

    def fuse(self, sequence_state: torch.Tensor | None, text_state: torch.Tensor | None,
             penalty: torch.Tensor | None = None) -> torch.Tensor:
        """Combine the available user states (plus the history penalty) into an L2-normalised user vector."""
        if sequence_state is None:
            user = F.normalize(text_state, dim=-1)
        elif text_state is None:
            user = F.normalize(sequence_state, dim=-1)
        else:
            gate = torch.sigmoid(self.fusion_gate)
            user = F.normalize(gate * F.normalize(sequence_state, dim=-1)
                               + (1 - gate) * F.normalize(text_state, dim=-1), dim=-1)
        return user if penalty is None else F.normalize(user + penalty, dim=-1)

    def trains(self, name: str) -> bool:
        """True for the parameters and buffers training changes: everything but the frozen BERT weights."""
        return not name.startswith("bert.") or (self.bert is not None and self.bert.tunes(name[len("bert."):]))

    @property
    def scale(self) -> torch.Tensor:
        """Inverse temperature of the contrastive softmax (clamped to [1, 100])."""
        return self.log_scale.exp().clamp(1.0, 100.0)
