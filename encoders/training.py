"""Next-item contrastive training of the two towers.

Objective: softmax over the catalogue (every item when `negatives="catalogue"`, else the in-batch positives plus
a uniform sample of the cached bank, each logit minus the log of its item's chance to be in that set: the logQ
correction of sampled softmax; `negatives="auto"` samples above `sampled_above` items, so a step's cost does not
grow with the catalogue), logits = cos(user, item) · learnable inverse temperature. An epoch is one pass over the
training users, or `steps_per_epoch` steps on a fresh random share of them. Item features come from a
bank of cached catalogue encodings (refreshed every epoch or N steps); the step's positives (up to
`adapter_items_per_step`) are re-encoded with gradients through the adapters. AdamW, warm-up + cosine decay,
gradient clipping, bf16 autocast on CUDA, seeded, early stopping on validation NDCG@10, resumable checkpoints.
The same loop runs data-parallel on several workers (`workers`, see encoders/distributed.py).
"""

from __future__ import annotations

import gc
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from encoders.backbone import load_backbone, resolved_pooling
from encoders.checkpoint import (check_checkpoint_dir, check_resume_config, config_record, load_average,
                                 load_checkpoint, load_trainable_state, recover_checkpoint, save_checkpoint,
                                 trainable_state)
from encoders.distributed import LossModule, WorkerGroup
from encoders.history_text import history_snippets
from encoders.item_bank import ItemTextCache
from encoders.item_pairs import item_pairs
from encoders.lora import attach_adapters, is_adapter_parameter, orthogonal_penalty, parameter_counts
from encoders.neighbour_features import NeighbourFeatures
from encoders.objective import NextItemObjective
from encoders.pre_stage import pretrain_items
from encoders.reproducible import deterministic_algorithms
from encoders.run_report import plot_training_curve, write_metrics_csv
from encoders.schedules import warmup_cosine_factor
from encoders.serving import TrainedUserTower
from encoders.stopping import StopReason, over_budget, stop_reason, time_budget_message
from encoders.towers import AdaptedBert, TwoTowerModel, pick_device
from encoders.train_data import TrainingData, build_training_data, sequence_batches, single_target_batches
from encoders.weight_average import WeightAverage
from recsys.catalogue import Catalogue
from recsys.config import BuildConfig, EvalConfig, TrainConfig
from recsys.data.dataset import Dataset
from recsys.errors import DataError
from recsys.evaluation import evaluate
from recsys.histories import Histories
from recsys.pipeline import Recommender
from recsys.popularity import Popularity
from recsys.splits import SplitData

TRAINING_NEEDS_VALID = "training (it keeps the epoch that scores best on valid)"
VALID_SAMPLE = 20_000
"""Per-epoch validation users when `valid_sample` is None (more only add time, not a better stopping point)."""


@dataclass
class TrainResult:
    """The trained towers, ready to be assembled into a Recommender."""

    model: TwoTowerModel
    config: TrainConfig
    item_vectors: np.ndarray
    user_tower: TrainedUserTower
    history: list[dict]
    best_epoch: int
    best_valid_ndcg: float
    seconds: float
    parameters: dict[str, int]
    device: str
    pre_stage: dict | None = None  # the item–item pre-stage's summary (steps, loss, seconds), when it ran
    stopped: StopReason = "epochs"  # what ended training

    def encoder_info(self, model_name: str) -> dict:
        """What `encoder/encoder.json` records for this model (read back by `encoders.bundle`)."""
        return {"kind": "peft-bert", "model": self.config.encoder.model, "model_name": model_name,
                "user_tower": f"trained-{self.config.tower.user_tower}", "dim": int(self.item_vectors.shape[1]),
                "lora": self.config.lora.model_dump(mode="json"), "parameters": self.parameters}


