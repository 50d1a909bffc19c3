"""Running a BERT-family backbone one layer at a time, as the towers do to cache the frozen lower layers' token
states: where each supported architecture keeps its layers, what else its layers take, and what its modules are
called for LoRA.

Supported: BERT and the encoders built like it (RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA), MPNet (its layers
also take the relative position bias) and DistilBERT. `recsys build` (zero-shot, the whole model's forward) reads
any Hugging Face encoder; training needs one of these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from recsys.errors import SettingError


@dataclass(frozen=True)
class LayerStack:
    """How one architecture's layers are reached and run."""

    path: str = "encoder.layer"
    target_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """BERT module names → this architecture's modules of the same role (`output.dense` matches BERT's attention
    output and feed-forward output alike, so it maps to both)."""
    position_bias: bool = False

    def layers(self, backbone: nn.Module) -> nn.ModuleList:
        """The backbone's transformer layers, bottom first."""
        return backbone.get_submodule(self.path)

    def embed(self, backbone: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Token states entering the first layer (ELECTRA's embeddings projected to the layers' width)."""
        hidden = backbone.embeddings(input_ids=input_ids)
        project = getattr(backbone, "embeddings_project", None)
        return project(hidden) if project is not None else hidden

    def layer_inputs(self, backbone: nn.Module, hidden: torch.Tensor) -> dict:
        """What every layer takes beside the states and the mask (MPNet: the relative position bias)."""
        return {"position_bias": backbone.encoder.compute_position_bias(hidden)} if self.position_bias else {}

    @staticmethod
    def run(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, inputs: dict) -> torch.Tensor:
        """One layer's output states (a layer that returns a tuple, as MPNet's do, gives its first element)."""
        out = layer(hidden, mask, **inputs)
        return out[0] if isinstance(out, tuple) else out

    def layer_index(self, name: str) -> int | None:
        """The layer a parameter name (relative to the backbone, any prefix) belongs to; None outside the layers."""
        found = re.search(rf"(?:^|\.){re.escape(self.path)}\.(\d+)\.", name)
        return int(found.group(1)) if found else None


STACKS: dict[str, LayerStack] = {
    **{kind: LayerStack() for kind in ("bert", "roberta", "xlm-roberta", "camembert", "electra")},
    "mpnet": LayerStack(position_bias=True, target_aliases={
        "query": ("q",), "key": ("k",), "value": ("v",), "output.dense": ("o", "output.dense")}),
    "distilbert": LayerStack(path="transformer.layer", target_aliases={
        "query": ("q_lin",), "key": ("k_lin",), "value": ("v_lin",), "intermediate.dense": ("lin1",),
        "output.dense": ("out_lin", "lin2")}),
}


def model_type(backbone: nn.Module) -> str:
    """The backbone's `config.model_type` ("bert", "mpnet", …)."""
    return str(getattr(backbone.config, "model_type", type(backbone).__name__))


def layer_stack(backbone: nn.Module) -> LayerStack:
    """The stack of `backbone`'s architecture; SettingError for one the towers cannot run a layer at a time."""
    kind = model_type(backbone)
    stack = STACKS.get(kind)
    if stack is None:
        raise SettingError(f"training runs the encoder a layer at a time and knows the architectures "
                           f"{', '.join(sorted(STACKS))}; this model is {kind!r} ({type(backbone).__name__}). "
                           "recsys build (zero-shot vectors) reads any Hugging Face encoder")
    return stack


def lora_targets(backbone: nn.Module, targets: Sequence[str]) -> list[str]:
    """`targets` as module names of `backbone`: a BERT name becomes this architecture's names of the same role, any
    other name is kept; SettingError for a name no module has, listing the layers' own."""
    stack = layer_stack(backbone)
    names = [name for name, _ in backbone.named_modules()]

    def present(target: str) -> bool:
        return any(n == target or n.endswith("." + target) for n in names)

    resolved: list[str] = []
    for target in targets:
        options = stack.target_aliases.get(target, (target,))
        resolved += [name for name in options if name not in resolved]
    unknown = [name for name in resolved if not present(name)]
    if unknown:  # (peft's own error for them is a traceback)
        raise SettingError(f"lora.target_modules {unknown} name no module of this {model_type(backbone)} model "
                           f"(its layers' linear modules: {', '.join(linear_names(backbone, stack))})")
    return resolved


def linear_names(backbone: nn.Module, stack: LayerStack) -> list[str]:
    """The names, within one layer, of the linear modules of the first layer (what LoRA can target)."""
    prefix = f"{stack.path}.0."
    return [name.split(prefix, 1)[1] for name, module in backbone.named_modules()
            if prefix in name and isinstance(module, nn.Linear)]
