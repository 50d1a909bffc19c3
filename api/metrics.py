"""Prometheus metrics on a per-app registry (no process-global state). Under `recsys serve --workers N` the workers
keep them in files of one directory (prometheus_client's multiprocess mode, `shared_across_workers`), so that
/metrics answers for every worker, whichever one takes the scrape."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_(\d+)\.db")
"""A worker's file of gauges that leave the metrics with it (`multiprocess_mode` live…), named with its pid."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's setting, read when a process imports it: the directory where every process keeps its values."""


@contextlib.contextmanager
def shared_across_workers() -> Iterator[None]:
    """For the workers started inside it (new processes): their metrics in files of one temporary directory,
    removed on exit, so that each worker's /metrics answers the sum of the counters and histograms over the workers
    and every live worker's gauges (a `pid` label each; a crashed worker's leave at the next scrape,
    `forget_dead_workers`). Without it a scrape read the one worker that took the
    connection, and its counters went down and up from one scrape to the next. A PROMETHEUS_MULTIPROC_DIR already
    set is used as it is."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    directory = tempfile.mkdtemp(prefix="recsys-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(directory, ignore_errors=True)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("recsys_request_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        # (several workers: each worker's gauges, with its pid, while it lives)
        self.model = Gauge("recsys_model_info", "loaded bundle", ["version", "name"], registry=self.registry,
                           multiprocess_mode="liveall")
        self.index_size = Gauge("recsys_index_items", "items the index can return", registry=self.registry,
                                multiprocess_mode="liveall")
        self.event_store_up = Gauge("recsys_event_store_up", "1 while the event store answers this worker's checks "
                                    "(every RECSYS_SYNC_INTERVAL_MS), 0 while it does not", registry=self.registry,
                                    multiprocess_mode="liveall")
        self._model_labels: tuple[str, str] | None = None
        self.event_store_up.set(1)
        self.reloads = Counter("recsys_reloads_total", "bundle reloads", ["outcome"], registry=self.registry)
        self.turn_batches = Counter("recsys_turn_batches_total", "recommend_batch calls shared by the history "
                                    "requests of one event-loop turn (query vectors cached, or the user tower run)",
                                    ["vectors"], registry=self.registry)
        self.turn_batched = Counter("recsys_turn_batched_requests_total", "history requests answered by those calls "
                                    "(divided by the batches: the mean batch size)", ["vectors"],
                                    registry=self.registry)

    def set_model(self, name: str, version: str, index_items: int) -> None:
        if self._model_labels is not None:  # 0 first: a worker's file keeps every value it was given
            self.model.labels(*self._model_labels).set(0)
        if not os.environ.get(MULTIPROCESS_DIR):  # (several workers: the files are scraped, and prometheus_client
            self.model.clear()                    # warned on every reload that it clears no file)
        self._model_labels = (version, name)
        self.model.labels(version=version, name=name).set(1)
        self.index_size.set(index_items)

    def record_turn_batch(self, vectors: str, size: int) -> None:
        self.turn_batches.labels(vectors).inc()
        self.turn_batched.labels(vectors).inc(size)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format: every worker's when they share a directory."""
        directory = os.environ.get(MULTIPROCESS_DIR)
        if not directory:
            return generate_latest(self.registry)
        forget_dead_workers(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)

    def close(self) -> None:
        """A worker that stops: its gauges leave the shared metrics (its counts stay in the sums)."""
        if os.environ.get(MULTIPROCESS_DIR):
            multiprocess.mark_process_dead(os.getpid())


def forget_dead_workers(directory: str) -> list[int]:
    """`multiprocess.mark_process_dead` for each worker whose live gauges are in `directory` and whose process is
    gone: a worker that crashed (or was killed) never ran `ServiceMetrics.close`, and its gauges stayed listed, with
    their last values, until the server restarted. Its counts stay in the sums. Returns those workers' pids."""
    pids = {int(m.group(1)) for m in map(LIVE_GAUGE_FILE.fullmatch, os.listdir(directory)) if m}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker's scrape removed it first
            multiprocess.mark_process_dead(pid, directory)
    return dead


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


class MetricsMiddleware:
    """Counts and times every request by its route template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics_source) -> None:
        self.app = app
        self.source = metrics_source  # the FastAPI app: its service (and metrics) exist after startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        where = scope["path"], scope.get("root_path", "")  # a mount rewrites them on the way in

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            service = getattr(self.source.state, "service", None)
            if service is not None:
                name = route_label(self.source, scope, where)
                service.metrics.requests.labels(name, scope["method"], str(status["code"])).inc()
                service.metrics.latency.labels(name).observe(time.perf_counter() - started)


def route_label(app, scope: Scope, where: tuple[str, str]) -> str:
    """The route template that served the request (bounded labels). Routes FastAPI adds itself (/openapi.json) and
    mounts (the docs' static files) do not leave it in the scope: those few are matched here against the request's
    original (path, root_path) `where`; anything else is "unmatched"."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path_format", route.path)  # "/v1/items/{item_id}", not its convertor's "{item_id:id}"
    original = {**scope, "path": where[0], "root_path": where[1]}
    for candidate in app.routes:
        if candidate.matches(original)[0] != Match.NONE:
            return getattr(candidate, "path", "unmatched")
    return "unmatched"


class BodyLimitMiddleware:
    """413 for bodies whose Content-Length is over the limit, before routing (bodies without one, e.g. chunked,
    are counted while they are read: FastAPI's `max_body_size`, see `api.app`)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        await self.app(scope, receive, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body over the limit of {limit} bytes","errors":[]}}'.encode()  # ErrorResponse
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
