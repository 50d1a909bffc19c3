"""The re-ranker's training queries from inside the train split, each scored by towers that never saw its user.

The users are split into folds (make_folds.py); the towers of fold k are trained without fold k's users
(`recsys train --preset frozen` on data-k). The valid step's queries are retrieved and featurised by the full
towers as `recsys train-ranker` does; the last `--positions` positions of each fold-k user's train sequence are
retrieved and featurised by the towers of fold k (their similarity features from those towers' vectors, the
statistics from the whole train split, read before each query's time). One re-ranker fit per seed with the
defaults (5 folds summed), with and without the extra queries; valid on each seed's held-out users, test on all.
`--in-sample` retrieves the extra queries with the full towers instead (which trained on those targets).

python crossfit.py --full <bundle> --data ../shared/data/amazon-scientific --folds crossfit-data \
    --fold-bundles crossfit-towers --positions 3 --out result-p3.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from jobs.ranker_cmd import open_for_ranker
from recsys.features import FeatureBuilder
from recsys.ranker import RankerConfig, candidate_sources
from recsys.ranker_training import (TrainingSet, blended_trained_dim, fit_prepared, held_out_valid,
                                    prepare_training, reranked_metrics, retrieve, train_position_examples,
                                    training_frame)

parser = argparse.ArgumentParser()
parser.add_argument("--full", type=Path, required=True, help="the towers trained on every user")
parser.add_argument("--data", type=Path, required=True)
parser.add_argument("--folds", type=Path, required=True, help="make_folds.py's output directory")
parser.add_argument("--fold-bundles", type=Path, required=True, help="art-K/Scientific-peft: fold K's towers")
parser.add_argument("--positions", type=int, default=3)
parser.add_argument("--in-sample", action="store_true")
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()

index_to_user = {line.split("\t")[1]: line.split("\t")[0]
                 for line in (args.data / "Scientific.user2index").read_text().splitlines() if line.strip()}
folds = {index_to_user[u]: f for u, f in json.loads((args.folds / "folds.json").read_text()).items()}
config = RankerConfig()
rec, split, _, _ = open_for_ranker(args.full, args.data)
training = prepare_training(rec, split, config)
stats = training.builder.stats
columns = training.frame.columns
offset = int(training.frame["query"].max()) + 1
extra = []
for k in sorted(set(folds.values())):
    rec_k = rec if args.in_sample else open_for_ranker(args.fold_bundles / f"art-{k}" / "Scientific-peft",
                                                       args.folds / f"data-{k}" / args.data.name)[0]
    users_k = sorted(u for u, f in folds.items() if f == k)
    examples = train_position_examples(split.train.filter(pl.col("user_id").is_in(users_k)), args.positions,
                                       stats.config.time_mode == "sequence")
    builder_k = FeatureBuilder(rec_k.catalogue, stats, config.features.for_towers(blended_trained_dim(rec_k)))
    assert builder_k.names == training.builder.names
    times = stats.query_times(examples["timestamp"].to_list(), examples.height)
    cands, scores, _ = retrieve(rec_k, examples["history"].to_list(), config.candidates,
                                sources=candidate_sources(builder_k, config), times=times)
    hits = np.mean([t in c for t, c in zip(examples["target"].to_list(), cands)])
    frame, _ = training_frame(builder_k, examples, cands, scores)
    frame = frame.with_columns((pl.col("query") + offset).alias("query"), pl.lit(False).alias("_valid_step"))
    offset = int(frame["query"].max()) + 1
    extra.append(frame.select(columns))
    print(f"fold {k}: {examples.height} train-split queries, candidate recall {hits:.4f}, {frame.height} rows",
          flush=True)
combined = TrainingSet(training.builder, pl.concat([training.frame, *extra]), training.report, training.users)
label = f"+ {args.positions} train positions ({'in-sample' if args.in_sample else 'cross-fitted'})"
rows = []
for seed in (0, 1, 2):
    seeded = config.model_copy(update={"seed": seed})
    for name, prepared in (("valid step only", training), (label, combined)):
        t0 = time.perf_counter()
        reranker, report = fit_prepared(prepared, seeded, log=lambda *a: None)
        rec.reranker = reranker
        valid = reranked_metrics(rec, held_out_valid(split, seeded), (10,))
        test = reranked_metrics(rec, split.test, (10, 50))
        row = {"model": name, "seed": seed, "trees": report["trees"], "valid_ndcg@10": valid["ndcg@10"],
               "test_ndcg@10": test["ndcg@10"], "test_recall@10": test["recall@10"], "test_ndcg@50": test["ndcg@50"],
               "fit_s": round(time.perf_counter() - t0, 1)}
        print(row, flush=True)
        rows.append(row)
args.out.write_text(json.dumps(rows, indent=1))
for name in dict.fromkeys(r["model"] for r in rows):
    chosen = [r for r in rows if r["model"] == name]
    print(f"{name}: valid N@10 {np.mean([r['valid_ndcg@10'] for r in chosen]):.4f}, test N@10 "
          f"{np.mean([r['test_ndcg@10'] for r in chosen]):.4f} (spread "
          f"{max(r['test_ndcg@10'] for r in chosen) - min(r['test_ndcg@10'] for r in chosen):.4f}), R@10 "
          f"{np.mean([r['test_recall@10'] for r in chosen]):.4f}")
