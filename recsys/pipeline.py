"""The Recommender: one pipeline object (item vectors + index + user tower + stats) that serves the
API, the batch jobs and the evaluator through the same code path."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.artifacts import read_manifest, resolve_bundle, write_bundle
from recsys.config import BuildConfig
from recsys.data.dataset import Dataset
from recsys.errors import BundleError, UnknownIdError
from recsys.popularity import Popularity
from recsys.retrieval import VectorIndex
from recsys.splits import SplitData, user_sequences
from recsys.user_tower import HistoryEncoder, PooledHistoryEncoder

UserTowerLoader = Callable[[Path, list[str], np.ndarray, dict], HistoryEncoder]
"""(encoder directory, item ids, item vectors, encoder.json) → user tower, for trained towers."""

CATALOGUE_COLUMNS = ("item_id", "text", "title", "category", "brand", "price")


@dataclass(frozen=True)
class RecommendationList:
    """Ranked item ids with scores and the strategy that produced them."""

    item_ids: list[str]
    scores: list[float]
    strategy: str  # personalised | session | similar | popular_fallback


class Recommender:
    """Retrieval pipeline over a fixed catalogue."""

    def __init__(self, config: BuildConfig, items: pl.DataFrame, item_vectors: np.ndarray, index: VectorIndex,
                 popularity: Popularity, histories: dict[str, list[str]], encoder_info: dict | None = None,
                 user_tower: HistoryEncoder | None = None) -> None:
        self.config = config
        self.items = items
        self.item_vectors = item_vectors
        self.index = index
        self.popularity = popularity
        self.histories = histories
        self.encoder_info = encoder_info or {}
        self.item_ids: list[str] = items["item_id"].to_list()
        self.item_position = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.user_tower = user_tower or PooledHistoryEncoder(self.item_ids, item_vectors, config.user_tower)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, dataset: Dataset, split: SplitData, item_vectors: np.ndarray, config: BuildConfig,
              encoder_info: dict | None = None, user_tower: HistoryEncoder | None = None) -> "Recommender":
        """Assemble from item vectors aligned with `dataset.items`; popularity is fit on the train split."""
        if item_vectors.shape[0] != dataset.items.height:
            raise ValueError(f"{item_vectors.shape[0]} vectors for {dataset.items.height} items")
        items = dataset.items.select([c for c in CATALOGUE_COLUMNS if c in dataset.items.columns])
        item_ids = items["item_id"].to_list()
        index = VectorIndex.build(item_vectors, item_ids, config.index)
        popularity = Popularity.fit(split.train, item_ids)
        return cls(config, items, item_vectors, index, popularity, user_sequences(dataset.interactions),
                   encoder_info, user_tower)

    # ---- recommendation -----------------------------------------------------------------------
    def _check_items(self, item_ids: Sequence[str]) -> None:
        unknown = [i for i in item_ids if i not in self.item_position]
        if unknown:
            raise UnknownIdError("item", unknown)

    def search_vectors(self, queries: np.ndarray, k: int,
                       exclude: Sequence[Collection[str]] | None = None) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k per query, skipping each row's excluded ids (over-fetch so k stays filled)."""
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, len(self.index))
        scores, ids = self.index.search(queries, fetch)
        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        for row in range(len(ids)):
            banned = exclude[row] if exclude is not None else ()
            keep = [(i, float(s)) for i, s in zip(ids[row], scores[row]) if i is not None and i not in banned][:k]
            out_ids.append([i for i, _ in keep])
            out_scores.append([s for _, s in keep])
        return out_ids, out_scores

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                        exclude: Sequence[Collection[str]] | None = None) -> list[RecommendationList]:
        """The one retrieval path behind the API, the batch jobs and the evaluator.

        Histories are item ids oldest first; `exclude_seen` drops each history's items, `exclude`
        gives extra per-row ids to drop. A history the user tower knows nothing about (empty, or
        only unknown items) gets the popular items, marked `popular_fallback`."""
        vectors = self.user_tower.encode_histories(histories)
        banned = [(set(h) if exclude_seen else set()) | (set(exclude[row]) if exclude is not None else set())
                  for row, h in enumerate(histories)]
        ids, scores = self.search_vectors(vectors, k, banned)
        results = []
        for row in range(len(histories)):
            if np.any(vectors[row]):
                results.append(RecommendationList(ids[row], scores[row], "personalised"))
            else:
                results.append(RecommendationList(*self.popularity.top(k, banned[row]), "popular_fallback"))
        return results

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int,
                            exclude_seen: bool = False) -> list[list[str]]:
        """Top-k item ids per history (the evaluator's `CandidateSource` interface)."""
        return [r.item_ids for r in self.recommend_batch(histories, k, exclude_seen)]

    def recommend_session(self, item_ids: Sequence[str], k: int = 10, exclude_seen: bool = True,
                          exclude: Collection[str] = ()) -> RecommendationList:
        """For an anonymous session's recent items (oldest first); unknown ids raise UnknownIdError."""
        self._check_items(list(item_ids))
        result = self.recommend_batch([list(item_ids)], k, exclude_seen, [exclude])[0]
        return result if result.strategy == "popular_fallback" else \
            RecommendationList(result.item_ids, result.scores, "session")

    def recommend_user(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                       exclude: Collection[str] = (), fallback: bool = True) -> RecommendationList:
        """For a known user's stored history; an unknown user gets popular items when `fallback`."""
        history = self.histories.get(user_id)
        if history is None:
            if not fallback:
                raise UnknownIdError("user", [user_id])
            return self.recommend_batch([[]], k, exclude=[exclude])[0]
        return self.recommend_batch([history], k, exclude_seen, [exclude])[0]

    def similar_items(self, item_id: str, k: int = 10, exclude: Collection[str] = ()) -> RecommendationList:
        """Nearest catalogue items to `item_id` by item-tower embedding (itself excluded)."""
        self._check_items([item_id])
        vector = self.item_vectors[self.item_position[item_id]][None, :]
        ids, scores = self.search_vectors(vector, k, [set(exclude) | {item_id}])
        return RecommendationList(ids[0], scores[0], "similar")

    def item_records(self, item_ids: Sequence[str]) -> list[dict]:
        """Catalogue rows (id, title, text, …) for display, in the given order."""
        rows = self.items.row
        return [rows(self.item_position[i], named=True) for i in item_ids]

    # ---- persistence --------------------------------------------------------------------------
    def write_parts(self, directory: Path) -> None:
        """Each part into its own sub-directory (see ARCHITECTURE.md, 'The bundle')."""
        (directory / "config.json").write_text(self.config.model_dump_json(indent=2))
        (directory / "encoder").mkdir()
        (directory / "encoder" / "encoder.json").write_text(json.dumps(self.encoder_info, indent=2))
        if hasattr(self.user_tower, "save"):
            self.user_tower.save(directory / "encoder")
        (directory / "embeddings").mkdir()
        np.save(directory / "embeddings" / "items.npy", self.item_vectors.astype(np.float32), allow_pickle=False)
        self.items.write_parquet(directory / "embeddings" / "items.parquet")
        self.index.save(directory / "index")
        (directory / "stats").mkdir()
        self.popularity.save(directory / "stats" / "popularity.parquet")
        pl.DataFrame({"user_id": list(self.histories), "history": list(self.histories.values())},
                     schema={"user_id": pl.Utf8, "history": pl.List(pl.Utf8)}).write_parquet(
            directory / "stats" / "histories.parquet")

    def save(self, target: str | Path, manifest: dict | None = None, overwrite: bool = False) -> Path:
        """Write an atomic, checksummed bundle at `target`."""
        return write_bundle(target, self.write_parts, {"config": self.config.model_dump(mode="json"),
                                                       "encoder": self.encoder_info, **(manifest or {})},
                            overwrite=overwrite)

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True,
             user_tower_loader: UserTowerLoader | None = None) -> "Recommender":
        """Load a bundle after its manifest's checksums match.

        Bundles whose `encoder/encoder.json` names a trained user tower (anything but "pooled")
        need `user_tower_loader` (see `encoders.bundle.load_recommender`)."""
        path = resolve_bundle(bundle)
        read_manifest(path, verify=verify)
        try:
            config = BuildConfig.model_validate_json((path / "config.json").read_text())
            items = pl.read_parquet(path / "embeddings" / "items.parquet")
            vectors = np.load(path / "embeddings" / "items.npy", allow_pickle=False)
            index = VectorIndex.load(path / "index")
            popularity = Popularity.load(path / "stats" / "popularity.parquet")
            frame = pl.read_parquet(path / "stats" / "histories.parquet")
            encoder_info = json.loads((path / "encoder" / "encoder.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: cannot load bundle part ({exc})") from exc
        histories = dict(zip(frame["user_id"].to_list(), frame["history"].to_list()))
        user_tower = None
        if encoder_info.get("user_tower", "pooled") != "pooled":
            if user_tower_loader is None:
                raise BundleError(f"{path}: user tower {encoder_info['user_tower']!r} needs the encoders package; "
                                  "load it with encoders.bundle.load_recommender()")
            user_tower = user_tower_loader(path / "encoder", items["item_id"].to_list(), vectors, encoder_info)
        return cls(config, items, vectors, index, popularity, histories, encoder_info, user_tower)

