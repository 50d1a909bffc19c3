"""Optional GPU replicas of a CPU master index (faiss-gpu only; faiss-cpu never enters this code).

The CPU index stays the master: it is what gets saved, edited (add / tombstones) and compacted.
A `GpuReplica` is a search-only copy on one or more GPUs:

- add: the new vectors go to the master and to the replica (GPU flat / IVF indexes support add);
  a sharded replica is re-cloned from the master instead, so row labels stay exact (batch your adds);
- remove / deactivate: GPU indexes cannot remove in place and take no IDSelector, so removed and
  inactive rows are tombstones filtered on the host after an over-fetch (refilled if needed);
- `VectorIndex.compact()` rebuilds the master without the tombstones, clones it to the GPUs and
  swaps the replica in one assignment, so searches never see a half-built index.

HNSW has no faiss GPU implementation and stays on the CPU.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import faiss

from recsys.config import IndexConfig

log = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger requests go to the CPU master


def gpu_count() -> int:
    """Visible GPUs when faiss-gpu is installed, else 0."""
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:
        return 0


@dataclass
class GpuReplica:
    """A GPU copy of the master; `set_nprobe` + search run under `lock` (GPU params are index state)."""

    index: faiss.Index
    ngpu: int
    sharded: bool = False
    resources: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def search(self, queries, k: int, nprobe: int | None):
        with self.lock:
            if nprobe is not None:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", nprobe)
            return self.index.search(queries, k)

    def add(self, vectors) -> None:
        """Append to every copy (replicated indexes keep faiss's sequential labels = master rows)."""
        with self.lock:
            self.index.add(vectors)


def to_gpu(index: faiss.Index, config: IndexConfig) -> GpuReplica | None:
    """Clone `index` to the GPUs the config allows (replicated, or sharded with `gpu_shard`);
    None when faiss-gpu or a GPU is missing, `gpu="off"`, or the index type has no GPU version."""
    ngpu = gpu_count()
    if config.gpu == "off" or ngpu == 0:
        return None
    if config.kind == "hnsw":
        log.info("HNSW has no faiss GPU implementation; searching on the CPU")
        return None
    if config.gpu_devices is not None:
        ngpu = min(ngpu, config.gpu_devices)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = config.gpu_shard
    options.useFloat16 = config.float16
    options.indicesOptions = faiss.INDICES_64_BIT
    try:
        if ngpu == 1:
            resources = faiss.StandardGpuResources()
            replica = faiss.index_cpu_to_gpu(resources, 0, index, options)
            return GpuReplica(replica, 1, resources=[resources])
        return GpuReplica(faiss.index_cpu_to_all_gpus(index, co=options, ngpu=ngpu), ngpu, sharded=config.gpu_shard)
    except (RuntimeError, AttributeError) as exc:  # e.g. a refine wrapper or PQ size the GPU code lacks
        log.warning("cannot move %s index to GPU (%s); searching on the CPU", config.kind, exc)
        return None


__all__ = ["GpuReplica", "gpu_count", "to_gpu", "GPU_MAX_K"]
