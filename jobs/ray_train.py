"""`recsys train --engine ray`: the one training loop (encoders/training.py), data-parallel through Ray Train.

A TorchTrainer starts `workers` processes (one GPU each when the cluster has GPUs, else `threads` CPUs each)
and sets up the torch.distributed process group (gloo on CPU, NCCL on GPUs). Every worker loads the dataset
from `data` and builds the same towers from the same seed; each trains on its share of every global batch
with gradients averaged by DistributedDataParallel (encoders/distributed.py). Rank 0 validates, writes the
checkpoints and the metrics CSV to the run directory, then evaluates and writes the bundle exactly as
`recsys train` does (same format). Ray's own run state goes to RUN_DIR/ray.

On a multi-node cluster, the dataset, the run directory and the artifacts root must be on storage every
node sees, and the code installed on every node (as for the Ray batch engines).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

from recsys.artifacts import new_version
from recsys.config import TrainConfig
from recsys.errors import RecsysError


class DistributedTrainingError(RecsysError):
    """Distributed training could not start or a worker failed."""


def _worker_loop(settings: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: rank 0 trains, evaluates and writes the bundle, the others train."""
    # faiss's loader tells at INFO which CPU build it tried, and a Ray worker's console shows INFO: quieted before
    # the imports below load faiss
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from ray.train.torch import get_device

    from encoders.distributed import WorkerGroup
    from encoders.experiment import train_and_evaluate
    from encoders.training import train_towers
    from jobs.threads import limit_cpu_threads
    from jobs.workflows import load_dataset
    from recsys.splits import split_dataset

    limit_cpu_threads(settings["threads"])
    workers = WorkerGroup.current()
    dataset = load_dataset(settings["data"])
    split = split_dataset(dataset)
    config = TrainConfig.model_validate(settings["config"])
    init_bundle = Path(settings["init_bundle"]) if settings["init_bundle"] else None
    common = {"run_dir": Path(settings["run_dir"]), "resume": settings["resume"], "init_bundle": init_bundle,
              "device": get_device(), "workers": workers}
    if workers.is_main:
        train_and_evaluate(dataset, split, config, name=settings["name"], out_root=settings["out_root"],
                           version=settings["version"], progress=settings["progress"], **common)
    else:
        train_towers(dataset, split, config, progress=False, **common)


def scaling_config(config_class: Any, workers: int, use_gpu: bool, per_worker: dict[str, float]) -> Any:
    """Ray Train's ScalingConfig for `workers` workers of `per_worker` resources, and nothing more.

    Ray Train V1 (the default up to ray 2.50 at least; RAY_TRAIN_V2_ENABLED=0 after) gives its coordinator actor a
    CPU of its own unless told otherwise: on a cluster of exactly workers × threads CPUs (the local Ray that
    `train_on_ray` starts) training then waited for that CPU forever. The coordinator only coordinates, so it gets
    none. Train V2's controller takes none, and its ScalingConfig refuses the setting."""
    common = {"num_workers": workers, "use_gpu": use_gpu, "resources_per_worker": per_worker}
    try:
        return config_class(**common, trainer_resources={"CPU": 0})
    except DeprecationWarning:  # Train V2: "trainer_resources" is gone
        return config_class(**common)


def train_on_ray(data: str | Path, config: TrainConfig, *, name: str, out_root: str | Path,
                 run_dir: str | Path | None = None, resume: bool = False, init_bundle: str | Path | None = None,
                 workers: int = 2, threads: int = 1, address: str | None = None, progress: bool = True) -> Path:
    """Train on `workers` Ray Train workers; returns the bundle rank 0 wrote (OUT_ROOT/NAME/VERSION).

    Joins a running Ray instance (or `address`), else starts a local one with workers × threads CPUs."""
    from jobs.batch.ray_engine import ray_session

    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be positive")
    out_root = Path(out_root).resolve()
    run_dir = Path(run_dir).resolve() if run_dir is not None else out_root / name / "runs" / "latest"
    version = new_version()
    settings = {"data": str(Path(data).resolve()), "config": config.model_dump(mode="json"), "name": name,
                "out_root": str(out_root), "run_dir": str(run_dir), "resume": resume, "version": version,
                "init_bundle": str(Path(init_bundle).resolve()) if init_bundle else None, "threads": threads,
                "progress": progress}
    # Ray Train V1 from 2.43 on warns in its coordinator's process that trainer_resources (see scaling_config) "is
    # deprecated"; Ray's documented switch for its V2 migration warnings turns that off
    with ray_session(address, workers * threads, {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}) as ray:
        try:
            from ray.train import RunConfig, ScalingConfig
            from ray.train.torch import TorchTrainer
        except ImportError as exc:
            raise DistributedTrainingError(f"Ray Train is missing: pip install '.[distributed]' ({exc})") from None
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if 0 < gpus < workers:
            raise DistributedTrainingError(f"{workers} workers need one GPU each; the cluster has {gpus}")
        if not gpus and cpus < workers * threads:  # Ray Train would wait for them forever
            raise DistributedTrainingError(f"{workers} workers × {threads} threads need {workers * threads} CPUs; "
                                           f"the cluster has {cpus}")
        per_worker = {"CPU": threads, **({"GPU": 1} if gpus else {})}
        run = {"name": f"{name}-{version}", "storage_path": str(run_dir / "ray")}
        if "worker_runtime_env" in inspect.signature(RunConfig).parameters:  # Ray Train V2
            run["worker_runtime_env"] = {"env_vars": {"TQDM_MININTERVAL": "10"}}  # worker output comes by the line
        if "logging_config" in inspect.signature(RunConfig).parameters and hasattr(ray.train, "LoggingConfig"):
            # Ray Train V2's INFO notes ("Requesting resources", "Started training worker group …"); warnings stay
            run["logging_config"] = ray.train.LoggingConfig(log_level="WARNING")
        failed = getattr(ray.train, "TrainingFailedError", RuntimeError)
        with warnings.catch_warnings():  # the same warning, where the driver gives it
            warnings.filterwarnings("ignore", message=r".*ScalingConfig\(trainer_resources\)", category=Warning)
            trainer = TorchTrainer(_worker_loop, train_loop_config=settings,
                                   scaling_config=scaling_config(ScalingConfig, workers, bool(gpus), per_worker),
                                   run_config=RunConfig(**run))
            try:
                trainer.fit()
            except failed as exc:
                raise DistributedTrainingError(f"distributed training failed: {exc}") from None
    bundle = out_root / name / version
    if not (bundle / "manifest.json").is_file():
        raise DistributedTrainingError(f"training finished but rank 0 wrote no bundle at {bundle}")
    return bundle
