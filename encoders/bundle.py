"""Trained towers inside a bundle's `encoder/` directory, and loading a Recommender that uses them.

encoder/ holds: adapter_config.json + adapter_model.safetensors (peft format), the tokenizer files,
towers.safetensors (item head, ID embeddings, sequence model, user head, temperature, the borrowed neighbour
share's banks; with full fine-tuning also the tuned BERT layers), tower.json (the TrainConfig and sizes),
own_neighbours.safetensors (towers with neighbour features: each trained item's own neighbour share, and the
neighbours' means when the borrowed share's bank does not hold them; absent from bundles built before stop 59) and,
with `merge_adapters`, merged/ (the backbone with adapters folded in)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file, save_file

from encoders.backbone import (check_model_directory, import_transformers, load_backbone, resolved_pooling,
                               with_resolved_pooling)
from encoders.lora import is_adapter_parameter, load_adapters, merged_backbone, save_adapters
from encoders.serving import TextPathLoader, TrainedUserTower
from encoders.towers import AdaptedBert, TwoTowerModel
from recsys.bundle import Bundle
from recsys.catalogue import Catalogue
from recsys.config import TrainConfig
from recsys.errors import BundleError, RecsysError
from recsys.pipeline import Recommender
from recsys.towers import UserTower

TOWER_WEIGHTS = "towers.safetensors"
TOWER_META = "tower.json"
OWN_NEIGHBOURS_FILE = "own_neighbours.safetensors"


def save_towers(model: TwoTowerModel, config: TrainConfig, directory: Path, tokenizer=None,
                extra: dict | None = None) -> None:
    """Write the trained towers into `directory` (no pickle: peft safetensors, safetensors, JSON)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adapter_files = save_adapters(model.bert.model, directory) if model.bert is not None else []
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()  # + fully tuned BERT layers
             if model.trains(k) and not is_adapter_parameter(k)}
    save_file(state, directory / TOWER_WEIGHTS)
    if model.keeps_own_neighbours:
        save_file(model.own_neighbours.state(), directory / OWN_NEIGHBOURS_FILE)
    merged = False
    if config.merge_adapters and model.bert is not None and adapter_files:
        merged_backbone(model.bert.model).save_pretrained(str(directory / "merged"))
        merged = True
    tower = config.tower.model_copy(update={"pooling": resolved_pooling(config.tower.pooling, config.encoder.model)})
    as_run = config.model_copy(update={"encoder": with_resolved_pooling(config.encoder), "tower": tower})  # "auto"'s
    meta = {"train_config": as_run.model_dump(mode="json"), "n_items": int(model.id_mask.shape[0]),
            "hidden_size": model.bert.feature_size if model.bert is not None else None,  # the item head's input
            "adapters": adapter_files, "merged": merged, **(extra or {})}
    (directory / TOWER_META).write_text(json.dumps(meta, indent=2))


def stored_train_config(meta: dict) -> TrainConfig:
    """The TrainConfig of a `tower.json`. Bundles from before the one item-text template carry the identity
    `item_template` ("{text}") in their tower config: dropped; any other value can no longer be honoured."""
    config = json.loads(json.dumps(meta["train_config"]))
    template = config.get("tower", {}).pop("item_template", "{text}")
    if template != "{text}":
        raise BundleError(f"these towers were trained with the tower item template {template!r}; item text now comes "
                          "from the dataset's own template (recsys import table --text-template): retrain")
    return TrainConfig.model_validate(config)


def _text_path(directory: Path, meta: dict, config: TrainConfig, tuned: dict[str, torch.Tensor],
               prefer_merged: bool = False) -> tuple[AdaptedBert, object]:
    """(adapted BERT with its trained weights, tokenizer) of an `encoder/` directory: the backbone with the saved
    adapters, or the merged copy; with full fine-tuning the tuned layers (`tuned`, the "bert."-prefixed weights)."""
    import_transformers()  # (a request's thread may load it while another thread imports transformers)
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if prefer_merged and meta.get("merged"):
        backbone = AutoModel.from_pretrained(str(directory / "merged"))
    else:
        backbone, _ = load_backbone(config.encoder.model)
        if meta.get("adapters"):
            backbone = load_adapters(backbone, directory)
    backbone.eval()
    bert = AdaptedBert(backbone, config.lora.top_layers, resolved_pooling(config.tower.pooling, config.encoder.model),
                       full=config.lora.method == "full",
                       pool_layers=config.tower.pool_layers)
    if tuned:
        _, unexpected = bert.load_state_dict({k[len("bert."):]: v for k, v in tuned.items()}, strict=False)
        if unexpected:
            raise ValueError(f"fine-tuned BERT weights that match no layer: {unexpected[:3]}")
    return bert, tokenizer


