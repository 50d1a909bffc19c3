"""A zero-shot text prior blended into the trained towers, as extra embedding dimensions.

Item vectors become [trained item vector, frozen-BERT text vector] and query vectors
[trained user vector, w · recency-pooled frozen-BERT history vector], so one inner product (one FAISS
search) scores `trained + w · zero-shot`. The frozen-BERT block may be projected onto its top principal
directions over the catalogue (`zero_shot_dims`, 128 of MiniLM's 384 by default): the index grows less and
every search scans fewer numbers. The weight lives on the query side only: item vectors do not
depend on it, and `fit_blend_weight` tries each weight on validation against one index.

On amazon-scientific the zero-shot score ranks differently enough from the trained one that the sum
beats both (benchmarks/results/quality.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recsys.catalogue import Catalogue
from recsys.config import EvalConfig, UserTowerConfig
from recsys.evaluation import evaluate
from recsys.towers import ItemTower, UserTower
from recsys.user_tower import CachedHistoryEncoder, PooledHistoryEncoder

BLEND_KEY = "zero_shot_blend"  # encoder/encoder.json entry of blended bundles
PROJECTION_FILE = "zero_shot_projection.npy"


class BlendedHistoryEncoder(UserTower):
    """Query vectors [trained(h), weight · pooled(h)] for item vectors [trained, zero-shot].

    `trained` is the trained user tower over the first `trained_dim` columns of the catalogue;
    `pooled` the zero-shot recency pool over the rest. New item texts (live upserts, free-text
    queries) go through both item towers: `item_tower()`."""

    def __init__(self, trained: UserTower, pooled: PooledHistoryEncoder, weight: float,
                 text_encoder_factory: Callable[[], ItemTower] | None = None,
                 projection: np.ndarray | None = None) -> None:
        self.trained = trained
        self.pooled = pooled
        self.weight = float(weight)
        self.projection = projection  # [zero-shot dims, BERT width]: new texts' BERT vectors → the pooled space
        self._text_encoder_factory = text_encoder_factory
        self._text_encoder: ItemTower | None = None

    @property
    def trained_dim(self) -> int:
        return int(self.trained.dim)

    @property
    def dim(self) -> int:
        return self.trained_dim + int(self.pooled.dim)

    @property
    def catalogue(self) -> Catalogue | None:
        return self.pooled.catalogue

    def over(self, catalogue: Catalogue) -> "BlendedHistoryEncoder":
        other = BlendedHistoryEncoder(self.trained.over(catalogue), self.pooled.over(catalogue), self.weight,
                                      self._text_encoder_factory, self.projection)
        other._text_encoder = self._text_encoder
        return other

    @property
    def config(self):  # the trained tower's TrainConfig (read by the training report and the API)
        return self.trained.config

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        trained = self.trained.encode_histories(histories)
        pooled = self.pooled.encode_histories(histories)
        return np.hstack([trained, self.weight * pooled]).astype(np.float32, copy=False)

    def zero_shot_tower(self) -> ItemTower:
        """The frozen BERT of the zero-shot block (loaded on first use)."""
        if self._text_encoder is None:
            if self._text_encoder_factory is None:
                raise ValueError("this blended tower has no zero-shot text encoder")
            self._text_encoder = self._text_encoder_factory()
        return self._text_encoder

    def item_tower(self) -> "BlendedItemTower":
        """Both item towers' text paths, loaded now if they were left for first use."""
        trained = self.trained.item_tower()
        if trained is None:
            raise ValueError("the trained tower of this blend has no item tower")
        if self._text_encoder_factory is not None:
            self.zero_shot_tower()
        return BlendedItemTower(trained, self)

    def encode_item_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[trained text-only vector, frozen-BERT vector] per (already rendered) text."""
        return self.item_tower().encode_texts(list(texts))

    def save(self, directory) -> None:
        """The trained tower's files (+ the projection); the blend itself is recorded in encoder.json (`blend_info`)."""
        self.trained.save(directory)
        if self.projection is not None:
            np.save(Path(directory) / PROJECTION_FILE, self.projection.astype(np.float32), allow_pickle=False)


