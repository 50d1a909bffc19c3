"""The bundle layout, both ways: `Bundle.open(path)` resolves a bundle directory, reads its manifest and verifies its
checksums once, then hands out the typed parts (config, catalogue, index, popularity, histories, re-ranker) on
demand; `write_parts` writes a recommender's parts into a new bundle."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import polars as pl

from recsys.append_only import AppendOnly
from recsys.artifacts import read_manifest, resolve_bundle
from recsys.catalogue import Catalogue
from recsys.config import BuildConfig
from recsys.errors import BundleError
from recsys.histories import Histories, histories_frame
from recsys.popularity import Popularity
from recsys.retrieval import VectorIndex

if TYPE_CHECKING:
    from recsys.pipeline import Recommender
    from recsys.ranker import Reranker

T = TypeVar("T")
logger = logging.getLogger("recsys.bundle")


def _hashes(values: Sequence[str] | pl.Series) -> np.ndarray:
    """uint64 [n]: a 64-bit hash of each string (polars', vectorised: a 100k-item bundle's first lookup took 37 ms
    with it, 0.39 s with hashlib; its values may differ between polars versions, so they are compared within one
    process only)."""
    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Utf8)
    return series.hash(seed=0).to_numpy()


@dataclass(frozen=True)
class OwnTexts:
    """A saved catalogue's (id, text) pairs as 64-bit hashes, sorted by the id's, with each item's row: 24 bytes an
    item, whatever the texts' lengths (1,000 characters each would be ~100 MB at 100k items kept as strings). A lookup
    matches an id's and a text's hashes both: two 64-bit collisions at once before a wrong row is given."""

    ids: np.ndarray    # uint64, sorted
    texts: np.ndarray  # uint64, aligned with ids
    rows: np.ndarray   # int64, aligned with ids

    @classmethod
    def of(cls, items: pl.DataFrame) -> "OwnTexts":
        """From a catalogue frame's `item_id` and `text` columns, in row order (a row without a text never matches)."""
        saved = items.select(pl.col("item_id").cast(pl.Utf8), "text").with_row_index("row") \
            .filter(pl.col("text").is_not_null())
        keys = _hashes(saved["item_id"])
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], _hashes(saved["text"])[order], saved["row"].to_numpy().astype(np.int64)[order])

    def lookup(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """int64 [n]: the saved row of each (id, text) pair, -1 where the id was not saved with that text."""
        keys = _hashes(ids)
        at = np.minimum(np.searchsorted(self.ids, keys), max(len(self.ids) - 1, 0))
        if not len(self.ids):
            return np.full(len(keys), -1, np.int64)
        found = (self.ids[at] == keys) & (self.texts[at] == _hashes(texts))
        return np.where(found, self.rows[at], -1)


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle directory (see ARCHITECTURE.md, "The bundle")."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "Bundle":
        """Resolve `path` (a bundle, or a model directory: its newest version) and read its manifest, checking
        every file's sha256 when `verify`; BundleError otherwise."""
        resolved = resolve_bundle(path)
        return cls(resolved, read_manifest(resolved, verify=verify))

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.parent.name)

    @property
    def encoder_dir(self) -> Path:
        return self.path / "encoder"

    def _read(self, what: str, read: Callable[[], T]) -> T:
        try:
            return read()
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{self.path}: cannot load {what} ({exc})") from exc

    # ---- parts --------------------------------------------------------------------------------
    @cached_property
    def config(self) -> BuildConfig:
        return self._read("config.json",
                          lambda: BuildConfig.model_validate_json((self.path / "config.json").read_text()))

    @cached_property
    def encoder_info(self) -> dict:
        return self._read("encoder/encoder.json", lambda: json.loads((self.encoder_dir / "encoder.json").read_text()))

    @property
    def user_tower_kind(self) -> str:
        """"pooled" (zero-shot, no torch needed) or the trained tower's kind."""
        return self.encoder_info.get("user_tower", "pooled")

    @property
    def has_ranker(self) -> bool:
        return (self.path / "ranker").is_dir()

    @cached_property
    def item_space(self) -> str:
        """Fingerprint of the item tower: vectors from bundles with the same fingerprint live in the same space
        (a frozen BERT's name and settings; a trained tower's weight files)."""
        info = self.encoder_info
        if info.get("kind", "frozen-bert") == "frozen-bert":
            encoder = self.config.encoder
            basis: dict = {"model": info.get("model_name") or info.get("model"), "pooling": encoder.pooling,
                           "max_length": encoder.max_length, "normalize": encoder.normalize}
        else:
            basis = {name: sha for name, sha in self.manifest.get("files", {}).items() if name.startswith("encoder/")}
        return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]

    def catalogue(self) -> Catalogue:
        """Item metadata + vectors (+ the state flags saved with the index)."""
        def read() -> Catalogue:
            items = pl.read_parquet(self.path / "embeddings" / "items.parquet")
            vectors = AppendOnly.read_npy(self.path / "embeddings" / "items.npy")  # room for the first upserts
            flags = None
            state_file, ids_file = self.path / "index" / "state.npy", self.path / "index" / "ids.npy"
            if state_file.exists() and ids_file.exists():
                ids = np.load(ids_file, allow_pickle=False)
                if len(ids) == items.height and ids.astype(str).tolist() == items["item_id"].cast(pl.Utf8).to_list():
                    flags = np.load(state_file, allow_pickle=False)
            return Catalogue(items, vectors, flags)

        return self._read("the catalogue (embeddings/)", read)

    @cached_property
    def _own_texts(self) -> OwnTexts:
        """The saved catalogue's ids and texts as hashes, with their rows: read from items.parquet once, on the first
        call of `own_vectors` (not at load: most bundles never need it)."""
        items = pl.read_parquet(self.path / "embeddings" / "items.parquet", columns=["item_id", "text"])
        return OwnTexts.of(items)

    @cached_property
    def _own_vectors(self) -> np.ndarray:
        """embeddings/items.npy, memory-mapped once (rows are read when taken)."""
        return np.load(self.path / "embeddings" / "items.npy", mmap_mode="r", allow_pickle=False)

    def own_vectors(self, texts: Mapping[str, str]) -> dict[str, np.ndarray]:
        """item id → this bundle's own vector, for the items of `texts` (item id → text) that the bundle was saved
        with under that very text: an upsert that gives an item back its text (a feed undoing an earlier one)
        serves the item as the bundle did, a trained item with its ID block. The saved ids and texts are read once
        per bundle, and kept as 64-bit hashes (`OwnTexts`), not as texts."""
        if not texts:
            return {}
        try:
            rows = self._own_texts.lookup(list(texts), list(texts.values()))
            vectors = self._own_vectors
            return {item_id: np.array(vectors[row], dtype=np.float32)
                    for item_id, row in zip(texts, rows.tolist()) if row >= 0}
        except Exception as exc:  # (files gone since the load): the caller encodes the texts instead
            logger.warning("%s: cannot read the bundle's own item vectors (%s: %s)", self.path, type(exc).__name__, exc)
            return {}

    def index(self, catalogue: Catalogue) -> VectorIndex:
        """The FAISS index over `catalogue`'s rows (rebuilt from the vectors when the saved rows do not line up
        with the catalogue's, as in bundles saved after live edits by older versions)."""
        index, ids, _, config = self._read("index/", lambda: VectorIndex.read_parts(self.path / "index"))
        if len(ids) == len(catalogue) and ids.astype(str).tolist() == catalogue.state.ids.astype(str).tolist():
            return VectorIndex(index, catalogue, config)
        return VectorIndex.over(catalogue, config)

    def popularity(self) -> Popularity:
        return self._read("stats/popularity.parquet",
                          lambda: Popularity.load(self.path / "stats" / "popularity.parquet"))

    def histories(self) -> Histories:
        """user id → the bundle's history (item ids, oldest first), in compact arrays (`recsys.histories`)."""
        frame = self._read("stats/histories.parquet",
                           lambda: pl.read_parquet(self.path / "stats" / "histories.parquet"))
        return Histories.from_frame(frame)

    def reranker(self, catalogue: Catalogue) -> "Reranker | None":
        """The LightGBM re-ranker over `catalogue` (None when the bundle has none; BundleError when its feature
        spec does not match this code or this catalogue)."""
        if not self.has_ranker:
            return None
        from recsys.ranker import Reranker

        return Reranker.load(self.path, catalogue)


def write_parts(recommender: Recommender, directory: Path) -> None:
    """Each part of `recommender` into its own sub-directory of a new bundle (see ARCHITECTURE.md, "The bundle"):
    what `Bundle` reads back."""
    state = recommender.catalogue.state
    (directory / "config.json").write_text(recommender.config.model_dump_json(indent=2))
    (directory / "encoder").mkdir()
    (directory / "encoder" / "encoder.json").write_text(json.dumps(recommender.encoder_info, indent=2))
    recommender.user_tower.save(directory / "encoder")
    (directory / "embeddings").mkdir()
    np.save(directory / "embeddings" / "items.npy", state.vectors.astype(np.float32), allow_pickle=False)
    state.items.write_parquet(directory / "embeddings" / "items.parquet")
    recommender.index.save(directory / "index")
    (directory / "stats").mkdir()
    recommender.popularity.save(directory / "stats" / "popularity.parquet")
    histories_frame(recommender.histories).write_parquet(directory / "stats" / "histories.parquet")
    if recommender.reranker is not None:
        recommender.reranker.save(directory)  # ranker/model.txt + ranker/features.json + stats/*


__all__ = ["Bundle", "write_parts"]
