"""Do shared words add what the embeddings blur? Each catalogue item's text (as rendered at import) becomes a TF-IDF
vector (scikit-learn, fitted on the catalogue's texts alone: no interaction is read, so nothing leaks), and each
(query, candidate) pair gets three more re-ranker features: the TF-IDF cosine of the candidate to the history's last
item, and the largest and the mean over its last `DEPTH` items (the depth of the `sim_*` features). The default
re-ranker is cross-fitted on every valid user (benchmarks/ranker_folds.py) with and without them, once per
vectoriser: character n-grams (3–5, within words: model numbers, units, brand spellings) and word uni- and bigrams.

A probe, not a product feature: nothing is saved into a bundle. Writes lexical.json, lexical.md and lexical.png via
benchmarks/common.py."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from benchmarks.common import environment, write_report

DEPTH = 5
"""History items each candidate is compared with (the default `FeatureConfig.sim_items`)."""
FEATURES = ("lex_sim_last", "lex_sim_max", "lex_sim_mean")
VECTORISERS: dict[str, dict] = {
    "character 3–5-grams": {"analyzer": "char_wb", "ngram_range": (3, 5)},
    "word 1–2-grams": {"analyzer": "word", "ngram_range": (1, 2)},
}
"""Each with min_df 2 and sublinear term frequencies; rows L2-normalised (scikit-learn's default)."""


def tfidf_rows(texts: Sequence[str | None], analyzer: str, ngram_range: tuple[int, int]) -> sp.csr_matrix:
    """[len(texts), terms] L2-normalised TF-IDF rows (a missing or term-less text: an all-zero row)."""
    vectoriser = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, min_df=2, sublinear_tf=True)
    return vectoriser.fit_transform([t or "" for t in texts]).tocsr()


def recent_rows(histories: Sequence[Sequence[str]], position: Mapping[str, int], depth: int = DEPTH) -> np.ndarray:
    """[queries, depth] rows of each history's last `depth` catalogue items, newest first (-1 pads)."""
    out = np.full((len(histories), depth), -1, np.int64)
    for q, history in enumerate(histories):
        rows = [position[i] for i in history if i in position][-depth:][::-1]
        out[q, :len(rows)] = rows
    return out


def lexical_features(matrix: sp.csr_matrix, recent: np.ndarray, query: np.ndarray, candidates: np.ndarray
                     ) -> np.ndarray:
    """[pairs, 3] (cosine to the last history item, largest, mean over the known ones) for pairs (query row,
    candidate row) of `matrix`; NaN where a query has no known history item (`recent` from `recent_rows`) or the
    candidate is not in the catalogue (row -1)."""
    sims = np.full((len(candidates), recent.shape[1]), np.nan)
    for k in range(recent.shape[1]):
        rows = recent[query, k]
        known = (rows >= 0) & (candidates >= 0)
        sims[known, k] = np.asarray(matrix[candidates[known]].multiply(matrix[rows[known]]).sum(axis=1)).ravel()
    out = np.full((len(candidates), len(FEATURES)), np.nan)
    usable = ~np.isnan(sims[:, 0])
    out[usable, 0] = sims[usable, 0]
    out[usable, 1] = np.nanmax(sims[usable], axis=1)
    out[usable, 2] = np.nanmean(sims[usable], axis=1)
    return out


def run(bundle: Path, data: Path, out: Path, seed: int = 0, outer: int = 5, command: str = "",
        vectorisers: Mapping[str, dict] | None = None, ranker_overrides: Mapping | None = None,
        log=print) -> dict[str, Path]:
    """Cross-fit the default re-ranker (or one with `ranker_overrides`) of `bundle`'s towers on `data`'s valid step
    with and without the lexical features of each vectoriser; write the report."""
    from benchmarks.ranker_folds import SCHEME_COLUMNS, FeatureProbe, scheme_chart
    from jobs.ranker_cmd import open_for_ranker
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import prepare_training

    recommender, split, path, _ = open_for_ranker(bundle, data)
    config = RankerConfig(seed=seed).with_overrides(dict(ranker_overrides or {}))
    probe = FeatureProbe(prepare_training(recommender, split, config, log), config, outer, seed, log)
    state = recommender.catalogue.state
    texts = state.items["text"].to_list() if "text" in state.items.columns else [None] * len(state)
    query = probe.query_rows(split.valid)
    candidates = state.rows(probe.frame["item_id"].to_list())
    recent = recent_rows(split.valid["history"].to_list(), state.position)
    sizes: dict[str, dict] = {}
    chosen = dict(vectorisers or VECTORISERS)
    for label, settings in chosen.items():
        started = time.perf_counter()
        matrix = tfidf_rows(texts, **settings)
        values = lexical_features(matrix, recent, query, candidates)
        seconds = time.perf_counter() - started
        sizes[label] = {"terms": matrix.shape[1], "terms_per_item": round(matrix.nnz / max(matrix.shape[0], 1), 1),
                        "feature_seconds": round(seconds, 1)}
        probe.add(f"+ TF-IDF similarity, {label}", {n: values[:, j] for j, n in enumerate(FEATURES)},
                  f"{matrix.shape[1]:,} terms, features in {seconds:.0f} s")
    users = probe.users
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle: `{path}`; dataset `{data}`; {len(users):,} valid users in {outer} cross-fitting folds "
             f"(seed {seed}); each ranker fitted on the other folds' users only",
             f"features: TF-IDF cosine of the candidate to the last history item, largest and mean over the last "
             f"{DEPTH}; TF-IDF fitted on the {len(texts):,} catalogue texts (min_df 2, sublinear tf); "
             + "; ".join(f"{k}: {v['terms']:,} terms, {v['terms_per_item']} per item" for k, v in sizes.items()),
             "N@10 per user over the full catalogue (0 when the target is not among the towers' candidates); "
             "diff: paired difference to the first row, ± its standard error"]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "scikit-learn")), "bundle": str(path),
            "data": str(data), "command": command, "seed": seed, "outer_folds": outer, "depth": DEPTH,
            "vectorisers": {k: {**{s: list(v) if isinstance(v, tuple) else v for s, v in chosen[k].items()}, **sizes[k]}
                            for k in sizes}}
    return write_report(out, "lexical", probe.rows, SCHEME_COLUMNS, meta=meta, notes=notes, chart=scheme_chart,
                        title="TF-IDF text similarity in the re-ranker, cross-fitted on the valid step")
