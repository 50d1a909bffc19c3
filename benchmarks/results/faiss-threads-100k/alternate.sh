#!/usr/bin/env bash
# RECSYS_FAISS_THREADS 1 vs 2 at 1 and 2 workers, alternated three times (run from the repository root, nothing
# else running; each run writes its own latency.{json,md,png})
set -u
B=${1:?usage: alternate.sh <the 100k-item bundle>}
for w in 1 2; do for rep in 1 2 3; do for t in 1 2; do
  load=$(uptime)
  RECSYS_FAISS_THREADS=$t recsys bench latency --bundle $B --workers $w --concurrency 32 --endpoints user,similar,session --requests 6000 --seconds 15 --no-reload-test --no-towers-only --out benchmarks/results/faiss-threads-100k/w$w-t$t-r$rep
  echo "$load" > benchmarks/results/faiss-threads-100k/w$w-t$t-r$rep/load.txt
done; done; done
