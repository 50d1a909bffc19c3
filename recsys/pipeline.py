"""The Recommender: one pipeline object (item vectors + index + user tower + stats) that serves the
API, the batch jobs and the evaluator through the same code path."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.artifacts import read_manifest, resolve_bundle, write_bundle
from recsys.config import BuildConfig
from recsys.data.dataset import Dataset
from recsys.diversify import active, diversified_picks
from recsys.errors import BundleError, UnknownIdError
from recsys.neighbours import NeighbourCache
from recsys.popularity import Popularity
from recsys.retrieval import VectorIndex
from recsys.retrieval.filters import where_mask
from recsys.splits import SplitData, user_sequences
from recsys.user_tower import HistoryEncoder, PooledHistoryEncoder

if TYPE_CHECKING:
    from recsys.ranker import Reranker

UserTowerLoader = Callable[[Path, list[str], np.ndarray, dict], HistoryEncoder]
"""(encoder directory, item ids, item vectors, encoder.json) → user tower, for trained towers."""

CATALOGUE_COLUMNS = ("item_id", "text", "title", "category", "brand", "price")
FILTER_COLUMNS = ("category", "brand", "price")
"""Item attributes the index keeps for query-time filters (`where={"category": …}`)."""


def item_attributes(items: pl.DataFrame) -> pl.DataFrame | None:
    columns = [c for c in FILTER_COLUMNS if c in items.columns]
    return items.select(columns) if columns else None


@dataclass(frozen=True)
class RecommendationList:
    """Ranked item ids with scores and the strategy that produced them."""

    item_ids: list[str]
    scores: list[float]
    strategy: str  # personalised | session | similar | popular_fallback
    explanations: list[dict] | None = None  # per item, when a re-ranker explained the list
    retrieval_scores: list[float] | None = None  # per item, the FAISS score before re-ranking
    reranked: bool = False  # True when the LightGBM re-ranker ordered the list

    def take(self, picks: Sequence[int]) -> "RecommendationList":
        """The items at `picks` (indices into this list), in that order, with their per-item fields."""
        def pick(values):
            return None if values is None else [values[i] for i in picks]

        return RecommendationList(pick(self.item_ids), pick(self.scores), self.strategy, pick(self.explanations),
                                  pick(self.retrieval_scores), self.reranked)


class Recommender:
    """Retrieval pipeline over a fixed catalogue."""

    def __init__(self, config: BuildConfig, items: pl.DataFrame, item_vectors: np.ndarray, index: VectorIndex,
                 popularity: Popularity, histories: dict[str, list[str]], encoder_info: dict | None = None,
                 user_tower: HistoryEncoder | None = None, reranker: "Reranker | None" = None) -> None:
        self.config = config
        self.items = items
        self.item_vectors = item_vectors
        self.index = index
        self.popularity = popularity
        self.histories = histories
        self.encoder_info = encoder_info or {}
        self.item_ids: list[str] = items["item_id"].to_list()
        self.item_position = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.user_tower = user_tower or PooledHistoryEncoder(self.item_ids, item_vectors, config.user_tower)
        self.reranker = reranker  # optional LightGBM stage over the top `reranker.config.candidates` retrieved
        self.neighbours = NeighbourCache()  # similar-item lists; cleared by every catalogue change

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, dataset: Dataset, split: SplitData, item_vectors: np.ndarray, config: BuildConfig,
              encoder_info: dict | None = None, user_tower: HistoryEncoder | None = None) -> "Recommender":
        """Assemble from item vectors aligned with `dataset.items`; popularity is fit on the train split."""
        if item_vectors.shape[0] != dataset.items.height:
            raise ValueError(f"{item_vectors.shape[0]} vectors for {dataset.items.height} items")
        items = dataset.items.select([c for c in CATALOGUE_COLUMNS if c in dataset.items.columns])
        item_ids = items["item_id"].to_list()
        index = VectorIndex.build(item_vectors, item_ids, config.index, attributes=item_attributes(items))
        popularity = Popularity.fit(split.train, item_ids)
        return cls(config, items, item_vectors, index, popularity, user_sequences(dataset.interactions),
                   encoder_info, user_tower)

    # ---- recommendation -----------------------------------------------------------------------
    def check_items(self, item_ids: Sequence[str]) -> None:
        """Raise UnknownIdError naming every id not in the catalogue."""
        unknown = [i for i in item_ids if i not in self.item_position]
        if unknown:
            raise UnknownIdError("item", unknown)

    def search_vectors(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
                       where: Mapping | None = None) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k per query among active items, skipping each row's excluded ids; the index
        over-fetches and refills so every row is filled when k eligible items exist."""
        scores, ids = self.index.search(queries, k, exclude_per_query=exclude, where=where)
        found = np.isfinite(scores).sum(axis=1)  # missing slots (fewer eligible items) come last, at -inf
        # near-ties (scores equal to ~1e-6, which differ in the last bits between single-query and batched
        # kernels) are ordered by catalogue position, so the API and batch jobs agree; FAISS already returns
        # scores in descending order, so only rows with a tie are re-sorted
        rounded = np.round(scores.astype(np.float64), 5)
        same = rounded[:, 1:] == rounded[:, :-1]
        tied = np.zeros(scores.shape, bool)  # items sharing their rounded score with a neighbour
        tied[:, 1:] |= same
        tied[:, :-1] |= same
        position, missing = self.item_position, len(self.item_position)
        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        for row in range(len(scores)):
            n = int(found[row])
            row_ids, row_scores = ids[row, :n], scores[row, :n]
            members = np.flatnonzero(tied[row, :n])
            if len(members):
                rank = np.zeros(n, np.int64)
                rank[members] = [position.get(i, missing) for i in row_ids[members].tolist()]
                order = np.lexsort((rank, -rounded[row, :n]))
                row_ids, row_scores = row_ids[order], row_scores[order]
            out_ids.append(row_ids.tolist())
            out_scores.append(row_scores.astype(np.float64).tolist())
        return out_ids, out_scores

    def popular(self, k: int, exclude: Collection[str] = (), where: Mapping | None = None) -> tuple[list[str], list[float]]:
        """Most popular active items matching `where`, minus `exclude` (the cold-start fallback)."""
        allowed = set(self.index.ids[where_mask(self.index.attributes, where)].tolist()) if where else None
        return self.popularity.top(k, exclude, eligible=lambda item_id: self.index.is_active(item_id) and (
            allowed is None or item_id in allowed))

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                        exclude: Sequence[Collection[str]] | None = None,
                        where: Mapping | None = None, *, as_of: Sequence[int | None] | None = None,
                        rerank: bool = True, explain: bool = False,
                        strategy: str = "personalised", vectors: np.ndarray | None = None) -> list[RecommendationList]:
        """The one retrieval path behind the API, the batch jobs and the evaluator.

        Histories are item ids oldest first; `exclude_seen` drops each history's items, `exclude`
        gives extra per-row ids to drop, `where` an attribute filter (e.g. {"category": "Cameras"}).
        A history the user tower knows nothing about (empty, or only unknown items) gets the
        popular items, marked `popular_fallback`. `vectors` replaces the user tower's query vectors
        (e.g. free text blended with a session), one row per history.

        With a re-ranker (and `rerank`), the top `candidates` retrieved items are re-ranked to k, all
        histories in one feature matrix and one predict; `as_of` gives each history's query time (None:
        now) and `explain` adds per-item explanations (feature contributions: only when asked).
        Lists from the user tower are labelled `strategy` (e.g. "session" for anonymous sessions)."""
        if vectors is None:
            vectors = self.user_tower.encode_histories(histories)
        banned = [(set(h) if exclude_seen else set()) | (set(exclude[row]) if exclude is not None else set())
                  for row, h in enumerate(histories)]
        use_ranker = rerank and self.reranker is not None
        shown = self.shown_depth(k)  # the diversified lists are picked from this many
        depth = max(shown, self.reranker.config.candidates) if use_ranker else shown
        ids, scores = self.search_vectors(vectors, depth, banned, where)
        personal = [bool(np.any(vectors[row])) for row in range(len(histories))]
        results: list[RecommendationList | None] = [None] * len(histories)
        if use_ranker and self.reranker.sources is not None and where is None:  # filtered queries: towers only
            times = self.reranker.stats.query_times(as_of, len(histories))
            ids, scores = self.reranker.sources.widen(
                histories, vectors, ids, scores, times,
                lambda row, item_id: item_id not in banned[row] and self.index.is_active(item_id))
        if use_ranker:
            rows = [row for row in range(len(histories)) if personal[row]]
            reranked = self.reranker.rerank([histories[r] for r in rows], [ids[r] for r in rows],
                                            [scores[r] for r in rows], shown,
                                            None if as_of is None else [as_of[r] for r in rows], explain)
            for row, (r_ids, r_scores, why) in zip(rows, reranked):
                before = dict(zip(ids[row], scores[row]))
                results[row] = RecommendationList(r_ids, r_scores, strategy, why, [before[i] for i in r_ids], True)
        for row in range(len(histories)):
            if results[row] is None:
                results[row] = RecommendationList(ids[row], scores[row], strategy) if personal[row] else \
                    RecommendationList(*self.popular(k, banned[row], where), "popular_fallback")
        return self.shown_lists(results, k)

    # ---- lists a shop can show ----------------------------------------------------------------
    def shown_depth(self, k: int) -> int:
        """How many ranked candidates a list of k is picked from (k itself when diversification is off)."""
        config = self.config.diversify
        return max(k, config.depth) if active(config) else k

    def unit_vectors(self) -> np.ndarray:
        """The catalogue's item vectors, L2-normalised (cached until the catalogue's vectors change)."""
        cached = getattr(self, "_unit", None)
        if cached is None or cached[0] is not self.item_vectors:
            vectors = np.asarray(self.item_vectors, dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            cached = (self.item_vectors, vectors / np.where(norms > 0, norms, 1.0))
            self._unit = cached
        return cached[1]

    def shown_lists(self, results: Sequence[RecommendationList], k: int) -> list[RecommendationList]:
        """Each list cut to k: ranked lists through near-duplicate collapsing and MMR (`config.diversify`,
        `recsys.diversify`), the popularity fallback as it is."""
        config = self.config.diversify
        ranked = [n for n, r in enumerate(results) if active(config) and r.strategy != "popular_fallback"]
        out = [r.take(range(min(k, len(r.item_ids)))) for r in results]
        if ranked:
            picks = diversified_picks([results[n].item_ids for n in ranked], [results[n].scores for n in ranked],
                                      self.unit_vectors(), self.item_position, k, config)
            for n, chosen in zip(ranked, picks):
                out[n] = results[n].take(chosen)
        return out

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int,
                            exclude_seen: bool = False) -> list[list[str]]:
        """Top-k item ids per history (the evaluator's `CandidateSource` interface)."""
        return [r.item_ids for r in self.recommend_batch(histories, k, exclude_seen)]

    def recommend_history(self, history: Sequence[str], k: int = 10, exclude_seen: bool = True,
                          exclude: Collection[str] = (), where: Mapping | None = None,
                          strategy: str = "personalised", explain: bool = False) -> RecommendationList:
        """One history (oldest first) through `recommend_batch`, labelled with `strategy`."""
        return self.recommend_batch([list(history)], k, exclude_seen, [exclude], where, explain=explain,
                                    strategy=strategy)[0]

    def recommend_session(self, item_ids: Sequence[str], k: int = 10, exclude_seen: bool = True,
                          exclude: Collection[str] = (), where: Mapping | None = None,
                          text_vector: np.ndarray | None = None, explain: bool = False) -> RecommendationList:
        """For an anonymous session's recent items (oldest first) and/or free text already encoded by the
        item tower (`text_vector`: blended with the items' query vector); unknown ids raise UnknownIdError."""
        self.check_items(list(item_ids))
        vectors = None
        if text_vector is not None:
            query = np.asarray(text_vector, np.float32)
            if item_ids:
                query = query + self.user_tower.encode_histories([list(item_ids)])[0]
            vectors = (query / max(float(np.linalg.norm(query)), 1e-12))[None, :].astype(np.float32)
        return self.recommend_batch([list(item_ids)], k, exclude_seen, [exclude], where, explain=explain,
                                    strategy="session", vectors=vectors)[0]

    def recommend_user(self, user_id: str, k: int = 10, exclude_seen: bool = True, exclude: Collection[str] = (),
                       where: Mapping | None = None, fallback: bool = True, explain: bool = False) -> RecommendationList:
        """For a known user's stored history; an unknown user gets popular items when `fallback`."""
        history = self.histories.get(user_id)
        if history is None and not fallback:
            raise UnknownIdError("user", [user_id])
        return self.recommend_history(history or [], k, exclude_seen, exclude, where, explain=explain)

    def similar_items(self, item_id: str, k: int = 10, exclude: Collection[str] = (),
                      where: Mapping | None = None, diversify: bool = True) -> RecommendationList:
        """Nearest catalogue items to `item_id` by item-tower embedding (itself excluded), diversified like
        every shown list (`shown_lists`) unless `diversify` is False. Unfiltered lists come from the
        neighbour cache (the same ranking, searched once per item)."""
        self.check_items([item_id])
        depth = self.shown_depth(k) if diversify else k
        found = None
        if where is None:
            found = self.neighbours.top(item_id, depth, set(exclude), self.index.is_active, self.neighbour_lists)
        if found is None:
            vector = self.item_vectors[self.item_position[item_id]][None, :]
            ids, scores = self.search_vectors(vector, depth, [set(exclude) | {item_id}], where)
            found = ids[0], scores[0]
        pool = RecommendationList(*found, "similar")
        return self.shown_lists([pool], k)[0] if diversify else pool

    def similar_for_user(self, item_id: str, history: Sequence[str], k: int = 10, exclude: Collection[str] = (),
                         where: Mapping | None = None, explain: bool = False) -> RecommendationList:
        """Similar items for a product page, ordered for a visitor (`similar_for_users` for one anchor)."""
        return self.similar_for_users([item_id], [history], k, [exclude], where, explain)[0]

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
        results: list[RecommendationList | None] = []
        candidates, retrieval = [], []
        for pool, user in zip(pools, users):
            tower = self.item_vectors[[self.item_position[i] for i in pool.item_ids]] @ user if pool.item_ids \
                else np.zeros(0)
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
            return self.shown_lists(results, k)
        reranked = self.reranker.rerank([[*h, a] for a, h in zip(item_ids, histories)], candidates, retrieval,
                                        self.shown_depth(k), None, explain)
        out = []
        for (ids, scores, why), cands, before in zip(reranked, candidates, retrieval):
            score_of = dict(zip(cands, before))
            out.append(RecommendationList(ids, scores, "similar", why, [score_of[i] for i in ids], True))
        return self.shown_lists(out, k)

    def neighbour_lists(self, item_ids: Sequence[str]) -> tuple[list[list[str]], list[list[float]]]:
        """Each item's top `neighbours.depth` active neighbours (itself excluded), one batched search."""
        vectors = self.item_vectors[[self.item_position[i] for i in item_ids]]
        return self.search_vectors(vectors, self.neighbours.depth, [{i} for i in item_ids])

    def item_records(self, item_ids: Sequence[str]) -> list[dict]:
        """Catalogue rows (id, title, text, …) for display, in the given order (rows are cached per
        catalogue frame, so a live upsert, which replaces the frame, refreshes them)."""
        items = self.items
        cached = getattr(self, "_records", None)
        if cached is None or cached[0] is not items:
            cached = (items, items.to_dicts())
            self._records = cached
        return [dict(cached[1][self.item_position[i]]) for i in item_ids]

    # ---- persistence --------------------------------------------------------------------------
    def write_parts(self, directory: Path) -> None:
        """Each part into its own sub-directory (see ARCHITECTURE.md, 'The bundle')."""
        (directory / "config.json").write_text(self.config.model_dump_json(indent=2))
        (directory / "encoder").mkdir()
        (directory / "encoder" / "encoder.json").write_text(json.dumps(self.encoder_info, indent=2))
        if hasattr(self.user_tower, "save"):
            self.user_tower.save(directory / "encoder")
        (directory / "embeddings").mkdir()
        np.save(directory / "embeddings" / "items.npy", self.item_vectors.astype(np.float32), allow_pickle=False)
        self.items.write_parquet(directory / "embeddings" / "items.parquet")
        self.index.save(directory / "index")
        (directory / "stats").mkdir()
        self.popularity.save(directory / "stats" / "popularity.parquet")
        pl.DataFrame({"user_id": list(self.histories), "history": list(self.histories.values())},
                     schema={"user_id": pl.Utf8, "history": pl.List(pl.Utf8)}).write_parquet(
            directory / "stats" / "histories.parquet")
        if self.reranker is not None:
            self.reranker.save(directory)  # ranker/model.txt + ranker/features.json + stats/*

    def save(self, target: str | Path, manifest: dict | None = None, overwrite: bool = False) -> Path:
        """Write an atomic, checksummed bundle at `target`."""
        return write_bundle(target, self.write_parts, {"config": self.config.model_dump(mode="json"),
                                                       "encoder": self.encoder_info, **(manifest or {})},
                            overwrite=overwrite)

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True,
             user_tower_loader: UserTowerLoader | None = None) -> "Recommender":
        """Load a bundle after its manifest's checksums match.

        Bundles whose `encoder/encoder.json` names a trained user tower (anything but "pooled")
        need `user_tower_loader` (see `encoders.bundle.load_recommender`)."""
        path = resolve_bundle(bundle)
        read_manifest(path, verify=verify)
        try:
            config = BuildConfig.model_validate_json((path / "config.json").read_text())
            items = pl.read_parquet(path / "embeddings" / "items.parquet")
            vectors = np.load(path / "embeddings" / "items.npy", allow_pickle=False)
            index = VectorIndex.load(path / "index")
            popularity = Popularity.load(path / "stats" / "popularity.parquet")
            frame = pl.read_parquet(path / "stats" / "histories.parquet")
            encoder_info = json.loads((path / "encoder" / "encoder.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: cannot load bundle part ({exc})") from exc
        histories = dict(zip(frame["user_id"].to_list(), frame["history"].to_list()))
        user_tower = None
        if encoder_info.get("user_tower", "pooled") != "pooled":
            if user_tower_loader is None:
                raise BundleError(f"{path}: user tower {encoder_info['user_tower']!r} needs the encoders package; "
                                  "load it with encoders.bundle.load_recommender()")
            user_tower = user_tower_loader(path / "encoder", items["item_id"].to_list(), vectors, encoder_info)
        reranker = None
        if (path / "ranker").is_dir():
            from recsys.ranker import Reranker
            reranker = Reranker.load(path, items, vectors)  # BundleError when its feature spec does not match
        return cls(config, items, vectors, index, popularity, histories, encoder_info, user_tower, reranker)

