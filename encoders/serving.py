"""The trained user tower as a `recsys.towers.UserTower` (histories → query vectors, on request, for known users
and anonymous sessions alike) and its item tower's text-only path as a `recsys.towers.ItemTower`."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from encoders.history_text import history_snippets, render_history
from encoders.towers import AdaptedBert, TwoTowerModel, autocast, pick_device
from recsys.catalogue import Catalogue, CatalogueState
from recsys.config import TrainConfig
from recsys.towers import ItemTower, UserTower

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TextPathLoader = Callable[[], "tuple[AdaptedBert, PreTrainedTokenizerBase]"]
"""Loads a sequence tower's BERT text path (the adapted backbone with its trained weights, and its tokenizer)."""


class _TextPath:
    """The tokenizer, and the loader of a BERT not loaded yet, shared by a tower and its `over` copies."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None, load: TextPathLoader | None) -> None:
        self.tokenizer = tokenizer
        self.load = load
        self.lock = threading.Lock()


@dataclass(frozen=True)
class RowTables:
    """A trained tower's per-row tables (`TrainedUserTower._tables`) for the first `rows` rows of a catalogue
    lineage: device buffers whose rows past `rows` are room for appended rows."""

    lineage: object
    rows: int
    vectors: torch.Tensor        # float32 [≥ rows, dim] on the tower's device
    ids: torch.Tensor            # int64 [≥ rows]: ID-embedding positions
    snippets: list[str] | None   # text towers: [≥ rows] history snippets

    @cached_property
    def views(self) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
        """(vectors, ID positions) of the `rows` rows, and the snippets."""
        return self.vectors[:self.rows], self.ids[:self.rows], self.snippets


class TrainedUserTower(UserTower):
    """History encoder over a trained `TwoTowerModel`, reading its items from a `Catalogue`.

    The sequence mode reads the history items' vectors from the catalogue (`columns` of them: the trained block
    of blended vectors), the text and fusion modes also run the PEFT BERT over the history text (item titles or
    texts from the catalogue). ID embeddings belong to the items the model was trained on (`training_ids`, the
    catalogue's ids at construction by default): an item keeps its ID through upserts and compaction, new items
    have none. Unknown item ids are skipped; an empty history gives a zero row (popularity fallback).

    A sequence tower needs no BERT to encode histories: given `load_text_path` (and `model.bert` None) it loads
    its BERT and tokenizer on first use of the item text path (new items, free-text queries, export, save)."""

    def __init__(self, model: TwoTowerModel, config: TrainConfig, catalogue: Catalogue,
                 tokenizer: PreTrainedTokenizerBase | None = None, device: torch.device | None = None,
                 batch_size: int = 256, extra: dict | None = None, report_files: Sequence[Path] = (),
                 columns: slice = slice(None), training_ids: Sequence[str] | None = None,
                 load_text_path: TextPathLoader | None = None) -> None:
        self.model = model
        self.config = config
        self.device = device or pick_device()
        self.model.to(self.device).eval()
        self._catalogue = catalogue
        self.columns = columns
        ids = catalogue.state.ids.tolist() if training_ids is None else list(training_ids)
        self.training_position = {item_id: i for i, item_id in enumerate(ids)}
        self._text = _TextPath(tokenizer, load_text_path if model.bert is None else None)
        self.batch_size = batch_size
        self.extra = extra or {}
        self.report_files = list(report_files)  # training curve / metrics CSV, copied into encoder/training/
        self._derived: RowTables | None = None  # the per-row tables of the latest catalogue lineage read
        self._tables_lock = threading.Lock()     # one table build or extension at a time
        if config.tower.user_tower != "sequence" and (tokenizer is None or model.bert is None):
            raise ValueError(f"user tower {config.tower.user_tower!r} needs the BERT and its tokenizer")

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        return self._text.tokenizer

    @property
    def text_path_loaded(self) -> bool:
        """Whether the BERT of the item text path is in memory (a served sequence tower loads it on first use)."""
        return self.model.bert is not None

    def load_text_path(self) -> None:
        """Load the BERT and tokenizer of the item text path now, if they were left for first use (once, under a
        lock shared with this tower's `over` copies); a no-op when they are loaded or the tower has none."""
        text = self._text
        if self.model.bert is not None or text.load is None:
            return
        with text.lock:
            if self.model.bert is None:
                bert, tokenizer = text.load()
                text.tokenizer = tokenizer  # before the BERT: a tower whose BERT is set is ready to encode
                self.model.bert = bert.to(self.device).eval()

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def over(self, catalogue: Catalogue, columns: slice | None = None) -> "TrainedUserTower":
        """The same model reading `catalogue` (`columns` of its vectors; default: the same columns)."""
        other = copy.copy(self)
        other._catalogue, other._derived, other._tables_lock = catalogue, None, threading.Lock()
        other.columns = self.columns if columns is None else columns
        return other

    @property
    def dim(self) -> int:
        return len(range(*self.columns.indices(self._catalogue.dim)))

    def item_tower(self) -> "TrainedItemTower":
        """The text-only item path (its BERT loaded now, if it was left for first use)."""
        self.load_text_path()
        return TrainedItemTower(self)

    def _tables(self, state: CatalogueState) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
        """Per catalogue rows: the item vectors on the device, each row's ID-embedding position (past the table for
        items without one) and, for text towers, each row's snippet. Only upserts (rows appended) and compaction
        (rows renumbered) change them, so they are kept per catalogue lineage (`CatalogueState.lineage`): a
        deactivation or a deletion flags rows and keeps them (every out-of-stock toggle used to copy the whole
        catalogue to the device and render every snippet again), an upsert appends its rows to them (it used to do
        the same), a compaction builds them again (`_build_tables`). A state of the lineage with fewer rows (a
        request that took it before an upsert) reads the same tables: its rows are their first rows."""
        tables = self._derived
        if tables is None or tables.lineage is not state.lineage or tables.rows < len(state):
            with self._tables_lock:
                tables = self._derived
                if tables is None or tables.lineage is not state.lineage:
                    tables = self._build_tables(state)
                elif tables.rows < len(state):
                    tables = self._appended(tables, state)
                self._derived = tables
        return tables.views

    def _build_tables(self, state: CatalogueState) -> RowTables:
        """The tables of every row of `state`, from scratch."""
        empty = RowTables(state.lineage, 0, torch.empty((0, self.dim), dtype=torch.float32, device=self.device),
                          torch.empty(0, dtype=torch.long, device=self.device),
                          [] if self.config.tower.user_tower != "sequence" else None)
        return self._appended(empty, state)

    def _appended(self, tables: RowTables, state: CatalogueState) -> RowTables:
        """`tables` extended with the rows `state` has past theirs (written past their rows, into room kept at the
        end of their buffers, or a larger copy: readers of `tables` see their rows unchanged)."""
        start, end = tables.rows, len(state)
        vectors, ids = tables.vectors, tables.ids
        if end > len(vectors):
            room = end + end // 8 + 64
            vectors = torch.empty((room, vectors.shape[1]), dtype=vectors.dtype, device=self.device)
            vectors[:start] = tables.vectors[:start]
            ids = torch.empty(room, dtype=ids.dtype, device=self.device)
            ids[:start] = tables.ids[:start]
        vectors[start:end] = torch.as_tensor(np.ascontiguousarray(state.vectors[start:end, self.columns],
                                                                  dtype=np.float32)).to(self.device)
        unknown = int(self.model.id_mask.shape[0])
        ids[start:end] = torch.as_tensor(np.fromiter((self.training_position.get(i, unknown)
                                                      for i in state.ids[start:end].tolist()), np.int64, end - start)
                                         ).to(self.device)
        snippets = tables.snippets
        if snippets is not None:  # (extended in place: earlier tables index only their own rows)
            snippets.extend(history_snippets(state.items[start:end], self.config.tower.history_field))
        return RowTables(state.lineage, end, vectors, ids, snippets)

    def _positions(self, position: dict, history: Sequence[str]) -> list[int]:
        keep = [position[i] for i in history if i in position]
        return keep[-self.config.tower.max_history:]

    @torch.no_grad()
    def encode_positions(self, histories: Sequence[Sequence[int]], state: CatalogueState | None = None) -> torch.Tensor:
        """Non-empty histories of catalogue rows (oldest first) → L2-normalised [B, dim] on the device."""
        item_vectors, id_positions, snippets = self._tables(state or self._catalogue.state)
        tower = self.config.tower
        seq_state = text_state = None
        width = max(len(h) for h in histories)
        padded = torch.zeros(len(histories), width, dtype=torch.long, device=self.device)
        for row, h in enumerate(histories):
            padded[row, :len(h)] = torch.as_tensor(h)
        lengths = torch.as_tensor([len(h) for h in histories], device=self.device)
        last = torch.arange(len(histories), device=self.device), lengths - 1
        penalty = self.model.history_penalty(id_positions[padded], lengths)
        with autocast(self.device, self.config.mixed_precision):
            if tower.user_tower in ("sequence", "fusion"):
                states = self.model.sequence_states(item_vectors, padded, lengths)
                seq_state = states[torch.arange(len(histories), device=self.device), lengths - 1].float()
            if tower.user_tower in ("text", "fusion"):
                texts = [render_history(h, snippets, tower.history_separator, tower.max_history)
                         for h in histories]
                batch = self.tokenizer(texts, padding=True, truncation=True, max_length=tower.history_max_length,
                                       return_tensors="pt").to(self.device)
                text_state = self.model.text_user(batch["input_ids"], batch["attention_mask"]).float()
        return self.model.fuse(seq_state, text_state, None if penalty is None else penalty[last].float())

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows; zero rows for empty/unknown histories."""
        state = self._catalogue.state
        out = np.zeros((len(histories), self.dim), dtype=np.float32)
        positions = [self._positions(state.position, h) for h in histories]
        rows = sorted((r for r, p in enumerate(positions) if p), key=lambda r: len(positions[r]))  # less padding
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            out[chunk] = self.encode_positions([positions[r] for r in chunk], state).cpu().numpy()
        return out

    def id_positions(self, item_ids: Sequence[str | None]) -> np.ndarray:
        """int64 [n]: each item's ID-embedding position (its catalogue position at training, `training_ids`), −1
        for an item the towers were not trained with (added later) or None."""
        return np.fromiter((self.training_position.get(i, -1) if i is not None else -1 for i in item_ids),
                           np.int64, len(item_ids))

    @torch.no_grad()
    def encode_item_texts(self, texts: Sequence[str], item_ids: Sequence[str | None] | None = None,
                          own_neighbours: bool = True) -> np.ndarray:
        """The trained item tower for texts already rendered through the item template (`TrainedItemTower` renders
        records): float32 [n, dim]. The text-only path (a zero ID block), except for the texts of `item_ids` the
        towers were trained on: a new text of a trained item keeps its ID block and, with neighbour features, its
        own neighbours' share, as the towers encode it in training (`TwoTowerModel.item_text_vectors`; with
        `own_neighbours` False, or towers saved before they kept them, a new item's text part)."""
        from encoders.item_bank import encode_texts

        self.load_text_path()
        if self.model.bert is None or self.tokenizer is None:
            raise ValueError("encoding item texts needs the BERT and its tokenizer")
        if item_ids is not None and len(item_ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(item_ids)} item ids")
        features = encode_texts(self.model.bert, self.tokenizer, texts, self.config.tower.item_max_length,
                                self.device, precision=self.config.mixed_precision)
        if not len(features):
            return np.zeros((0, self.dim), dtype=np.float32)
        features = torch.as_tensor(features, device=self.device)
        positions = torch.as_tensor(self.id_positions(item_ids if item_ids is not None else [None] * len(texts)),
                                    device=self.device)
        step = self.batch_size  # a block at a time: a borrowed share compares each row with its whole bank
        return torch.cat([self.model.item_text_vectors(features[i:i + step], positions[i:i + step], own_neighbours)
                          for i in range(0, len(features), step)]).cpu().numpy()

    def save(self, directory: Path) -> None:
        """Adapters (peft format), tokenizer, tower weights (safetensors) and tower.json into `directory`."""
        import shutil

        from encoders.bundle import save_towers
        self.load_text_path()  # the adapters are saved with the towers
        save_towers(self.model, self.config, directory, self.tokenizer, extra=self.extra)
        for file in self.report_files:
            if Path(file).is_file():
                (Path(directory) / "training").mkdir(exist_ok=True)
                shutil.copy2(file, Path(directory) / "training" / Path(file).name)


class TrainedItemTower(ItemTower):
    """A trained tower's item path (records rendered through `template`; the Recommender gives it the catalogue's,
    `Recommender.item_tower`): text-only for new items and queries; a trained item's new text keeps its ID block
    and its own neighbours' share (`encode_texts_of`, `encode_items`)."""

    def __init__(self, tower: TrainedUserTower) -> None:
        self.tower = tower

    @property
    def dim(self) -> int:
        return self.tower.dim

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.tower.encode_item_texts(list(texts))

    def encode_texts_of(self, texts: Sequence[str], item_ids: Sequence[str | None]) -> np.ndarray:
        return self.tower.encode_item_texts(list(texts), list(item_ids))
