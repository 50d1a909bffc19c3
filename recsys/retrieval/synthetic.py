"""Seeded clustered embeddings that behave like a catalogue's sentence embeddings.

Items are drawn from a three-level mixture: categories (Zipf-sized) → product families of a few
near-duplicate items (variants, sizes, editions) → items, inside a low-rank subspace with a
power-law spectrum, plus a shared mean direction (text embeddings are anisotropic) and a little
isotropic noise, then L2-normalised. Queries are fresh draws from the same families.

The defaults were calibrated against all-MiniLM-L6-v2 embeddings of the 6,067 item texts of the
two benchmark data sets (Amazon Scientific + MovieLens-100k), 500 of them held out as queries; at the same
size the generator matches their difficulty: local intrinsic dimensionality (MLE, k=100) 16.9 vs
17.5, relative contrast 1.86 vs 1.95, HNSW16/ef10 recall@10 0.91 vs 0.91, IVF64/nprobe2 0.87 vs 0.85.
"""

from __future__ import annotations

import numpy as np


def clustered_embeddings(n: int, dim: int = 384, *, n_queries: int = 0, seed: int = 0,
                         n_clusters: int | None = None, family_size: int = 4, rank: int = 128,
                         spectrum: float = 1.0, mean_weight: float = 0.4, category_std: float = 0.6,
                         family_std: float = 0.5, item_std: float = 0.5, noise_std: float = 0.3,
                         zipf: float = 0.8, chunk: int = 131_072) -> tuple[np.ndarray, np.ndarray]:
    """(items float32 [n, dim], queries float32 [n_queries, dim]), rows L2-normalised.

    n_clusters (categories) defaults to ~√n / 2 (1M items → 500); there are n / family_size
    families. Each level's offset lives in a `rank`-dimensional subspace whose per-axis variance
    decays as j^-spectrum; `*_std` are the levels' total standard deviations.
    """
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(round(np.sqrt(max(n, 1)) / 2)))
    n_families = max(n_clusters, max(n, 1) // family_size)
    rank = min(rank, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # orthonormal rows
    axis_std = np.arange(1, rank + 1, dtype=np.float64) ** -spectrum
    axis_std = np.sqrt(axis_std / axis_std.sum()).astype(np.float32)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean *= np.float32(mean_weight) / np.linalg.norm(mean)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** zipf
    categories = rng.standard_normal((n_clusters, rank), dtype=np.float32) * axis_std * np.float32(category_std)
    family_category = rng.choice(n_clusters, size=n_families, p=weights / weights.sum())
    families = categories[family_category]
    families += rng.standard_normal((n_families, rank), dtype=np.float32) * axis_std * np.float32(family_std)

    def draw(m: int, stream: np.random.Generator) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, chunk):
            size = min(chunk, m - start)
            latent = families[stream.integers(0, n_families, size)]
            latent += stream.standard_normal((size, rank), dtype=np.float32) * axis_std * np.float32(item_std)
            block = latent @ basis
            block += mean
            block += stream.standard_normal((size, dim), dtype=np.float32) * np.float32(noise_std / np.sqrt(dim))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:start + size] = block
        return out

    return draw(n, np.random.default_rng([seed, 1])), draw(n_queries, np.random.default_rng([seed, 2]))


__all__ = ["clustered_embeddings"]
