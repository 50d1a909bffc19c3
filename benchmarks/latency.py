"""API latency under load: p50/p95/p99, throughput and errors per endpoint and concurrency.

Starts `recsys serve` on loopback, drives it with benchmarks/loadgen.py in a separate process
(bounded in requests and seconds), optionally reloads the bundle mid-run, and writes
latency.json + latency.md + latency.png.

    recsys bench latency --bundle artifacts/scientific --out results/latency
"""

from __future__ import annotations

import functools
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks.common import Column, environment, write_report
from api.settings import public_environment
from benchmarks.loadgen import available_tool, drive
from recsys.artifacts import resolve_bundle

ENDPOINTS = ("user", "similar", "similar_user", "session")
COLUMNS = [Column("endpoint"), Column("ranker"), Column("concurrency"), Column("requests", fmt=","), Column("errors"),
           Column("p50_ms", "p50 ms", ".1f"), Column("p95_ms", "p95 ms", ".1f"), Column("p99_ms", "p99 ms", ".1f"),
           Column("rps", "req/s", ",.0f"), Column("note")]
ADMIN_TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=4)
def _population(bundle: Path) -> tuple[list[str], list[str]]:
    """The bundle's user ids and item ids (read once per bundle: every level builds plans from them)."""
    import polars as pl

    return (pl.read_parquet(bundle / "stats" / "histories.parquet")["user_id"].to_list(),
            pl.read_parquet(bundle / "embeddings" / "items.parquet")["item_id"].to_list())


def build_plan(bundle: Path, endpoint: str, n: int = 2000, seed: int = 0) -> list[dict]:
    """Requests drawn from the bundle's own users and items (seeded)."""
    rng = random.Random(seed)
    users, items = _population(Path(bundle))
    plan = []
    for _ in range(n):
        if endpoint == "user":
            plan.append({"method": "GET", "path": f"/v1/users/{rng.choice(users)}/recommendations?k=10"})
        elif endpoint == "similar":
            plan.append({"method": "GET", "path": f"/v1/items/{rng.choice(items)}/similar?k=10"})
        elif endpoint == "similar_user":
            plan.append({"method": "GET",
                         "path": f"/v1/items/{rng.choice(items)}/similar?k=10&user_id={rng.choice(users)}"})
        elif endpoint == "session":
            plan.append({"method": "POST", "path": "/v1/sessions/recommendations",
                         "json": {"item_ids": rng.sample(items, rng.randint(1, 5)), "k": 10}})
        else:
            raise ValueError(f"unknown endpoint {endpoint!r}; choose from {ENDPOINTS}")
    return plan


class Server:
    """`recsys serve` in a child process on a free loopback port."""

    def __init__(self, bundle: Path, state_dir: Path, extra_env: dict | None = None, workers: int = 1) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        env = {**os.environ, "RECSYS_STATE_DIR": str(state_dir), "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
               "RECSYS_MAX_SESSION_ITEMS": "200", **(extra_env or {})}
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = state_dir / "server.log"  # a file, not a pipe nobody reads (a full pipe blocks the server)
        self._log = self.log_path.open("w")
        self.launched = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--bundle", str(bundle),
                                         "--port", str(self.port), "--workers", str(workers)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=self._log, text=True)

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Until /health/ready answers and every worker has finished its startup (each warms its own
        caches: a worker still warming up would share the cores with the measured one); returns the seconds
        from launch to ready (polled every 0.25 s)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            started = self.log_path.read_text().count("Application startup complete")
            try:
                if started >= self.workers and httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return round(time.perf_counter() - self.launched, 2)
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server did not become ready in {timeout:.0f} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def has_ranker(bundle: Path) -> bool:
    return (Path(bundle) / "ranker").is_dir()


def served_ranker(server: "Server", bundle: Path) -> str:
    """"on" or "off", as the server itself reports it for a known user's list (`reranked`)."""
    user = _population(Path(bundle))[0][0]
    body = httpx.get(f"{server.url}/v1/users/{user}/recommendations?k=10", timeout=30).json()
    return "on" if body.get("reranked") else "off"


