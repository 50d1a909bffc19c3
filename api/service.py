"""The serving state behind the routes: the loaded bundle (swappable), the event store it converges to, and
metrics.

Every catalogue edit is written to the event store first and then applied from it (`sync`), by the worker that
took it at once and by every other worker within `sync_interval_ms` (a background task polls the store's change
sequence; requests also check it at most that often). A reload replays the whole change log into the new bundle
and, under the lock that serialises syncs, applies what arrived meanwhile right before the swap, so no edit is
lost; the other workers follow the reload (a `bundle` change)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import itertools
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from tqdm import tqdm

from api.batching import MicroBatchingEncoder
from api.loaded import Loaded
from api.metrics import ServiceMetrics
from api.settings import Settings
from api.start_bundle import choose, is_rollback
from api.store_check import check_same_shop
from encoders.loading import frozen_item_tower, open_recommender
from recsys.artifacts import resolve_bundle
from recsys.bundle import Bundle
from recsys.cache import ByteBudgetCache
from recsys.catalogue import REMOVED
from recsys.changes import Folded, apply_changes, fold, is_served_as, served_vectors
from recsys.data.item_text import item_text
from recsys.errors import BundleError, RecsysError, StoreError
from recsys.histories import stored_kinds
from recsys.pipeline import Recommender
from recsys.store import Change, EventStore, merged_history, open_store
from recsys.towers import ItemTower, UserTower
from recsys.user_tower import CachedHistoryEncoder

logger = logging.getLogger("recsys.api")
FOLLOW_RETRY_S = 30.0  # a worker that failed to load a bundle another worker swapped in tries again this often


T = TypeVar("T")


def make_store(settings: Settings) -> EventStore:
    """The configured event store; one line naming the setting (StoreError) when it cannot be opened."""
    try:
        store = open_store(settings.event_store, settings.state_dir, settings.redis_url, settings.redis_timeout_s,
                           settings.sqlite_write_timeout_s)
    except StoreError as exc:
        raise StoreError(f"RECSYS_REDIS_URL: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"RECSYS_STATE_DIR: cannot open the event store in {settings.state_dir}: {exc}") from None
    path = getattr(store, "path", None)  # SQLite: a read-only file opens and reads, then refuses every event
    if path is not None and not os.access(path, os.W_OK):
        store.close()
        raise StoreError(f"RECSYS_STATE_DIR: the event store {path} is read-only; the API writes events and "
                         "catalogue edits to it")
    return store


class Service:
    """Everything the routes need; lives on app.state.service. `item_encoder_loader(recommender)` gives the item
    tower of bundles whose user tower has none (default: the frozen BERT they were built with, shared by
    successive bundles built with the same one)."""

    def __init__(self, settings: Settings, store: EventStore | None = None,
                 item_encoder_loader=None) -> None:
        self.settings = settings
        self.store = store or make_store(settings)
        self.item_encoder_loader = item_encoder_loader or self._frozen_item_tower
        self.metrics = ServiceMetrics()
        self.current: Loaded | None = None
        # reloads only load bundles under this directory (set from the first bundle served when not configured)
        self.bundle_root: Path | None = settings.bundle_root.resolve() if settings.bundle_root else None
        if settings.admin_token is not None and not settings.admin_enabled:
            logger.warning("RECSYS_ADMIN_TOKEN is empty: the admin routes are off (403); set a token to enable them")
        if settings.faiss_threads:
            import faiss

            faiss.omp_set_num_threads(settings.faiss_threads)
        sys.setswitchinterval(settings.gil_switch_ms / 1000.0)
        # progress bars in a worker (transformers' "Loading weights" when the first upsert loads the item tower) take
        # a thread lock: tqdm's default also creates a process-shared semaphore, which a worker stopped by `recsys
        # serve --workers N` leaves behind ("resource_tracker: There appear to be 1 leaked semaphore objects")
        tqdm.set_lock(threading.RLock())
        if settings.blas_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=settings.blas_threads, user_api="blas")
        self._reload_lock = threading.Lock()   # one load at a time
        self._sync_lock = threading.Lock()     # one catch-up at a time; the swap holds it too
        self._frozen: tuple | None = None      # (encoder config, item tower) shared across reloads
        self._following: str | None = None     # the bundle a `bundle` change asked this worker to load
        self._missed: tuple[str, float] | None = None  # a reload this worker failed to follow, and when to retry
        self._compacting = False
        self._last_poll = 0.0
        self._poll_lock = threading.Lock()    # one check of the store at a time (a hanging store: no pile-up)
        self.store_available = True           # the answer of the latest check (`poll`); the load read the store
        self._store_down_since = 0.0

    # ---- bundle lifecycle ---------------------------------------------------------------------
    def load(self, target: str | Path, *, announce: bool = False) -> Loaded:
        """Verify and load a bundle, replay the store's catalogue changes into it, warm its caches, apply what
        arrived meanwhile and swap it in; the replaced bundle is closed and freed. On any failure the previous
        bundle keeps serving and BundleError is raised. `announce`: record the swap in the store, so the other
        workers load the same bundle."""
        with self._reload_lock:
            started = time.perf_counter()
            logger.info("loading bundle %s …", target)  # said first: verifying and warming a big one takes a while
            try:
                bundle = Bundle.open(target)
                recommender = open_recommender(bundle, rerank=self.settings.rerank)
                current = self.current
                if current is not None and recommender.user_tower.dim != current.recommender.user_tower.dim:
                    raise BundleError(f"{bundle.path}: embedding dimension {recommender.user_tower.dim} does not "
                                      f"match the serving bundle's {current.recommender.user_tower.dim}")
            except BundleError as exc:
                self.metrics.reloads.labels("refused").inc()
                logger.warning("bundle %s refused: %s", target, exc, exc_info=exc.__cause__)
                raise
            except Exception as exc:  # a bundle that cannot be loaded never replaces a working one
                raise self._refused(target, exc) from exc
            loaded = self._prepared(target, bundle, recommender)
            try:
                with self._sync_lock:  # (the metrics too: a sync of the replaced bundle must not overwrite them)
                    self._catch_up(loaded)  # edits recorded while this bundle was loading
                    old, self.current, self._missed = self.current, loaded, None  # newer: no retry of an older
                    self.metrics.set_model(bundle.name, loaded.version, recommender.index.n_available)
            except Exception as exc:
                if self.current is not loaded:
                    loaded.close()
                raise self._refused(target, exc) from exc
            if announce:  # (a rollback is kept by restarts: `api.start_bundle`)
                self.store.record_change("bundle", record={"path": str(bundle.path),
                                                           "rollback": is_rollback(bundle.path)})
            if self.bundle_root is None:
                self.bundle_root = bundle.path.resolve().parent
            self.metrics.reloads.labels("loaded").inc()
            logger.info("serving %s %s: %d items, ready in %.1f s", bundle.name, loaded.version,
                        recommender.index.n_available, time.perf_counter() - started)
            if old is not None:
                old.close()
                del old
                release_memory()
            return loaded

    def _refused(self, target: str | Path, exc: Exception) -> BundleError:
        """A load that failed past the bundle's own checks, counted and logged with its traceback: the BundleError
        the reload answers (409) and a following worker retries on."""
        self.metrics.reloads.labels("refused").inc()
        logger.exception("cannot load bundle %s", target)
        return BundleError(f"cannot load bundle {target}: {type(exc).__name__}: {exc}")

    def _prepared(self, target: str | Path, bundle: Bundle, recommender: Recommender) -> Loaded:
        """The opened bundle made ready to serve: serving tower and caches, the whole change log replayed, caches
        warmed. A failure here (not the bundle's own checks) stops its background work and is a BundleError too:
        the previous bundle keeps serving and the reload answers why, not a 500."""
        torch = imported("torch") if self.settings.torch_threads else None  # only trained towers load it
        if torch is not None:
            torch.set_num_threads(self.settings.torch_threads)
        cache = ByteBudgetCache(int(self.settings.cache_mb * 2**20))
        recommender.user_tower = self._serving_tower(recommender.user_tower, cache)
        recommender.item_tower_loader = self.item_encoder_loader
        recommender.index.search_threads = self.settings.faiss_threads  # in every thread that searches
        loaded = Loaded(bundle, recommender, cache, self.settings.turn_batch_max, self.metrics,
                        self.settings.turn_batch_wait_ms)
        try:
            self._catch_up(loaded)  # the whole change log, folded
            self._warm_user_cache(loaded)
            self._warm_neighbours(loaded)
            self._preload_item_tower(loaded)
        except Exception as exc:
            loaded.close()
            raise self._refused(target, exc) from exc
        return loaded

    def start(self, given: str | Path, *, check_shop: bool = True) -> Loaded:
        """The first `load`: of `given` (a bundle or model directory), or of the bundle the latest reload recorded
        in the event store swapped in, which supersedes it (`api.start_bundle.choose`: a rollback is not undone by
        a restart; a worker restarted on its own serves what the others serve), said in a warning. With
        `check_shop`, StoreError first when the store holds another shop's catalogue (`api.store_check`)."""
        path = resolve_bundle(given)
        if check_shop:
            check_same_shop(self.store, path, self.settings)
        choice = choose(path, self.store.latest_bundle(), self.settings.bundle_root, self.settings.start_bundle)
        if choice.warning:
            logger.warning("%s", choice.warning)
        if choice.path == path.resolve():
            return self.load(path)
        try:
            return self.load(choice.path)
        except BundleError as exc:
            logger.warning("the latest reload's bundle %s cannot be loaded (%s): serving %s", choice.path, exc, path)
            return self.load(path)

    def reload(self, bundle: str | None) -> Loaded:
        """`load` (and announce) a bundle under the bundle root: `bundle` is relative to it (or an absolute path
        inside it); None: the newest version of the current model. Anything outside is refused (BundleError)
        before it is read; every refusal counts in `recsys_reloads_total{outcome="refused"}`."""
        try:
            path = self._reload_path(bundle)
        except BundleError:
            self.metrics.reloads.labels("refused").inc()
            raise
        return self.load(path, announce=True)

    def _reload_path(self, bundle: str | None) -> Path:
        """The bundle directory `reload` loads: under the bundle root, or BundleError."""
        root, current = self.bundle_root, self.current
        if root is None or current is None:
            raise BundleError("no bundle loaded yet")
        outside = BundleError(f"{bundle or current.version}: not under the bundle root (RECSYS_BUNDLE_ROOT)")
        try:
            candidate = (root / bundle if bundle else current.path.parent).resolve()
            del current  # the replaced bundle is freed once its last request is done: this one holds it no longer
            if not candidate.is_relative_to(root):
                raise outside
            path = resolve_bundle(candidate)
            if not path.resolve().is_relative_to(root):  # e.g. a version directory linking elsewhere
                raise outside
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, …
            raise BundleError(f"{bundle}: not a usable path ({type(exc).__name__})") from exc
        return path

    def _serving_tower(self, tower: UserTower, cache: ByteBudgetCache) -> UserTower:
        """BERT towers get micro-batching across concurrent requests; every tower gets the cache of query vectors
        (keyed by the history, so new events never hit stale entries), within the byte budget."""
        if not tower.cheap and self.settings.micro_batch_ms > 0:
            tower = MicroBatchingEncoder(tower, self.settings.micro_batch_ms, self.settings.micro_batch_max)
        if cache.max_bytes:
            tower = CachedHistoryEncoder(tower, cache=cache.part("vectors"))
        return tower

    def _frozen_item_tower(self, recommender: Recommender) -> ItemTower:
        """The frozen BERT of a zero-shot bundle, shared with the previous bundle when it used the same one."""
        key = (recommender.config.encoder, self.settings.quantize_int8)
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, frozen_item_tower(recommender, self.settings.quantize_int8))
        return self._frozen[1]

    def _warm_user_cache(self, loaded: Loaded) -> None:
        """Pre-encode up to `warm_user_cache` known users' current histories (bundle + events) before the bundle
        serves; every other user's query vector is computed on their first request and cached (LRU, bounded by
        `cache_mb`), so start-up does not grow with the number of users."""
        tower = loaded.recommender.user_tower
        limit = self.settings.warm_user_cache
        if not isinstance(tower, CachedHistoryEncoder) or limit == 0:
            return
        started = time.perf_counter()
        users = list(itertools.islice(loaded.recommender.histories, limit))
        histories = [h for h in (self.history(loaded, u) for u in users) if h]
        added = tower.warm(histories)
        logger.info("user cache: %d known users' histories pre-encoded (%d distinct: users with the same history "
                    "share one entry) in %.1f s", len(histories), added, time.perf_counter() - started)

    def _preload_item_tower(self, loaded: Loaded) -> None:
        """With `preload_item_tower`, the item tower for new text now rather than on its first request (a bundle
        whose tower cannot encode text serves without it, as it would anyway)."""
        if not self.settings.preload_item_tower:
            return
        started = time.perf_counter()
        try:
            loaded.recommender.item_tower()
        except RecsysError as exc:
            logger.warning("item tower not preloaded: %s", exc)
            return
        logger.info("item tower preloaded in %.1f s", time.perf_counter() - started)

    def _warm_neighbours(self, loaded: Loaded) -> None:
        """Similar-item lists of the `warm_similar_items` most popular items (the pages most visited), in batched
        searches; the rest on first use."""
        recommender = loaded.recommender
        if self.settings.warm_similar_items:
            started = time.perf_counter()
            popular = recommender.popularity.item_ids[recommender.popularity.order[: self.settings.warm_similar_items]]
            n = recommender.neighbours.fill([i for i in popular.tolist() if i in recommender.item_position],
                                            recommender.neighbour_lists)
            logger.info("similar items: %d lists computed in %.1f s", n, time.perf_counter() - started)

    # ---- converging to the store --------------------------------------------------------------
    def _catch_up(self, loaded: Loaded) -> Folded | None:
        """Apply the store's catalogue changes `loaded` has not seen (folded; upserts from another item space
        are encoded again with this bundle's item tower)."""
        changes = self.store.changes(after=loaded.applied_seq)
        if not changes:
            return None
        folded = fold(changes)
        loaded.announced = folded.bundle or loaded.announced
        recommender = loaded.recommender
        applied = apply_changes(recommender.catalogue, folded, loaded.bundle.item_space,
                                lambda records: recommender.item_tower().encode_items(records))
        loaded.applied_seq = folded.last_seq
        if applied.upserted or applied.deleted or applied.activated or applied.deactivated:
            logger.info("catalogue: changes up to #%d applied to %s (%s)", folded.last_seq, loaded.version, applied)
        return folded

    def pending(self) -> bool:
        """Whether the store holds catalogue changes the serving bundle has not applied (one cheap query), or a
        reload this worker failed to follow is due to be tried again."""
        loaded = self.current
        if loaded is None:
            return False
        return self.store.last_change_seq() > loaded.applied_seq or self._retry_due() is not None

    def _retry_due(self) -> str | None:
        """The bundle of a reload this worker failed to follow, once it is time to try it again."""
        return self._missed[0] if self._missed is not None and time.monotonic() >= self._missed[1] else None

    def sync(self) -> Loaded | None:
        """Bring the serving bundle up to the store: apply its unseen catalogue changes, follow a reload another
        worker announced, and compact the index when enough items were removed. Returns the serving bundle."""
        with self._sync_lock:
            loaded = self.current
            if loaded is None:
                return None
            folded = self._catch_up(loaded)
            self.metrics.index_size.set(loaded.recommender.index.n_available)  # still the serving bundle's
        announced = folded.bundle if folded is not None and folded.bundle else self._retry_due()
        if announced is not None and announced != str(loaded.path):
            self._follow(announced)
        if self.settings.compact_share > 0 \
                and loaded.recommender.catalogue.needs_compaction(self.settings.compact_share):
            self._compact(loaded)
        return loaded

    def poll(self) -> None:
        """One check of the store (in a thread: never on the event loop, where a hanging store would stall every
        request): apply what is new, and set `store_available` to whether it answered. Each change of that state is
        logged once (and `recsys_event_store_up` follows it), not every poll; a check already running is not
        doubled."""
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            try:
                due = self.pending()
            except Exception as exc:  # whatever it raises, the store did not answer
                self._store_failed(exc)
                return
            self._store_answered()
            if due:
                self.sync()
        finally:
            self._poll_lock.release()

    def _store_failed(self, exc: Exception) -> None:
        self.metrics.event_store_up.set(0)
        if self.store_available:
            self.store_available, self._store_down_since = False, time.monotonic()
            logger.warning("the event store is unavailable (%s: %s): known users, events and catalogue edits answer "
                           "503 until it is back; sessions and similar items keep serving", type(exc).__name__, exc)

    def _store_answered(self) -> None:
        self.metrics.event_store_up.set(1)
        if not self.store_available:
            self.store_available = True
            logger.warning("the event store is available again (after %.1f s)",
                           time.monotonic() - self._store_down_since)

    def poll_if_due(self) -> None:
        """From a request on the event loop: at most every `sync_interval_ms`, start a `poll` in the thread pool
        (the request does not wait for it, and needs no answer from the store)."""
        now = time.monotonic()
        if now - self._last_poll < self.settings.sync_interval_ms / 1000.0:
            return
        self._last_poll = now
        started = asyncio.get_running_loop().run_in_executor(None, self.poll)
        started.add_done_callback(_log_failure)

    async def sync_forever(self) -> None:
        """The background task: poll the store every `sync_interval_ms` and apply what is new."""
        interval = self.settings.sync_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                self._last_poll = time.monotonic()
                await run_in_threadpool(self.poll)
            except Exception:  # keep polling: a failing sync must not stop convergence for good
                logger.exception("catalogue sync failed")

    def _follow(self, path: str) -> None:
        """Load the bundle another worker swapped in (in a thread: serving goes on meanwhile)."""
        if self._following == path:
            return
        self._following = path

        def follow() -> None:
            try:
                loaded = self.load(path)
                logger.info("followed the reload to %s", path)
            except BundleError as exc:  # the other workers serve it: keep trying, or this one serves the old
                self._missed = (path, time.monotonic() + FOLLOW_RETRY_S)  # bundle for good
                logger.error("cannot follow the reload to %s (retrying in %.0f s): %s", path, FOLLOW_RETRY_S, exc)
            else:
                # a reload announced after this one (while this load waited for another) was replayed with the change
                # log, so no sync will ever see it: follow it too
                if loaded.announced not in (None, str(loaded.path)):
                    self._follow(loaded.announced)
            finally:
                if self._following == path:
                    self._following = None

        threading.Thread(target=follow, name="follow-reload", daemon=True).start()

    def _compact(self, loaded: Loaded) -> None:
        """Drop tombstoned rows in a thread: the compacted index is built aside, searches and edits go on."""
        if self._compacting:
            return
        self._compacting = True
        catalogue = loaded.recommender.catalogue

        def compact() -> None:
            try:
                started = time.perf_counter()
                dropped = catalogue.compact()
                logger.info("catalogue compacted: %d rows reclaimed in %.2f s", dropped, time.perf_counter() - started)
            finally:
                self._compacting = False

        threading.Thread(target=compact, name="compaction", daemon=True).start()

    # ---- users --------------------------------------------------------------------------------
    def history(self, loaded: Loaded, user_id: str) -> list[str] | None:
        """Bundle history + events recorded since, most recent `history_limit`; None if unknown
        (`recsys.store.merged_history`, the same function batch scoring uses). Reads the store: from the event loop,
        call it through `read_store`."""
        return self.history_and_kinds(loaded, user_id, kinds=False)[0]

    async def read_store(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)`, a read of the event store, from the event loop: in the thread pool when the store's reads
        can wait (`EventStore.reads_wait`: Redis, a network round trip that may hang up to its timeout), else right
        here (SQLite's reader never queues: a thread hop per request cost 10-18 % of the known-user and
        user-similar throughput at concurrency 32, benchmarks/EXPERIMENTS.md "Served latency, every run")."""
        if self.store.reads_wait:
            return await run_in_threadpool(call, *args)
        return call(*args)

    def history_and_kinds(self, loaded: Loaded, user_id: str,
                          kinds: bool = True) -> tuple[list[str] | None, dict[str, str]]:
        """`history`, and the kind of the user's latest event on each item of it (viewed / bought, for the reasons):
        the store's events, after the bundle's own (kinds kept by `recsys import table --kind-col`; none in a bundle
        without them). One store read (`EventStore.events_with_kinds`), so one thread-pool hop where the store is
        read in the pool."""
        limit = self.settings.history_limit
        events = self.store.events_with_kinds(user_id, limit)
        stored = loaded.recommender.histories
        history = merged_history(stored.get(user_id), [item_id for item_id, _ in events], limit)
        if not kinds:
            return history, {}
        # the latest `limit` events of each hold every event of the history; oldest first, so the latest kind wins
        return history, {**stored_kinds(stored, user_id, limit), **dict(events)}

    def record_event(self, loaded: Loaded, user_id: str, item_id: str, kind: str, timestamp: float | None) -> int:
        self._known(loaded, item_id)
        return self.store.append(user_id, item_id, kind, timestamp)

    # ---- catalogue ----------------------------------------------------------------------------
    def _known(self, loaded: Loaded, *item_ids: str) -> Loaded:
        """The serving bundle, after a sync when an id of `item_ids` is not (yet) in the request's catalogue: an
        item another worker just upserted. UnknownIdError (naming every one) when one is unknown after all."""
        position = loaded.recommender.item_position
        if all(item_id in position for item_id in item_ids):
            return loaded
        loaded = self.sync() or loaded
        loaded.recommender.check_items(list(item_ids))
        return loaded

    def _record(self, loaded: Loaded) -> Loaded:
        """After a change was recorded: apply it (and anything before it) to the serving bundle. A reload running
        meanwhile applies it in its final catch-up, before the swap, when it was recorded before that."""
        return self.sync() or loaded

    def upsert_item(self, loaded: Loaded, record: dict) -> Loaded:
        """Upsert one item, as `change_items` does each of many."""
        return self.change_items(loaded, [record], {}, [])[0]

    def change_items(self, loaded: Loaded, upserts: Sequence[dict], active: Mapping[str, bool],
                     deleted: Sequence[str]) -> tuple[Loaded, list[str]]:
        """Many catalogue changes as one: the upserts' texts rendered through the catalogue's item-text template
        (recorded like the imported items') and encoded with the bundle's item tower in one batch, recorded with the
        activations / deactivations (`active`) and deletions after them in one store write (all or none), then
        applied together. Returns (the serving bundle, the ids of the upserts it already served as sent).

        An upsert the catalogue serves as sent (text and attributes) changes nothing but re-activates its item
        when out of stock; one whose text is unchanged keeps the item's served vector (a trained item keeps its ID
        block; a nightly feed of an unchanged catalogue changes no list); one with a new text is encoded as its
        item's (`ItemTower.encode_texts_of`: an item the towers were trained on keeps its ID block, a typo fix does
        not demote it to a text-only item). UnknownIdError (nothing recorded) naming
        every id of `active` and `deleted` that is neither in the catalogue nor upserted here."""
        upserted = {record["item_id"] for record in upserts}
        loaded = self._known(loaded, *(i for i in (*active, *deleted) if i not in upserted))
        space = loaded.bundle.item_space
        changes: list[Change] = []
        unchanged: list[str] = []
        if upserts:
            loaded = self.sync() or loaded  # compared with the latest catalogue
            tower, state = loaded.recommender.item_tower(), loaded.recommender.catalogue.state
            records = [{**record, "text": item_text(record, tower.template)} for record in upserts]
            unchanged = [r["item_id"] for r in records if is_served_as(state, r)]
            active = {**{i: True for i in unchanged if not state.is_active(i)}, **active}  # an upsert re-activates
            same = set(unchanged)
            records = [r for r in records if r["item_id"] not in same]
            vectors = served_vectors(state, records)
            # a catalogue item's new text that is the bundle's own (a text given back): the bundle's vector (else
            # one computed for that text: the towers' own neighbours are not saved with them, `encode_texts_of`)
            new_texts = {r["item_id"]: r["text"] for r in records
                         if r["item_id"] not in vectors and r["item_id"] in state.position}
            vectors.update(loaded.bundle.own_vectors(new_texts))
            fresh = [r for r in records if r["item_id"] not in vectors]
            if fresh:
                vectors.update(zip((r["item_id"] for r in fresh),
                                   tower.encode_texts_of([r["text"] for r in fresh], [r["item_id"] for r in fresh])))
            changes += [Change(0, "upsert", r["item_id"], r, vectors[r["item_id"]], space) for r in records]
        changes += [Change(0, "active", item_id, active=flag) for item_id, flag in active.items()]
        changes += [Change(0, "delete", item_id) for item_id in deleted]
        if changes:
            self.store.record_changes(changes)
        return self._record(loaded), unchanged

    def catalogue_ids(self, loaded: Loaded) -> tuple[Loaded, list[str], list[str]]:
        """(the serving bundle after a sync, the ids of its active items, of its inactive ones), in row order: what
        every worker serves once it has applied the store's changes."""
        loaded = self.sync() or loaded
        state = loaded.recommender.catalogue.state
        active, live = state.flags == 0, (state.flags & REMOVED) == 0
        return loaded, state.ids[active].tolist(), state.ids[live & ~active].tolist()

    def set_item_active(self, loaded: Loaded, item_id: str, active: bool) -> Loaded:
        loaded = self._known(loaded, item_id)
        self.store.record_change("active", item_id, active=active)
        return self._record(loaded)

    def delete_item(self, loaded: Loaded, item_id: str) -> Loaded:
        """Remove an item for good (its row becomes a tombstone; compaction reclaims it)."""
        loaded = self._known(loaded, item_id)
        self.store.record_change("delete", item_id)
        return self._record(loaded)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.store.close()
        self.metrics.close()


def _log_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.error("catalogue sync failed: %s", done.exception())


def imported(name: str) -> ModuleType | None:
    """Module `name` if it has been imported, or once the import another thread has begun is done (a request's
    upsert may be importing torch while a reload loads a bundle: `sys.modules` then holds the half-initialised
    module); None if it has not been imported."""
    if name not in sys.modules:
        return None
    return importlib.import_module(name)  # waits on the module's import lock, as `import` does


def release_memory() -> None:
    """After a bundle is replaced: collect what is garbage now (also among objects the app froze after its first
    load, which the collector otherwise never visits; frozen again afterwards) and hand freed heap pages back to
    the OS (glibc), so a worker's RSS does not ratchet up with every reload. A replaced bundle holds no reference
    cycle, so reference counting frees it anyway; this catches what libraries leave behind."""
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


__all__ = ["Service", "Loaded", "make_store", "release_memory"]
