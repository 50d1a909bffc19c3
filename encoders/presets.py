"""Named training configurations (`recsys train --preset NAME`, `recsys bench quality --variants …`)."""

from __future__ import annotations

from recsys.config import TrainConfig, merge

_SEQUENCE = {"user_tower": "sequence", "dim": 384, "seq_heads": 4, "id_fusion": "concat", "id_dim": 32,
             "suppress_history": True, "seq_dropout": 0.5}
# history augmentation (random item deletion, cropping of the oldest part) + dropout 0.5: on amazon-scientific
# valid NDCG@10 0.0777 → 0.0819 (frozen BERT), test 0.0680 → 0.0719 (benchmarks/results/quality.md)
_REGULARISED = {"mask_prob": 0.2, "crop_prob": 0.3, "min_steps_per_epoch": 30}
# min_steps_per_epoch: small shops get smaller batches (movielens-100k: 943 users → 32 per step, 30 steps an epoch;
# amazon-scientific keeps 256), so one preset serves every shop size
# after training, + w × the frozen BERT's zero-shot score (w chosen on validation; 0 = no blend): on amazon-scientific
# test NDCG@10 0.0703 → 0.0768 (cpu) and 0.0719 → 0.0780 (frozen), both at w = 0.3 (benchmarks/results/quality.md)
_BLEND = {"zero_shot_blend": (0.0, 0.1, 0.2, 0.3, 0.5)}
# early stopping waits 8 epochs without a better validation NDCG@10 (was 3): with 3, a noisy validation curve
# stopped movielens-100k's `frozen` towers at epoch 6 (valid 0.0427; with 8: 0.0675 at epoch 20, test 0.0424 →
# 0.0588) and amazon-scientific's at epoch 19 on seed 1 while still rising
# (benchmarks/EXPERIMENTS.md "Does the LoRA part earn its place?")
_PATIENCE = 8
_NEIGHBOURS = {"neighbour_mix": 0.5, "neighbour_shrink": 8.0, "neighbour_borrow": 3}

