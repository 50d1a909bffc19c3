"""`recsys bench live`'s chart: one panel per part that ran (RSS over reloads, the feed, convergence), so a run of
one part alone still writes its PNG (a feed-only run wrote none)."""

from benchmarks.live import _chart

FED = [{"kind": "one request per item", "items": 10, "sent_s": 2.0, "served_s": 2.1},
       {"kind": "one request", "items": 10, "sent_s": 0.3, "served_s": 0.3}]
MEMORY = [{"reload": 1, "worker0": 500.0, "worker1": 510.0}, {"reload": 2, "worker0": 505.0, "worker1": 512.0}]
CONVERGED = [{"kind": "upsert", "converged_s": 0.0, "stale": 0, "reads": 9},
             {"kind": "event", "converged_s": 0.1, "stale": 1, "reads": 9}]


def test_each_part_that_ran_gets_a_panel(tmp_path):
    import matplotlib.image

    shapes = {}
    for name, parts in (("feed", ([], FED, [])), ("all", (MEMORY, FED, CONVERGED))):
        _chart(*parts, tmp_path / f"{name}.png")
        shapes[name] = matplotlib.image.imread(tmp_path / f"{name}.png").shape
    assert shapes["all"][1] == 3 * shapes["feed"][1]  # three panels side by side, each as wide as the one
