"""Does an ID-only sequence model add information the engine lacks? A SASRec-style causal transformer over item
IDs (no text) is trained on the train split only, early-stopped on the valid step's N@10 (as the towers are);
then the default re-ranker is cross-fitted on every valid user (benchmarks/ranker_folds.py) with and without two
features from it: the model's score of the candidate and the log of the candidate's rank in the model's full
catalogue ranking. Also reports the model alone (full ranking, valid and test) and its candidate recall@200 beside
the towers'. A probe, not a product feature: nothing here is saved into a bundle. Writes sequence.json,
sequence.md and sequence.png via benchmarks/common.py."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import environment, write_report

MAX_LENGTH = 50
"""The model reads each history's last 50 items."""


class IdSequenceModel(nn.Module):
    """SASRec-style: item + position embeddings, a pre-norm causal transformer, scores = last state · item table.
    Item index 0 is padding; histories are left-padded."""

    def __init__(self, n_items: int, dim: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.3):
        super().__init__()
        self.heads = heads
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(MAX_LENGTH, dim)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.position.weight, std=0.05)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("causal", torch.triu(torch.ones(MAX_LENGTH, MAX_LENGTH, dtype=torch.bool), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, MAX_LENGTH] item indices → [batch, MAX_LENGTH, dim] states (position t has read items ≤ t)."""
        blocked = self.causal[None] | (x == 0)[:, None, :]  # no future items, no padding
        blocked = blocked & ~torch.eye(MAX_LENGTH, dtype=torch.bool, device=x.device)[None]  # never an empty row
        h = self.dropout(self.item(x) + self.position.weight[None])
        return self.norm(self.encoder(h, mask=blocked.repeat_interleave(self.heads, 0)))

    @torch.no_grad()
    def catalogue_scores(self, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """[users, n_items + 1] scores of every item after each history (column 0, padding: -inf)."""
        was_training = self.training
        self.eval()
        scores = torch.cat([self.forward(x[i:i + batch])[:, -1] @ self.item.weight.T for i in range(0, len(x), batch)])
        self.train(was_training)
        scores[:, 0] = -torch.inf
        return scores


def left_padded(histories: Sequence[Sequence[str]], index: Mapping[str, int]) -> torch.Tensor:
    """Histories (oldest first) → [len, MAX_LENGTH] indices of their last items, left-padded with 0 (unknown: 0)."""
    rows = [[index.get(i, 0) for i in h][-MAX_LENGTH:] for h in histories]
    return torch.tensor([[0] * (MAX_LENGTH - len(r)) + r for r in rows], dtype=torch.long)


def target_ranks(scores: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all items (ties counted in its favour)."""
    t = torch.as_tensor(targets)
    return (scores > scores[torch.arange(len(t)), t][:, None]).sum(1).numpy()


def ndcg_recall_at_10(ranks: np.ndarray) -> tuple[float, float]:
    """Mean NDCG@10 and recall@10 of 0-based target ranks."""
    from recsys.metrics import ndcg_at_k, recall_at_k

    return ndcg_at_k(ranks, 10), recall_at_k(ranks, 10)


def catalogue_ranks(scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0-based rank of `items[j]` in the full ranking of history `rows[j]` (`scores` [histories, items]; the
    number of items scored strictly higher), each history's row sorted once instead of comparing every pair."""
    out = np.empty(len(rows), dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(rows[order]) != 0])
    for begin, end in zip(starts, np.r_[starts[1:], len(order)]):
        picked = order[begin:end]
        ascending = np.sort(scores[rows[picked[0]]])
        values = scores[rows[picked[0]], items[picked]]
        out[picked] = len(ascending) - np.searchsorted(ascending, values, side="right")
    return out


def train_sequence_model(sequences: Sequence[Sequence[str]], index: Mapping[str, int], valid_x: torch.Tensor,
                         valid_targets: np.ndarray, *, seed: int = 0, max_epochs: int = 300, patience: int = 6,
                         every: int = 5, batch: int = 128, lr: float = 1e-3, log=print) -> IdSequenceModel:
    """Next-item training on every position of `sequences` (full softmax), valid N@10 checked every `every`
    epochs; stops after `patience` checks without a gain and returns the best state."""
    torch.manual_seed(seed)
    model = IdSequenceModel(len(index))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    usable = [s for s in sequences if len(s) >= 2]
    inputs, outputs = left_padded([s[:-1] for s in usable], index), left_padded([s[1:] for s in usable], index)
    best, best_state, checks_without_gain, started = -1.0, None, 0, time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        for rows in torch.randperm(len(inputs)).split(batch):
            states, targets = model(inputs[rows]), outputs[rows]
            real = targets != 0
            loss = nn.functional.cross_entropy(states[real] @ model.item.weight.T, targets[real])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % every:
            continue
        ndcg, recall = ndcg_recall_at_10(target_ranks(model.catalogue_scores(valid_x), valid_targets))
        log(f"epoch {epoch}: loss {loss.item():.3f}, valid N@10 {ndcg:.4f} R@10 {recall:.4f} "
            f"({time.perf_counter() - started:.0f} s)")
        if ndcg > best:
            best, checks_without_gain = ndcg, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            checks_without_gain += 1
            if checks_without_gain >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


def run(bundle: Path, data: Path, out: Path, seed: int = 0, outer: int = 5, command: str = "",
        max_epochs: int = 300, ranker_overrides: Mapping | None = None, log=print) -> dict[str, Path]:
    """Train the ID-only model on `data`'s train split; cross-fit the re-ranker (the default, or with
    `ranker_overrides`) of `bundle`'s towers with and without its features; write the report."""
    from benchmarks.ranker_folds import SCHEME_COLUMNS, FeatureProbe, scheme_chart
    from jobs.ranker_cmd import open_for_ranker
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import prepare_training

    recommender, split, path, _ = open_for_ranker(bundle, data)
    train = split.train_histories()
    valid_histories, valid_targets = split.valid["history"].to_list(), split.valid["target"].to_list()
    known = {i for h in train.values() for i in h}
    index = {item: k + 1 for k, item in enumerate(sorted(known | set(valid_targets) | set(split.test["target"])
                                                         | {i for h in valid_histories for i in h}))}
    valid_x, valid_t = left_padded(valid_histories, index), np.array([index[t] for t in valid_targets])
    started = time.perf_counter()
    model = train_sequence_model(list(train.values()), index, valid_x, valid_t, seed=seed, max_epochs=max_epochs,
                                 log=log)
    train_s = time.perf_counter() - started
    valid_scores = model.catalogue_scores(valid_x)
    valid_ranks = target_ranks(valid_scores, valid_t)
    valid_alone = ndcg_recall_at_10(valid_ranks)
    test_alone = ndcg_recall_at_10(target_ranks(
        model.catalogue_scores(left_padded(split.test["history"].to_list(), index)),
        np.array([index[t] for t in split.test["target"].to_list()])))
    config = RankerConfig(seed=seed).with_overrides(dict(ranker_overrides or {}))
    own_recall = float((valid_ranks < config.candidates).mean())
    log(f"ID-only model: valid N@10 {valid_alone[0]:.4f} R@10 {valid_alone[1]:.4f}, test N@10 {test_alone[0]:.4f} "
        f"R@10 {test_alone[1]:.4f}, candidate recall@{config.candidates} {own_recall:.4f} ({train_s:.0f} s)")

    training = prepare_training(recommender, split, config, log)
    probe = FeatureProbe(training, config, outer, seed, log)
    rows = probe.query_rows(split.valid)
    scores = valid_scores.numpy()
    items = np.array([index.get(i, 0) for i in probe.frame["item_id"].to_list()])
    own = scores[rows, items]
    catalogue_rank = catalogue_ranks(scores, rows, items)
    probe.add("+ ID-only model's score and log rank",
              {"id_sequence_score": own.astype(np.float32),
               "id_sequence_log_rank": np.log1p(catalogue_rank).astype(np.float32)})
    users, report_rows = probe.users, probe.rows
    towers_recall = training.report[f"candidate_recall@{config.candidates}"]
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle: `{path}`; dataset `{data}`; {len(users):,} valid users in {outer} cross-fitting folds "
             f"(seed {seed}); each ranker fitted on the other folds' users only",
             f"ID-only model (trained on the train split, early-stopped on valid N@10, at most {max_epochs} epochs, "
             f"{train_s:.0f} s): valid N@10 "
             f"{valid_alone[0]:.4f} / R@10 {valid_alone[1]:.4f}; test N@10 {test_alone[0]:.4f} / R@10 "
             f"{test_alone[1]:.4f} (full ranking, history not masked)",
             f"candidate recall@{config.candidates} on valid: the towers' {towers_recall:.4f}, the ID-only model's "
             f"{own_recall:.4f}",
             "N@10 per user over the full catalogue (0 when the target is not among the towers' candidates); "
             "diff: paired difference to the first row, ± its standard error"]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "torch")), "bundle": str(path),
            "data": str(data), "command": command, "seed": seed, "outer_folds": outer,
            "id_model": {"valid": valid_alone, "test": test_alone,
                         f"candidate_recall@{config.candidates}": own_recall, "train_seconds": round(train_s, 1),
                         "max_epochs": max_epochs},
            f"towers_candidate_recall@{config.candidates}": towers_recall}
    return write_report(out, "sequence", report_rows, SCHEME_COLUMNS, meta=meta, notes=notes, chart=scheme_chart,
                        title="An ID-only sequence model's features in the re-ranker, cross-fitted on the valid step")