PRESETS: dict[str, dict] = {
    # ≤ ~60 min on 2 CPU cores (amazon-scientific): sequence user tower over the PEFT item tower (text block 352 +
    # ID block 32, learned history suppression); AdaLoRA in the top BERT layer (rank 8 pruned to 4) trained for the
    # first 3 epochs (64 positives per step re-encoded with gradients, bank refreshed each epoch), then heads only.
    # AdaLoRA, not LoRA: ahead on validation NDCG@10 in all four same-seed pairings (seeds 0 and 1 on
    # amazon-scientific and movielens-100k, patience 8; benchmarks/EXPERIMENTS.md "FGM and AdaLoRA")
    # neighbour_mix (the item's neighbours in the training sequences, a share of their mean text features mixed into
    # its own): 0.3 for every item was ahead on validation in all four same-seed pairings (seeds 0 and 1 on both
    # datasets; benchmarks/EXPERIMENTS.md "Neighbour features in the item head"), though it lost movielens-100k on
    # the `frozen` preset; 0.5 shrunk by the item's neighbour count n (0.5 × n / (n + 8): about 0.3 for
    # amazon-scientific's median item, more for items seen beside many others) is ahead of 0.3 in all four again,
    # and `frozen` uses it too
    # neighbour_borrow: items without neighbours, and items added after training, borrow the neighbours of their 3
    # text-nearest items; with a tenth of the items held out as new (`--cold-items 0.1`), all users' valid N@10 with
    # k = 3 / 5 / 10 / none: amazon-scientific `frozen` 0.0807 / 0.0805 / 0.0797 / 0.0803, seed 1 0.0794 / 0.0790 /
    # 0.0784 / 0.0786, movielens-100k 0.0757 / 0.0747 / 0.0748 / 0.0759, `cpu` 0.0782 / – / 0.0778 / 0.0776; the new
    # items' own valid N@10 rises with k (seed 1: 0.0396 none → 0.0557 / 0.0621 / 0.0754), everyone else's falls
    # (benchmarks/EXPERIMENTS.md "How many look-alikes")
    "cpu": {"lora": {"method": "adalora", "rank": 8, "top_layers": 1},
            "tower": {**_SEQUENCE, **_NEIGHBOURS}, "bert_epochs": 3,
            "adapter_items_per_step": 64, "epochs": 30, "patience": _PATIENCE, "max_minutes": 55, **_REGULARISED,
            **_BLEND},
    # text-only item path (no ID block, hence no suppression): what brand-new items get
    "cpu-text-only": {"lora": {"method": "lora", "rank": 8, "top_layers": 1},
                      "tower": {"user_tower": "sequence", "dim": 384, "seq_heads": 4, "id_embedding": False},
                      "bert_epochs": 3, "adapter_items_per_step": 64, "epochs": 30, "patience": 3, "max_minutes": 40},
    # the history itself rendered as text (most recent first) and encoded by the same PEFT BERT: slow on CPU
    "cpu-history-text": {"lora": {"method": "lora", "rank": 8, "top_layers": 1},
                         "tower": {"user_tower": "text", "dim": 384, "history_max_length": 64},
                         "batch_size": 64, "lr": 5e-4, "adapter_lr": 5e-4, "epochs": 10, "patience": 2,
                         "max_minutes": 25, "valid_sample": 1000},
    # ablation: the "cpu" towers on a frozen BERT (no adapters). The flat neighbour share 0.3 lost movielens-100k
    # here; the shrunk one (0.5 × n / (n + 8)) is ahead of no share on validation in all four same-seed pairings
    # (benchmarks/EXPERIMENTS.md "How much of the neighbours, and whose")
    "frozen": {"lora": {"method": "none", "top_layers": 1},
               "tower": {**_SEQUENCE, **_NEIGHBOURS}, "epochs": 30,
               "patience": _PATIENCE, "max_minutes": 40, **_REGULARISED, **_BLEND},
    # CUDA: adapters in every layer, longer item texts, every positive re-encoded each step, bank refreshed often.
    # The heads (and the sequence tower) train first on the frozen BERT until early stopping, then 5 epochs with the
    # adapters at a tenth of the learning rates, keeping the best validation state of either phase; the re-encoded
    # positives get their own in-batch softmax (`fresh`). As it was (adapters from the first step, `bank`
    # negatives) validation N@10 fell from the first epoch on an H200 (amazon-scientific: best 0.0593, test 0.0570,
    # against `frozen`'s 0.0833 / 0.0780); with `bank`, re-encoding nearly every positive lets the adapters raise
    # them all at once against the stale bank, and the loss rises again at each refresh
    # (tests/test_fine_tuning.py reproduces both; benchmarks/EXPERIMENTS.md "Fine-tuning on a GPU")
    "gpu": {"lora": {"method": "lora", "rank": 16, "alpha": 32, "top_layers": None},
            "tower": {**_SEQUENCE, "item_max_length": 64}, "adapter_items_per_step": 4096,
            "adapter_negatives": "fresh", "bank_refresh_steps": 20, "adapter_phase": "last", "adapter_phase_lr": 0.1,
            "bert_epochs": 5, "epochs": 60, "patience": _PATIENCE, "max_minutes": 60, **_REGULARISED, **_BLEND},
    # `recsys quickstart` (the synthetic shop in about a minute on 2 cores): LoRA in the top BERT layer for the first
    # 2 epochs, a small one-layer sequence tower with the ID block and history suppression, no zero-shot blend.
    # Its 12 epochs take ~15 s on 2 quiet cores; the 10-minute budget is only a safety net (it was 1.5 min, which a
    # busy machine ran out of after 2 epochs: towers at test N@10 0.07 instead of 0.16, below zero-shot BERT).
    # Every preset trains deterministically (TrainConfig.deterministic, on by default): without it this preset's
    # towers differed by ~1e-7 between runs, which moved the re-ranker's early stopping on the shop's few hold-out
    # queries (37 trees in one run, 111 in another; engine test N@10 0.176-0.184)
    "quickstart": {"lora": {"method": "lora", "rank": 8, "top_layers": 1}, "bert_epochs": 2,
                   "adapter_items_per_step": 32,
                   "tower": {**_SEQUENCE, "dim": 128, "seq_layers": 1, "seq_heads": 2, "seq_dropout": 0.3,
                             "max_history": 30, "item_max_length": 32},
                   "batch_size": 128, "epochs": 12, "patience": 2, "max_minutes": 10, **_REGULARISED},
    # tiny and fast, for smoke tests
    "smoke": {"tower": {"dim": 32, "seq_layers": 1, "seq_heads": 2}, "epochs": 2, "batch_size": 64,
              "valid_sample": 200},
}


def preset(name: str, **overrides) -> TrainConfig:
    """The named preset with `overrides` (nested dicts merge into nested configs)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return TrainConfig.model_validate(merge(PRESETS[name], overrides))

