"""The item–item contrastive pre-stage run before tower training (`TrainConfig.pair_steps`): in-batch
contrastive steps over co-occurrence / next-item pairs of the train split (`encoders.item_pairs`), through the
trainer's adapters and item head."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from encoders.item_pairs import pair_batches, pair_loss
from encoders.schedules import warmup_cosine
from encoders.stopping import over_budget
from encoders.towers import autocast

if TYPE_CHECKING:
    from encoders.training import Trainer


def pretrain_items(trainer: Trainer, started: float) -> dict:
    """The item–item contrastive pre-stage of `trainer` (`encoders.item_pairs`): `pair_steps` steps over the train
    split's pairs, training the adapters (when there are any) and the item head; the bank is encoded afresh after
    it. `started`: when the run began (`config.max_minutes` counts from it). Returns a summary."""
    config = trainer.config
    head = [p for p in trainer.model.item_head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": head, "lr": config.lr}, {"params": trainer.adapters,
                                                                        "lr": config.adapter_lr}],
                                  weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, trainer.pair_steps, config.warmup_ratio)
    rng = np.random.default_rng([config.seed, 1_000_003])
    stage_start, losses, step, out_of_time = time.perf_counter(), [], 0, False
    trainer.model.train()
    bar = tqdm(total=trainer.pair_steps, desc=f"item-item pre-stage ({len(trainer.pairs):,} pairs)", unit="step",
               disable=not trainer.progress)
    while step < trainer.pair_steps:
        for pairs in pair_batches(trainer.pairs, config.pair_batch_size, rng):
            unique, batch = torch.unique(torch.as_tensor(pairs, device=trainer.device), return_inverse=True)
            if trainer.adapters:
                features = trainer.fresh_features(unique)
            else:
                if trainer.bank is None:
                    trainer.refresh_bank()
                features = trainer.bank[unique]
            with autocast(trainer.device, config.mixed_precision):
                vectors = F.normalize(trainer.model._head(features), dim=-1)
            loss = pair_loss(vectors, batch, 1.0 / config.temperature)
            trainer.optimizer_step(loss, bool(trainer.adapters), optimizer, scheduler)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)  # at the next redraw
            out_of_time = over_budget(started, config.max_minutes)
            if step >= trainer.pair_steps or out_of_time:
                break
        if out_of_time:
            break
    bar.close()
    trainer.workers.sync_parameters(trainer.model)  # each worker drew its own dropout: rank 0's weights for all
    trainer.refresh_bank()
    report = {"pairs": int(len(trainer.pairs)), "steps": step, "first_loss": float(np.mean(losses[:20])),
              "last_loss": float(np.mean(losses[-20:])), "seconds": round(time.perf_counter() - stage_start, 1)}
    if trainer.progress:
        tqdm.write(f"pre-stage: {step} steps, loss {report['first_loss']:.3f} → {report['last_loss']:.3f} "
                   f"({report['seconds']:.0f}s)")
    return report
