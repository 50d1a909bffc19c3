"""The serving state behind the routes: the loaded bundle (swappable), the event store, the item
tower for live catalogue changes and free-text queries, and metrics."""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path

import numpy as np
from cachetools import LRUCache

from starlette.concurrency import run_in_threadpool

from api.batching import LoopTurnBatcher, MicroBatchingEncoder
from api.metrics import ServiceMetrics
from api.settings import Settings
from api.store import EventStore, RedisEventStore, SQLiteEventStore
from encoders.loading import load_recommender
from recsys.artifacts import read_manifest, resolve_bundle
from recsys.catalogue import item_text, set_active, upsert_items
from recsys.errors import BundleError, UnknownIdError
from recsys.pipeline import RecommendationList, Recommender
from recsys.retrieval.filters import where_key
from recsys.user_tower import CachedHistoryEncoder, PooledHistoryEncoder

logger = logging.getLogger("recsys.api")


def make_store(settings: Settings) -> EventStore:
    if settings.event_store == "redis":
        return RedisEventStore(settings.redis_url)
    return SQLiteEventStore(settings.state_dir / "events.sqlite")


class Loaded:
    """One loaded bundle; replaced as a whole on reload, so a request sees one consistent model."""

    def __init__(self, path: Path, manifest: dict, recommender: Recommender, similar_cache_size: int = 50_000,
                 turn_batch_max: int = 64, metrics: ServiceMetrics | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.recommender = recommender
        self.text_encoder = None
        self.write_lock = threading.Lock()
        # serialised similar-item responses (the same for every visitor), keyed with the catalogue version
        self.similar_responses: LRUCache = LRUCache(maxsize=similar_cache_size)
        # history and similar-for-a-user requests arriving together share one pipeline call per kind (see
        # `recommend_batched`, `similar_batched`): on the event loop when the query vectors are cached (no
        # torch), else in one thread hop for the whole batch
        self.cheap_batches = self.tower_batches = None
        if turn_batch_max:
            count = (lambda kind: partial(metrics.record_turn_batch, kind)) if metrics else (lambda kind: None)
            self.cheap_batches = LoopTurnBatcher(self._run_rows, turn_batch_max, count("cached"))
            self.tower_batches = LoopTurnBatcher(self._run_rows, turn_batch_max, count("tower"), offload=True)

    @property
    def version(self) -> str:
        return self.path.name

    def is_cheap(self, histories: Collection[Collection[str]] = ()) -> bool:
        """True when answering needs no torch work (a pooled tower, or histories whose query vectors are
        cached): then a thread hop costs more than the work, so it runs on the event loop. The re-ranker's
        numpy/LightGBM work for a loop turn's batch runs there too: a worker has one core either way."""
        tower = self.recommender.user_tower
        if isinstance(innermost_tower(tower), PooledHistoryEncoder):
            return True
        return isinstance(tower, CachedHistoryEncoder) and all(not h or tower.has(h) for h in histories)

    async def recommend_batched(self, history: list[str], k: int, exclude_seen: bool, exclude: Collection[str],
                                where: Mapping | None, strategy: str = "personalised",
                                explain: bool = False) -> RecommendationList:
        """`recommender.recommend_history(...)` for a non-empty history of catalogue items; concurrent calls with
        the same k, exclude_seen, filter, strategy and explain share one `recommend_batch` (one user-tower pass,
        one FAISS search, one re-ranker feature build and predict): on the event loop when `is_cheap`, else in
        the thread pool."""
        return await self._batched(("history", k, exclude_seen, strategy, explain), where, history,
                                   (history, exclude, where), self.recommender.recommend_history, history, k, exclude_seen, exclude, where,
                                   strategy, explain)

    async def similar_batched(self, item_id: str, history: list[str], k: int, exclude: Collection[str],
                              where: Mapping | None, explain: bool = False) -> RecommendationList:
        """`recommender.similar_for_user(...)`; concurrent calls with the same k, filter and explain share one
        `similar_for_users` (one user-tower pass, one re-ranker feature build and predict)."""
        return await self._batched(("similar", k, explain), where, history, (item_id, history, exclude, where),
                                   self.recommender.similar_for_user, item_id, history, k, exclude, where, explain)

    async def _batched(self, key: tuple, where: Mapping | None, history: list[str], row: tuple, alone, *args):
        """Submit `row` to this loop turn's batch for `key` (+ the filter); `alone(*args)` when batching is off."""
        filter_key = where_key(where) if where is not None else None
        if self.cheap_batches is None or (where is not None and filter_key is None):  # batching off, odd filter
            return await self.call(alone, *args, histories=[history])
        batcher = self.cheap_batches if self.is_cheap([history]) else self.tower_batches
        return await batcher.submit((*key, filter_key), row)

    def _run_rows(self, key: tuple, rows: list[tuple]) -> list[RecommendationList]:
        """One loop turn's requests of one key, answered by one pipeline call."""
        recommender = self.recommender
        if key[0] == "similar":
            _, k, explain, _ = key
            return recommender.similar_for_users([a for a, _, _, _ in rows], [list(h) for _, h, _, _ in rows], k,
                                                 [e for _, _, e, _ in rows], rows[0][3], explain)
        _, k, exclude_seen, strategy, explain, _ = key
        return recommender.recommend_batch([list(h) for h, _, _ in rows], k, exclude_seen, [e for _, e, _ in rows],
                                           rows[0][2], explain=explain, strategy=strategy)

    async def call(self, fn, *args, histories: Collection[Collection[str]] = ()):
        """Run `fn(*args)` on the event loop when answering for `histories` is cheap (`is_cheap`), else in
        the thread pool."""
        return fn(*args) if self.is_cheap(histories) else await run_in_threadpool(fn, *args)


class Service:
    """Everything the routes need; lives on app.state.service."""

    def __init__(self, settings: Settings, store: EventStore | None = None,
                 item_encoder_loader: Callable[[Loaded], object] | None = None) -> None:
        self.settings = settings
        self.store = store or make_store(settings)
        self.item_encoder_loader = item_encoder_loader or (lambda loaded: load_item_encoder(loaded, settings.quantize_int8))
        self.metrics = ServiceMetrics()
        self.current: Loaded | None = None
        if settings.faiss_threads:
            import faiss

            faiss.omp_set_num_threads(settings.faiss_threads)
        sys.setswitchinterval(settings.gil_switch_ms / 1000.0)
        if settings.blas_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=settings.blas_threads, user_api="blas")
        self._reload_lock = threading.Lock()

    # ---- bundle lifecycle ---------------------------------------------------------------------
    def load(self, bundle: str | Path) -> Loaded:
        """Verify and load a bundle, replay live catalogue changes, then swap it in atomically.
        On any failure the previous bundle keeps serving and BundleError is raised."""
        with self._reload_lock:
            try:
                path = resolve_bundle(bundle)
                manifest = read_manifest(path)
                recommender = load_recommender(path, verify=False)  # verified just above
                current = self.current
                if current is not None and recommender.user_tower.dim != current.recommender.user_tower.dim:
                    raise BundleError(f"{path}: embedding dimension {recommender.user_tower.dim} does not match the "
                                      f"serving bundle's {current.recommender.user_tower.dim}")
            except BundleError:
                self.metrics.reloads.labels("refused").inc()
                raise
            except Exception as exc:  # a bundle that cannot be loaded never replaces a working one
                self.metrics.reloads.labels("refused").inc()
                raise BundleError(f"cannot load bundle {bundle}: {exc}") from exc
            if not self.settings.rerank:
                recommender.reranker = None
            if self.settings.torch_threads and "torch" in sys.modules:  # only bundles with trained towers load it
                sys.modules["torch"].set_num_threads(self.settings.torch_threads)
            recommender.user_tower = self._serving_tower(recommender.user_tower)
            loaded = Loaded(path, manifest, recommender, self.settings.similar_response_cache,
                            self.settings.turn_batch_max, self.metrics)
            self._replay_catalogue(loaded)
            self._warm_user_cache(loaded)
            self._warm_neighbours(loaded)
            self.current = loaded
            self.metrics.reloads.labels("loaded").inc()
            self.metrics.set_model(manifest.get("name", path.parent.name), loaded.version,
                                   recommender.index.n_available)
            return loaded

    def _serving_tower(self, tower):
        """BERT towers get micro-batching across concurrent requests; every tower gets the LRU
        cache of query vectors (keyed by the history, so new events never hit stale entries)."""
        if not isinstance(tower, PooledHistoryEncoder) and self.settings.micro_batch_ms > 0:
            tower = MicroBatchingEncoder(tower, self.settings.micro_batch_ms, self.settings.micro_batch_max)
        if self.settings.user_cache_size:
            tower = CachedHistoryEncoder(tower, self.settings.user_cache_size)
        return tower

    def _warm_user_cache(self, loaded: Loaded) -> None:
        """Pre-encode known users' current histories (bundle + events) before the bundle serves."""
        tower = loaded.recommender.user_tower
        limit = min(self.settings.warm_user_cache, self.settings.user_cache_size)
        if not isinstance(tower, CachedHistoryEncoder) or limit == 0:
            return
        started = time.perf_counter()
        users = list(itertools.islice(loaded.recommender.histories, limit))
        added = tower.warm([h for h in (self.history(loaded, u) for u in users) if h])
        logger.info("user cache: %d known users pre-encoded in %.1f s", added, time.perf_counter() - started)

    def _warm_neighbours(self, loaded: Loaded) -> None:
        """Similar-item lists for the catalogue's first `warm_similar_items` items, in batched searches."""
        recommender = loaded.recommender
        if self.settings.warm_similar_items:
            started = time.perf_counter()
            n = recommender.neighbours.fill(recommender.item_ids[: self.settings.warm_similar_items],
                                            recommender.neighbour_lists)
            logger.info("similar items: %d lists computed in %.1f s", n, time.perf_counter() - started)

    def _replay_catalogue(self, loaded: Loaded) -> None:
        items, states = self.store.catalogue_changes()
        recommender = loaded.recommender
        fitting = [(r, v) for r, v in items if len(v) == recommender.index.dim]
        if fitting:
            upsert_items(recommender, [r for r, _ in fitting], np.stack([v for _, v in fitting]))
        for active in (True, False):
            ids = [i for i, a in states.items() if a is active and i in recommender.index.position]
            if ids:
                set_active(recommender, ids, active)

    # ---- users --------------------------------------------------------------------------------
    def history(self, loaded: Loaded, user_id: str) -> list[str] | None:
        """Bundle history + events recorded since, most recent `history_limit`; None if unknown."""
        stored = loaded.recommender.histories.get(user_id)
        events = self.store.events(user_id, self.settings.history_limit)
        if stored is None and not events:
            return None
        return ((stored or []) + events)[-self.settings.history_limit:]

    def recommend_user(self, loaded: Loaded, user_id: str, history: list[str] | None, k: int, exclude_seen: bool,
                       exclude: Collection[str], where: Mapping | None) -> RecommendationList:
        """`history` from `self.history(loaded, user_id)`: None for unknown users (popular items, or
        UnknownIdError when the fallback is off)."""
        if history is None and not self.settings.unknown_user_fallback:
            raise UnknownIdError("user", [user_id])
        return loaded.recommender.recommend_history(history or [], k, exclude_seen, exclude, where)

    def record_event(self, loaded: Loaded, user_id: str, item_id: str, kind: str,
                     timestamp: float | None) -> int:
        if item_id not in loaded.recommender.item_position:
            raise UnknownIdError("item", [item_id])
        return self.store.append(user_id, item_id, kind, timestamp)

    # ---- catalogue ----------------------------------------------------------------------------
    def text_encoder(self, loaded: Loaded):
        """The bundle's item tower, loaded on first use (free-text queries, item upserts)."""
        if loaded.text_encoder is None:
            with loaded.write_lock:
                if loaded.text_encoder is None:
                    encoder = self.item_encoder_loader(loaded)
                    dim = getattr(encoder, "dim", loaded.recommender.index.dim)
                    if dim != loaded.recommender.index.dim:
                        raise BundleError(f"the item tower gives {dim}-d vectors but the index holds "
                                          f"{loaded.recommender.index.dim}-d ones: text queries and upserts are "
                                          "unavailable for this bundle")
                    loaded.text_encoder = encoder
        return loaded.text_encoder

    def upsert_item(self, loaded: Loaded, record: dict) -> None:
        record = {**record, "text": item_text(loaded.recommender, record)}
        vector = self.text_encoder(loaded).encode([record["text"]])[0]
        with loaded.write_lock:
            upsert_items(loaded.recommender, [record], vector[None, :])
            self.store.upsert_item(record, vector)
            self.store.set_active(record["item_id"], True)
            set_active(loaded.recommender, [record["item_id"]], True)
        self.metrics.index_size.set(loaded.recommender.index.n_available)

    def set_item_active(self, loaded: Loaded, item_id: str, active: bool) -> None:
        with loaded.write_lock:
            set_active(loaded.recommender, [item_id], active)  # raises UnknownIdError for unknown ids
            self.store.set_active(item_id, active)
        self.metrics.index_size.set(loaded.recommender.index.n_available)

    def close(self) -> None:
        self.store.close()


