"""Resumable training checkpoints without pickle: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from recsys.errors import RecsysError

if TYPE_CHECKING:
    from encoders.towers import TwoTowerModel
    from recsys.config import TrainConfig

SAFE_ON_RESUME = frozenset({"max_minutes", "merge_adapters", "zero_shot_blend", "zero_shot_dims", "index"})
"""TrainConfig fields a resumed run may change: the wall-time budget, and what is done with the towers once trained
(merged adapters, the zero-shot blend, the bundle's index). Every other field shapes the trajectory the checkpoint
is a point of (the learning-rate schedule spans `epochs`; the batches, the seeds, the model), so changing it would
continue the old run as if it were the new one."""


def trainable_state(model: TwoTowerModel) -> dict[str, torch.Tensor]:
    """Everything training changes: heads, sequence model, ID embeddings, buffers and the adapters (or the fully
    tuned layers) as CPU clones; the frozen BERT base weights are left out."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return {n: t.detach().cpu().clone() for n, t in tensors if model.trains(n)}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a `trainable_state` back into `model` (ValueError for a tensor the model lacks or has in another
    shape)."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    missing = [k for k in state if k not in own]
    if missing:
        raise ValueError(f"checkpoint tensors unknown to the model: {missing[:5]}")
    reshaped = [k for k, v in state.items() if own[k].shape != v.shape]
    if reshaped:
        raise ValueError(f"checkpoint tensors of another shape than the model's: {reshaped[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor.to(own[name].device))


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"state.{index}.{key}": torch.as_tensor(value).cpu().contiguous()
               for index, slots in state["state"].items() for key, value in slots.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, slot = key.split(".", 2)
        state.setdefault(int(index), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def config_record(config: TrainConfig) -> dict:
    """The TrainConfig as a checkpoint's trainer.json stores it (JSON values: tuples as lists)."""
    return json.loads(json.dumps(config.model_dump(mode="json")))


def _flatten(values: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as dotted keys (`lora.rank`)."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict, config: TrainConfig) -> list[str]:
    """'field: checkpoint's value → this run's' for each setting that differs, except `SAFE_ON_RESUME` and a
    field only one side records (a setting added or removed by another version of the code)."""
    old, new = _flatten(saved), _flatten(config_record(config))
    return [f"{key}: {old[key]!r} → {new[key]!r}" for key in sorted(old.keys() & new.keys())
            if key.split(".")[0] not in SAFE_ON_RESUME and old[key] != new[key]]


def saved_config(directory: Path) -> dict | None:
    """The TrainConfig a checkpoint was trained with; None when it has none (a checkpoint written before it was
    stored, or a trainer.json that does not read: loading the checkpoint reports that)."""
    try:
        trainer = json.loads((directory / "trainer.json").read_text())
    except (OSError, ValueError):
        return None
    config = trainer.get("config") if isinstance(trainer, dict) else None
    return config if isinstance(config, dict) else None


def check_resume_config(directory: Path, config: TrainConfig) -> None:
    """RecsysError naming every setting (both values) in which `config` differs from the one the checkpoint in
    `directory` was trained with, outside `SAFE_ON_RESUME` (was: resumed silently on the old run's learning-rate
    schedule and batches). A checkpoint that stores no config resumes as before."""
    saved = saved_config(directory)
    differences = config_differences(saved, config) if saved is not None else []
    if differences:
        raise RecsysError(f"{directory.parent}: its checkpoint was trained with other settings "
                          f"({'; '.join(differences)}): start a fresh run (without --resume, or with another "
                          "--run-dir), or resume with the checkpoint's settings")


def check_checkpoint_dir(directory: Path) -> None:
    """RecsysError when `directory` (a run directory's `checkpoint`) exists but is no training checkpoint (no
    trainer.json): saving one replaces it, so a --run-dir holding other work of that name is refused, not deleted."""
    if directory.exists() and not (directory / "trainer.json").is_file():
        raise RecsysError(f"{directory} exists and is not a training checkpoint (saving one would replace it): "
                          "choose another --run-dir")


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, best: dict[str, torch.Tensor] | None,
                    trainer: dict, average: dict[str, torch.Tensor] | None = None) -> None:
    """Replace `directory` with the current training state (+ the weight average, when one is kept): written aside,
    then swapped in, the previous one kept until then (`recover_checkpoint`)."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in trainable_state(model).items()}, tmp / "model.safetensors")
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
    if average is not None:
        save_file({k: v.contiguous() for k, v in average.items()}, tmp / "average.safetensors")
    tensors, meta = _flatten_optimizer(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, tmp / "optimizer.safetensors")
    meta["scheduler"] = scheduler.state_dict()
    (tmp / "trainer.json").write_text(json.dumps({**trainer, "optimizer": meta}, indent=1, default=str))
    old = _previous(directory)  # kept until the new one is in place: a kill in between loses one epoch, not all
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _previous(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


def recover_checkpoint(directory: Path) -> None:
    """Put back the previous checkpoint when a run was killed while it replaced it (`save_checkpoint`)."""
    old = _previous(directory)
    if not directory.exists() and (old / "trainer.json").is_file():
        old.rename(directory)


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and RNG; returns (trainer json, best state or None). RecsysError when
    the checkpoint is of a model of other settings (the towers' shape, the adapters, the ID embeddings)."""
    trainer = json.loads((directory / "trainer.json").read_text())
    tensors = load_file(directory / "optimizer.safetensors")
    rng = tensors.pop("rng.torch")
    try:
        load_trainable_state(model, load_file(directory / "model.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer(tensors, trainer["optimizer"]))
    except ValueError as error:
        raise RecsysError(f"{directory.parent}: its checkpoint is of a run with other settings ({error}): resume "
                          "with that run's settings, or train afresh (without --resume, or with another "
                          "--run-dir)") from None
    torch.set_rng_state(rng)
    scheduler.load_state_dict(trainer["optimizer"]["scheduler"])
    best_path = directory / "best.safetensors"
    return trainer, (load_file(best_path) if best_path.exists() else None)


def load_average(directory: Path) -> dict[str, torch.Tensor] | None:
    """The weight average a checkpoint saved (`WeightAverage.state`), or None when it kept none."""
    path = directory / "average.safetensors"
    return load_file(path) if path.exists() else None
