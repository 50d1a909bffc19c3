"""`recsys train`: fine-tune the PEFT BERT towers on a dataset and write an evaluated bundle.

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from jobs.app import EVAL_USERS, POOLING_HELP, EvalUsersOpt, IndexKind, Pooling, app, bundle_name, check_preset, \
    check_ray_only, eval_sample, read_json_object, validation_problems
from jobs.output import ensemble_table, index_line
from recsys.config import EvalConfig
from recsys.errors import RecsysError
from jobs.output import console, err_console
from jobs.paths import writable, writable_out


def train_config(preset_name: str, config_file: Path | None, from_bundle: Path | None, options: dict):
    """Preset (or the bundle's own config when continuing from one) ← JSON file ← explicit options."""
    from encoders.presets import PRESETS, merge
    from recsys.artifacts import resolve_bundle
    from recsys.config import TrainConfig

    check_preset(preset_name)
    overrides = read_json_object(config_file, "TrainConfig overrides")
    base = dict(PRESETS[preset_name])
    if from_bundle is not None:  # the file changes the bundle's settings: it does not go back to a preset's
        from encoders.bundle import TOWER_META, single_tower_dir, stored_train_config

        meta = json.loads((single_tower_dir(resolve_bundle(from_bundle)) / TOWER_META).read_text())
        base = stored_train_config(meta).model_dump(mode="json")
    if config_file is not None:
        base = merge(base, overrides)
    try:
        return TrainConfig.model_validate(merge(base, {k: v for k, v in options.items() if v is not None}))
    except ValidationError as error:
        if config_file is None or not _from_file(error, overrides):
            raise
        raise RecsysError(f"{config_file}: invalid setting: {validation_problems(error)}") from None


def _from_file(error: ValidationError, overrides: dict) -> bool:
    """Whether a settings error comes from the --config file: a field it sets, or a check over several fields
    (most likely the file's: the presets pass them, and a command-line value is checked by its option)."""
    return any(not problem.get("loc") or str(problem["loc"][0]) in overrides for problem in error.errors())


def has_checkpoint(runs: Path) -> bool:
    """Whether the run directory holds a checkpoint that `--resume` continues from."""
    return runs.is_dir() and any(runs.glob("**/checkpoint/trainer.json"))


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="dataset directory (recsys import) or raw RecBole/MovieLens directory")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="artifacts root")] = Path("artifacts"),
    name: Annotated[Optional[str], typer.Option(help="bundle name (default: <dataset>-peft)",
                                                callback=bundle_name)] = None,
    preset: Annotated[str, typer.Option(help="cpu | cpu-text-only | cpu-history-text | frozen | gpu | quickstart | "
                                             "smoke (encoders/presets.py)")] = "cpu",
    config: Annotated[Optional[Path], typer.Option("--config", help="TrainConfig JSON (merged over the preset, or "
                                                                    "over --from-bundle's own settings)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run directory's last checkpoint, with the settings "
                                               "it was trained with (only --max-minutes, --merge-adapters and "
                                               "--index may change)")] = False,
    from_bundle: Annotated[Optional[Path], typer.Option(help="continual training: start from this bundle's "
                                                             "adapters and towers")] = None,
    user_tower: Annotated[Optional[str], typer.Option(help="sequence | text | fusion")] = None,
    lora: Annotated[Optional[str], typer.Option(help="lora | adalora | full (every weight of the adapted layers: "
                                                     "GPUs) | none")] = None,
    rank: Annotated[Optional[int], typer.Option(min=1, help="LoRA rank")] = None,
    top_layers: Annotated[Optional[int], typer.Option(min=0, help="adapt the top N BERT layers (0: all)")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    bert_epochs: Annotated[Optional[int], typer.Option(min=0)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    max_minutes: Annotated[Optional[float], typer.Option(min=0.01)] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(min=1, help="an epoch = this many steps on a fresh "
                                                                       "random share of the users "
                                                                       "(large data)")] = None,
    negatives: Annotated[Optional[str], typer.Option(help="auto (sampled above 20,000 items) | catalogue | "
                                                          "bank")] = None,
    id_embedding: Annotated[Optional[bool], typer.Option("--id-embedding/--no-id-embedding")] = None,
    pair_epochs: Annotated[Optional[float], typer.Option(min=0, help="item-item contrastive pre-stage: passes over "
                                                                     "the train split's item pairs (0: none)")] = None,
    adversarial_eps: Annotated[Optional[float], typer.Option(min=0, help="FGM adversarial training on the item-text "
                                                                         "features (0: off)")] = None,
    model: Annotated[Optional[str], typer.Option(help="BERT: local HF directory or 'default'")] = None,
    pooling: Annotated[Optional[Pooling], typer.Option(help=f"{POOLING_HELP}; the towers' and the zero-shot "
                                                            "blend's")] = None,
    merge_adapters: Annotated[Optional[bool], typer.Option("--merge-adapters/--no-merge-adapters")] = None,
    deterministic: Annotated[Optional[bool], typer.Option(
        "--deterministic/--no-deterministic", help="CPU: torch's deterministic algorithms (the default), so the "
                                                   "same seed, machine and threads give the same weights bit for "
                                                   "bit")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0)] = None,
    ensemble: Annotated[Optional[int], typer.Option(min=1, max=8, help="train this many towers (seeds SEED, SEED+1, …) "
                                                                       "and serve the mean of their scores")] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads (torch, FAISS, BLAS)")] = 2,
    index: Annotated[Optional[IndexKind], typer.Option("--index", help="auto | flat | hnsw | ivf_flat | ivf_pq "
                                                                       "(default: the config's, auto: exact below "
                                                                       "50,000 items)")] = None,
    eval_users: EvalUsersOpt = EVAL_USERS,
    run_dir: Annotated[Optional[Path], typer.Option(file_okay=False, callback=writable("--run-dir"),
                                                    help="checkpoints, metrics.csv, training_curve.png (default: "
                                                         "OUT/NAME/runs/latest)")] = None,
    engine: Annotated[str, typer.Option(help="local (this process), or ray: data-parallel on --workers Ray Train "
                                             "workers (torch DDP; pip install '.\\[distributed]')")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, help="ray: training workers, 2 by default (one GPU each "
                                                               "when the cluster has GPUs; --threads CPU threads each "
                                                               "otherwise)")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: cluster address (default: a local Ray)")] = None,
) -> None:
    """Train the LoRA-tuned BERT towers (CPU or CUDA, picked automatically) and write OUT/NAME/VERSION.

    --batch-size is the global batch: with --engine ray each worker takes its share of every batch."""
    from encoders.experiment import train_and_evaluate
    from encoders.stopping import time_budget_message
    from encoders.training import TRAINING_NEEDS_VALID
    from jobs.output import metrics_table
    from jobs.threads import limit_cpu_threads
    from jobs.workflows import load_dataset
    from recsys.retrieval.factory import check_trainable
    from recsys.splits import split_dataset

    limit_cpu_threads(threads)
    options = {"lora": {"method": lora, "rank": rank,
                        "top_layers": (None if top_layers == 0 else top_layers) if top_layers is not None else None},
               "tower": {"user_tower": user_tower, "id_embedding": id_embedding, "pooling": pooling},
               "encoder": {"model": model, "pooling": pooling}, "epochs": epochs, "bert_epochs": bert_epochs,
               "batch_size": batch_size,
               "max_minutes": max_minutes, "steps_per_epoch": steps_per_epoch, "negatives": negatives,
               "merge_adapters": merge_adapters, "seed": seed, "ensemble": ensemble, "pair_epochs": pair_epochs,
               "adversarial_eps": adversarial_eps, "deterministic": deterministic, "index": {"kind": index}}
    options = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
               for k, v in options.items()}
    options = {k: v for k, v in options.items() if v != {}}  # an empty section would reset a preset's defaults
    if top_layers == 0:
        options.setdefault("lora", {})["top_layers"] = None
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, got {engine!r}")
    check_ray_only(engine, ray_address, workers)
    cfg = train_config(preset, config, from_bundle, options)
    if engine == "ray" and cfg.ensemble > 1:
        raise typer.BadParameter("a seed ensemble trains its members one after another: use --engine local")
    dataset = load_dataset(data)
    check_trainable(cfg.index, dataset.items.height)  # before training: the index is built after it
    split = split_dataset(dataset)
    split.require_examples(["valid"], TRAINING_NEEDS_VALID)  # here too: Ray's workers would fail less clearly
    name = name or f"{dataset.name}-peft"
    runs = Path(run_dir) if run_dir is not None else Path(out) / name / "runs" / "latest"
    if resume and not has_checkpoint(runs):  # (was: started silently)
        err_console.print(f"[yellow]note:[/] --resume: no checkpoint in {runs}; training starts at epoch 1")
    if resume:  # a checkpoint of other settings: refused now, not after the data and BERT have loaded
        from encoders.experiment import check_resume
        check_resume(cfg, runs)
    try:
        if engine == "ray":
            from jobs.ray_train import train_on_ray
            path = train_on_ray(data, cfg, name=name, out_root=out, run_dir=run_dir, resume=resume,
                                init_bundle=from_bundle, workers=workers or 2, threads=threads, address=ray_address)
        else:
            eval_config = EvalConfig(max_examples=eval_sample(eval_users), seed=cfg.seed)
            path = train_and_evaluate(dataset, split, cfg, name=name, out_root=out, run_dir=run_dir,
                                      resume=resume, init_bundle=from_bundle, eval_config=eval_config).path
    except KeyboardInterrupt:  # one line, not silence: the checkpoint of the last finished epoch is kept
        if has_checkpoint(runs):
            err_console.print(f"[yellow]interrupted[/]: no bundle written; the last finished epoch's checkpoint is in "
                              f"{runs}: rerun the same command with --resume to continue from it")
        else:  # (was: the same line, naming a checkpoint and a directory that did not exist)
            err_console.print(f"[yellow]interrupted[/] before the first epoch finished: no bundle and no checkpoint "
                              f"written (in {runs}); rerun the same command to start again")
        raise typer.Exit(130) from None
    manifest = json.loads((path / "manifest.json").read_text())
    train, blend = manifest["train"], manifest["train"]["zero_shot_blend"]
    shown = [{**r, "split": f"{r['split']}/{r['slice']}"} for r in manifest["metrics"]]
    console.print(metrics_table(shown, f"{dataset.name}: full ranking over {dataset.items.height:,} items"))
    p = train["parameters"]
    console.print(f"trainable {p['trainable']:,} of {p['total']:,} parameters (adapters {p['adapter']:,}); "
                  f"best epoch {train['best_epoch']}; {train['seconds'] / 60:.1f} min on "
                  f"{train.get('workers', 1)} × {train['device']}; stopped: {train.get('stopped', 'epochs')}")
    if train.get("stopped") == "time budget":
        console.print("[yellow]warning:[/] " + time_budget_message(train["config"]["max_minutes"],
                                                                   len(train["history"]), train["config"]["epochs"]))
    if blend is not None:
        tried = ", ".join(f"{w}: {v:.4f}" for w, v in blend["valid_ndcg"].items())
        console.print(f"zero-shot blend weight {blend['weight']} (valid NDCG@10 by weight: {tried})")
    if train.get("ensemble"):
        console.print(ensemble_table(train["ensemble"]))
    if manifest.get("index"):
        console.print(index_line(manifest["index"]))
    console.print(f"[green]bundle written[/] → {path}")
