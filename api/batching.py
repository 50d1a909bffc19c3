"""Dynamic micro-batching: concurrent requests' history encodes run as one BERT batch (a thread with a
short wait), and cheap requests that reach the event loop together share one retrieval call (no wait)."""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future

import numpy as np

from recsys.towers import UserTower, WrappedUserTower


class MicroBatchingEncoder(WrappedUserTower):
    """Wraps a user tower; calls from many threads are queued, and one worker thread encodes whatever arrived
    within `max_wait_ms` (up to `max_batch` histories) in a single call. After `close()` (the bundle was
    replaced) the thread is gone and late callers encode on their own thread."""

    def __init__(self, tower: UserTower, max_wait_ms: float = 2.0, max_batch: int = 32) -> None:
        super().__init__(tower)
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._state_lock = threading.Lock()
        self.batches = 0
        # the thread runs a function of the queue, not a bound method: it holds no reference to this wrapper
        self._worker = threading.Thread(target=_serve, args=(self._queue, tower, self.max_wait, max_batch),
                                        name="micro-batcher", daemon=True)
        self._worker.start()
        weakref.finalize(self, self._queue.put, None)  # dropped without close(): the thread still ends

    def over(self, catalogue) -> "MicroBatchingEncoder":
        return MicroBatchingEncoder(self.tower.over(catalogue), self.max_wait * 1000.0, self.max_batch)

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        future: Future = Future()
        with self._state_lock:
            if not self._closed:
                self._queue.put((list(histories), future))
                queued = True
            else:
                queued = False
        if not queued:
            return self.tower.encode_histories(histories)
        vectors, batched = future.result()
        self.batches += batched
        return vectors

    def close(self) -> None:
        """Stop the worker thread (queued calls are answered first); idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join(timeout=5)
        self.tower.close()


def _serve(requests: queue.Queue, tower: UserTower, max_wait: float, max_batch: int) -> None:
    """The micro-batcher's thread: batches of queued (histories, future) until the None sentinel."""
    while True:
        first = requests.get()
        if first is None:
            return
        pending = [first]
        size = len(first[0])
        stop = False
        while size < max_batch:
            try:
                item = requests.get(timeout=max_wait)
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            pending.append(item)
            size += len(item[0])
        _encode(tower, pending)
        if stop:
            return


def _encode(tower: UserTower, pending: list) -> None:
    histories = [h for batch, _ in pending for h in batch]
    try:
        vectors = tower.encode_histories(histories)
    except Exception as exc:  # hand the error to every waiting caller
        for _, future in pending:
            future.set_exception(exc)
        return
    start = 0
    for n, (batch, future) in enumerate(pending):
        future.set_result((vectors[start:start + len(batch)], int(n == 0)))  # the batch counted once
        start += len(batch)


LOADED_BATCH = 4
"""A batch of at least this many calls means the worker is saturated: the next batch may wait for company."""


