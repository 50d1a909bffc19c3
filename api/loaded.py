"""One loaded bundle as the routes use it: its recommender, the change-log position it has applied, the
serialised similar-item responses and the loop-turn batchers. Replaced as a whole on reload (a request keeps
the one it started with) and closed when replaced; it holds no reference cycle, so a replaced bundle is freed
as soon as its last request finishes."""

from __future__ import annotations

from functools import partial

from cachetools import LRUCache
from starlette.concurrency import run_in_threadpool

from api.batching import LoopTurnBatcher
from api.metrics import ServiceMetrics
from recsys.bundle import Bundle
from recsys.pipeline import RecommendationList, Recommender
from recsys.query import Query
from recsys.user_tower import CachedHistoryEncoder


def _answer(recommender: Recommender, key: object, queries: list[Query]) -> list[RecommendationList]:
    """One loop turn's queries of one batch key, answered by one pipeline call."""
    return recommender.recommend_many(queries)


class Loaded:
    """One loaded bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, recommender: Recommender, similar_cache_size: int = 50_000,
                 turn_batch_max: int = 64, metrics: ServiceMetrics | None = None,
                 turn_batch_wait_ms: float = 0.0) -> None:
        self.bundle = bundle
        self.recommender = recommender
        self.applied_seq = 0  # the last catalogue change (store seq) applied to this bundle's catalogue
        # serialised similar-item responses (the same for every visitor), keyed with the catalogue version
        self.similar_responses: LRUCache = LRUCache(maxsize=similar_cache_size)
        # queries arriving in the same loop turn share one pipeline call per batch key: on the event loop when
        # they are cheap (no torch), else in one thread hop for the whole batch
        self.cheap_batches = self.tower_batches = None
        if turn_batch_max:
            count = (lambda kind: partial(metrics.record_turn_batch, kind)) if metrics else (lambda kind: None)
            run = partial(_answer, recommender)  # not a bound method of self: no reference cycle
            self.cheap_batches = LoopTurnBatcher(run, turn_batch_max, count("cached"), wait_ms=turn_batch_wait_ms)
            self.tower_batches = LoopTurnBatcher(run, turn_batch_max, count("tower"), offload=True,
                                                 wait_ms=turn_batch_wait_ms)

    @property
    def path(self):
        return self.bundle.path

    @property
    def manifest(self) -> dict:
        return self.bundle.manifest

    @property
    def version(self) -> str:
        return self.bundle.version

    def is_cheap(self, query: Query) -> bool:
        """True when answering needs no torch work: similar items, or history queries with a pooled tower or a
        cached query vector. Then a thread hop costs more than the work, so it runs on the event loop (the
        re-ranker's numpy/LightGBM work for a loop turn's batch runs there too: a worker has one core either
        way). Free-text queries run the item tower: never cheap."""
        kind = query.kind
        if kind == "similar":
            return True
        if kind == "text":
            return False
        tower = self.recommender.user_tower
        return tower.cheap or not query.history or (
            isinstance(tower, CachedHistoryEncoder) and tower.has(query.history))

    async def recommend(self, query: Query) -> RecommendationList:
        """`recommender.recommend(query)`; concurrent queries with the same batch key share one pipeline call (one
        user-tower pass, one FAISS search, one re-ranker feature build and predict): on the event loop when
        `is_cheap`, else in the thread pool."""
        key = query.batch_key()
        if self.cheap_batches is None or key is None:  # batching off, or a filter that cannot be a key
            if self.is_cheap(query):
                return self.recommender.recommend(query)
            return await run_in_threadpool(self.recommender.recommend, query)
        batcher = self.cheap_batches if self.is_cheap(query) else self.tower_batches
        return await batcher.submit(key, query)

    def close(self) -> None:
        """Stop the bundle's background work (the micro-batcher's thread); requests still running finish."""
        self.recommender.user_tower.close()
        self.similar_responses.clear()
