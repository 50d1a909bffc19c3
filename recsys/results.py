"""What the pipeline's stages hand on: retrieved candidate lists and the ranked lists every entry point returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recsys.catalogue import CandidateRows


@dataclass(frozen=True)
class CandidateLists:
    """Retrieved lists: ids and scores per query, best first, and their catalogue rows."""

    ids: list[list[str]]
    scores: list[list[float]]
    rows: CandidateRows


@dataclass(frozen=True)
class RecommendationList:
    """Ranked item ids with scores and the strategy that produced them."""

    item_ids: list[str]
    scores: list[float]
    strategy: str  # personalised | session | similar | popular_fallback
    explanations: list[dict] | None = None  # per item, when a re-ranker explained the list
    retrieval_scores: list[float] | None = None  # per item, the FAISS score before re-ranking
    reranked: bool = False  # True when the LightGBM re-ranker ordered the list
    depends_on: frozenset | None = None
    """The ids whose availability decides the list (similar items: the anchor and the candidates it was picked
    from), so that a list cached at one catalogue version is known to hold at a later one when no change touched
    them and no item a change added or replaced reaches `floor`; None: not tracked."""
    floor: float | None = None
    """With `depends_on`: the last candidate's similarity to the anchor, which an added item must reach to enter
    the candidates (-inf: there were fewer candidates than asked, so any addition enters)."""
    text_matches: list[bool] | None = None
    """Per item of a query of free text and history items: whether the text, rather than a history item, is what the
    item is closest to (`explain.closer_to_text`; set on the final list only, `take` drops it); None otherwise."""

    def take(self, picks: Sequence[int]) -> "RecommendationList":
        """The items at `picks` (indices into this list), in that order, with their per-item fields."""
        def pick(values):
            return None if values is None else [values[i] for i in picks]

        return RecommendationList(pick(self.item_ids), pick(self.scores), self.strategy, pick(self.explanations),
                                  pick(self.retrieval_scores), self.reranked)
