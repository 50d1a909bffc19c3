"""The Ray engine: the same chunks, processed by a Ray Data actor pool (`map_batches` with a callable
class that loads its model once per actor; one GPU per actor when the cluster has GPUs).

Each actor writes its chunks' shards itself, through the same code as the local engine (`ChunkScorer`
for batch scoring, `ChunkEncoder` for `recsys encode`), so both engines produce the same files; only a
few numbers per chunk travel back to the driver. On a multi-node cluster, --out and the bundle must be
on storage every node sees (a shared filesystem) and the code installed on every node (or shipped with
a Ray runtime_env).

Imported only for `--engine ray`; `ray` is the optional `distributed` extra.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jobs.batch.layout import JobDir
from jobs.batch.scoring import ChunkResult, ChunkScorer

INSTALL_HINT = ("the Ray engine needs ray: pip install 'bert-recsys[distributed]' (in a clone of the repository: "
                "pip install -e '.[distributed]')")


def import_ray() -> Any:
    """`ray` with Ray Data, or a BatchError saying how to install it."""
    from jobs.batch.layout import BatchError
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BatchError(f"{INSTALL_HINT} ({exc})") from None
    return ray


class ScoreChunks:
    """Ray Data callable class: bundle loaded in `__init__`, one chunk per call."""

    def __init__(self, bundle: str, out: str, identity: dict, threads: int = 1) -> None:
        self.scorer = ChunkScorer(bundle, JobDir(Path(out), identity), threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        return result_columns([self.scorer.run_chunk(int(chunk)) for chunk in batch["chunk"]])


def result_columns(results: Sequence[ChunkResult]) -> dict[str, list]:
    """Chunk results as the columns an actor returns to the driver."""
    return {"chunk": [r.chunk for r in results], "inputs": [r.inputs for r in results],
            "rows": [r.rows for r in results], "seconds": [r.seconds for r in results]}


def _from_items(ray: Any, items: list[dict]) -> Any:
    """One block per chunk, so chunks spread over the actors (keyword renamed across Ray versions)."""
    params = inspect.signature(ray.data.from_items).parameters
    key = "override_num_blocks" if "override_num_blocks" in params else "parallelism"
    return ray.data.from_items(items, **{key: max(1, len(items))})


GCS_PORT, CLIENT_PORT = 6379, 10001  # Ray's defaults: a head's GCS ("host[:port]"), its client server ("ray://")
CONNECT_SECONDS = 5.0


def check_reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A BatchError naming `address` when nothing accepts a connection there within `timeout` seconds (Ray itself
    retries an unreachable address for minutes, logging GCS timeouts). "auto" and "local" are Ray's to resolve."""
    from jobs.batch.layout import BatchError

    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    target = address.removeprefix("ray://").rstrip("/")
    host, colon, port = target.rpartition(":")
    if not colon or "]" in port:  # no port (or an IPv6 address without one): Ray's default
        host, port = target, str(CLIENT_PORT if client else GCS_PORT)
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        reason = "not a port number" if isinstance(exc, ValueError) else exc.strerror or type(exc).__name__
        raise BatchError(f"cannot reach a Ray cluster at {address!r} ({reason}): start one there (ray start --head) "
                         "or give a reachable --ray-address (host:6379, ray://host:10001 or auto)") from None


CLIENT_HINT = ("pip install 'ray[client]' here and on the head, whose `ray start --head` then also serves Ray Client "
               f"on port {CLIENT_PORT}")


