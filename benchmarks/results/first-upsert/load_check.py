"""Load time, the first similar-items read after it, and resident memory (after load, after the first read, after
the first upsert and a read; and their peaks), for one bundle. Usage: python load_check.py <bundle> <label>"""

from __future__ import annotations

import resource
import sys
import time


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(bundle: str, label: str) -> None:
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle

    started = time.perf_counter()
    recommender = load_recommender(resolve_bundle(bundle))
    loaded = time.perf_counter()
    after_load = rss_mb(), peak_mb()
    recommender.similar_items(recommender.item_ids[0], 10)
    first_read = time.perf_counter() - loaded
    after_read = rss_mb(), peak_mb()
    catalogue = recommender.catalogue
    catalogue.upsert([{"item_id": "load-check", "text": "t"}], catalogue.state.vectors[[5]])
    recommender.similar_items(recommender.item_ids[0], 10)
    after_upsert = rss_mb(), peak_mb()
    print(f"{label}: load {loaded - started:.2f} s, first read {first_read * 1e3:.0f} ms; RSS / peak MB after load "
          f"{after_load}, after the first read {after_read}, after the first upsert and a read {after_upsert}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
