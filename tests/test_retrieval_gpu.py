"""The GPU code path, exercised on any machine: faiss's GPU entry points are replaced by CPU clones that,
like real GPU indexes, are searched without IDSelectors (tombstones and filters are applied on the host)."""

from __future__ import annotations

import threading
import types

import faiss
import numpy as np
import pytest

import recsys.retrieval.gpu as gpu_module
import recsys.retrieval.index as index_module
from recsys.config import IndexConfig
from recsys.retrieval import SearchParams, VectorIndex, clustered_embeddings

N, DIM = 1200, 16
IVF = IndexConfig(kind="ivf_flat", nlist=16, nprobe=4)


class FakeGpuIndex:
    """A search-only copy that refuses faiss SearchParameters, as GPU indexes do for IDSelectors."""

    def __init__(self, cpu: faiss.Index, log: list) -> None:
        self.cpu, self.log = faiss.clone_index(cpu), log

    def search(self, x, k, *, params=None):
        assert params is None, "GPU replicas take no SearchParameters"
        self.log.append(("search", len(x), k, getattr(faiss.try_extract_index_ivf(self.cpu), "nprobe", None)))
        return self.cpu.search(x, k)

    def add(self, x):
        self.log.append(("add", len(x)))
        self.cpu.add(x)


@pytest.fixture
def gpu_log(monkeypatch):
    log: list = []
    monkeypatch.setattr(gpu_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: "resources", raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", types.SimpleNamespace, raising=False)
    monkeypatch.setattr(faiss, "INDICES_64_BIT", 3, raising=False)

    def cpu_to_gpu(resources, device, index, options):
        log.append(("clone", index.ntotal, options.shard, options.useFloat16))
        return FakeGpuIndex(index, log)

    class ParameterSpace:
        def set_index_parameter(self, index, name, value):
            faiss.ParameterSpace().set_index_parameter(index.cpu, name, value)

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", ParameterSpace, raising=False)
    return log


@pytest.fixture(scope="module")
def data():
    items, queries = clustered_embeddings(N, DIM, n_queries=12, seed=5)
    return (items, queries, np.array([f"g{i}" for i in range(N)], dtype=object),
            np.array(["a", "b", "c"])[np.arange(N) % 3])


def test_replica_serves_plain_searches_with_per_call_nprobe(data, gpu_log):
    items, queries, ids, _ = data
    on_gpu = VectorIndex.build(items, ids, IVF)
    on_cpu = VectorIndex.build(items, ids, IVF.model_copy(update={"gpu": "off"}))
    assert on_gpu.gpu is not None and on_cpu.gpu is None and gpu_log[0] == ("clone", N, False, False)
    for nprobe in (1, 16):
        params = SearchParams(nprobe=nprobe)
        np.testing.assert_array_equal(on_gpu.search(queries, 10, params=params)[1],
                                      on_cpu.search(queries, 10, params=params)[1])
    assert [e[3] for e in gpu_log if e[0] == "search"] == [1, 16]


def test_hnsw_and_gpu_off_stay_on_the_cpu(data, gpu_log):
    items, _, ids, _ = data
    assert VectorIndex.build(items[:200], ids[:200], IndexConfig(kind="hnsw", hnsw_m=8)).gpu is None
    assert VectorIndex.build(items[:200], ids[:200], IndexConfig(gpu="off")).gpu is None
    assert gpu_log == []


def test_tombstones_and_filters_are_applied_on_the_host_and_k_stays_filled(data, gpu_log):
    items, queries, ids, category = data
    index = VectorIndex.build(items, ids, IVF, attributes={"category": category})
    top = set(index.search(queries, 5)[1].ravel())
    index.remove(list(top)[: len(top) // 2])
    index.deactivate(list(top)[len(top) // 2:])
    _, found = index.search(queries, 30, where={"category": "b"}, exclude_per_query=[{"g1", "g4"}] * len(queries),
                            params=SearchParams(exact_below=0))
    assert found.shape == (12, 30) and None not in set(found.ravel()) and not set(found.ravel()) & (top | {"g1", "g4"})
    assert {index.position[i] % 3 for i in found.ravel()} == {1}
    filtered = [e for e in gpu_log if e[0] == "search"][1:]  # after the unfiltered `top` search
    assert filtered[0][1:] == (12, 100, 4)  # ceil((30 + 2 seen) × 1200 rows / 385 eligible): over-fetch by selectivity


def test_add_goes_to_the_replica_and_compact_swaps_in_a_fresh_clone(data, gpu_log):
    items, queries, ids, _ = data
    index = VectorIndex.build(items, ids, IVF)
    index.add(queries[:2], ["new0", "new1"])
    assert ("add", 2) in gpu_log
    assert index.search(queries[:2], 1, params=SearchParams(nprobe=16))[1][:, 0].tolist() == ["new0", "new1"]
    index.remove(["new0"] + list(ids[:100]))
    assert index.compact() == 101
    assert gpu_log[-1] == ("clone", N + 2 - 101, False, False)  # the replica was rebuilt from the compacted master
    _, found = index.search(queries[:2], 5, params=SearchParams(nprobe=16))
    assert found[1, 0] == "new1" and "new0" not in set(found.ravel())


def test_rows_added_while_a_compaction_builds_reach_the_compacted_master_and_replica(data, gpu_log, monkeypatch):
    """The compacted master and its replica are built while edits go on: the swap appends the rows upserted
    meanwhile to both (the replica gets them as an add, not a second clone)."""
    items, queries, ids, _ = data
    index = VectorIndex.build(items, ids, IVF)
    index.remove(list(ids[:100]))
    compact_index = index_module.compact_index

    def upsert_meanwhile(*args, **kwargs):
        adding = threading.Thread(target=index.add, args=(queries[:2], ["mid0", "mid1"]))
        adding.start()
        adding.join(2.0)
        assert not adding.is_alive()  # the upsert did not wait for the build
        return compact_index(*args, **kwargs)

    monkeypatch.setattr(index_module, "compact_index", upsert_meanwhile)
    assert index.compact() == 100 and len(index) == len(index.ids) == N - 100 + 2
    assert gpu_log[-3:] == [("add", 2), ("clone", N - 100, False, False), ("add", 2)]
    assert index.search(queries[:2], 1, params=SearchParams(nprobe=16))[1][:, 0].tolist() == ["mid0", "mid1"]
    assert index.index.ntotal == len(index.catalogue.state)


def test_requests_deeper_than_the_gpu_allows_fall_back_to_the_cpu_master(data, gpu_log, monkeypatch):
    items, queries, ids, _ = data
    monkeypatch.setattr(index_module, "GPU_MAX_K", 8)
    index = VectorIndex.build(items, ids, IVF)
    index.remove(["g0"])  # a tombstone sends the search down the filtered path
    _, found = index.search(queries[:3], 20)
    assert found.shape == (3, 20) and None not in set(found.ravel()) and "g0" not in set(found.ravel())
    assert not [e for e in gpu_log if e[0] == "search"]


def test_sharded_replicas_are_recloned_after_an_add(data, gpu_log, monkeypatch):
    items, queries, ids, _ = data
    monkeypatch.setattr(gpu_module, "gpu_count", lambda: 2)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus",
                        lambda index, co, ngpu: gpu_log.append(("all", ngpu, co.shard)) or FakeGpuIndex(index, gpu_log))
    index = VectorIndex.build(items, ids, IVF.model_copy(update={"gpu_shard": True}))
    index.add(queries[:1], ["late"])
    assert [e for e in gpu_log if e[0] in ("all", "add")] == [("all", 2, True), ("all", 2, True)]
    assert index.search(queries[:1], 1, params=SearchParams(nprobe=16))[1][0, 0] == "late"
