"""Export a bundle for use outside this project: the item vectors as Parquet and the item tower as ONNX (text
tokens → item vector), each ONNX graph checked against the bundle's own PyTorch tower on catalogue texts.

A bundle whose item vectors are [trained, zero-shot] (the zero-shot blend) exports two graphs: `item_tower.onnx`
(the trained text path) and `zero_shot_tower.onnx` (frozen BERT → principal projection); an item's vector is their
outputs concatenated, as `export.json` says; a seed ensemble exports one graph per member
(`item_tower_member_k.onnx`). Tokenise with each part's tokenizer directory and max_length."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.blend import BlendedHistoryEncoder, project
from encoders.ensemble import EnsembleUserTower
from encoders.pooling import pool
from encoders.serving import TrainedUserTower
from recsys.catalogue import REMOVED
from recsys.errors import BundleError
from recsys.pipeline import Recommender
from recsys.towers import innermost_tower

PARITY_TOLERANCE = 1e-4
OPSET = 17


class _FrozenTower(nn.Module):
    """BERT → pooling → L2 normalisation [→ principal projection → L2 normalisation]."""

    def __init__(self, model: nn.Module, pooling: str, normalize: bool, projection: np.ndarray | None = None) -> None:
        super().__init__()
        self.model, self.pooling, self.normalize = model, pooling, normalize
        self.register_buffer("projection", None if projection is None else torch.as_tensor(projection))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = pool(hidden.float(), attention_mask, self.pooling)
        if self.normalize:
            vectors = F.normalize(vectors, dim=-1)
        if self.projection is not None:
            vectors = F.normalize(vectors @ self.projection.T, dim=-1)
        return vectors


class _TrainedTower(nn.Module):
    """The trained item tower's text-only path: adapted BERT (→ the borrowed neighbour share, with
    `neighbour_borrow`: the graph carries its banks) → item head (zero ID block) → L2 normalisation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_only_vectors(self.model.bert(input_ids, attention_mask))


@dataclass
class TowerPart:
    """One ONNX graph: its module, tokenizer and max_length, and the PyTorch path it must agree with; `tied` says
    which texts' vectors hang on how a tie is broken (the graph and PyTorch may keep either equally near item), so
    the parity check leaves them out."""

    name: str
    module: nn.Module
    tokenizer: object
    max_length: int
    reference: Callable[[list[str]], np.ndarray]
    tied: Callable[[list[str]], np.ndarray] | None = None


def _frozen_part(name: str, encoder, projection: np.ndarray | None = None) -> TowerPart:
    def reference(texts: list[str]) -> np.ndarray:
        vectors = encoder.encode(texts)
        return project(vectors, projection) if projection is not None else vectors

    module = _FrozenTower(encoder.model, encoder.config.pooling, encoder.config.normalize, projection)
    return TowerPart(name, module, encoder.tokenizer, encoder.config.max_length, reference)


