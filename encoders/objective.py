"""The towers' training objective, one step's loss (`NextItemObjective`, a part of `encoders.training.Trainer`):
the next-item softmax over the catalogue or the sampled bank (logQ-corrected), the optional in-batch loss of the
items re-encoded through the adapters (`adapter_negatives="fresh"`), history margin, label smoothing, and FGM
adversarial training on the item-text features."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from encoders.adversarial import adversarial_loss
from encoders.history_text import render_history
from encoders.losses import smoothed_cross_entropy
from encoders.towers import autocast

if TYPE_CHECKING:
    from encoders.distributed import WorkerGroup
    from encoders.neighbour_features import NeighbourFeatures
    from encoders.towers import TwoTowerModel
    from encoders.train_data import TrainingData
    from recsys.config import TrainConfig


class NextItemObjective:
    """One training step's loss, given the trainer's state (the attributes below, set by `Trainer.__init__`; the
    bank and the adapters' re-encoding are the trainer's)."""

    config: TrainConfig
    data: TrainingData
    device: torch.device
    model: TwoTowerModel
    workers: WorkerGroup
    negatives: str  # "catalogue" or "bank"
    bank: torch.Tensor | None
    unseen_bank: torch.Tensor | None
    neighbours: NeighbourFeatures | None
    seen: torch.Tensor
    target_share: torch.Tensor
    snippets: list
    tokenizer: object

    def fresh_features(self, rows: torch.Tensor, unseen: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input for catalogue `rows`, re-encoded through the adapters (the trainer's)."""
        raise NotImplementedError

    def _unseen_rows(self, n_rows: int) -> torch.Tensor | None:
        """training's `id_dropout`: a mask of the step's item rows computed as items unseen in training are (no ID
        embedding; with neighbours, their own features alone), so the text path keeps carrying every item."""
        share = self.config.tower.id_dropout
        if share <= 0 or self.model.id_embedding is None and self.neighbours is None:
            return None
        return torch.rand(n_rows, device=self.device) < share

    def _loss(self, batch: tuple, adapters_on: bool, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        config, n_items = self.config, len(self.data.item_ids)
        mode = config.tower.user_tower
        histories = None
        if mode == "sequence":
            inputs, lengths, targets = (t.to(self.device) for t in batch)
            positives = targets[targets >= 0]
            history_rows = inputs[inputs >= 0]
        else:
            histories, positives = batch
            positives = positives.to(self.device)
            lengths = torch.as_tensor([len(h) for h in histories], device=self.device)
            inputs = torch.zeros(len(histories), int(lengths.max()), dtype=torch.long, device=self.device)
            for row, h in enumerate(histories):
                inputs[row, :len(h)] = torch.as_tensor(h, device=self.device)
            history_rows = inputs.flatten()
        if self.negatives == "catalogue":
            rows = torch.arange(n_items, device=self.device)
        else:
            sample = torch.as_tensor(rng.choice(n_items, size=min(config.bank_size, n_items), replace=False),
                                     device=self.device)
            rows = torch.unique(torch.cat([positives, history_rows, sample]))
        lookup = torch.full((n_items,), -1, dtype=torch.long, device=self.device)
        lookup[rows] = torch.arange(len(rows), device=self.device)
        features = self.bank[rows]
        unseen = self._unseen_rows(len(rows))
        if unseen is not None and self.neighbours is not None:
            features = torch.where(unseen[:, None], self.unseen_bank[rows], features)
        fresh = None
        if adapters_on:
            unique = torch.unique(positives)
            per_worker = math.ceil(config.adapter_items_per_step / self.workers.world_size)
            chosen = unique[torch.randperm(len(unique), device=self.device)[:per_worker]]
            chosen_unseen = None if unseen is None else unseen[lookup[chosen]]  # the step's one id_dropout mask
            if config.adapter_negatives == "fresh":
                fresh = (chosen, self.fresh_features(chosen, chosen_unseen), chosen_unseen)
            else:
                features = features.clone()
                features[lookup[chosen]] = self.fresh_features(chosen, chosen_unseen)
        valid = batch[2].to(self.device) >= 0 if mode == "sequence" else None

        def objective(item_features: torch.Tensor) -> torch.Tensor:
            return self._objective(item_features, rows, lookup, inputs, lengths, positives, valid, histories, fresh,
                                   unseen)

        loss = adversarial_loss(objective, features, config.adversarial_eps) if config.adversarial_eps else \
            objective(features)
        return loss, int(len(positives))

    def _objective(self, features: torch.Tensor, rows: torch.Tensor, lookup: torch.Tensor, inputs: torch.Tensor,
                   lengths: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor | None,
                   histories: list | None, fresh: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
                   unseen: torch.Tensor | None = None) -> torch.Tensor:
        """The contrastive loss given the item-text features of `rows` (the catalogue, or the sampled bank); with
        `fresh` (items, their features re-encoded through the adapters, the id_dropout mask over them), plus the
        in-batch loss over those items;
        `unseen`: the rows computed without their ID embedding (`id_dropout`)."""
        config = self.config
        mode = config.tower.user_tower
        with autocast(self.device, config.mixed_precision):
            vectors = self.model.item_vectors(features, rows, unseen)
            history = lookup[inputs].clamp(min=0)
            penalty = self.model.history_penalty(inputs, lengths)
            if mode == "sequence":
                states = self.model.sequence_states(vectors, history, lengths)
                users = self.model.fuse(states[valid].float(), None, None if penalty is None else penalty[valid])
            else:
                seq_state = text_state = None
                if mode == "fusion":
                    states = self.model.sequence_states(vectors, history, lengths)
                    seq_state = states[torch.arange(len(lengths), device=self.device), lengths - 1].float()
                texts = [render_history(h, self.snippets, config.tower.history_separator, config.tower.max_history)
                         for h in histories]
                tokens = self.tokenizer(texts, padding=True, truncation=True,
                                        max_length=config.tower.history_max_length, return_tensors="pt").to(self.device)
                text_state = self.model.text_user(tokens["input_ids"], tokens["attention_mask"]).float()
                if penalty is not None:
                    penalty = penalty[torch.arange(len(lengths), device=self.device), lengths - 1]
                users = self.model.fuse(seq_state, text_state, penalty)
            cosines = users @ vectors.float().T
        targets = lookup[positives]
        if config.history_margin > 0:
            cosines = cosines + config.history_margin * self._history_mask(history, lengths, mode, len(rows), targets)
        logits = self.model.scale * cosines.float()
        if self.negatives == "bank" and config.sampled_correction:
            logits = logits - self._log_inclusion(rows, len(positives))[None, :]
        allowed = self.seen[rows] if config.exclude_unseen_negatives else None
        if allowed is not None:
            logits = logits.masked_fill(~allowed[None, :], -1e4)  # targets are always seen items
        loss = smoothed_cross_entropy(logits, targets, config.label_smoothing, allowed)
        if config.future_weight > 0 and mode == "sequence":
            loss = loss + config.future_weight * self._future_loss(logits, lookup, positives, valid, allowed)
        if fresh is not None:
            loss = loss + self._fresh_loss(users, positives, *fresh)
        return loss

    def _future_loss(self, logits: torch.Tensor, lookup: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor,
                     allowed: torch.Tensor | None) -> torch.Tensor:
        """`future_weight`'s loss: each position's logits (rows: the `valid` positions, row-major; `positives` their
        next items) against the item after its next one, for the positions that have one."""
        after = torch.full(valid.shape, -1, dtype=torch.long, device=self.device)
        flat_next = torch.full(valid.shape, -1, dtype=torch.long, device=self.device)
        flat_next[valid] = positives
        after[:, :-1] = flat_next[:, 1:]
        second = after[valid]
        keep = second >= 0
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return smoothed_cross_entropy(logits[keep], lookup[second[keep]], self.config.label_smoothing, allowed)

    def _fresh_loss(self, users: torch.Tensor, positives: torch.Tensor, items: torch.Tensor,
                    features: torch.Tensor, unseen: torch.Tensor | None = None) -> torch.Tensor:
        """In-batch softmax of the users whose positive is among `items` over `items` alone, every item vector from
        its freshly re-encoded `features` (adapter gradients; `unseen`: those computed without their ID embedding),
        logits logQ-corrected for how items enter the batch (as some user's positive, by their share of the training
        targets)."""
        index = torch.full((len(self.data.item_ids),), -1, dtype=torch.long, device=self.device)
        index[items] = torch.arange(len(items), device=self.device)
        targets = index[positives]
        keep = targets >= 0
        with autocast(self.device, self.config.mixed_precision):
            vectors = self.model.item_vectors(features, items, unseen)
        logits = self.model.scale * (users[keep] @ vectors.float().T)
        if self.config.sampled_correction:
            logits = logits - self._log_inclusion(items, len(positives), uniform=False)[None, :]
        return F.cross_entropy(logits, targets[keep])

    def _log_inclusion(self, rows: torch.Tensor, n_positives: int, uniform: bool = True) -> torch.Tensor:
        """log P(row's item is in a step's sampled set): drawn among the step's `n_positives` in-batch positives
        (by its share of the training targets) or (with `uniform`) by the uniform sample of `bank_size` of the
        catalogue."""
        n_items = len(self.data.item_ids)
        rate = min(self.config.bank_size, n_items) / n_items if uniform else 0.0
        missed = (1 - self.target_share[rows]).pow(n_positives) * (1 - rate)
        return torch.log((1 - missed).clamp(min=1e-12))

    def _history_mask(self, history: torch.Tensor, lengths: torch.Tensor, mode: str, n_rows: int,
                      targets: torch.Tensor) -> torch.Tensor:
        """[n_users, n_rows] float: 1 where a row is in that user's history so far (the target itself excluded)."""
        b, t = history.shape
        valid = torch.arange(t, device=self.device)[None, :] < lengths[:, None]
        onehot = torch.zeros(b, t, n_rows, device=self.device)
        onehot.scatter_(2, history[:, :, None], valid[:, :, None].float())
        if mode == "sequence":
            mask = (onehot.cumsum(dim=1) > 0)[valid]  # position p has seen items 0..p
        else:
            mask = onehot.sum(dim=1) > 0
        mask[torch.arange(len(targets), device=self.device), targets] = False
        return mask.float()
