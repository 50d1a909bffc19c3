"""Job bodies shared by the CLI commands: load data, build a bundle, evaluate models."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from recsys.artifacts import bundle_names, dataset_names, listed, new_version, read_manifest, resolve_bundle
from recsys.config import BuildConfig, EvalConfig
from recsys.data.dataset import Dataset
from recsys.errors import DataError, RecsysError
from recsys.evaluation import evaluate
from recsys.pipeline import Recommender
from recsys.popularity import Popularity
from recsys.splits import SplitData, split_dataset

if TYPE_CHECKING:
    from jobs.batch.encode import EncodeOptions


def built_on_other_dataset(manifest: dict, dataset: Dataset) -> bool:
    """True when a bundle's manifest names a dataset fingerprint and it is not `dataset`'s."""
    return built_on_other_fingerprint(manifest, dataset.fingerprint())


def built_on_other_fingerprint(manifest: dict, fingerprint: str) -> bool:
    """True when a bundle's manifest names a dataset fingerprint and it is not `fingerprint` (a dataset's,
    already computed: hashing a dataset reads all of it)."""
    expected = bundle_fingerprint(manifest)
    return bool(expected) and expected != fingerprint


def bundle_fingerprint(manifest: dict) -> str | None:
    """The dataset fingerprint a bundle's manifest names (None: it names none)."""
    return (manifest.get("dataset") or {}).get("fingerprint")


def load_dataset(path: str | Path) -> Dataset:
    """A dataset directory written by `recsys import`, or a raw RecBole / MovieLens directory."""
    path = Path(path)
    return _dataset_reader(path)(path)


def check_dataset(path: str | Path) -> None:
    """DataError when `load_dataset` would refuse `path` (missing, or no dataset in it), without reading it: for
    commands that read the dataset only after other long work."""
    _dataset_reader(Path(path))


def _dataset_reader(path: Path) -> Callable[[Path], Dataset]:
    """The function that reads the dataset at `path`; DataError when there is none."""
    from recsys.data.importers import import_recbole_movielens, import_recbole_sequential

    if (path / "schema.json").is_file():
        return Dataset.load
    if path.is_file():  # e.g. the shop's events.csv itself
        raise DataError("a file, not a dataset directory: make a dataset from a CSV/Parquet export with "
                        "`recsys import table`", source=str(path))
    if not path.is_dir():
        raise DataError("no such dataset directory", source=str(path))
    if any(path.glob("*.train.inter")) and any(path.glob("*.text")):
        return import_recbole_sequential
    if (path / "ml-100k.inter").is_file():
        return import_recbole_movielens
    bundle = bundle_here(path)
    if bundle:  # the mix-up the other way round: --data given a bundle (its directory or its name's)
        raise DataError(f"not a dataset: it holds a bundle (of the dataset {bundle!r}), which --bundle takes; --data "
                        "takes the directory `recsys import` wrote", source=str(path))
    bundles = bundle_names(path)
    if bundles:
        raise DataError(f"not a dataset: it holds the bundles of {listed(bundles)}, which --bundle takes; "
                        "--data takes the directory `recsys import` wrote", source=str(path))
    datasets = dataset_names(path)
    if datasets:
        raise DataError(f"not a dataset: it holds the datasets {listed(datasets)}; name one, e.g. "
                        f"{path / datasets[0]}", source=str(path))
    raise DataError("not a dataset: expected schema.json (from `recsys import`), RecBole *.text + *.inter files, "
                    "or ml-100k.inter", source=str(path))


def bundle_here(path: Path) -> str | None:
    """The dataset name of the bundle at `path` (a version directory, or a model directory of versions); None when
    there is none."""
    try:
        manifest = read_manifest(resolve_bundle(path), verify=False)
    except RecsysError:
        return None
    return str((manifest.get("dataset") or {}).get("name") or "?")


def save_dataset(dataset: Dataset, out: str | Path, overwrite: bool = False, option: str = "--out") -> Path:
    """Write `dataset` to `out` through a temporary sibling (a failed import leaves nothing half-written). A
    directory holding a dataset is replaced only with `overwrite`; any other non-empty directory never is.
    `option`: the CLI option that named `out`, for the messages."""
    return write_dataset_dir(out, dataset.save, overwrite, option)