class LoopTurnBatcher:
    """Calls that reach `submit` during one event-loop turn are answered by one `run(key, items)` call per
    key (its results in item order), scheduled right after that turn: under concurrency, requests that
    arrived together share one user-tower pass and one FAISS scan of the catalogue instead of one each,
    and a lone request waits for nothing. When the worker is saturated (the previous batch held at least
    `LOADED_BATCH` calls) a batch waits `wait_ms` before it runs, so requests the loop reads meanwhile join
    it: bigger batches, a batch's fixed cost (one FAISS call, one feature build, one predict) shared by more
    requests (amazon-scientific engine bundle, 2 workers, c=32, one back-to-back pair of runs: 947 → 1,281 req/s).

    `run` executes on the event loop, so it must be cheap (no torch), unless `offload`: then each batch
    runs in the loop's default thread pool. With `prepare`, each batch first runs `prepare(key, items)` in the
    thread pool (the expensive part, e.g. the user tower filling its vector cache) and then `run` on the event
    loop: the numpy / LightGBM work of a batch never competes for the GIL with another batch's thread.
    One loop at a time."""

    def __init__(self, run: Callable[[Hashable, list], Sequence], max_batch: int = 64,
                 on_batch: Callable[[int], None] | None = None, offload: bool = False, wait_ms: float = 0.0,
                 prepare: Callable[[Hashable, list], None] | None = None) -> None:
        if offload and prepare is not None:
            raise ValueError("offload runs the whole batch in the thread pool; prepare splits it: choose one")
        self.run = run
        self.prepare = prepare
        self.max_batch = max_batch
        self.wait = wait_ms / 1000.0
        self.on_batch = on_batch  # e.g. metrics: called with each batch's size
        self.offload = offload
        self.batches = 0
        self.calls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[Hashable, list[tuple[object, asyncio.Future]]] = {}
        self._scheduled = False
        self._last_batch = 0

    async def submit(self, key: Hashable, item: object):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (a test client's): nothing pending carries over
            self._loop, self._pending, self._scheduled = loop, {}, False
        future = loop.create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((item, future))
        if len(batch) >= self.max_batch:
            self._start(key, self._pending.pop(key))
        elif not self._scheduled:
            self._scheduled = True
            if self.wait and self._last_batch >= LOADED_BATCH:  # saturated: let the batch gather for `wait` s
                loop.call_later(self.wait, self._flush)
            else:  # a lone request waits for nothing
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for key, batch in pending.items():
            self._start(key, batch)

    def _start(self, key: Hashable, batch: list[tuple[object, asyncio.Future]]) -> None:
        self._last_batch = len(batch)
        self.batches += 1
        self.calls += len(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        items = [item for item, _ in batch]
        if self.offload:
            done = self._loop.run_in_executor(None, self._call, key, items)
            done.add_done_callback(lambda finished: _settle(batch, finished))
        elif self.prepare is not None:
            done = self._loop.run_in_executor(None, self.prepare, key, items)
            done.add_done_callback(lambda finished: self._after_prepare(key, batch, items, finished))
        else:
            self._run_on_loop(key, batch, items)

    def _run_on_loop(self, key: Hashable, batch: list[tuple[object, asyncio.Future]], items: list) -> None:
        try:
            results = self._call(key, items)
        except Exception as exc:
            _deliver(batch, error=exc)
        else:
            _deliver(batch, results)

    def _after_prepare(self, key: Hashable, batch: list[tuple[object, asyncio.Future]], items: list,
                       finished: asyncio.Future) -> None:
        """A batch's `prepare` is done (a callback on the event loop): run it, or pass its error on."""
        if finished.cancelled() or finished.exception() is not None:
            _settle(batch, finished)
        else:
            self._run_on_loop(key, batch, items)

    def _call(self, key: Hashable, items: list) -> list:
        """The batch's results, in item order; when the batch raises, each call run alone, so a call whose own
        query fails (e.g. an item deleted since its request checked it) fails alone (its slot holds a `_Failed`)."""
        try:
            results = list(self.run(key, items))
        except Exception:
            if len(items) == 1:
                raise
            return [self._alone(key, item) for item in items]
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} calls")
        return results

    def _alone(self, key: Hashable, item: object) -> object:
        try:
            return self._call(key, [item])[0]
        except Exception as exc:
            return _Failed(exc)


class _Failed:
    """The error of one call of a batch, in its result slot."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _settle(batch: list[tuple[object, asyncio.Future]], finished: asyncio.Future) -> None:
    """An offloaded batch is done: deliver its results or error (cancelled, e.g. at shutdown: cancel the callers)."""
    if finished.cancelled():
        for _, future in batch:
            future.cancel()
    elif finished.exception() is not None:
        _deliver(batch, error=finished.exception())
    else:
        _deliver(batch, finished.result())


def _deliver(batch: list[tuple[object, asyncio.Future]], results: Sequence | None = None,
             error: BaseException | None = None) -> None:
    """Each caller its result or its own call's error (`_Failed`), or every caller `error`; a caller that went
    away (client disconnect) has a cancelled future and is skipped."""
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        elif isinstance(results[index], _Failed):
            future.set_exception(results[index].error)
        else:
            future.set_result(results[index])