def load_towers(directory: Path, device: torch.device | None = None, prefer_merged: bool = False,
                lazy_text: bool = False) -> tuple[TwoTowerModel, TrainConfig, object, TextPathLoader | None]:
    """(model in eval mode, its TrainConfig, tokenizer, text-path loader) from an `encoder/` directory.

    With `lazy_text`, a sequence tower comes without its BERT (`model.bert` and the tokenizer None): its history
    queries read only the item vectors, so neither the backbone nor transformers / peft are loaded until the
    returned loader is called (`TrainedUserTower.load_text_path`). Otherwise the loader is None."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / TOWER_META).read_text())
        config = stored_train_config(meta)
        weights = load_file(directory / TOWER_WEIGHTS)
        tuned = {k: v for k, v in weights.items() if k.startswith("bert.")}  # full fine-tuning's BERT layers
        lazy = lazy_text and config.tower.user_tower == "sequence" and meta.get("hidden_size") is not None
        if lazy:
            check_model_directory(config.encoder.model)  # it is loaded on first use: refuse a missing one now
            bert, tokenizer = None, None
        else:
            bert, tokenizer = _text_path(directory, meta, config, tuned, prefer_merged)
        model = TwoTowerModel(bert, int(meta["n_items"]), config.tower, config.temperature, config.learn_temperature,
                              hidden_size=meta.get("hidden_size"))
        missing, unexpected = model.load_state_dict({k: v for k, v in weights.items() if k not in tuned},
                                                    strict=False)
        _load_own_neighbours(model, directory)
    except (OSError, KeyError, ValueError, RecsysError) as exc:
        raise BundleError(f"{directory}: cannot load the trained towers ({exc})") from exc
    missing = [k for k in missing if not k.startswith("bert.")]
    if missing or unexpected:
        raise BundleError(f"{directory}: tower weights do not match (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")

    def load_text() -> tuple[AdaptedBert, object]:
        try:
            return _text_path(directory, meta, config, tuned, prefer_merged)
        except (OSError, ValueError, RecsysError) as exc:
            raise BundleError(f"{directory}: cannot load the item tower's BERT ({exc})") from exc

    return model.to(device or torch.device("cpu")).eval(), config, tokenizer, load_text if lazy else None


def _load_own_neighbours(model: TwoTowerModel, directory: Path) -> None:
    """Each trained item's own neighbour share from `directory`'s OWN_NEIGHBOURS_FILE; towers saved before it was
    written (or without neighbour features) keep none, so their trained items' new texts take a new item's text
    part, as before."""
    path = directory / OWN_NEIGHBOURS_FILE
    if model.own_neighbours is None or not path.is_file():
        return
    borrowed = len(model.borrow.values) if model.borrow is not None else None
    model.own_neighbours.load(load_file(path), int(model.id_mask.shape[0]), borrowed)


def user_tower_loader(bundle: Bundle, catalogue: Catalogue) -> UserTower:
    """`Recommender.from_bundle` hook: the trained user tower of a bundle (runs on request, CPU or CUDA) reading
    `catalogue`: one tower, or a seed ensemble of them (`encoders.ensemble`), blended with the zero-shot pool when
    the bundle was trained with `zero_shot_blend`. A sequence tower's BERT (for new items and free-text queries)
    is loaded on first use, so serving known users and sessions starts without transformers."""
    from encoders.blend import BLEND_KEY, blended_tower
    from encoders.ensemble import ENSEMBLE_KEY, load_ensemble
    from encoders.towers import pick_device

    device = pick_device()
    blend = bundle.encoder_info.get(BLEND_KEY)

    def load_member(directory: Path, columns: slice) -> TrainedUserTower:
        model, config, tokenizer, load_text = load_towers(directory, device, lazy_text=True)
        return TrainedUserTower(model, config, catalogue, tokenizer, device, columns=columns,
                                load_text_path=load_text)

    members = bundle.encoder_info.get(ENSEMBLE_KEY)
    trained_columns = slice(0, int(blend["trained_dim"])) if blend is not None else slice(None)
    trained = (load_ensemble(bundle.encoder_dir, members, catalogue, load_member) if members is not None
               else load_member(bundle.encoder_dir, trained_columns))
    if blend is None:
        return trained

    def zero_shot_encoder():
        from encoders.text_encoder import load_text_encoder

        return load_text_encoder(trained.config.encoder, device)

    return blended_tower(trained, catalogue, blend, bundle.encoder_dir, zero_shot_encoder)


def single_tower_dir(bundle: Path) -> Path:
    """The `encoder/` directory of a bundle with one trained tower (continual training starts from it);
    BundleError for seed ensembles, whose members cannot seed one new tower."""
    from encoders.ensemble import ENSEMBLE_KEY

    opened = Bundle(Path(bundle), {})
    if (opened.encoder_dir / TOWER_META).is_file():
        return opened.encoder_dir
    members = opened.encoder_info.get(ENSEMBLE_KEY)
    if members is not None:
        raise BundleError(f"{bundle} holds a seed ensemble of {len(members['members'])} towers: continual training "
                          "starts from a one-tower bundle (train the ensemble anew)")
    raise BundleError(f"{bundle} has no trained towers to continue from (encoder/{TOWER_META} is missing)")


def load_recommender(path: str | Path, verify: bool = True) -> Recommender:
    """Load any bundle (zero-shot or trained towers) as a Recommender."""
    from encoders.loading import load_recommender as load

    return load(path, verify=verify)


def fit_pruned_ranks(saved: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved adapter weights shaped for freshly attached adapters. AdaLoRA saves each module at the rank its budget
    left it (lora_A [r', d], lora_E [r', 1], lora_B [d, r']); a fresh AdaLoRA model starts at the full rank r, so
    the saved triplets fill the leading r' components and the rest stay zero (E = 0: the same function as the
    pruned adapter; the next budget schedule prunes again). Other shape mismatches raise BundleError."""
    out = {}
    for name, tensor in saved.items():
        target = fresh.get(name)
        if target is None or target.shape == tensor.shape:
            out[name] = tensor
            continue
        if tensor.dim() != target.dim() or any(a > b for a, b in zip(tensor.shape, target.shape)):
            raise BundleError(f"adapter weight {name}: the bundle's shape {tuple(tensor.shape)} does not fit this "
                             f"configuration's {tuple(target.shape)} (a different model or LoRA rank?)")
        padded = torch.zeros(target.shape, dtype=tensor.dtype)
        padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
        out[name] = padded
    return out


