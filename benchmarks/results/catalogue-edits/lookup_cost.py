"""What a read pays for the shared id → row map (recsys.positions): looking up a query's 200 candidate ids and a
50-item history at 500k items, in a plain dict and in a map of 1,000 changes over the same base.

    python benchmarks/results/catalogue-edits/lookup_cost.py   (from the repository root; prints lookup_cost.txt)
"""

import time

import numpy as np

from recsys.positions import changed

N, CHANGES, REPEATS = 500_000, 1_000, 2_000


def micros(call) -> float:
    start = time.perf_counter()
    for _ in range(REPEATS):
        call()
    return (time.perf_counter() - start) / REPEATS * 1e6


def main() -> None:
    base = {f"i{j}": j for j in range(N)}
    shared = base
    for j in range(CHANGES):
        shared = changed(shared, [(f"n{j}", N + j)])
    candidates = [f"i{j}" for j in range(0, N, N // 200)]
    history = candidates[:50]
    rows = [
        ("200 candidate ids, plain dict", micros(lambda: np.fromiter(map(base.__getitem__, candidates), np.int64,
                                                                     len(candidates)))),
        ("200 candidate ids, shared map, none changed", micros(lambda: shared.rows(candidates))),
        ("200 candidate ids, shared map, one changed", micros(lambda: shared.rows([*candidates[1:], "n5"]))),
        ("50-item history, plain dict", micros(lambda: [base[i] for i in history if i in base])),
        ("50-item history, shared map", micros(lambda: [shared[i] for i in history if i in shared])),
    ]
    for name, value in rows:
        print(f"{name}: {value:.1f} µs")


if __name__ == "__main__":
    main()
