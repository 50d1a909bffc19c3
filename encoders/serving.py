"""The trained user tower as a `recsys.user_tower.HistoryEncoder`: histories (item ids) → query vectors, on
request, for known users and anonymous sessions alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from encoders.history_text import render_history
from encoders.towers import TwoTowerModel, autocast, pick_device
from recsys.config import TrainConfig


class TrainedUserTower:
    """History encoder over a trained `TwoTowerModel`.

    The sequence mode reads the history items' vectors from the catalogue (`item_vectors`, the item tower's
    output saved in the bundle); the text and fusion modes also run the PEFT BERT over the history text.
    Unknown item ids are skipped; an empty history gives a zero row (popularity fallback)."""

    def __init__(self, model: TwoTowerModel, config: TrainConfig, item_ids: Sequence[str], item_vectors: np.ndarray,
                 tokenizer: PreTrainedTokenizerBase | None = None, snippets: Sequence[str] | None = None,
                 device: torch.device | None = None, batch_size: int = 256, extra: dict | None = None,
                 report_files: Sequence[Path] = ()) -> None:
        self.model = model
        self.config = config
        self.device = device or pick_device()
        self.model.to(self.device).eval()
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        self.item_vectors = torch.as_tensor(np.ascontiguousarray(item_vectors, dtype=np.float32), device=self.device)
        self.tokenizer = tokenizer
        self.snippets = list(snippets) if snippets is not None else None
        self.batch_size = batch_size
        self.extra = extra or {}
        self.report_files = list(report_files)  # training curve / metrics CSV, copied into encoder/training/
        if config.tower.user_tower != "sequence" and (tokenizer is None or snippets is None or model.bert is None):
            raise ValueError(f"user tower {config.tower.user_tower!r} needs the BERT, its tokenizer and item snippets")

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def _positions(self, history: Sequence[str]) -> list[int]:
        keep = [self.position[i] for i in history if i in self.position]
        return keep[-self.config.tower.max_history:]

    @torch.no_grad()
    def encode_positions(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Non-empty histories of catalogue positions (oldest first) → L2-normalised [B, dim] on the device."""
        tower = self.config.tower
        seq_state = text_state = None
        width = max(len(h) for h in histories)
        padded = torch.zeros(len(histories), width, dtype=torch.long, device=self.device)
        for row, h in enumerate(histories):
            padded[row, :len(h)] = torch.as_tensor(h)
        lengths = torch.as_tensor([len(h) for h in histories], device=self.device)
        last = torch.arange(len(histories), device=self.device), lengths - 1
        penalty = self.model.history_penalty(padded, lengths)
        with autocast(self.device, self.config.mixed_precision):
            if tower.user_tower in ("sequence", "fusion"):
                states = self.model.sequence_states(self.item_vectors, padded, lengths)
                seq_state = states[torch.arange(len(histories), device=self.device), lengths - 1].float()
            if tower.user_tower in ("text", "fusion"):
                texts = [render_history(h, self.snippets, tower.history_separator, tower.max_history)
                         for h in histories]
                batch = self.tokenizer(texts, padding=True, truncation=True, max_length=tower.history_max_length,
                                       return_tensors="pt").to(self.device)
                text_state = self.model.text_user(batch["input_ids"], batch["attention_mask"]).float()
        return self.model.fuse(seq_state, text_state, None if penalty is None else penalty[last].float())

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows; zero rows for empty/unknown histories."""
        out = np.zeros((len(histories), self.dim), dtype=np.float32)
        positions = [self._positions(h) for h in histories]
        rows = sorted((r for r, p in enumerate(positions) if p), key=lambda r: len(positions[r]))  # less padding
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            out[chunk] = self.encode_positions([positions[r] for r in chunk]).cpu().numpy()
        return out

    def add_items(self, item_ids: Sequence[str], vectors: np.ndarray, snippets: Sequence[str] | None = None) -> None:
        """Live catalogue: add or replace item vectors (e.g. from `encode_item_texts`) so histories may use them."""
        matrix = self.item_vectors.clone()
        new_rows = []
        for index, (item_id, vector) in enumerate(zip(item_ids, np.asarray(vectors, dtype=np.float32))):
            row = torch.as_tensor(vector, device=self.device)
            snippet = snippets[index] if snippets is not None else ""
            if item_id in self.position:
                matrix[self.position[item_id]] = row
                if self.snippets is not None and snippets is not None:
                    self.snippets[self.position[item_id]] = snippet
            else:
                self.position[item_id] = len(matrix) + len(new_rows)
                new_rows.append(row)
                if self.snippets is not None:
                    self.snippets.append(snippet)
        self.item_vectors = torch.cat([matrix, torch.stack(new_rows)]) if new_rows else matrix

    @torch.no_grad()
    def encode_item_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The trained item tower's text-only path (no ID embedding) for new items: float32 [n, dim]."""
        from encoders.item_bank import encode_texts

        if self.model.bert is None or self.tokenizer is None:
            raise ValueError("encoding item texts needs the BERT and its tokenizer")
        features = encode_texts(self.model.bert, self.tokenizer, texts, self.config.tower.item_max_length,
                                self.device, precision=self.config.mixed_precision)
        if not len(features):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.text_only_vectors(torch.as_tensor(features, device=self.device)).cpu().numpy()

    def save(self, directory: Path) -> None:
        """Adapters (peft format), tokenizer, tower weights (safetensors) and tower.json into `directory`."""
        import shutil

        from encoders.bundle import save_towers
        save_towers(self.model, self.config, directory, self.tokenizer, extra=self.extra)
        for file in self.report_files:
            if Path(file).is_file():
                (Path(directory) / "training").mkdir(exist_ok=True)
                shutil.copy2(file, Path(directory) / "training" / Path(file).name)