def innermost_tower(tower):
    """The user tower under the serving wrappers (cache, micro-batcher)."""
    while hasattr(tower, "tower"):
        tower = tower.tower
    return tower


class TrainedItemEncoder:
    """`encode(texts)` through a trained bundle's own item tower (its text-only path), so new items
    and free-text queries land in the space the bundle was trained in."""

    def __init__(self, tower) -> None:
        self.tower = tower

    @property
    def dim(self) -> int:
        return self.tower.dim

    def encode(self, texts: list[str]):
        return self.tower.encode_item_texts(list(texts))


def load_item_encoder(loaded: Loaded, quantize_int8: bool = False):
    """Item tower for this bundle: the trained towers' own text path, else the frozen BERT the
    bundle was built with (never a different model: its vectors would live in another space)."""
    tower = innermost_tower(loaded.recommender.user_tower)
    if hasattr(tower, "encode_item_texts"):
        return TrainedItemEncoder(tower)
    if loaded.recommender.encoder_info.get("kind", "frozen-bert") != "frozen-bert":
        raise BundleError(f"{loaded.path}: this bundle's item tower cannot encode new text")
    from encoders.text_encoder import TextEncoder, quantize_dynamic_int8

    encoder = TextEncoder.from_config(loaded.recommender.config.encoder)
    return quantize_dynamic_int8(encoder) if quantize_int8 else encoder