def check_client(address: str | None) -> None:
    """A BatchError for a Ray Client address (ray://…) when Ray Client's package (grpcio, ray's `client` extra, which
    the `distributed` extra leaves out) is missing: Ray raised a ValueError traceback, and a head without it serves no
    Ray Client port at all."""
    import importlib.util

    from jobs.batch.layout import BatchError

    if address is None or not address.startswith("ray://") or importlib.util.find_spec("grpc") is not None:
        return
    raise BatchError(f"--ray-address {address!r} is a Ray Client address, and Ray Client is not installed: "
                     f"{CLIENT_HINT}; or run the command on a node of the cluster with --ray-address auto")


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Joins `address` (e.g. "auto" / "ray://head:10001"), or the Ray this process already runs; without either,
    starts a new local one with `num_cpus` CPUs and shuts it down on exit. Yields the `ray` module. A new one even
    when `ray start` left a cluster running on this machine: `ray.init` would join that one unasked, and refuse
    the CPU count with a ValueError."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:
            check_client(address)
            check_reachable(address)
        try:
            ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        except ConnectionError as exc:  # "auto" with no cluster: Ray's message names its own --address flag
            if address is None:
                raise
            from jobs.batch.layout import BatchError
            raise BatchError(f"no Ray cluster to join for --ray-address {address!r} ({first_sentence(str(exc))}): "
                             "start one (ray start --head), give its address (host:6379, ray://host:10001), or "
                             "leave --ray-address out for a local Ray") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def first_sentence(text: str) -> str:
    """The first sentence of Ray's message, without its advice naming Ray's own `--address` flag: cut at a full stop
    that ends a sentence (followed by a space or the end), never inside an address such as 192.0.2.2:6379."""
    return re.split(r"\.(?:\s|$)", text.strip(), maxsplit=1)[0]


def map_chunks(actor: type, actor_kwargs: dict, chunks: Sequence[int], workers: int | None = None,
               address: str | None = None, threads: int = 1) -> Iterator[ChunkResult]:
    """Run `actor(**actor_kwargs)(batch of chunk numbers)` over `chunks` on a Ray Data actor pool (see
    `ray_session`), yielding each chunk's result as it completes (in completion order). Pool size: the
    GPUs when there are any (one per actor), else `workers` or the cluster's CPUs ÷ `threads`."""
    with ray_session(address, workers) as ray:
        if not chunks:
            return
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            size, per_actor = gpus, {"num_gpus": 1}
        else:
            size, per_actor = max(1, workers or int(resources.get("CPU", 1)) // threads), {"num_cpus": threads}
        size = min(size, len(chunks))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job draws its own progress bar
        dataset = _from_items(ray, [{"chunk": int(c)} for c in chunks]).map_batches(
            actor, batch_size=1, batch_format="numpy", fn_constructor_kwargs=actor_kwargs,
            compute=ray.data.ActorPoolStrategy(size=size), **per_actor)
        try:
            for row in dataset.iter_rows():
                yield ChunkResult(int(row["chunk"]), int(row["inputs"]), int(row["rows"]), float(row["seconds"]))
        except ray.exceptions.RayError as exc:  # an actor's error: Ray's traceback(s) end with the actor's own line
            raise worker_failed(exc) from None


def worker_failed(exc: BaseException) -> Exception:
    """A BatchError with the last line of a Ray worker's failure (the actor's own exception, e.g. "BundleError: …: no
    bundle here") instead of Ray's nested tracebacks."""
    from jobs.batch.layout import BatchError

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return BatchError(f"a Ray worker failed: {reason} (on a cluster of several machines, every node must reach the "
                      "bundle and --out at the same path: shared storage)")


def run_ray(bundle: str | Path, job: JobDir, chunks: Sequence[int], workers: int | None = None,
            address: str | None = None, threads: int = 1) -> Iterator[ChunkResult]:
    """Score `chunks` of a batch job on Ray (see `map_chunks`). The actors get absolute paths: a relative one would
    be read against each worker's directory, the one `ray start` ran in (was: an ActorDiedError traceback, "no bundle
    here", for `--bundle artifacts/shop` run anywhere else)."""
    kwargs = {"bundle": str(Path(bundle).resolve()), "out": str(job.out.resolve()), "identity": job.identity,
              "threads": threads}
    return map_chunks(ScoreChunks, kwargs, chunks, workers, address, threads)
