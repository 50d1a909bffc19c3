"""`api.metrics` under several workers (prometheus_client's multiprocess mode), with worker processes simulated:
each is a Python process that writes its metrics into the shared directory, as a `recsys serve --workers N` worker
does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

from api.metrics import MULTIPROCESS_DIR, ServiceMetrics, forget_dead_workers

WORKER = textwrap.dedent("""
    import os, sys
    from api.metrics import ServiceMetrics
    metrics = ServiceMetrics()
    metrics.set_model("toy", sys.argv[1], 6)
    metrics.requests.labels("/v1/model", "GET", "200").inc(3)
    print(os.getpid(), flush=True)
    if sys.argv[2] == "crash":
        os._exit(1)  # no close(): as a worker killed by the OOM killer or a segfault
    sys.stdin.read()  # a live worker: until the test closes its stdin
""")


def _worker(directory: Path, version: str, fate: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, MULTIPROCESS_DIR: str(directory),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", WORKER, version, fate], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    return process, int(process.stdout.readline())


def test_a_crashed_worker_s_gauges_leave_the_scrape_and_its_counts_stay(tmp_path, monkeypatch):
    """A worker that crashed never marked itself dead, so its gauges (the bundle it served, its index size, its
    event-store state) stayed in every scrape, under its pid, until the server restarted. The scrape now drops
    the live gauges of every worker whose process is gone (prometheus_client's `mark_process_dead`); the counters
    it added stay in the sums, so no counter goes down."""
    live, live_pid = _worker(tmp_path, "v2", "live")
    crashed, crashed_pid = _worker(tmp_path, "v1", "crash")
    crashed.wait(timeout=30)
    try:
        names = sorted(os.listdir(tmp_path))
        assert f"gauge_liveall_{crashed_pid}.db" in names and f"gauge_liveall_{live_pid}.db" in names
        monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
        lines = ServiceMetrics().render().decode().splitlines()
        assert f'recsys_model_info{{name="toy",pid="{live_pid}",version="v2"}} 1.0' in lines
        assert not [line for line in lines if f'pid="{crashed_pid}"' in line], lines
        assert 'recsys_requests_total{method="GET",route="/v1/model",status="200"} 6.0' in lines  # both workers' 3
        assert f"gauge_liveall_{crashed_pid}.db" not in os.listdir(tmp_path)
        assert f"counter_{crashed_pid}.db" in os.listdir(tmp_path)
        assert forget_dead_workers(str(tmp_path)) == []  # the next scrape has nothing left to do
    finally:
        live.stdin.close()
        live.wait(timeout=30)
    assert forget_dead_workers(str(tmp_path)) == [live_pid]  # (it ran no close() either)


def test_a_reload_under_several_workers_says_nothing_of_clearing_labels(tmp_path, monkeypatch):
    """Every reload of a `--workers N` server logged prometheus_client's "Clearing labels has not been implemented in
    multi-process mode yet" (a UserWarning): the worker's file keeps what it was given, so the old version is set to
    0 instead, and nothing is cleared."""
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    metrics = ServiceMetrics()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.set_model("toy", "v1", 6)
        metrics.set_model("toy", "v2", 6)
    assert metrics.model.labels("v1", "toy")._value.get() == 0
    assert metrics.model.labels("v2", "toy")._value.get() == 1


def test_one_process_shows_only_the_version_it_serves():
    metrics = ServiceMetrics()
    metrics.set_model("toy", "v1", 6)
    metrics.set_model("toy", "v2", 6)
    lines = metrics.render().decode().splitlines()
    assert [line for line in lines if line.startswith("recsys_model_info{")] == [
        'recsys_model_info{name="toy",version="v2"} 1.0']