class BlendedItemTower(ItemTower):
    """Item vectors [trained text-only vector, projected frozen-BERT vector], like the blended catalogue's: each
    block reading the same rendered item text (the catalogue's template, `ItemTower.encode_items`)."""

    def __init__(self, trained: ItemTower, blend: BlendedHistoryEncoder) -> None:
        self.trained = trained
        self.blend = blend
        self.template = trained.template

    @property
    def dim(self) -> int:
        return self.blend.dim

    def _zero_shot(self, vectors: np.ndarray) -> np.ndarray:
        return project(vectors, self.blend.projection) if self.blend.projection is not None else vectors

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._blended(self.trained.encode_texts(list(texts)), texts)

    def encode_texts_of(self, texts: Sequence[str], item_ids: Sequence[str | None]) -> np.ndarray:
        """The trained block keeps a trained item's ID block (`ItemTower.encode_texts_of`); the zero-shot block
        reads the text alone."""
        return self._blended(self.trained.encode_texts_of(list(texts), item_ids), texts)

    def _blended(self, trained: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        zero_shot = self._zero_shot(self.blend.zero_shot_tower().encode_texts(list(texts)))
        return np.hstack([trained, zero_shot]).astype(np.float32, copy=False)


def split_item_vectors(vectors: np.ndarray, trained_dim: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors[:, :trained_dim], vectors[:, trained_dim:]


def principal_projection(vectors: np.ndarray, dims: int) -> np.ndarray:
    """[dims, width]: the top principal directions of `vectors` (rows), for `vectors @ projection.T`."""
    vectors = np.asarray(vectors, dtype=np.float64)
    _, _, directions = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    return directions[:dims].astype(np.float32)


def project(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """BERT vectors onto the principal directions, each row back to unit length: both blocks of an item vector
    then have norm 1, so the index's per-item normalisation scales every item alike and the blend stays exact."""
    projected = np.asarray(vectors, dtype=np.float32) @ projection.T
    return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


def blend_info(tower: BlendedHistoryEncoder) -> dict:
    """What encoder.json records so `blended_tower` can rebuild the tower from the bundle."""
    return {"weight": tower.weight, "trained_dim": tower.trained_dim,
            "recency_decay": tower.pooled.config.recency_decay, "max_history": tower.pooled.config.max_history,
            "projection": PROJECTION_FILE if tower.projection is not None else None}


def blended_tower(trained: UserTower, catalogue: Catalogue, info: dict, encoder_dir: Path,
                  text_encoder_factory: Callable[[], ItemTower] | None = None) -> BlendedHistoryEncoder:
    """Rebuild a bundle's blended tower: `trained` is its trained user tower (reading the first
    `info['trained_dim']` columns of the catalogue); the zero-shot columns feed the pool."""
    trained_dim = int(info["trained_dim"])
    pool_config = UserTowerConfig(recency_decay=info.get("recency_decay", 0.7), max_history=info.get("max_history", 50))
    projection = np.load(Path(encoder_dir) / info["projection"], allow_pickle=False) if info.get("projection") else None
    return BlendedHistoryEncoder(trained, PooledHistoryEncoder(catalogue, pool_config, slice(trained_dim, None)),
                                 float(info["weight"]), text_encoder_factory, projection)


def fit_blend_weight(recommender, tower: BlendedHistoryEncoder, examples, weights: Sequence[float],
                     eval_config: EvalConfig, progress: bool = False) -> tuple[float, dict[float, float]]:
    """The weight with the best NDCG@10 (full ranking) on `examples`; `recommender` serves `tower`,
    whose weight is set to each candidate in turn (and left at the best). Ties go to the smaller weight.
    `progress`: a bar per weight, shown when its pass is slow (`recsys.progress`)."""
    k = min(eval_config.ks)
    scores: dict[float, float] = {}
    trained = tower.trained
    tower.trained = CachedHistoryEncoder(trained, maxsize=examples.height + 1)  # trained part: encoded once
    try:
        for weight in sorted(set(float(w) for w in weights)):
            tower.weight = weight
            scores[weight] = evaluate(recommender, examples, eval_config, progress=progress,
                                      desc=f"zero-shot blend weight {weight:g}", transient=True)[f"ndcg@{k}"]
    finally:
        tower.trained = trained
    best = max(scores, key=lambda w: (scores[w], -w))
    tower.weight = best
    return best, scores
