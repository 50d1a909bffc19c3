"""The re-ranker's feature set: the column names, the optional groups and their settings (`FeatureConfig`, saved in
the ranker's feature spec). `recsys.features` computes them."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from recsys.config import FrozenModel

FEATURE_VERSION = 1

BASE_FEATURES: tuple[str, ...] = (
    "retrieval_score", "retrieval_rank", "retrieval_gap",          # the retrieval stage
    "pop_all", "pop_recent", "pop_trend",                           # item popularity before the query time
    "hist_len",                                                     # the user
    "sim_last", "sim_max", "sim_mean",                              # embedding similarity to recent history
    "trans_last", "trans_last_norm", "trans_recent",                # last/recent item → candidate transitions
    "cooc_recent", "cooc_max",                                      # co-occurrence with recent items
    "consumed_count", "consumed_steps_ago",                         # repeat consumption
)
NORMALIZED_PAIR_FEATURES: tuple[str, ...] = (
    "cooc_cos_recent", "trans_norm_recent",                         # pair counts relative to the items' counts
    "cooc_cos_decay",                                               # ... over a longer, recency-weighted history
)
EXTENDED_PAIR_FEATURES: tuple[str, ...] = (
    "trans_norm_decay", "cooc_cos_max",                             # transitions over the longer history; best cosine
    "hist_pop_mean",                                                # how mainstream the user's recent items are
)
BLOCK_SIMILARITY_FEATURES: tuple[str, ...] = (
    "sim_last_towers", "sim_max_towers",                            # similarity within the trained towers' block
    "sim_last_text", "sim_max_text",                                # ... within the zero-shot text block
)
EASE_FEATURES: tuple[str, ...] = (
    "ease_score",                                                   # EASE weights from the history (recsys.ease)
)
ATTRIBUTE_FEATURES: dict[str, tuple[str, ...]] = {
    "category": ("category_match_last", "category_share"),
    "brand": ("brand_match_last", "brand_share"),
    "price": ("price_log_ratio",),
}


class FeatureConfig(FrozenModel):
    """History depths and optional feature groups (saved in the ranker's feature spec)."""

    recent_items: int = Field(3, ge=1, description="last N history items for transition / co-occurrence counts")
    sim_items: int = Field(5, ge=1, description="last N history items for max/mean similarity")
    attr_items: int = Field(10, ge=1, description="last N history items for category/brand/price agreement")
    explain_items: int = Field(50, ge=1, description="last N history items searched for 'because you bought'")
    # on: valid N@10 cross-fitted over every valid user +0.0022 ± 0.0010 on amazon-scientific, +0.0087 ± 0.0056 on
    # movielens-100k (benchmarks/EXPERIMENTS.md "Normalized pair counts"); rankers saved before it load with it off
    normalized_pairs: bool = Field(True, description="also the pair counts relative to both items' counts: "
                                   "co-occurrence cosine and transitions per source event over the last "
                                   "`recent_items`, and the co-occurrence cosine over the last `decay_items` "
                                   "weighted by `decay` per step back")
    decay_items: int = Field(10, ge=1, description="normalized_pairs: history depth of cooc_cos_decay")
    decay: float = Field(0.7, gt=0.0, le=1.0, description="normalized_pairs: weight factor per step back")
    extended_pairs: bool = Field(False, description="with normalized_pairs: also transitions per source event over "
                                 "the last `decay_items` weighted like cooc_cos_decay, the largest co-occurrence "
                                 "cosine over the last `recent_items`, and the mean log count of the last "
                                 "`decay_items` history items")
    ease: bool = Field(False, description="also the candidate's EASE score from the last `ease_items` history items "
                       "(set when the ranker is fitted on statistics that hold EASE weights: `RankerConfig.ease`)")
    ease_items: int = Field(50, ge=1, description="ease: history depth of the EASE score")
    attributes: list[str] | None = Field(None, description="attribute feature groups to compute (category, brand, "
                                         "price) where the catalogue has the column; None: every one it has")
    block_similarity: bool = Field(False, description="on a blended catalogue ([trained towers, zero-shot text] "
                                   "vectors): also the cosine to the last and the largest over the last `sim_items` "
                                   "history items within each block, not only over the whole vector")
    trained_dim: int | None = Field(None, ge=1, description="block_similarity: the width of the trained block, set "
                                    "when the ranker is fitted on blended towers (None: no blocks, no block features)")

    @model_validator(mode="after")
    def _consistent(self) -> "FeatureConfig":
        if self.extended_pairs and not self.normalized_pairs:
            raise ValueError("extended_pairs needs normalized_pairs")
        unknown = sorted(set(self.attributes or ()) - set(ATTRIBUTE_FEATURES))
        if unknown:
            raise ValueError(f"unknown attribute feature groups {unknown}; choose from {sorted(ATTRIBUTE_FEATURES)}")
        return self

    @property
    def has_blocks(self) -> bool:
        """Whether the block similarity features are computed (asked for, and the catalogue is blended)."""
        return self.block_similarity and self.trained_dim is not None

    def for_towers(self, trained_dim: int | None) -> "FeatureConfig":
        """This config for a catalogue whose vectors are [trained (`trained_dim`), zero-shot] (None: not blended)."""
        return self.model_copy(update={"trained_dim": trained_dim if self.block_similarity else None})


def feature_names(attributes: Sequence[str], config: FeatureConfig | None = None) -> list[str]:
    """The model's column order for a catalogue with these optional attribute columns (and `config`'s optional
    feature groups)."""
    extra = NORMALIZED_PAIR_FEATURES if config is not None and config.normalized_pairs else ()
    extra += EXTENDED_PAIR_FEATURES if config is not None and config.extended_pairs else ()
    extra += BLOCK_SIMILARITY_FEATURES if config is not None and config.has_blocks else ()
    extra += EASE_FEATURES if config is not None and config.ease else ()
    return [*BASE_FEATURES, *extra,
            *(f for a in ATTRIBUTE_FEATURES if a in attributes for f in ATTRIBUTE_FEATURES[a])]
