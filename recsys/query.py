"""`Query`: one recommendation request of any kind, the single input of `Recommender.recommend`.

    Query(history=("P1", "P2"))                          # a known user's history (strategy "personalised")
    Query(history=("P1",), strategy="session")           # an anonymous session's recent items
    Query(text="waterproof boots", history=("P1",))      # free text (+ recent items): the item tower on request
    Query(item_id="P7")                                  # similar items for a product page
    Query(item_id="P7", history=("P1", "P2"))            # … ordered for this visitor
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Literal

from recsys.retrieval.filters import where_key

QueryKind = Literal["history", "text", "similar", "similar_for_user"]


def id_collection(ids: Collection[str], name: str) -> Collection[str]:
    """`ids` as given; a single str is refused (ValueError naming `name`): iterated, it would be one id per
    character, unknown ids that silently match nothing."""
    if isinstance(ids, str):
        raise ValueError(f"{name} must be a list of item ids, not a str: write [{ids!r}] for one id")
    return ids


def check_k(k: int) -> None:
    """ValueError unless `k` is a whole number ≥ 1 (a float, str or bool failed deep in the search, or served)."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


@dataclass(frozen=True)
class Query:
    """What to recommend: `history` (item ids, oldest first; a user's or a session's), `text` (free text through
    the item tower, blended with the history's query vector), `item_id` (similar items; with a history, ordered
    for that visitor). `k` items, never any of `exclude` (nor the history's with `exclude_seen`), only those
    matching `where` (e.g. {"category": "Cameras"}); `explain` adds the re-ranker's reasons; `as_of` the query
    time for point-in-time features (None: now); `strategy` labels history lists ("personalised" | "session")."""

    history: Sequence[str] = ()
    text: str | None = None
    item_id: str | None = None
    k: int = 10
    exclude: Collection[str] = frozenset()
    exclude_seen: bool = True
    where: Mapping | None = None
    explain: bool = False
    as_of: int | None = None
    strategy: Literal["personalised", "session"] = "personalised"
    _where_key: Hashable | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(id_collection(self.history, "history")))
        object.__setattr__(self, "exclude", frozenset(id_collection(self.exclude, "exclude")))
        object.__setattr__(self, "_where_key", where_key(self.where) if self.where is not None else None)
        check_k(self.k)
        if self.strategy not in ("personalised", "session"):  # the label every list of the query carries
            raise ValueError(f"strategy must be 'personalised' or 'session', got {self.strategy!r}")
        if self.text is not None and self.item_id is not None:
            raise ValueError("a query has either a text or an item_id, not both")

    @property
    def kind(self) -> QueryKind:
        if self.item_id is not None:
            return "similar_for_user" if self.history else "similar"
        return "text" if self.text is not None else "history"

    @property
    def label(self) -> str:
        """The strategy a list for this query is labelled with (before any popular fallback)."""
        if self.item_id is not None:
            return "similar"
        return "session" if self.text is not None else self.strategy

    def batch_key(self) -> Hashable | None:
        """Queries with equal keys can share one batched pipeline call (`Recommender.recommend_many`); None when
        this one cannot be batched (a filter given as an expression)."""
        if self.where is not None and self._where_key is None:
            return None
        return self.kind, self.k, self.exclude_seen, self.label, self.explain, self._where_key


def group_queries(queries: Sequence[Query]) -> list[list[int]]:
    """Indices of `queries` grouped by `batch_key` (unbatchable queries alone), groups in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    alone: list[list[int]] = []
    for n, query in enumerate(queries):
        key = query.batch_key()
        if key is None:
            alone.append([n])
        else:
            groups.setdefault(key, []).append(n)
    return [*groups.values(), *alone]


__all__ = ["Query", "QueryKind", "check_k", "group_queries", "id_collection"]
