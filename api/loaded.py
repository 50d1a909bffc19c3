"""One loaded bundle as the routes use it: its recommender, the change-log position it has applied, the
serialised similar-item responses and the loop-turn batchers. Replaced as a whole on reload (a request keeps
the one it started with) and closed when replaced; it holds no reference cycle, so a replaced bundle is freed
as soon as its last request finishes."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool

from api.batching import LoopTurnBatcher
from api.metrics import ServiceMetrics
from recsys.bundle import Bundle
from recsys.cache import ByteBudgetCache
from recsys.pipeline import RecommendationList, Recommender
from recsys.query import Query
from recsys.user_tower import CachedHistoryEncoder


def _answer(recommender: Recommender, key: object, queries: list[Query]) -> list[RecommendationList]:
    """One loop turn's queries of one batch key, answered by one pipeline call."""
    return recommender.recommend_many(queries)


def _encode(tower: CachedHistoryEncoder, key: object, queries: list[Query]) -> None:
    """The torch part of a batch of history queries: their query vectors, into the tower's cache (one pass)."""
    histories = [q.history for q in queries if q.history]
    if histories:
        tower.encode_histories(histories)


class Loaded:
    """One loaded bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, recommender: Recommender, cache: ByteBudgetCache | None = None,
                 turn_batch_max: int = 64, metrics: ServiceMetrics | None = None,
                 turn_batch_wait_ms: float = 0.0) -> None:
        self.bundle = bundle
        self.recommender = recommender
        self.applied_seq = 0  # the last catalogue change (store seq) applied to this bundle's catalogue
        self.announced: str | None = None  # the bundle of the last reload (`bundle` change) among those changes
        # serialised similar-item responses (the same for every visitor), dated with the catalogue version; they
        # share one byte budget (RECSYS_CACHE_MB) with the user tower's query vectors
        self.cache = cache if cache is not None else ByteBudgetCache(0)
        self.similar_responses = self.cache.part("similar")
        # queries arriving in the same loop turn share one pipeline call per batch key: on the event loop when
        # they are cheap (no torch); history queries whose vectors are not cached get them in one thread hop
        # for the whole batch (into the tower's cache), then run on the loop like cached ones; free-text
        # queries (the item tower) run wholly in the thread pool
        self.cheap_batches = self.tower_batches = self.text_batches = None
        if turn_batch_max:
            count = (lambda kind: partial(metrics.record_turn_batch, kind)) if metrics else (lambda kind: None)
            run = partial(_answer, recommender)  # not a bound method of self: no reference cycle
            self.cheap_batches = LoopTurnBatcher(run, turn_batch_max, count("cached"), wait_ms=turn_batch_wait_ms)
            tower = recommender.user_tower
            split = {"prepare": partial(_encode, tower)} if isinstance(tower, CachedHistoryEncoder) else \
                {"offload": True}  # no vector cache to fill: the whole batch off the loop
            self.tower_batches = LoopTurnBatcher(run, turn_batch_max, count("tower"), wait_ms=turn_batch_wait_ms,
                                                 **split)
            self.text_batches = LoopTurnBatcher(run, turn_batch_max, count("text"), offload=True,
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
        `is_cheap`; history queries' user-tower pass in the thread pool, the rest on the loop; free text in the
        thread pool."""
        key = query.batch_key()
        if self.cheap_batches is None or key is None:  # batching off, or a filter that cannot be a key
            if self.is_cheap(query):
                return self.recommender.recommend(query)
            return await run_in_threadpool(self.recommender.recommend, query)
        if self.is_cheap(query):
            batcher = self.cheap_batches
        else:
            batcher = self.text_batches if query.kind == "text" else self.tower_batches
        return await batcher.submit(key, query)

    def close(self) -> None:
        """Stop the bundle's background work (the micro-batcher's thread); requests still running finish."""
        self.recommender.user_tower.close()
        self.cache.clear()
