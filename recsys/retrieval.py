"""FAISS vector index over L2-normalised item embeddings, keyed by raw item ids."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from recsys.config import IndexConfig
from recsys.errors import BundleError


class VectorIndex:
    """Exact inner-product search with a raw-id mapping in both directions."""

    def __init__(self, index: faiss.Index, ids: np.ndarray, config: IndexConfig) -> None:
        if index.ntotal != len(ids):
            raise BundleError(f"index holds {index.ntotal} vectors but {len(ids)} ids")
        self.index = index
        self.ids = np.asarray(ids, dtype=object)
        self.position = {item_id: i for i, item_id in enumerate(self.ids)}
        self.config = config

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(cls, vectors: np.ndarray, ids: list[str] | np.ndarray, config: IndexConfig | None = None) -> "VectorIndex":
        """Index `vectors` (rows aligned with `ids`)."""
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"vectors {vectors.shape} do not match {len(ids)} ids")
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index, np.asarray(ids, dtype=object), config)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, raw ids) per query row; missing slots have id None and score -inf."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        scores, positions = self.index.search(queries, k)
        ids = np.empty(positions.shape, dtype=object)
        valid = positions >= 0
        ids[valid] = self.ids[positions[valid]]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return scores, ids

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / "index.faiss"))
        np.save(directory / "ids.npy", self.ids.astype(str), allow_pickle=False)
        (directory / "config.json").write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        directory = Path(directory)
        config = IndexConfig.model_validate_json((directory / "config.json").read_text())
        index = faiss.read_index(str(directory / "index.faiss"))
        ids = np.load(directory / "ids.npy", allow_pickle=False).astype(object)
        return cls(index, ids, config)


def reconstruct_all(index: VectorIndex) -> np.ndarray:
    """All stored vectors in id order (float32)."""
    return index.index.reconstruct_n(0, len(index))


__all__ = ["VectorIndex", "reconstruct_all"]
