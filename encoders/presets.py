"""Named training configurations (`recsys train --preset NAME`, `recsys bench quality --variants …`)."""

from __future__ import annotations

from recsys.config import TrainConfig

PRESETS: dict[str, dict] = {
    # ≤ ~60 min on 2 CPU cores (amazon-scientific): sequence user tower over the PEFT item tower, adapters in the
    # top BERT layer trained for the first epochs (positives re-encoded with gradients), then heads only.
    "cpu": {"lora": {"method": "lora", "rank": 8, "top_layers": 1}, "tower": {"user_tower": "sequence"},
            "bert_epochs": 3, "adapter_items_per_step": 64, "epochs": 40, "patience": 4, "max_minutes": 55},
    # the same, without item-ID embeddings: the text-only path (what new items get)
    "cpu-text-only": {"lora": {"method": "lora", "rank": 8, "top_layers": 1},
                      "tower": {"user_tower": "sequence", "id_embedding": False},
                      "bert_epochs": 3, "adapter_items_per_step": 64, "epochs": 40, "patience": 4, "max_minutes": 40},
    # the history itself rendered as text and encoded by the same PEFT BERT (slow on CPU: a short budget)
    "cpu-history-text": {"lora": {"method": "lora", "rank": 8, "top_layers": 1},
                         "tower": {"user_tower": "text", "history_max_length": 96},
                         "batch_size": 64, "lr": 5e-4, "adapter_lr": 5e-4, "epochs": 20, "patience": 2,
                         "max_minutes": 25, "valid_sample": 1500},
    # ablation: frozen BERT, trained heads only
    "frozen": {"lora": {"method": "none", "top_layers": 1}, "tower": {"user_tower": "sequence"},
               "epochs": 40, "patience": 4, "max_minutes": 30},
    # CUDA: adapters in every layer, longer item texts, all positives re-encoded each step, fusion user tower
    "gpu": {"lora": {"method": "lora", "rank": 16, "alpha": 32, "top_layers": None},
            "tower": {"user_tower": "sequence", "item_max_length": 64}, "adapter_items_per_step": 4096,
            "bank_refresh_steps": 20, "epochs": 100, "patience": 8, "max_minutes": 60},
    # tiny and fast, for smoke tests
    "smoke": {"tower": {"dim": 32, "seq_layers": 1}, "epochs": 2, "batch_size": 64, "valid_sample": 200},
}


def preset(name: str, **overrides) -> TrainConfig:
    """The named preset with `overrides` (nested dicts merge into nested configs)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return TrainConfig.model_validate(merge(PRESETS[name], overrides))


def merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge (overrides win)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