def run(bundle: str | Path, out_dir: str | Path, concurrencies: Sequence[int] = (1, 8, 32, 64),
        endpoints: Sequence[str] = ENDPOINTS, requests: int = 2000, seconds: float = 20.0,
        reload_test: bool = True, warmup: int = 200, loadgen: str = "auto", workers: int = 1,
        server_env: dict | None = None, towers_only: bool = True, command: str = "") -> dict:
    """Run every (endpoint, concurrency) level on the engine as served (the bundle's re-ranker on, when it
    has one), then a reload-under-load run when `reload_test`; with `towers_only` (and a ranker in the bundle)
    the same levels again with the re-ranker switched off (RECSYS_RERANK=false), for comparison.
    `loadgen`: "wrk" (when installed; "auto" prefers it) or "httpx"; `workers`: uvicorn processes."""
    bundle = resolve_bundle(bundle)
    tool = available_tool(loadgen)
    ranked = has_ranker(bundle)
    configurations = [{}]
    if ranked and towers_only:
        configurations.append({"RECSYS_RERANK": "false"})
    rows, startup = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for number, env in enumerate(configurations):
            server = Server(bundle, tmp / f"state{number}", {**(server_env or {}), **env}, workers)
            try:
                ready_s = server.wait_ready()
                ranker = served_ranker(server, bundle)
                startup[f"ranker {ranker}"] = ready_s
                rows += _levels(server, bundle, ranker, endpoints, concurrencies, requests, seconds, warmup, tool)
                if reload_test and number == 0:
                    rows.append({**_reload_under_load(server, bundle, build_plan(bundle, "user"), requests, seconds,
                                                      tool), "ranker": ranker})
            finally:
                server.stop()
    meta = {"bundle": str(bundle), "environment": environment(), "requests_per_level": requests,
            "seconds_per_level": seconds, "loadgen": tool, "workers": workers, "server_env": server_env or {},
            "ranker_in_bundle": ranked, "startup_s": startup, "command": command,
            "recsys_env": public_environment(os.environ)}  # the served settings (no secrets)
    generator = ("wrk (one thread, keep-alive connections)" if tool == "wrk"
                 else "an asyncio/httpx client")
    ranker_note = ("the bundle has a LightGBM re-ranker: rows with ranker `on` are the engine as served "
                   "(towers' candidates re-ranked); `off` is the same bundle with RECSYS_RERANK=false (towers only)"
                   if ranked else "the bundle has no re-ranker: every row is towers only")
    paths = write_report(out_dir, "latency", rows, COLUMNS, title="API latency under load", meta=meta,
                         group_by="endpoint", chart=_chart,
                         notes=[f"command: `{command}`" if command else "command: (library call)",
                                f"bundle {bundle}; {ranker_note}",
                                "RECSYS_* settings from the environment: "
                                + (", ".join(f"{k}={v}" for k, v in meta["recsys_env"].items()) or "none"),
                                f"server: {workers} uvicorn worker process(es); load: {generator} "
                                "in a separate process on loopback",
                                "start-up, launch to ready (every worker's caches warmed): "
                                + ", ".join(f"{k} {v} s" for k, v in startup.items()),
                                "user: random known users of the bundle (a worker pre-encodes up to "
                                "RECSYS_WARM_USER_CACHE of them at start-up, the others on first request, then "
                                "caches them); similar: random catalogue items, no user (the lists of the "
                                "RECSYS_WARM_SIMILAR_ITEMS most popular items computed at start-up, the others on "
                                "first request; a cached response outlives the catalogue changes that do not "
                                "touch its list); similar_user: random items with a random known user (re-ranked "
                                "for that user); session: 1-5 random items, fresh sessions at every level, so "
                                "the user tower runs on every request (micro-batched); every level draws its "
                                "own requests, so a repeated concurrency is an independent run",
                                "reload row: the same bundle reloaded through /v1/admin/reload in the middle of the "
                                "run (the new bundle warms its caches while the old one serves)"])
    return {"rows": rows, "paths": {k: str(v) for k, v in paths.items()}}


def _levels(server: Server, bundle: Path, ranker: str, endpoints: Sequence[str], concurrencies: Sequence[int],
            requests: int, seconds: float, warmup: int, tool: str) -> list[dict]:
    rows = []
    for endpoint in endpoints:
        drive(server.url, build_plan(bundle, endpoint, warmup, seed=-1), 4, warmup, seconds, tool)
        for level, concurrency in enumerate(concurrencies):
            # fresh requests at every level (a repeated level is an independent run, not a re-run of the users or
            # sessions the previous level cached); sessions also differ by concurrency: the user tower runs on each
            seed = level * 1000 + (concurrency if endpoint == "session" else 0)
            plan = build_plan(bundle, endpoint, max(requests, 2000), seed=seed)
            result = drive(server.url, plan, concurrency, requests, seconds, tool)
            rows.append({"endpoint": endpoint, "ranker": ranker, "concurrency": concurrency, **result, "note": ""})
            print(f"{endpoint:12s} ranker {ranker:4s} c={concurrency:<3d} p50 {result['p50_ms']} ms  "
                  f"p99 {result['p99_ms']} ms  {result['rps']} req/s  errors {result['errors']}", flush=True)
    return rows


def _reload_under_load(server: Server, bundle: Path, plan: list[dict], requests: int, seconds: float,
                       tool: str) -> dict:
    result: dict = {}

    def load() -> None:
        result.update(drive(server.url, plan, 32, requests, seconds, tool))

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(min(2.0, seconds / 4))
    # the served version, named relative to the bundle root (the served bundle's parent)
    reload = httpx.post(f"{server.url}/v1/admin/reload", json={"bundle": resolve_bundle(bundle).name},
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120)
    thread.join()
    note = f"reload mid-run: HTTP {reload.status_code}"
    print(f"reload   c=32  p99 {result.get('p99_ms')} ms  errors {result.get('errors')}  ({note})", flush=True)
    return {"endpoint": "user+reload", "concurrency": 32, **result, "note": note}


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    engine = rows[0]["ranker"]  # the first configuration: the engine as served
    for endpoint in dict.fromkeys(r["endpoint"] for r in rows if r["endpoint"] in ENDPOINTS):
        points = [r for r in rows if r["endpoint"] == endpoint and r["ranker"] == engine]
        ax.plot([r["concurrency"] for r in points], [r["p99_ms"] for r in points], marker="o", label=f"{endpoint} p99")
        ax.plot([r["concurrency"] for r in points], [r["p50_ms"] for r in points], marker=".", linestyle="--",
                alpha=0.6, label=f"{endpoint} p50")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"API latency by endpoint (re-ranker: {engine})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
