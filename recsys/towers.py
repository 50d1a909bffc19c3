"""The two tower interfaces every implementation fulfils (one contract test checks them all):

- `UserTower`: histories (item ids, oldest first) → L2-normalised query vectors in the item space, reading the
  items from the `Catalogue` it is bound to (zero-shot pool, trained BERT towers, and the serving wrappers:
  the query-vector cache and the micro-batcher).
- `ItemTower`: item records (or raw texts) → item vectors, through the catalogue's item-text template
  (`TemplatedItemTower`; frozen BERT, a trained tower's text-only path, the blended pair).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.data.item_text import DEFAULT_TEMPLATE, item_texts, query_record

if TYPE_CHECKING:
    from recsys.catalogue import Catalogue


class ItemTower(ABC):
    """Item text → item vector. `template` is the item-text template the model was trained with."""

    template: str = DEFAULT_TEMPLATE

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the vectors."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim] for texts already rendered through the template."""

    def encode_texts_of(self, texts: Sequence[str], item_ids: Sequence[str | None]) -> np.ndarray:
        """float32 [len(texts), dim] for the rendered texts of the items `item_ids` (one per text; None for a text
        of no item). A tower that holds per-item codes (a trained tower's ID embeddings) keeps each known item's, so
        a new text of an item the towers were trained on keeps its ID block; the others encode the texts alone."""
        return self.encode_texts(texts)

    def encode_items(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """float32 [len(records), dim]: each record (item_id, text, title, category, …) rendered through
        `template`, exactly like the catalogue's items at import/training time, and encoded as its item's text
        (`encode_texts_of`: an item the towers were trained on keeps its ID block)."""
        return self.encode_texts_of(item_texts(records, self.template), [r.get("item_id") for r in records])

    def encode_query(self, text: str) -> np.ndarray:
        """float32 [dim]: a free-text query, rendered like an item titled by it (`query_record`)."""
        return self.encode_items([query_record(text, self.template)])[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        """`encode_texts` (the name `VectorIndex.add_texts` and older callers use)."""
        return self.encode_texts(texts)


class TemplatedItemTower(ItemTower):
    """Another item tower rendering records through a given template (the catalogue's `text_template`), its
    model shared, not copied."""

    def __init__(self, tower: ItemTower, template: str) -> None:
        self.tower = tower
        self.template = template

    @property
    def dim(self) -> int:
        return self.tower.dim

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.tower.encode_texts(texts)

    def encode_texts_of(self, texts: Sequence[str], item_ids: Sequence[str | None]) -> np.ndarray:
        return self.tower.encode_texts_of(texts, item_ids)


class UserTower(ABC):
    """Histories → query vectors. A zero row means "nothing known" (the popularity fallback)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the query vectors (= the catalogue's vector width it reads)."""

    @abstractmethod
    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows; zero rows for empty / unknown-only histories.
        Items are read from the bound catalogue at call time (live changes included)."""

    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue whose items the histories refer to."""
        return None

    def over(self, catalogue: Catalogue) -> "UserTower":
        """The same tower (same weights, shared) reading `catalogue` instead."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rebound to another catalogue")

    @property
    def cheap(self) -> bool:
        """True when encoding is numpy work only (fine to run on an event loop)."""
        return False

    def item_tower(self) -> ItemTower | None:
        """The item tower trained with this user tower (new items, text queries), or None when the bundle's
        item tower is the frozen BERT it was built with."""
        return None

    def save(self, directory: Path) -> None:
        """Write its weights into the bundle's `encoder/` directory (nothing for towers without weights)."""

    def close(self) -> None:
        """Stop background work (threads); encoding still works afterwards, without it."""


class WrappedUserTower(UserTower):
    """A serving wrapper around another user tower (cache, micro-batcher): everything but `encode_histories`
    is the wrapped tower's."""

    def __init__(self, tower: UserTower) -> None:
        self.tower = tower

    @property
    def dim(self) -> int:
        return self.tower.dim

    @property
    def catalogue(self) -> Catalogue | None:
        return self.tower.catalogue

    @property
    def cheap(self) -> bool:
        return self.tower.cheap

    def item_tower(self) -> ItemTower | None:
        return self.tower.item_tower()

    def save(self, directory: Path) -> None:
        self.tower.save(directory)

    def close(self) -> None:
        self.tower.close()


def innermost_tower(tower: UserTower) -> UserTower:
    """The user tower under the serving wrappers."""
    while isinstance(tower, WrappedUserTower):
        tower = tower.tower
    return tower


__all__ = ["ItemTower", "UserTower", "WrappedUserTower", "innermost_tower"]