def init_from_bundle(model: TwoTowerModel, bundle: Path, item_ids: list[str]) -> None:
    """Continual training: start from a bundle's adapters and tower weights; ID embeddings are carried over by
    item id (new items start at zero, i.e. on the text-only path)."""
    from recsys.artifacts import resolve_bundle

    path = resolve_bundle(bundle)
    encoder = single_tower_dir(path)
    if (encoder / "adapter_model.safetensors").exists() and model.bert is not None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        saved = load_file(encoder / "adapter_model.safetensors")
        set_peft_model_state_dict(model.bert.model,
                                  fit_pruned_ranks(saved, get_peft_model_state_dict(model.bert.model)))
    state = load_file(encoder / TOWER_WEIGHTS)
    old_ids = pl.read_parquet(path / "embeddings" / "items.parquet")["item_id"].to_list()
    old_position = {item_id: i for i, item_id in enumerate(old_ids)}
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name in ("id_embedding.weight", "id_mask"):
                rows = [(i, old_position[x]) for i, x in enumerate(item_ids) if x in old_position]
                if name in own and rows:
                    if own[name].shape[1:] != tensor.shape[1:]:
                        raise BundleError(f"{path}: its item-ID block is {tuple(tensor.shape[1:])} wide, this "
                                          f"configuration's {tuple(own[name].shape[1:])} (another tower.dim or "
                                          "tower.id_dim?): continual training keeps the bundle's tower shape")
                    new, old = (torch.as_tensor(r) for r in zip(*rows))
                    carried = tensor[old].to(own[name].dtype)
                    own[name][new] = torch.maximum(own[name][new], carried) if name == "id_mask" else carried
            elif name in own and own[name].shape == tensor.shape and not is_adapter_parameter(name):
                own[name].copy_(tensor)