class Trainer(NextItemObjective):
    """Builds the towers for `dataset` and trains them on `split.train`, validating on `split.valid`.

    With several `workers` (data-parallel), each process builds the same Trainer and calls `fit`: each trains on
    its share of every global batch, rank 0 validates and writes the run directory."""

    def __init__(self, dataset: Dataset, split: SplitData, config: TrainConfig, run_dir: Path | None = None,
                 device: torch.device | None = None, progress: bool = True, init_bundle: Path | None = None,
                 workers: WorkerGroup | None = None) -> None:
        self.workers = workers or WorkerGroup()
        self.dataset, self.split, self.config = dataset, split, config
        self.progress = progress and self.workers.is_main
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = device or pick_device()
        torch.manual_seed(config.seed)
        self.data: TrainingData = build_training_data(dataset, split)
        if not self.data.sequences:
            raise DataError("no training sequence: no user has two or more items in the train split")
        split.require_examples(["valid"], TRAINING_NEEDS_VALID)
        tower = config.tower
        per_epoch = len(self.data.sequences) * (1 if tower.user_tower == "sequence" else config.text_examples_per_user)
        self.batch_size = min(config.batch_size, max(1, math.ceil(per_epoch / config.min_steps_per_epoch)))
        self.steps_per_epoch = math.ceil(per_epoch / self.batch_size)
        if config.steps_per_epoch is not None and config.steps_per_epoch < self.steps_per_epoch:
            self.steps_per_epoch = config.steps_per_epoch  # an epoch: a fresh random share of the users
        n_items = len(self.data.item_ids)
        self.negatives = config.negatives if config.negatives != "auto" else \
            ("bank" if n_items > config.sampled_above else "catalogue")
        # logQ correction for bank negatives: each item's share of the training targets (in-batch positives are
        # drawn by it) and the uniform sample's rate
        self.target_share = torch.as_tensor(self.data.target_counts() / max(self.data.n_targets, 1),
                                            dtype=torch.float32, device=self.device)
        self.pairs = item_pairs(self.data.sequences, config.pair_window) if config.pair_epochs else None
        self.pair_steps = (math.ceil(config.pair_epochs * len(self.pairs) / config.pair_batch_size)
                           if self.pairs is not None else 0)
        adapter_epochs = config.epochs if config.bert_epochs is None else min(config.bert_epochs, config.epochs)
        backbone, self.tokenizer = load_backbone(config.encoder.model)
        self.peft = attach_adapters(backbone, config.lora,  # AdaLoRA's budget spans the steps that train adapters
                                    total_steps=self.pair_steps + self.steps_per_epoch * adapter_epochs)
        self.adapter_step = 0
        bert = AdaptedBert(self.peft, config.lora.top_layers, resolved_pooling(tower.pooling, config.encoder.model),
                           full=config.lora.method == "full",
                           pool_layers=tower.pool_layers)
        self.model = TwoTowerModel(bert, len(self.data.item_ids), tower, config.temperature, config.learn_temperature)
        self.model.id_mask.copy_(torch.as_tensor(self.data.seen, dtype=torch.float32))
        self.seen = torch.as_tensor(self.data.seen, dtype=torch.bool, device=self.device)
        if init_bundle is not None:
            from encoders.bundle import init_from_bundle
            init_from_bundle(self.model, Path(init_bundle), self.data.item_ids)
        self.model.to(self.device)
        tuned = {n for n, _ in bert.named_parameters() if bert.tunes(n)}
        self.parameters = {**parameter_counts(self.model),
                           "adapter": sum(p.numel() for n, p in bert.named_parameters() if n in tuned),
                           "backbone": sum(p.numel() for n, p in bert.named_parameters()
                                           if not is_adapter_parameter(n))}
        self.snippets = history_snippets(dataset.items, tower.history_field)
        self.cache = ItemTextCache(bert, self.tokenizer, dataset.items["text"].to_list(),
                                   tower.item_max_length, self.device, precision=config.mixed_precision,
                                   progress=self.progress)
        adapters = [p for n, p in bert.named_parameters() if n in tuned and p.requires_grad]
        heads = {n: p for n, p in self.model.named_parameters() if not n.startswith("bert.") and p.requires_grad}
        others = list(heads.values())
        groups = [{"params": others, "lr": config.lr}]
        if adapters:
            groups.append({"params": adapters, "lr": config.adapter_lr})
        self.adapters = adapters
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.average = (WeightAverage(heads, config.average_epochs * self.steps_per_epoch)
                        if config.average_epochs else None)
        self.adapter_epochs = adapter_epochs
        self.phase_start: int | None = None  # the step at which the adapters' phase began (adapter_phase="last")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self._lr_factor(step))
        self.bank: torch.Tensor | None = None  # the item head's input for the whole catalogue
        self.whitened = False  # tower.whiten: set from the first bank
        self.unseen_bank: torch.Tensor | None = None  # ... as items unseen in training get it (id_dropout)
        self.neighbours = NeighbourFeatures.for_tower(self.data.sequences, n_items, tower, self.model.borrow,
                                                      self.model.own_neighbours)
        self._popularity: Popularity | None = None  # fit at the first validation (`recommender`)
        self.pre_stage: dict | None = None
        valid = split.valid
        limit = config.valid_sample if config.valid_sample is not None else VALID_SAMPLE
        if valid.height > limit:
            valid = valid.sample(n=limit, seed=config.seed)
        self.valid = valid
        if self.workers.distributed:  # same initial weights everywhere, then each worker its own dropout draws
            torch.manual_seed(int(np.random.SeedSequence([config.seed, self.workers.rank]).generate_state(1)[0]))
        self.loss_step = self.workers.wrap(LossModule(self.model, self._loss), self.device)

    # ---- pieces --------------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        """Warm-up + cosine over the whole run, or, once the adapters' phase began, over that phase alone."""
        if self.phase_start is None:
            return warmup_cosine_factor(step, self.steps_per_epoch * self.config.epochs, self.config.warmup_ratio)
        return self.config.adapter_phase_lr * warmup_cosine_factor(
            step - self.phase_start, self.steps_per_epoch * max(self.adapter_epochs, 1), self.config.warmup_ratio)

    def release(self) -> None:
        """Drop what only training needs (the cached lower-layer token states: 2.7 GB at 100k items, the
        optimizer's state) before the caller builds and evaluates the bundle;
        the final bank stays, so `validate` still works. The trainer sits in reference cycles, so without this they
        would live until a full garbage collection."""
        self.cache = None  # type: ignore[assignment]
        self.optimizer.state.clear()
        gc.collect()

    def _restore(self, state: dict) -> None:
        """Load a kept trainable state (the best validation state). With AdaLoRA, the final budget (its rank pattern,
        once allocated) prunes it too: a state kept before the allocation holds triplets the saved adapters drop, so
        the bank and the served item vectors would come from other adapters than the bundle's."""
        load_trainable_state(self.model, state)
        pattern = self.peft.peft_config["default"].rank_pattern if self.config.lora.method == "adalora" else None
        if pattern:
            self.peft.base_model.rankallocator.mask_using_rank_pattern(self.peft.base_model.model, pattern)

    def refresh_bank(self) -> None:
        if self.cache is None:
            raise RuntimeError("this trainer has finished and released its item-text cache")
        bank = self.cache.bank(progress=self.progress)
        if self.config.tower.whiten and not self.whitened:
            self.model.set_whitening(bank)  # once, from the catalogue's own features as training starts
            self.whitened = True
        if self.neighbours is not None:
            self.neighbours.refresh(bank)
            # id_dropout computes some items as unseen ones: their own features (or the borrowed share), no neighbours'
            rows = torch.arange(len(bank), device=bank.device)
            self.unseen_bank = self.neighbours.as_unseen(bank, rows) if self.config.tower.id_dropout > 0 else None
            bank = self.neighbours(bank, rows)
        self.bank = bank

    def fresh_features(self, rows: torch.Tensor, unseen: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input for catalogue `rows`, their own features re-encoded through the adapters (with
        gradients); the neighbours' share or block, when there is one, from the last bank, except for the rows
        `unseen` marks (computed as items unseen in training: `id_dropout`)."""
        if self.neighbours is not None and self.neighbours.means is None:
            self.refresh_bank()  # the neighbours' means come from a bank
        features = self.cache.features(rows)
        if self.neighbours is None:
            return features
        mixed = self.neighbours(features, rows)
        if unseen is None:
            return mixed
        return torch.where(unseen[:, None], self.neighbours.as_unseen(features, rows), mixed)

    def catalogue_vectors(self) -> np.ndarray:
        """Item-tower output for the whole catalogue (eval mode), float32 [n_items, dim]."""
        if self.bank is None:
            self.refresh_bank()
        self.model.eval()
        with torch.no_grad():
            positions = torch.arange(len(self.data.item_ids), device=self.device)
            return self.model.item_vectors(self.bank, positions).cpu().numpy()

    def user_tower(self, item_vectors: np.ndarray) -> TrainedUserTower:
        """The user tower over a catalogue of the dataset's items with these vectors."""
        return TrainedUserTower(self.model, self.config, Catalogue.from_frame(self.dataset.items, item_vectors),
                                self.tokenizer, self.device)

    def recommender(self) -> Recommender:
        """The current towers as a Recommender for validation (item vectors + flat index + user tower). The
        evaluator passes each example's history, so it holds no stored histories (building them reads every
        event: a transient gigabyte at 10M events); popularity is fit once and reused."""
        vectors = self.catalogue_vectors()
        if self._popularity is None:
            self._popularity = Popularity.fit(self.split.train, self.dataset.items["item_id"].to_list())
        return Recommender.from_parts(BuildConfig(encoder=self.config.encoder), self.dataset.items, vectors,
                                      self._popularity, Histories.empty(), {"kind": "peft-bert"},
                                      self.user_tower(vectors))

    def validate(self, examples: pl.DataFrame | None = None) -> dict[str, float]:
        """Full-ranking metrics on the validation users (the evaluator the benchmarks use)."""
        examples = self.valid if examples is None else examples
        return evaluate(self.recommender(), examples, EvalConfig(ks=(10, 20, 50), splits=("valid",)),
                        progress=self.progress, desc="validating", transient=True)

    def _shared_validation(self) -> dict[str, float]:
        """Rank 0's validation metrics on every worker (only rank 0 evaluates)."""
        keys = ("ndcg@10", "recall@10", "ndcg@50")
        metrics = self.validate() if self.workers.is_main else {}
        return dict(zip(keys, self.workers.broadcast([metrics.get(k, 0.0) for k in keys])))

    def _batches(self, rng: np.random.Generator):
        """The epoch's global batches (this worker's share of each when data-parallel)."""
        config = self.config
        users = None
        if self.steps_per_epoch * config.batch_size < len(self.data.sequences):  # `steps_per_epoch`: a random share
            share = self.steps_per_epoch * config.batch_size
            if config.tower.user_tower != "sequence":
                share = math.ceil(share / config.text_examples_per_user)
            users = np.sort(rng.choice(len(self.data.sequences), min(share, len(self.data.sequences)), replace=False))
        if config.tower.user_tower == "sequence":
            batches = sequence_batches(self.data, self.batch_size, config.tower.max_history, rng,
                                       config.crop_prob, config.mask_prob, config.reverse_prob, users=users)
        else:
            batches = single_target_batches(self.data, self.batch_size, config.tower.max_history, rng,
                                            config.text_examples_per_user, config.crop_prob, config.mask_prob,
                                            users=users)
        if not self.workers.distributed:
            return batches
        world = self.workers.world_size  # a batch too small to give every worker an example is skipped
        return (self.workers.shard(batch) for batch in batches if len(batch[1]) >= world)

    # ---- the loop -----------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train with early stopping; restores the best validation state before returning (a refit,
        `config.refit_epochs`: exactly that many epochs, the last state). With `config.deterministic` on CPU, the
        whole run uses torch's deterministic algorithms (`encoders.reproducible`)."""
        with deterministic_algorithms(self.config.deterministic and self.device.type == "cpu"):
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        config = self.config
        started = time.perf_counter()
        history: list[dict] = []
        best_state, best_ndcg, best_epoch, bad, start_epoch, step = None, -1.0, -1, 0, 0, 0
        # phases: "main" (adapters in the first bert_epochs), or "heads" then "adapters" (adapter_phase="last")
        phase = "heads" if config.adapter_phase == "last" and self.adapters and self.adapter_epochs else "main"
        end = config.epochs  # the current phase's last epoch (exclusive)
        checkpoint = self.run_dir / "checkpoint" if self.run_dir is not None else None
        if checkpoint is not None:
            recover_checkpoint(checkpoint)
            check_checkpoint_dir(checkpoint)
        if resume and checkpoint is not None and (checkpoint / "trainer.json").exists():
            check_resume_config(checkpoint, config)
            trainer, best_state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
            history, best_ndcg, best_epoch = trainer["history"], trainer["best_ndcg"], trainer["best_epoch"]
            bad, start_epoch, step = trainer["bad_epochs"], trainer["epoch"] + 1, trainer["step"]
            self.adapter_step, self.pre_stage = trainer.get("adapter_step", 0), trainer.get("pre_stage")
            phase = trainer.get("phase", phase)
            average = load_average(checkpoint)
            if self.average is not None and average is not None:
                self.average.load_state(average)
            elif self.average is not None:  # a checkpoint from a run without the average: start it here
                self.average.reset()
            end = trainer["phase_end"] if phase == "adapters" else end  # else this config's epochs
            self.phase_start = trainer.get("phase_start")
            started -= trainer["seconds"]
        elif self.pair_steps:
            self.pre_stage = pretrain_items(self, started)
        epoch, stopped = start_epoch, "epochs"
        while epoch < end or phase == "heads":
            if epoch >= end or (phase == "heads" and bad >= config.patience):  # the heads have converged
                phase, end, bad = "adapters", epoch + self.adapter_epochs, 0
                self.phase_start = step
                if best_state is not None:
                    self._restore(best_state)
                if self.average is not None:
                    self.average.reset()
                self.refresh_bank()
                if self.progress:
                    tqdm.write(f"adapters' phase: {self.adapter_epochs} epochs from the best heads-only state "
                               f"(epoch {best_epoch}, valid NDCG@10 {best_ndcg:.4f})")
                continue
            adapters_on = phase == "adapters" or (phase == "main" and bool(self.adapters) and (
                config.bert_epochs is None or epoch < config.bert_epochs))
            for parameter in self.adapters:
                parameter.requires_grad_(adapters_on)
            if self.bank is None:
                self.refresh_bank()
            epoch_start = time.perf_counter()
            losses, seen, step = self._train_epoch(epoch, end, adapters_on, step, started)
            train_seconds = time.perf_counter() - epoch_start
            with self.average.applied() if self.average is not None else nullcontext():
                metrics = self._shared_validation()  # with the average's weights, which are also the ones kept
                # a refit keeps its last state
                improved = config.refit_epochs is not None or metrics["ndcg@10"] > best_ndcg
                if improved:
                    best_state = trainable_state(self.model)
            mean_loss, seen = self.workers.mean([float(np.mean(losses)) if losses else float("nan"), seen])
            seen *= self.workers.world_size
            row = {"epoch": epoch + 1, "step": step, "train_loss": mean_loss,
                   "valid_ndcg@10": metrics["ndcg@10"], "valid_recall@10": metrics["recall@10"],
                   "valid_ndcg@50": metrics["ndcg@50"], "temperature": float(1 / self.model.scale.item()),
                   "lr": self.scheduler.get_last_lr()[0], "adapters_trained": adapters_on,
                   "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
                   "examples_per_second": round(seen / max(train_seconds, 1e-9), 1),
                   "elapsed_seconds": round(time.perf_counter() - started, 1)}
            history.append(row)
            if self.progress:
                tqdm.write(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  valid NDCG@10 {row['valid_ndcg@10']:.4f}"
                           f"  R@10 {row['valid_recall@10']:.4f}  ({row['epoch_seconds']:.0f}s)")
            if improved:
                best_ndcg, best_epoch, bad = metrics["ndcg@10"], epoch + 1, 0
            else:
                bad += 1
            out_of_time = bool(config.max_minutes) and self.workers.any(
                over_budget(started, config.max_minutes))
            if self.run_dir is not None and self.workers.is_main:
                write_metrics_csv(history, self.run_dir / "metrics.csv")
                plot_training_curve(history, self.run_dir / "training_curve.png", f"{self.dataset.name}: "
                                    f"{config.tower.user_tower} tower, {config.lora.method}")
                save_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler, best_state,
                                {"epoch": epoch, "step": step, "history": history, "best_ndcg": best_ndcg,
                                 "best_epoch": best_epoch, "bad_epochs": bad, "adapter_step": self.adapter_step,
                                 "pre_stage": self.pre_stage, "phase": phase, "phase_end": end,
                                 "phase_start": self.phase_start, "seconds": time.perf_counter() - started,
                                 "config": config_record(config)},
                                self.average.state() if self.average is not None else None)
            epoch += 1
            reason = stop_reason(bad >= config.patience and phase != "heads", epoch == config.refit_epochs,
                                 out_of_time)
            if reason is not None:
                stopped = reason
                if reason == "time budget" and self.progress:
                    tqdm.write(time_budget_message(config.max_minutes, epoch, config.epochs))
                break
        if best_state is not None:
            self._restore(best_state)
            self.refresh_bank()
        vectors = self.catalogue_vectors()
        self.release()
        return TrainResult(self.model, config, vectors, self.user_tower(vectors), history, best_epoch, best_ndcg,
                           time.perf_counter() - started, self.parameters, self.device.type, self.pre_stage, stopped)

    def _train_epoch(self, epoch: int, end: int, adapters_on: bool, step: int,
                     started: float) -> tuple[list[float], int, int]:
        """One epoch's steps (fewer when the time budget runs out): its losses, examples seen and the global step
        after it. The bank is refreshed every `bank_refresh_steps` and after the epoch while adapters train."""
        config = self.config
        rng = np.random.default_rng([config.seed, epoch])
        self.model.train()
        losses, seen, epoch_start = [], 0, time.perf_counter()
        bar = tqdm(self._batches(rng), total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{end}",
                   unit="step", disable=not self.progress)
        for batch in bar:
            loss, n = self.loss_step(batch, adapters_on, rng)
            self.optimizer_step(loss, adapters_on, self.optimizer, self.scheduler, self.workers.share_weight(n))
            if self.average is not None:
                self.average.update()
            step += 1
            losses.append(loss.item())
            seen += n
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}",  # shown at the bar's next redraw, not per step
                            ex_s=f"{seen / (time.perf_counter() - epoch_start):.0f}", refresh=False)
            if adapters_on and config.bank_refresh_steps and step % config.bank_refresh_steps == 0:
                self.refresh_bank()
            if config.max_minutes and self.workers.any(over_budget(started, config.max_minutes)):
                break
        bar.close()
        if adapters_on:
            self.refresh_bank()
        return losses, seen, step

    def optimizer_step(self, loss: torch.Tensor, adapters_on: bool, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, weight: float = 1.0) -> None:
        """Backward (+ AdaLoRA's orthogonal regulariser while adapters train), clip, step; AdaLoRA's budget
        schedule advances with the steps that train adapters only. `weight`: this worker's share of the global
        batch (`WorkerGroup.share_weight`; 1 on one worker)."""
        loss = loss * weight if weight != 1.0 else loss
        if adapters_on:
            penalty = orthogonal_penalty(self.peft)
            if penalty is not None:
                loss = loss + penalty
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.config.grad_clip)
        optimizer.step()
        scheduler.step()
        if adapters_on:
            if self.config.lora.method == "adalora":
                self.peft.base_model.update_and_allocate(self.adapter_step)
            self.adapter_step += 1
        optimizer.zero_grad(set_to_none=True)


def train_towers(dataset: Dataset, split: SplitData, config: TrainConfig, run_dir: Path | None = None,
                 resume: bool = False, init_bundle: Path | None = None, progress: bool = True,
                 device: torch.device | None = None, workers: WorkerGroup | None = None) -> TrainResult:
    """Train the towers end to end (see `Trainer`)."""
    return Trainer(dataset, split, config, run_dir, device, progress, init_bundle, workers).fit(resume)
