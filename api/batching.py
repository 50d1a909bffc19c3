"""Dynamic micro-batching: concurrent requests' history encodes run as one BERT batch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np


class MicroBatchingEncoder:
    """Wraps a user tower; calls from many threads are queued, and one worker encodes whatever
    arrived within `max_wait_ms` (up to `max_batch` histories) in a single call."""

    def __init__(self, tower, max_wait_ms: float = 2.0, max_batch: int = 32) -> None:
        self.tower = tower
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    @property
    def dim(self) -> int:
        return self.tower.dim

    def __getattr__(self, name: str):
        return getattr(self.tower, name)

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        future: Future = Future()
        self._queue.put((list(histories), future))
        return future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            size = len(first[0])
            while size < self.max_batch:
                try:
                    item = self._queue.get(timeout=self.max_wait)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                pending.append(item)
                size += len(item[0])
            self._encode(pending)

    def _encode(self, pending: list) -> None:
        histories = [h for batch, _ in pending for h in batch]
        try:
            vectors = self.tower.encode_histories(histories)
        except Exception as exc:  # hand the error to every waiting caller
            for _, future in pending:
                future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for batch, future in pending:
            future.set_result(vectors[start:start + len(batch)])
            start += len(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)
