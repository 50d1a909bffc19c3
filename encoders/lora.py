"""PEFT adapters (LoRA / AdaLoRA) on a BERT backbone: attach, count, save, load, merge; or full fine-tuning.

With adapters the base weights are frozen; only adapter matrices (and, for AdaLoRA, its rank masks) train.
Adapters are saved in peft's own format (`adapter_config.json` + `adapter_model.safetensors`). Full fine-tuning
(`method="full"`) unfreezes every weight of the adapted layers instead; those weights are saved with the towers.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from encoders.layer_stack import layer_stack, lora_targets
from recsys.config import LoraConfig

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def n_layers(backbone: PreTrainedModel) -> int:
    """Number of transformer layers of a BERT-like backbone."""
    return int(backbone.config.num_hidden_layers)


def adapted_layers(backbone: PreTrainedModel, config: LoraConfig) -> list[int]:
    """Indices of the layers that carry adapters (the top `config.top_layers`, or all)."""
    total = n_layers(backbone)
    top = total if config.top_layers is None else min(config.top_layers, total)
    return list(range(total - top, total))


def peft_config(backbone: PreTrainedModel, config: LoraConfig, total_steps: int = 1000):
    """The peft config object for `config` (LoRA, or AdaLoRA with its budget schedule over `total_steps`, the
    number of steps in which the adapters train: warm-up at full rank for the first tenth, pruning towards the
    target rank until the last fifth, then the final ranks)."""
    from peft import AdaLoraConfig
    from peft import LoraConfig as PeftLoraConfig

    common = dict(lora_alpha=config.alpha, lora_dropout=config.dropout,
                  target_modules=lora_targets(backbone, config.target_modules),
                  layers_to_transform=adapted_layers(backbone, config), layers_pattern="layer")
    if config.method == "adalora":
        if config.adalora_target_rank >= config.rank:
            raise ValueError(f"AdaLoRA prunes from rank {config.rank} to adalora_target_rank "
                             f"{config.adalora_target_rank}: the target must be smaller")
        total_steps = max(total_steps, 10)
        return AdaLoraConfig(init_r=config.rank, target_r=config.adalora_target_rank, total_step=total_steps,
                             tinit=max(1, total_steps // 10), tfinal=max(1, total_steps // 5),
                             deltaT=max(1, total_steps // 50), orth_reg_weight=config.adalora_orth_reg, **common)
    return PeftLoraConfig(r=config.rank, **common)


def attach_adapters(backbone: PreTrainedModel, config: LoraConfig, total_steps: int = 1000) -> torch.nn.Module:
    """Freeze the backbone and wrap it with fresh adapters (a PeftModel); `method="none"` only freezes,
    `method="full"` unfreezes the adapted layers' own weights instead (no wrapper)."""
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    if config.method == "none":
        return backbone
    stack = layer_stack(backbone)
    if config.method == "full":
        layers = stack.layers(backbone)
        for index in adapted_layers(backbone, config):
            for parameter in layers[index].parameters():
                parameter.requires_grad_(True)
        return backbone
    from peft import get_peft_model

    with quiet_checkpointing_alias():
        return get_peft_model(backbone, peft_config(backbone, config, total_steps))


def orthogonal_penalty(model: torch.nn.Module) -> torch.Tensor | None:
    """AdaLoRA's orthogonal regulariser times its weight (‖PᵀP − I‖_F averaged over the lora_A / lora_B
    matrices), the term peft's `AdaLoraModel.forward` adds to a model's own loss. The towers run the adapted layers
    directly, not through that forward, so training adds it here. None for other adapters."""
    if not is_peft_model(model):
        return None
    from peft import AdaLoraConfig

    if not isinstance(model.peft_config.get("default"), AdaLoraConfig):
        return None
    terms = []
    for name, parameter in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            product = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter
            terms.append(torch.linalg.matrix_norm(product - torch.eye(len(product), device=product.device)))
    if not terms:
        return None
    return model.peft_config["default"].orth_reg_weight * torch.stack(terms).mean()


def load_adapters(backbone: PreTrainedModel, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach adapters saved by `save_adapters` (peft format) to a freshly loaded backbone."""
    from peft import PeftModel

    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    with quiet_checkpointing_alias():
        return PeftModel.from_pretrained(backbone, str(directory), is_trainable=trainable)


@contextmanager
def quiet_checkpointing_alias() -> Iterator[None]:
    """Silence transformers' FutureWarning about `is_gradient_checkpointing`: peft reads that deprecated alias
    while wrapping a model, which the user can do nothing about (every other warning still shows)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def save_adapters(model: torch.nn.Module, directory: str | Path) -> list[str]:
    """Write the adapters in peft format into `directory`; returns the file names (none without adapters)."""
    if not is_peft_model(model):
        return []
    model.save_pretrained(str(directory))
    readme = Path(directory) / "README.md"
    if readme.exists():  # peft's model-card stub: not part of the model
        readme.unlink()
    return [name for name in ADAPTER_FILES if (Path(directory) / name).exists()]


def merged_backbone(model: torch.nn.Module) -> PreTrainedModel:
    """A plain backbone with the adapters folded into its weights (a copy; `model` is left intact)."""
    if not is_peft_model(model):
        return model
    import copy
    return copy.deepcopy(model).merge_and_unload()


def base_model(model: torch.nn.Module) -> PreTrainedModel:
    """The underlying transformers model (through a PeftModel wrapper when there is one)."""
    return model.get_base_model() if is_peft_model(model) else model


def is_peft_model(model: torch.nn.Module) -> bool:
    """True for a peft wrapper (without importing peft: a model can only be one once peft is imported, and
    serving a sequence tower never imports it)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def is_adapter_parameter(name: str) -> bool:
    """True for adapter weights (lora_A / lora_B / lora_E / AdaLoRA ranknum) in a peft model's names."""
    return "lora_" in name or "ranknum" in name


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """{"trainable": …, "total": …} over `module`'s parameters."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return {"trainable": int(trainable), "total": int(total)}
