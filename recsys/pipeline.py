"""The Recommender: one pipeline object (catalogue + index + user tower + stats) that serves the API, the batch
jobs and the evaluator through the same code path; `recommend(query)` is its one entry for every query kind."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.artifacts import write_bundle
from recsys.bundle import Bundle, write_parts
from recsys.catalogue import AppendOnly, CandidateRows, Catalogue, CatalogueState
from recsys.config import BuildConfig
from recsys.data.dataset import Dataset
from recsys.data.item_text import DEFAULT_TEMPLATE, query_record
from recsys.diversify import active, diversified_picks
from recsys.errors import BundleError, UnknownIdError
from recsys.explain import closer_to_text
from recsys.histories import Histories
from recsys.item_arrays import unit_rows, unit_store
from recsys.neighbours import NeighbourCache
from recsys.popularity import Popularity
from recsys.query import Query, check_k, group_queries, id_collection
from recsys.results import CandidateLists, RecommendationList
from recsys.retrieval import VectorIndex
from recsys.retrieval.exact import tied
from recsys.splits import SplitData
from recsys.towers import ItemTower, TemplatedItemTower, UserTower
from recsys.user_tower import PooledHistoryEncoder, rebound

if TYPE_CHECKING:
    from recsys.ranker import Reranker

UserTowerLoader = Callable[[Bundle, Catalogue], UserTower]
"""(bundle, its catalogue) → the trained user tower reading that catalogue (see `encoders.bundle`)."""
UserTowerFactory = Callable[[Catalogue], UserTower]
ItemTowerLoader = Callable[["Recommender"], ItemTower]
"""recommender → the item tower for its new items and text queries (loaded on first use)."""

__all__ = ["Recommender", "RecommendationList", "Query"]


class Recommender:
    """Retrieval (+ re-ranking) pipeline over one live `Catalogue`: the index, the user tower, the re-ranker's
    features and the neighbour cache all read that catalogue."""

    def __init__(self, config: BuildConfig, catalogue: Catalogue, index: VectorIndex, popularity: Popularity,
                 histories: Mapping[str, list[str]], encoder_info: dict | None = None,
                 user_tower: UserTower | None = None, reranker: "Reranker | None" = None,
                 item_tower_loader: ItemTowerLoader | None = None) -> None:
        if index.catalogue is not catalogue:
            raise ValueError("the index must be built over the recommender's catalogue")
        self.config = config
        self.catalogue = catalogue
        self.index = index
        self.popularity = popularity
        self.histories = histories
        self.encoder_info = encoder_info or {}
        self.user_tower = rebound(user_tower, catalogue) if user_tower is not None else \
            PooledHistoryEncoder(catalogue, config.user_tower)
        self.reranker = reranker  # optional LightGBM stage over the top `reranker.config.candidates` retrieved
        # similar-item lists, deeper than a shown list's candidates: a few excluded or stocked-out items still
        # leave enough of a cached list (a list filtered below what it is asked for is searched again)
        shown = self.shown_depth(10)
        self.neighbours = NeighbourCache(catalogue, depth=shown + max(8, shown // 4), similarities=index.similarities)
        self.item_tower_loader = item_tower_loader
        self._item_tower: ItemTower | None = None
        self._item_tower_lock = threading.Lock()
        self._unit: tuple[object, AppendOnly] | None = None  # (a catalogue lineage, its rows' unit vectors)
        self._unit_lock = threading.Lock()

    # ---- catalogue views (the catalogue's current state) -------------------------------------------
    @property
    def items(self) -> pl.DataFrame:
        """Metadata, one row per catalogue row (tombstones included until compaction)."""
        return self.catalogue.state.items

    @property
    def item_vectors(self) -> np.ndarray:
        """Item vectors, rows aligned with `items`."""
        return self.catalogue.state.vectors

    @property
    def item_ids(self) -> list[str]:
        """Ids of the catalogue's items (deleted ones left out), in row order."""
        return self.catalogue.state.live_ids

    @property
    def item_position(self) -> Mapping[str, int]:
        """id → catalogue row of every item not deleted."""
        return self.catalogue.state.position

    @property
    def text_template(self) -> str:
        """The item-text template the catalogue's text was rendered with at import (`recsys.data.item_text`)."""
        return self.encoder_info.get("text_template") or DEFAULT_TEMPLATE

    def item_tower(self) -> ItemTower:
        """The bundle's item tower (new items, free-text queries), loaded on first use, rendering records through
        the catalogue's item-text template; BundleError when the bundle cannot encode text or the tower's width
        does not match the index."""
        if self._item_tower is None:
            with self._item_tower_lock:
                if self._item_tower is None:
                    tower = self.user_tower.item_tower()
                    if tower is None:
                        if self.item_tower_loader is None:
                            raise BundleError("this recommender has no item tower for new text")
                        tower = self.item_tower_loader(self)
                    if tower.dim != self.index.dim:
                        raise BundleError(f"the item tower gives {tower.dim}-d vectors but the index holds "
                                          f"{self.index.dim}-d ones: text queries and upserts are unavailable for "
                                          "this bundle")
                    self._item_tower = tower if tower.template == self.text_template else \
                        TemplatedItemTower(tower, self.text_template)
        return self._item_tower

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_parts(cls, config: BuildConfig, items: pl.DataFrame, item_vectors: np.ndarray, popularity: Popularity,
                   histories: Mapping[str, list[str]], encoder_info: dict | None = None,
                   user_tower: UserTower | UserTowerFactory | None = None) -> "Recommender":
        """A catalogue of `items` (rows aligned with `item_vectors`), its index, and the pipeline over them.
        `user_tower`: a tower (rebound to this catalogue) or a factory called with the catalogue."""
        catalogue = Catalogue.from_frame(items, item_vectors)
        index = VectorIndex.over(catalogue, config.index)
        config = config.model_copy(update={"index": index.config})  # kind "auto" resolved
        tower = user_tower(catalogue) if callable(user_tower) and not isinstance(user_tower, UserTower) \
            else user_tower
        return cls(config, catalogue, index, popularity, histories, encoder_info, tower)

    @classmethod
    def build(cls, dataset: Dataset, split: SplitData, item_vectors: np.ndarray, config: BuildConfig,
              encoder_info: dict | None = None,
              user_tower: UserTower | UserTowerFactory | None = None, *,
              like: "Recommender | None" = None) -> "Recommender":
        """Assemble from item vectors aligned with `dataset.items`; popularity is fit on the train split. `like`:
        a recommender built from the same dataset and split, whose popularity and histories are reused (at 10M
        events, building the histories again costs seconds and a transient gigabyte)."""
        if item_vectors.shape[0] != dataset.items.height:
            raise ValueError(f"{item_vectors.shape[0]} vectors for {dataset.items.height} items")
        if like is not None:
            popularity, histories = like.popularity, like.histories
        else:
            popularity = Popularity.fit(split.train, dataset.items["item_id"].to_list())
            histories = Histories.from_interactions(dataset.interactions)
        return cls.from_parts(config, dataset.items, item_vectors, popularity, histories, encoder_info, user_tower)

    # ---- recommendation -----------------------------------------------------------------------
    def check_items(self, item_ids: Sequence[str]) -> None:
        """Raise UnknownIdError naming every id not in the catalogue."""
        self.catalogue.state.check(item_ids)

    def search_vectors(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
                       where: Mapping | None = None) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k per query among active items, skipping each row's excluded ids; the index
        over-fetches and refills so every row is filled when k eligible items exist."""
        found = self._search_lists(queries, k, exclude, where)
        return found.ids, found.scores

    def _search_lists(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
                      where: Mapping | None = None) -> "CandidateLists":
        """`search_vectors` with each list's catalogue rows kept (the re-ranker's features read rows)."""
        scores, rows, state = self.index.search_rows(queries, k, exclude_per_query=exclude, where=where)
        found = np.isfinite(scores).sum(axis=1)  # missing slots (fewer eligible items) come last, at -inf
        # near-ties (scores equal to ~1e-6, which differ in the last bits between single-query and batched
        # kernels) are ordered by catalogue row, so the API and batch jobs agree; FAISS already returns
        # scores in descending order, so only rows with a tie are re-sorted (the exact search's lists come
        # in this order already, and are cut by it: `exact.tied`)
        rounded = tied(scores)
        same = rounded[:, 1:] == rounded[:, :-1]
        has_tie = np.zeros(scores.shape, bool)  # items sharing their rounded score with a neighbour
        has_tie[:, 1:] |= same
        has_tie[:, :-1] |= same
        ids_of = state.ids
        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        out_rows: list[np.ndarray] = []
        for row in range(len(scores)):
            n = int(found[row])
            row_rows, row_scores = rows[row, :n], scores[row, :n]
            if has_tie[row, :n].any():
                order = np.lexsort((row_rows, -rounded[row, :n]))
                row_rows, row_scores = row_rows[order], row_scores[order]
            out_ids.append(ids_of[row_rows].tolist())
            out_scores.append(row_scores.astype(np.float64).tolist())
            out_rows.append(row_rows)
        return CandidateLists(out_ids, out_scores, CandidateRows(state, out_rows))

    def popular(self, k: int, exclude: Collection[str] = (),
                where: Mapping | None = None) -> tuple[list[str], list[float]]:
        """Most popular active items matching `where`, minus `exclude` (the cold-start fallback)."""
        state = self.catalogue.state
        allowed = state.where_mask(where) if where else None
        position, flags = state.position, state.flags

        def eligible(item_id: str) -> bool:
            row = position.get(item_id)
            return row is not None and flags[row] == 0 and (allowed is None or bool(allowed[row]))

        return self.popularity.top(k, exclude, eligible=eligible)

    def recommend(self, query: Query) -> RecommendationList:
        """The one entry for every query kind (see `Query`); unknown item ids raise UnknownIdError."""
        return self.recommend_many([query])[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[RecommendationList]:
        """`recommend` for many queries: those that can share a pipeline call (same kind, k, filter, …) are
        answered together (one user-tower pass, one FAISS search, one re-ranker feature build and predict)."""
        out: list[RecommendationList | None] = [None] * len(queries)
        for group in group_queries(queries):
            batch = [queries[n] for n in group]
            for n, result in zip(group, self._recommend_group(batch)):
                out[n] = result
        return out  # type: ignore[return-value]

    def _recommend_group(self, queries: list[Query]) -> list[RecommendationList]:
        first = queries[0]
        kind = first.kind
        if kind == "similar":
            return [self.similar_items(q.item_id, q.k, q.exclude, q.where) for q in queries]
        if kind == "similar_for_user":
            return self.similar_for_users([q.item_id for q in queries], [q.history for q in queries], first.k,
                                          [q.exclude for q in queries], first.where, first.explain)
        vectors = encoded = None
        if kind == "text":
            for q in queries:
                self.check_items(q.history)
            encoded = self.encode_texts([q.text for q in queries])
            vectors = self.text_vectors(encoded, [q.history for q in queries])
        as_of = [q.as_of for q in queries] if any(q.as_of is not None for q in queries) else None
        results = self.recommend_batch([q.history for q in queries], first.k, first.exclude_seen,
                                       [q.exclude for q in queries], first.where, as_of=as_of, explain=first.explain,
                                       strategy=first.label, vectors=vectors)
        if encoded is None:
            return results
        return [self._with_text_matches(r, e, q.history) for r, e, q in zip(results, encoded, queries)]

    def _with_text_matches(self, result: RecommendationList, text_vector: np.ndarray,
                           history: Sequence[str]) -> RecommendationList:
        """`result` of a query of free text and history items, marked with which items the text explains."""
        if not history or result.strategy == "popular_fallback" or not result.item_ids:
            return result
        state = self.catalogue.state
        return replace(result, text_matches=closer_to_text(state.vectors, state.position, text_vector, history,
                                                           result.item_ids))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The item tower's vectors for free texts, through the item-text template (what an item of that text
        would get), not normalised."""
        tower = self.item_tower()
        return np.asarray(tower.encode_items([query_record(t, tower.template) for t in texts]), np.float32)

    def text_vectors(self, encoded: np.ndarray, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Query vectors for free texts (`encoded` by `encode_texts`), each blended with its history's user-tower
        vector when the history is not empty; L2-normalised (`encoded` is left as it is)."""
        vectors = np.array(encoded, np.float32)
        with_items = [n for n, h in enumerate(histories) if h]
        if with_items:
            vectors[with_items] += self.user_tower.encode_histories([list(histories[n]) for n in with_items])
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return (vectors / norms).astype(np.float32)

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                        exclude: Sequence[Collection[str]] | None = None,
                        where: Mapping | None = None, *, as_of: Sequence[int | None] | None = None,
                        rerank: bool = True, explain: bool = False, strategy: str = "personalised",
                        vectors: np.ndarray | None = None, diversify: bool = True) -> list[RecommendationList]:
        """The one retrieval path behind every history query, the batch jobs and the evaluator.

        Histories are item ids oldest first; `exclude_seen` drops each history's items, `exclude`
        gives extra per-row ids to drop, `where` an attribute filter (e.g. {"category": "Cameras"}).
        A history the user tower knows nothing about (empty, or only unknown items) gets the
        popular items, marked `popular_fallback`. `vectors` replaces the user tower's query vectors
        (e.g. free text blended with a session), one row per history.

        With a re-ranker (and `rerank`), the top `candidates` retrieved items are re-ranked to k, all
        histories in one feature matrix and one predict; `as_of` gives each history's query time (None:
        now) and `explain` adds per-item explanations (feature contributions: only when asked).
        Lists from the user tower are labelled `strategy` (e.g. "session" for anonymous sessions). Shown lists
        go through near-duplicate collapsing and MMR (`shown_lists`); `diversify=False` keeps the ranked order
        (candidate generation)."""
        if vectors is None:
            vectors = self.user_tower.encode_histories(histories)
        banned = [(set(h) if exclude_seen else set()) | (set(exclude[row]) if exclude is not None else set())
                  for row, h in enumerate(histories)]
        use_ranker = rerank and self.reranker is not None
        shown = self.shown_depth(k) if diversify else k  # the diversified lists are picked from this many
        depth = max(shown, self.reranker.config.candidates) if use_ranker else shown
        found = self._search_lists(vectors, depth, banned, where)
        ids, scores, candidate_rows = found.ids, found.scores, found.rows
        personal = [bool(np.any(vectors[row])) for row in range(len(histories))]
        results: list[RecommendationList | None] = [None] * len(histories)
        if use_ranker and self.reranker.sources is not None and where is None:  # filtered queries: towers only
            times = self.reranker.stats.query_times(as_of, len(histories))
            state = self.catalogue.state
            ids, scores = self.reranker.sources.widen(
                histories, vectors, ids, scores, times,
                lambda row, item_id: item_id not in banned[row] and state.is_active(item_id))
            candidate_rows = None  # the widened lists: their rows are looked up again
        if use_ranker:
            rows = [row for row in range(len(histories)) if personal[row]]
            reranked = self.reranker.rerank([histories[r] for r in rows], [ids[r] for r in rows],
                                            [scores[r] for r in rows], shown,
                                            None if as_of is None else [as_of[r] for r in rows], explain,
                                            None if candidate_rows is None else candidate_rows.subset(rows))
            for row, (r_ids, r_scores, why) in zip(rows, reranked):
                before = dict(zip(ids[row], scores[row]))
                results[row] = RecommendationList(r_ids, r_scores, strategy, why, [before[i] for i in r_ids], True)
        for row in range(len(histories)):
            if results[row] is None:
                results[row] = RecommendationList(ids[row][:shown], scores[row][:shown], strategy) \
                    if personal[row] else RecommendationList(*self.popular(k, banned[row], where), "popular_fallback")
        return self.shown_lists(results, k) if diversify else results  # type: ignore[return-value]

    # ---- lists a shop can show ----------------------------------------------------------------
    def shown_depth(self, k: int) -> int:
        """How many ranked candidates a list of k is picked from (k itself when diversification is off)."""
        config = self.config.diversify
        return max(k, config.depth) if active(config) else k

    def unit_vectors(self, state: CatalogueState | None = None) -> np.ndarray:
        """The item vectors of `state` (default: the catalogue's current one), L2-normalised: the re-ranker's
        per-item arrays when the state holds them (no second copy), else kept here and extended by the rows each
        upsert appends (the catalogue's rows never change once written: `AppendOnly`); computed again only when a
        compaction renumbers the rows (a new `lineage`). They were computed again, all of them, by every request
        after every upsert (at 100k 384-d items, ~0.3 s of each read while upserts went on), and then by the first
        request after each growth of the catalogue's vector buffer (its first upsert, then every n/8)."""
        state = self.catalogue.state if state is None else state
        if state.features is not None and len(state.features.vectors) == len(state):
            return state.features.vectors
        vectors = state.vectors
        with self._unit_lock:  # one thread extends them; the others wait for that instead of computing them too
            if self._unit is None or self._unit[0] is not state.lineage:
                self._unit = (state.lineage, unit_store(vectors))
            unit = self._unit[1]
            if unit.n < len(vectors):
                unit.append(unit_rows(vectors[unit.n:]))
            return unit.view()[: len(vectors)]

    def shown_lists(self, results: Sequence[RecommendationList], k: int,
                    shown: Sequence[str | None] | None = None) -> list[RecommendationList]:
        """Each list cut to k: ranked lists through near-duplicate collapsing and MMR (`config.diversify`,
        `recsys.diversify`), the popularity fallback as it is. `shown`: per list, the item already on screen
        (a product page's own item: its near-duplicates go last too)."""
        config = self.config.diversify
        out = [r if len(r.item_ids) <= k else r.take(range(k)) for r in results]
        if not active(config):
            return out
        ranked = [n for n, r in enumerate(results) if r.strategy != "popular_fallback"]
        if ranked:
            # the vectors and the id → row map of one state: an upsert or a compaction meanwhile moves rows
            state = self.catalogue.state
            picks = diversified_picks([results[n].item_ids for n in ranked], [results[n].scores for n in ranked],
                                      self.unit_vectors(state), state.position, k, config,
                                      None if shown is None else [shown[n] for n in ranked])
            for n, chosen in zip(ranked, picks):
                out[n] = results[n].take(chosen)
        return out

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                            as_of: Sequence[int] | None = None) -> list[list[str]]:
        """Top-k item ids per history, each at its `as_of` time (the evaluator's `CandidateSource` interface)."""
        return [r.item_ids for r in self.recommend_batch(histories, k, exclude_seen, as_of=as_of)]

    def recommend_history(self, history: Sequence[str], k: int = 10, exclude_seen: bool = True,
                          exclude: Collection[str] = (), where: Mapping | None = None,
                          strategy: str = "personalised", explain: bool = False) -> RecommendationList:
        """One history (oldest first): `recommend(Query(history=…))`."""
        return self.recommend(Query(history, k=k, exclude_seen=exclude_seen, exclude=exclude, where=where,
                                    strategy=strategy, explain=explain))  # type: ignore[arg-type]

    def recommend_session(self, item_ids: Sequence[str], k: int = 10, exclude_seen: bool = True,
                          exclude: Collection[str] = (), where: Mapping | None = None, text: str | None = None,
                          explain: bool = False) -> RecommendationList:
        """For an anonymous session's recent items (oldest first) and/or free text (encoded by the item tower and
        blended with the items' query vector); unknown ids raise UnknownIdError."""
        query = Query(id_collection(item_ids, "item_ids"), text=text, k=k, exclude_seen=exclude_seen, exclude=exclude,
                      where=where, explain=explain, strategy="session")
        self.check_items(query.history)
        return self.recommend(query)

    def recommend_user(self, user_id: str, k: int = 10, exclude_seen: bool = True, exclude: Collection[str] = (),
                       where: Mapping | None = None, fallback: bool = True,
                       explain: bool = False) -> RecommendationList:
        """For a known user's stored history; an unknown user gets popular items when `fallback`."""
        if not isinstance(user_id, str):  # a list of ids here is a history, not a user: it would match no user
            raise ValueError(f"user_id must be one user id (a str), got {type(user_id).__name__} {user_id!r}")
        history = self.histories.get(user_id)
        if history is None and not fallback:
            raise UnknownIdError("user", [user_id])
        return self.recommend_history(history or [], k, exclude_seen, exclude, where, explain=explain)

    def similar_items(self, item_id: str, k: int = 10, exclude: Collection[str] = (),
                      where: Mapping | None = None, diversify: bool = True) -> RecommendationList:
        """Nearest catalogue items to `item_id` by item-tower embedding (itself excluded), diversified like
        every shown list (`shown_lists`) unless `diversify` is False. Unfiltered lists come from the
        neighbour cache (the same ranking, searched once per item)."""
        check_k(k)
        state = self.catalogue.state
        state.check([item_id])
        exclude = id_collection(exclude, "exclude")
        depth = self.shown_depth(k) if diversify else k
        found = None
        if where is None:
            found = self.neighbours.top(item_id, depth, set(exclude), self.catalogue.state.is_active,
                                        self.neighbour_lists)
        if found is None:
            vector = state.vectors[state.position[item_id]][None, :]
            ids, scores = self.search_vectors(vector, depth, [set(exclude) | {item_id}], where)
            found = ids[0], scores[0]
        pool = RecommendationList(*found, "similar")
        shown = self.shown_lists([pool], k, [item_id])[0] if diversify else pool
        floor = pool.scores[-1] if len(pool.item_ids) >= depth else -math.inf
        return replace(shown, depends_on=frozenset(pool.item_ids) | {item_id}, floor=floor)

    def similar_for_user(self, item_id: str, history: Sequence[str], k: int = 10, exclude: Collection[str] = (),
                         where: Mapping | None = None, explain: bool = False) -> RecommendationList:
        """Similar items for a product page, ordered for a visitor (`similar_for_users` for one anchor)."""
        return self.recommend(Query(history, item_id=item_id, k=k, exclude=exclude, where=where, explain=explain))

    def similar_for_users(self, item_ids: Sequence[str], histories: Sequence[Sequence[str]], k: int = 10,
                          exclude: Sequence[Collection[str]] | None = None, where: Mapping | None = None,
                          explain: bool = False) -> list[RecommendationList]:
        """Similar items for product pages, each ordered for its visitor: the anchor's nearest `max(5k, 50)`
        items (the visitor's history and the anchor excluded). With a re-ranker they are re-ranked as the
        visitor's next items after viewing the anchor (history + anchor; the retrieval score is the user
        tower's), all anchors in one feature build and predict; without one, ordered by item similarity +
        similarity to the visitor's query vector."""
        pools = [self.similar_items(item_id, max(5 * k, 50), set(exclude[n] if exclude is not None else ()) |
                                    set(history), where, diversify=False)
                 for n, (item_id, history) in enumerate(zip(item_ids, histories))]
        users = self.user_tower.encode_histories([list(h) for h in histories])
        state = self.catalogue.state
        results: list[RecommendationList] = []
        candidates, retrieval = [], []
        for pool, user in zip(pools, users):
            tower = state.vectors[state.rows(pool.item_ids)] @ user if pool.item_ids else np.zeros(0)
            if self.reranker is None:
                blended = np.asarray(pool.scores) + tower
                order = np.argsort(-blended, kind="stable")
                results.append(RecommendationList([pool.item_ids[i] for i in order],
                                                  [float(blended[i]) for i in order], "similar"))
                continue
            order = np.argsort(-tower, kind="stable")
            candidates.append([pool.item_ids[i] for i in order])
            retrieval.append(tower[order].tolist())
        if self.reranker is None:
            return self.shown_lists(results, k, item_ids)
        reranked = self.reranker.rerank([[*h, a] for a, h in zip(item_ids, histories)], candidates, retrieval,
                                        self.shown_depth(k), None, explain)
        out = []
        for (ids, scores, why), cands, before in zip(reranked, candidates, retrieval):
            score_of = dict(zip(cands, before))
            out.append(RecommendationList(ids, scores, "similar", why, [score_of[i] for i in ids], True))
        return self.shown_lists(out, k, item_ids)

    def neighbour_lists(self, item_ids: Sequence[str]) -> tuple[list[list[str]], list[list[float]]]:
        """Each item's top `neighbours.depth` active neighbours (itself excluded), one batched search; UnknownIdError
        for an item not in the catalogue (deleted since the caller checked it: its row would be -1, the last row's
        vector, and its list another item's)."""
        state = self.catalogue.state
        state.check(item_ids)
        vectors = state.vectors[state.rows(list(item_ids))]
        return self.search_vectors(vectors, self.neighbours.depth, [{i} for i in item_ids])

    def item_records(self, item_ids: Sequence[str]) -> list[dict]:
        """Catalogue rows (id, title, text, …) for display, in the given order."""
        return self.catalogue.state.records_of(item_ids)

    # ---- persistence --------------------------------------------------------------------------
    def write_parts(self, directory: Path) -> None:
        """Each part into its own sub-directory (`recsys.bundle.write_parts`)."""
        write_parts(self, directory)

    def save(self, target: str | Path, manifest: dict | None = None, overwrite: bool = False) -> Path:
        """Write an atomic, checksummed bundle at `target`."""
        return write_bundle(target, self.write_parts, {"config": self.config.model_dump(mode="json"),
                                                       "encoder": self.encoder_info, **(manifest or {})},
                            overwrite=overwrite)

    @classmethod
    def from_bundle(cls, bundle: Bundle, user_tower_loader: UserTowerLoader | None = None,
                    item_tower_loader: ItemTowerLoader | None = None, rerank: bool = True) -> "Recommender":
        """Assemble from an opened bundle's parts. Bundles with a trained user tower (anything but "pooled")
        need `user_tower_loader` (see `encoders.loading.load_recommender`); `rerank=False` leaves the bundle's
        re-ranker out."""
        catalogue = bundle.catalogue()
        user_tower = None
        if bundle.user_tower_kind != "pooled":
            if user_tower_loader is None:
                raise BundleError(f"{bundle.path}: user tower {bundle.user_tower_kind!r} needs the encoders package; "
                                  "load it with encoders.loading.load_recommender()")
            user_tower = user_tower_loader(bundle, catalogue)
        reranker = bundle.reranker(catalogue) if rerank else None
        return cls(bundle.config, catalogue, bundle.index(catalogue), bundle.popularity(), bundle.histories(),
                   bundle.encoder_info, user_tower, reranker, item_tower_loader)

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True,
             user_tower_loader: UserTowerLoader | None = None) -> "Recommender":
        """Load a bundle after its manifest's checksums match (see `from_bundle`)."""
        return cls.from_bundle(Bundle.open(bundle, verify=verify), user_tower_loader)
