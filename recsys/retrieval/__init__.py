"""FAISS retrieval: exact / HNSW / IVF-Flat / IVF-PQ indexes over L2-normalised item vectors with a
raw-id map, live add / remove / deactivate, query-time filters, optional GPU replicas.

    index = VectorIndex.build(vectors, ids, IndexConfig(kind="hnsw"), attributes={"category": cats})
    scores, ids = index.search(queries, 10, exclude_per_query=seen, where={"category": "cameras"},
                               params=SearchParams(ef_search=256))
    index.add(new_vectors, new_ids); index.deactivate(["sku-1"]); index.remove(["sku-2"]); index.compact()
"""

from .factory import SearchParams, choose_nlist, factory_string
from .gpu import gpu_count
from .index import TextEncoder, VectorIndex, reconstruct_all
from .synthetic import clustered_embeddings

__all__ = ["VectorIndex", "SearchParams", "TextEncoder", "reconstruct_all", "clustered_embeddings", "choose_nlist",
           "factory_string", "gpu_count"]
