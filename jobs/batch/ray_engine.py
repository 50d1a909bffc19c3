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
import os
import re
import socket
import warnings
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


def auth_setting() -> str:
    """This process's Ray token-authentication setting, as Ray reads it from the environment."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip()
    return f"RAY_AUTH_MODE={mode}" if mode else "RAY_AUTH_MODE unset"


def auth_hint() -> str:
    """What to make equal when a cluster and this command differ in Ray's token authentication."""
    return ("most likely its head and this command differ in token authentication: run this command with the "
            f"head's RAY_AUTH_MODE (here {auth_setting()}) and, in token mode, its token (RAY_AUTH_TOKEN or "
            "~/.ray/auth_token; `ray get-auth-token` on the head prints it)")


def first_sentence(text: str) -> str:
    """`text` up to its first full stop (one that ends a sentence, not one inside an address)."""
    return re.split(r"\.(?:\s|$)", text.strip(), maxsplit=1)[0]


def last_line(text: str) -> str:
    """The last non-empty line of `text` (a traceback's exception line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def join_error(address: str, exc: BaseException, ray_version: str) -> Exception:
    """The BatchError for a `ray.init(address=...)` that failed: no cluster for "auto", or a cluster that answered
    and refused this command (Ray says only "Failed to connect to Ray cluster at …")."""
    from jobs.batch.layout import BatchError

    reason = first_sentence(str(exc)) or type(exc).__name__
    if "Could not find any running Ray instance" in reason:  # "auto": Ray's message names its own --address flag
        return BatchError(f"no Ray cluster to join for --ray-address {address!r} ({reason}): start one (ray start "
                          "--head), give its address (host:6379, ray://host:10001), or leave --ray-address out for "
                          "a local Ray")
    return BatchError(f"cannot join the Ray cluster at --ray-address {address!r} ({reason}): {auth_hint()}; or it "
                      f"runs another Ray than this command's {ray_version}")


class _Probe:
    """A Ray actor that does nothing: it starts only when the cluster's workers may call back this process."""

    def ready(self) -> bool:
        return True


ACTOR_START_SECONDS = 120.0


def check_actors_start(ray: Any, address: str, timeout: float = ACTOR_START_SECONDS) -> None:
    """A BatchError when the cluster at `address` cannot start an actor for this process. With token authentication
    on here and off on the head, `ray.init` joins and plain tasks run, but the head's raylet is refused by this
    process and every actor is cancelled before it starts: Ray Data and Ray Train then fail with an ActorDiedError
    traceback. A cluster too busy to start one within `timeout` seconds is left to the job."""
    from jobs.batch.layout import BatchError

    probe = ray.remote(num_cpus=0)(_Probe).remote()
    try:
        ray.get(probe.ready.remote(), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        return
    except ray.exceptions.RayActorError as exc:
        text = str(exc)
        if "never ran" in text or "cancelled before it started" in text:
            raise BatchError(f"the Ray cluster at --ray-address {address!r} cancels this command's actors before "
                             f"they start ({type(exc).__name__}): {auth_hint()}") from None
        raise BatchError(f"the Ray cluster at --ray-address {address!r} cannot start an actor for this command "
                         f"({last_line(text)}): this package, as this command has it, must be installed on every "
                         "node") from None
    finally:
        ray.kill(probe)


class RayNotes(logging.Filter):
    """Drops Ray's notes that tell the user of a command that ran fine nothing to act on; errors and every other
    warning pass. Ray Data's INFO lines (each dataset's start, plan and end: its log file under the session keeps
    them); Ray Data's "Progress bars disabled" (the job turns them off and draws its own bar); and, on a local Ray
    the command starts and stops itself, "Token authentication is enabled for this Ray cluster"."""

    def __init__(self, local: bool) -> None:
        super().__init__()
        self.local = local

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("ray.data") and record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if message.startswith("Progress bars disabled"):
            return False
        return not (self.local and message.startswith("Token authentication is enabled for this Ray cluster"))


@contextlib.contextmanager
def quiet_ray_notes(local: bool) -> Iterator[None]:
    """`RayNotes` on the console handlers of Ray's loggers ("ray", "ray.data"), for the time of a session; the
    handlers that write Ray's log files are left as they are."""
    notes = RayNotes(local)
    handlers = [handler for name in ("ray", "ray.data") for handler in logging.getLogger(name).handlers
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]
    for handler in handlers:
        handler.addFilter(notes)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(notes)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                env_vars: dict[str, str] | None = None) -> Iterator[Any]:
    """Joins `address` (e.g. "auto" / "ray://head:10001"), or the Ray this process already runs; without either,
    starts a new local one with `num_cpus` CPUs and shuts it down on exit. Yields the `ray` module. A new one even
    when `ray start` left a cluster running on this machine: `ray.init` would join that one unasked, and refuse
    the CPU count with a ValueError. `env_vars` go to every process of the job (its runtime_env), when this call
    starts or joins Ray."""
    ray = import_ray()
    with quiet_ray_notes(local=address is None):
        with _joined(ray, address, num_cpus, env_vars) as joined:
            yield joined


@contextlib.contextmanager
def _joined(ray: Any, address: str | None, num_cpus: int | None, env_vars: dict[str, str] | None) -> Iterator[Any]:
    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:
            check_reachable(address)
        refused = (ConnectionError, getattr(getattr(ray, "exceptions", None), "AuthenticationError", ConnectionError))
        try:
            # ray 2.50 (not 2.10 nor 2.60) at each start: "Tip: In future versions of Ray, Ray will no longer
            # override accelerator visible devices env var if num_gpus=0 …" (nothing for a user to do)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
                ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                         include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                         **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}))
        except refused as exc:
            if address is None:
                raise
            raise join_error(address, exc, getattr(ray, "__version__", "?")) from None
        if address is not None:
            try:
                check_actors_start(ray, address)
            except BaseException:
                ray.shutdown()
                raise
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


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
        for row in dataset.iter_rows():
            yield ChunkResult(int(row["chunk"]), int(row["inputs"]), int(row["rows"]), float(row["seconds"]))


def run_ray(bundle: str | Path, job: JobDir, chunks: Sequence[int], workers: int | None = None,
            address: str | None = None, threads: int = 1) -> Iterator[ChunkResult]:
    """Score `chunks` of a batch job on Ray (see `map_chunks`)."""
    kwargs = {"bundle": str(bundle), "out": str(job.out), "identity": job.identity, "threads": threads}
    return map_chunks(ScoreChunks, kwargs, chunks, workers, address, threads)