def _trained_part(tower, name: str = "item_tower") -> TowerPart:
    tower.load_text_path()
    model, tokenizer, max_length = tower.model, tower.tokenizer, tower.config.tower.item_max_length

    def tied(texts: list[str]) -> np.ndarray:
        """Texts whose borrowed neighbour share ties at its k-th nearest item (none without a borrowed share)."""
        if model.borrow is None:
            return np.zeros(len(texts), dtype=bool)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        device = next(model.parameters()).device
        with torch.no_grad():
            features = model.bert(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            return model.borrow.tied(features).cpu().numpy()

    return TowerPart(name, _TrainedTower(model), tokenizer, max_length, tower.encode_item_texts, tied)


def _trained_parts(tower) -> list[TowerPart]:
    """One trained tower's text path, or each member's of a seed ensemble (`item_tower_member_k`)."""
    tower = innermost_tower(tower)
    if isinstance(tower, EnsembleUserTower):
        return [_trained_part(member, f"item_tower_member_{k}") for k, member in enumerate(tower.members)]
    return [_trained_part(tower)]


def tower_parts(recommender: Recommender) -> list[TowerPart]:
    """The graphs that make up the bundle's item tower, in the order of the item vector's columns."""
    from encoders.text_encoder import TextEncoder

    tower = innermost_tower(recommender.user_tower)
    if isinstance(tower, BlendedHistoryEncoder):
        try:
            zero_shot = tower.zero_shot_tower()
        except ValueError:
            raise BundleError("this blended bundle has no zero-shot text encoder to export") from None
        if not hasattr(zero_shot, "model"):  # an ONNX Runtime backend: export the PyTorch tower it stands for
            zero_shot = TextEncoder.from_config(zero_shot.config.model_copy(update={"backend": "torch"}),
                                                torch.device("cpu"))
        return _trained_parts(tower.trained) + [_frozen_part("zero_shot_tower", zero_shot, tower.projection)]
    if isinstance(tower, (TrainedUserTower, EnsembleUserTower)):
        return _trained_parts(tower)
    if recommender.encoder_info.get("kind", "frozen-bert") != "frozen-bert":
        raise BundleError("this bundle's item tower cannot encode text, so there is nothing to export")
    return [_frozen_part("item_tower", TextEncoder.from_config(recommender.config.encoder, torch.device("cpu")))]


def export_onnx(part: TowerPart, path: Path, texts: Sequence[str]) -> dict:
    """Write `part` as ONNX (dynamic batch and length) and check it on `texts`: max |ONNX − PyTorch| must stay
    under PARITY_TOLERANCE. Returns the part's export.json entry."""
    import onnxruntime

    module = part.module.eval().to("cpu")
    sample = part.tokenizer(list(texts[:2]), padding=True, truncation=True, max_length=part.max_length,
                            return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that the parity check below covers
        torch.onnx.export(module, (sample["input_ids"], sample["attention_mask"]), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["vectors"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "vectors": {0: "batch"}},
                          opset_version=OPSET)
    batch = part.tokenizer(list(texts), padding=True, truncation=True, max_length=part.max_length, return_tensors="np")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": batch["input_ids"].astype(np.int64),
                             "attention_mask": batch["attention_mask"].astype(np.int64)})[0]
    expected = part.reference(list(texts))
    tied = part.tied(list(texts)) if part.tied is not None and len(texts) else np.zeros(len(texts), dtype=bool)
    kept = ~tied
    diff = float(np.abs(got[kept] - expected[kept]).max()) if got.shape == expected.shape and kept.any() else 0.0
    if got.shape != expected.shape or not diff < PARITY_TOLERANCE:
        raise BundleError(f"ONNX export of {part.name} does not match the PyTorch tower (max |diff| {diff:.2e}, "
                          f"shapes {got.shape} vs {expected.shape})")
    return {"file": path.name, "dim": int(got.shape[1]), "max_length": part.max_length, "opset": OPSET,
            "inputs": ["input_ids", "attention_mask"], "output": "vectors",
            "parity": {"texts": int(kept.sum()), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE,
                       "tied_texts": int(tied.sum())}}


def write_item_vectors(recommender: Recommender, path: Path) -> dict:
    """items.parquet: item_id, active, the catalogue's title/category/brand/price, and `vector` (float32[dim])."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    state = recommender.catalogue.state
    live = (state.flags & REMOVED) == 0  # deleted items (tombstone rows) are not exported
    vectors = np.ascontiguousarray(state.vectors[live], dtype=np.float32)
    table = state.items.filter(live).drop("text").with_columns(active=state.available[live]).to_arrow()
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    pq.write_table(table.append_column("vector", column), path, compression="zstd")
    return {"file": path.name, "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1])}


def export_bundle(recommender: Recommender, out: Path, onnx: bool = True, parity_texts: int = 64) -> dict:
    """Write items.parquet, the ONNX graph(s) with their tokenizers, and export.json into `out` (which must exist
    and be empty); returns export.json's content."""
    info: dict = {"vectors": write_item_vectors(recommender, out / "items.parquet"), "onnx": []}
    if onnx:
        texts = recommender.items["text"].head(parity_texts).to_list()
        for part in tower_parts(recommender):
            tokenizer_dir = out / f"{part.name}_tokenizer"
            part.tokenizer.save_pretrained(str(tokenizer_dir))
            entry = export_onnx(part, out / f"{part.name}.onnx", texts)
            # every graph reads the item's text rendered through the catalogue's template (recsys.data.item_text)
            info["onnx"].append({**entry, "tokenizer": tokenizer_dir.name, "item_template": recommender.text_template})
        info["item_vector"] = ("concatenate the outputs of " + " and ".join(e["file"] for e in info["onnx"])
                               + " (in this order)") if len(info["onnx"]) > 1 else info["onnx"][0]["file"]
    (out / "export.json").write_text(json.dumps(info, indent=2))
    return info