def write_dataset_dir(out: str | Path, write: Callable[[Path], object], overwrite: bool = False,
                      option: str = "--out") -> Path:
    """`write(directory)` into a temporary sibling of `out`, then renamed to `out` (see `save_dataset`)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / "schema.json").is_file():
            raise DataError(f"exists and is not a dataset directory: choose another {option}", source=str(out))
        if not overwrite:
            raise DataError(f"already holds a dataset: pass --overwrite to replace it, or choose another {option}",
                            source=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = out.parent / f".{out.name}.tmp-{tag}", out.parent / f".{out.name}.old-{tag}"
    try:
        write(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def quickstart_dataset(users: int, items: int, seed: int, out: str | Path) -> Dataset:
    """The synthetic shop, saved to `out` (`--data-out`: a synthetic shop already there is replaced; any other data
    refused)."""
    from recsys.data.synthetic import generate_shop

    dataset = generate_shop(n_users=users, n_items=items, seed=seed)
    out = Path(out)
    if (out / "schema.json").is_file() and Dataset.load(out).name != dataset.name:
        raise DataError("holds another dataset than the synthetic shop: choose another --data-out", source=str(out))
    save_dataset(dataset, out, overwrite=True, option="--data-out")
    return dataset


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when `host:port` cannot be listened on (in use, not ours, unresolvable)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise RecsysError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is fine
        try:
            sock.bind(address)
        except OSError as exc:
            raise RecsysError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (is another server running "
                              "there? pick another --port)") from None


def claim_port(port: int) -> IO | None:
    """An exclusive lock on `port` for this process's life (keep the returned file open): a second `recsys serve`
    started while the first is still loading passes `check_port` (nothing listens yet), and with several workers
    both would then bind the port through their SO_REUSEPORT sockets and split its requests between two servers,
    silently. None where the platform or the temporary directory offers no lock (the bind check alone)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = Path(tempfile.gettempdir()) / f"recsys-serve-port-{port}.lock"
    try:
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    except OSError:  # another user's lock file, a read-only temporary directory
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RecsysError(f"cannot serve on port {port}: another `recsys serve` holds it (starting up or serving); "
                          "pick another --port") from None
    return handle


def run_server(app, **options) -> None:
    """`uvicorn.run(app, **options)` (one worker), ending with exit status 0 after its graceful shutdown on SIGTERM,
    as on Ctrl-C and as `serve --workers N` does: uvicorn raises the signal again once it has shut down, and
    SIGTERM's default action then killed the process with status 143, which supervisors report as a failure."""
    import signal

    import uvicorn

    def stopped(signum, frame) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        uvicorn.run(app, **options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_recommender(dataset: Dataset, split: SplitData, config: BuildConfig, progress: bool = True,
                      encode: EncodeOptions | None = None) -> tuple[Recommender, float]:
    """Encode the catalogue with the item tower and assemble the pipeline; returns (recommender, seconds).

    With `encode` (e.g. the Ray engine), the catalogue goes through the resumable encode job
    (`jobs.batch.encode`, its encoder config replaced by `config.encoder`) instead of this process."""
    from encoders.backbone import DEFAULT_MODEL_NAME, resolve_model_path, with_resolved_pooling

    started = time.perf_counter()
    config = config.model_copy(update={"encoder": with_resolved_pooling(config.encoder)})  # saved as run
    if encode is None:
        from encoders.text_encoder import load_text_encoder

        vectors = load_text_encoder(config.encoder).encode(dataset.items["text"].to_list(), progress=progress,
                                                           desc="encoding items")
    else:
        from jobs.batch.encode import read_vectors, run_encode

        run_encode(dataset.items, dataclasses.replace(encode, encoder=config.encoder, progress=progress))
        vectors = read_vectors(encode.out)[1]
    info = {
        "kind": "frozen-bert",
        "model": config.encoder.model,
        "model_name": DEFAULT_MODEL_NAME if config.encoder.model == "default" else config.encoder.model,
        "resolved_path": resolve_model_path(config.encoder.model),
        "dim": int(vectors.shape[1]),
        "pooling": config.encoder.pooling,
        "text_template": dataset.text_template,
    }
    recommender = Recommender.build(dataset, split, vectors, config, info)
    return recommender, time.perf_counter() - started


def evaluate_models(models: dict[str, object], split: SplitData, config: EvalConfig,
                    progress: bool = True) -> list[dict]:
    """One row per (model, split) with all metrics."""
    rows = []
    for split_name in config.splits:
        examples = split.examples(split_name)
        for name, model in models.items():
            reranker = getattr(model, "reranker", None)
            if reranker is not None:
                reranker.stats.config.check_unseen(split_name)
            metrics = evaluate(model, examples, config, progress=progress, desc=f"{name} / {split_name}")
            rows.append({"model": name, "split": split_name, **metrics})
    return rows


def build_bundle(dataset: Dataset, config: BuildConfig, out_root: str | Path, name: str,
                 progress: bool = True, encode: EncodeOptions | None = None) -> tuple[Path, list[dict], dict]:
    """Encode, index, evaluate (popularity + this model) and write artifacts/<name>/<version>/; returns the
    bundle path, the metric rows and the index summary (kind chosen, recall against exact search)."""
    from recsys.retrieval.choice import index_summary

    split = split_dataset(dataset)
    split.require_examples(config.eval.splits, "the bundle's evaluation (recsys build)")  # before the encoding
    recommender, seconds = build_recommender(dataset, split, config, progress, encode)
    summary = index_summary(recommender, config.index.kind, config.seed)
    rows = evaluate_models({"popularity": recommender.popularity, "bundle": recommender}, split, config.eval,
                           progress)
    target = Path(out_root) / name / new_version()
    manifest = {
        "name": name,
        "dataset": {**dataset.summary(), "fingerprint": dataset.fingerprint()},
        "metrics": rows,
        "index": summary,
        "build_seconds": round(seconds, 2),
    }
    return recommender.save(target, manifest), rows, summary


def baseline_models(dataset: Dataset, split: SplitData, config: BuildConfig,
                    progress: bool = True) -> dict[str, object]:
    """Popularity and zero-shot frozen BERT (recency-weighted history pool)."""
    recommender, _ = build_recommender(dataset, split, config, progress)
    popularity = Popularity.fit(split.train, dataset.items["item_id"].to_list())
    return {"popularity": popularity, "zero-shot-bert": recommender}
