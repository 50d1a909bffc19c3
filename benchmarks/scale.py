"""The whole path at growing shop sizes: per stage wall seconds, CPU seconds and peak RSS, and how each grows.

Each size (items × users × events) runs the stages as a new user would, through the `recsys` CLI, each in its
own process: `import` (the synthetic shop), `build` (encode + index + sampled evaluation), `ranker` (LightGBM
re-ranker: statistics + fit), `batch` (batch scoring of every user with the re-ranker) and `serve` (one API
worker: seconds until ready, RSS, and a short sequential probe of known-user requests). The chart plots each
stage's wall seconds against its driving size (import and ranker: events; build: items; batch and serve:
users) on log-log axes with the fitted growth exponent (the slope) per stage.

    recsys bench scale --sizes 10000x100000x1000000,100000x1000000x10000000 --work /tmp/scale \
        --out benchmarks/results
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import Column, environment, write_report
from recsys.text_format import counted, named

STAGES = ("import", "build", "ranker", "batch", "serve")
DRIVER = {"import": "events", "build": "items", "ranker": "events", "batch": "users", "serve": "users"}
COLUMNS = [Column("size"), Column("stage"), Column("driver", "grows with"), Column("wall_s", "wall s", ",.1f"),
           Column("cpu_s", "CPU s", ",.1f"), Column("peak_rss_mb", "peak RSS MB", ",.0f"),
           Column("load", "load (1 min) before → after"), Column("detail")]
SERVE_READY_TIMEOUT = 900


@dataclass(frozen=True)
class Size:
    """One shop size."""

    items: int
    users: int
    events: int

    @classmethod
    def parse(cls, text: str) -> "Size":
        """'ITEMSxUSERSxEVENTS' (underscores and commas inside numbers allowed, k/M suffixes too)."""
        parts = text.lower().replace("_", "").split("x")
        if len(parts) != 3:
            raise ValueError(f"size {text!r}: expected ITEMSxUSERSxEVENTS, e.g. 10000x100000x1000000")
        return cls(*(_number(p) for p in parts))

    @property
    def label(self) -> str:
        return f"{_short(self.items)} items × {_short(self.users)} users × {_short(self.events)} events"

    def driver(self, stage: str) -> int:
        return getattr(self, DRIVER[stage])


def _number(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _short(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


# ---- one measured process -------------------------------------------------------------------------------
_MEASURE = """
import json, resource, subprocess, sys, time
cmd = json.loads(sys.argv[1])
started = time.perf_counter()
with open(sys.argv[2], "ab") as log:
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def measured(cmd: Sequence[str], log: Path, env: dict[str, str]) -> dict:
    """Run `cmd` in a fresh wrapper process: its wall and CPU seconds and the peak RSS of its largest process
    (the kernel's rusage of the wrapper's children); output appended to `log`. RuntimeError when it fails."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(list(cmd)), str(log)], env=env,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {result['rc']}; see {log}")
    return result


def _recsys(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_usage(pid: int) -> tuple[float, float, int]:
    """(CPU seconds, largest VmHWM in MB, processes) of a process and its children (serving workers)."""
    import psutil

    root = psutil.Process(pid)
    cpu, peak, n = 0.0, 0.0, 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            cpu += times.user + times.system
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
            peak, n = max(peak, hwm / 1024), n + 1
        except (psutil.Error, OSError):
            continue
    return cpu, peak, n


def serve_probe(bundle: Path, work: Path, env: dict[str, str], users: Sequence[str], requests: int) -> dict:
    """Start `recsys serve` (one worker), time it until /health/ready answers, then `requests` sequential
    known-user requests (k=10); stop it. Latency percentiles are one client's, not a load test."""
    port = _free_port()
    env = {**env, "RECSYS_STATE_DIR": str(work / "state")}
    with open(work / "serve.log", "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(_recsys("serve", "--bundle", str(bundle), "--port", str(port), "--workers", "1"),
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ready = None
            while ready is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"recsys serve exited with {proc.returncode}; see {work / 'serve.log'}")
                if time.perf_counter() - started > SERVE_READY_TIMEOUT:
                    raise RuntimeError(f"recsys serve not ready after {SERVE_READY_TIMEOUT} s")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                        ready = time.perf_counter() - started if r.status == 200 else None
                except OSError:
                    time.sleep(0.2)
            latencies = []
            for i in range(requests):
                user = users[i % len(users)]
                t = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/users/{user}/recommendations?k=10",
                                            timeout=30) as r:
                    r.read()
                latencies.append(time.perf_counter() - t)
            cpu, peak, _ = _tree_usage(proc.pid)
            wall = time.perf_counter() - started
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    ms = np.asarray(latencies) * 1e3
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "ready_s": ready, "requests": requests,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def _load() -> str:
    """The 1-minute load average now (the machine is shared: every figure carries it)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _known_users(data: Path, n: int, seed: int) -> list[str]:
    import polars as pl

    users = pl.scan_parquet(data / "interactions.parquet").select("user_id").unique().collect()["user_id"]
    return users.sample(min(n, len(users)), seed=seed).to_list()


# ---- the benchmark ------------------------------------------------------------------------------------
def run_size(size: Size, work: Path, stages: Sequence[str], *, threads: int = 1, encoder: str = "onnx-int8",
             eval_users: int = 2000, requests: int = 200, model: str | None = None, seed: int = 0,
             reuse: bool = False, on_row: Callable[[dict], None] = lambda row: None,
             say: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Run `stages` for one size in `work` (kept: a later run with `reuse` starts from its outputs); `on_row` is
    called with each stage's row as soon as it is measured; `say` gets a line as each stage starts and ends (at the
    README's sizes a stage takes minutes to half an hour, its own output going to its log)."""
    work.mkdir(parents=True, exist_ok=True)
    data, bundle, ranked = work / "data", work / "art" / "scale", work / "art" / "ranked"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "RECSYS_FAISS_THREADS": str(threads)}
    model_args = ["--model", model] if model else []
    commands = {
        "import": _recsys("import", "synthetic", "--out", str(data), "--items", str(size.items), "--users",
                          str(size.users), "--events", str(size.events), "--seed", str(seed), "--overwrite"),
        "build": _recsys("build", "--data", str(data), "--out", str(work / "art"), "--name", "scale", "--index",
                         "auto", "--encoder", encoder, "--eval-users", str(eval_users), *model_args),
        "ranker": _recsys("train-ranker", "--bundle", str(bundle), "--data", str(data), "--out", str(ranked),
                          "--n-jobs", str(threads), "--seed", str(seed)),
        "batch": _recsys("batch-score", "--bundle", str(ranked if ranked.exists() or "ranker" in stages else bundle),
                         "--out", str(work / "batch"), "--no-store", "--overwrite", "--threads", str(threads)),
    }
    done = {"import": data / "interactions.parquet", "build": bundle, "ranker": ranked}
    rows = []
    for stage in stages:
        if reuse and stage in done and done[stage].exists():
            say(f"{size.label}: {stage} kept from an earlier run (--reuse)")
            continue
        log = work / ("serve.log" if stage == "serve" else f"{stage}.log")
        say(f"{size.label}: {stage} … (its output: {log})")
        load_before = _load()
        if stage == "serve":
            target = ranked if ranked.exists() else bundle
            result = serve_probe(target, work, env, _known_users(data, 1000, seed), requests)
            detail = (f"ready {result['ready_s']:.1f} s; {requests} sequential known-user requests: p50 "
                      f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
        else:
            if stage == "ranker" and ranked.exists():
                import shutil
                shutil.rmtree(ranked)
            result = measured(commands[stage], work / f"{stage}.log", env)
            detail = f"{size.driver(stage) / max(result['wall_s'], 1e-9):,.0f} {DRIVER[stage]}/s"
        rows.append({"size": size.label, "items": size.items, "users": size.users, "events": size.events,
                     "stage": stage, "driver": DRIVER[stage], "n": size.driver(stage), "detail": detail,
                     "load": f"{load_before} → {_load()}",
                     **{k: v for k, v in result.items() if k != "rc"}})
        say(f"{size.label}: {stage} took {result['wall_s']:,.1f} s ({detail})")
        on_row(rows[-1])
    return rows


def growth(rows: Sequence[dict], key: str = "wall_s") -> dict[str, float]:
    """Per stage, the slope of log(`key`: wall s or CPU s) against log(its driving size) over the sizes measured
    (≥ 2)."""
    out = {}
    for stage in STAGES:
        points = [(r["n"], r[key]) for r in rows if r["stage"] == stage and r[key] > 0]
        if len({n for n, _ in points}) >= 2:
            x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
            out[stage] = float(np.polyfit(x, y, 1)[0])
    return out


def run(out: Path, sizes: Sequence[Size], work: Path, stages: Sequence[str] = STAGES, *, threads: int = 1,
        encoder: str = "onnx-int8", eval_users: int = 2000, requests: int = 200, model: str | None = None,
        seed: int = 0, reuse: bool = False, previous: Path | None = None,
        command: str | None = None, say: Callable[[str], None] = lambda line: None) -> dict[str, Path]:
    """Every size in turn (work/<items>x<users>x<events>/); the report `scale.{json,md,png}` in `out` is rewritten
    after every stage, so a run stopped part-way keeps what it measured. `previous`: a scale.json whose rows for
    stages not run now are kept (e.g. serve re-measured alone); `say`: a line as each stage starts and ends."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown {named('stage', sorted(unknown))}; known: {', '.join(STAGES)}")
    rows = json.loads(previous.read_text())["rows"] if previous is not None and previous.exists() else []
    settings = {"threads": threads, "encoder": encoder, "eval_users": eval_users, "command": command}
    paths: dict[str, Path] = {}

    def add(row: dict) -> None:
        row["command"] = command
        rows[:] = [r for r in rows if (r["size"], r["stage"]) != (row["size"], row["stage"])] + [row]
        paths.update(report(out, rows, **settings))

    for size in sizes:
        run_size(size, work / f"{size.items}x{size.users}x{size.events}", stages, threads=threads, encoder=encoder,
                 eval_users=eval_users, requests=requests, model=model, seed=seed, reuse=reuse, on_row=add,
                 say=say)
    return paths or report(out, rows, **settings)


def report(out: Path, rows: list[dict], *, threads: int, encoder: str, eval_users: int,
           command: str | None) -> dict[str, Path]:
    """`scale.{json,md,png}` of `rows` (sorted by size, then stage)."""
    rows.sort(key=lambda r: (r["events"], r["items"], r["users"], STAGES.index(r["stage"])))
    exponents, cpu = growth(rows), growth(rows, "cpu_s")
    commands = list(dict.fromkeys(r.get("command") or "(library call)" for r in rows)) or [command]
    notes = ["command(s): " + "; ".join(f"`{c}`" for c in commands) + " (each row's own in scale.json)",
             f"each stage a `recsys` CLI process; {counted(threads, 'thread')} (OMP/BLAS/FAISS/LightGBM); item encoder "
             f"{encoder}; build evaluates a seeded sample of {eval_users:,} users; index --index auto",
             "CPU s: user + system seconds of the stage's processes; peak RSS: the largest process's high-water mark",
             "ranker (`recsys train-ranker`): statistics over every train event, learning from a seeded sample of "
             "at most 50,000 valid-step users and tested on at most 20,000 (so it grows slower than the events)",
             "serve: one worker until /health/ready, then sequential known-user requests (one client, k=10); "
             "batch: every user, with the re-ranker when the ranker stage ran",
             "growth exponent: slope of log(seconds) on log(driving size) between the sizes run, wall / CPU: "
             + (", ".join(f"{s} {e:.2f} / {cpu.get(s, float('nan')):.2f} (by {DRIVER[s]})"
                          for s, e in exponents.items()) or "one size only")
             + "; wall seconds include waiting for the shared CPUs (see the load), CPU seconds do not"]
    meta = {"environment": environment(("numpy", "faiss-cpu", "polars", "torch", "onnxruntime", "lightgbm")),
            "command": command, "threads": threads, "encoder": encoder, "exponents": exponents,
            "cpu_exponents": cpu}
    return write_report(out, "scale", rows, COLUMNS, title="Scale: the whole path at growing shop sizes", meta=meta,
                        notes=notes, chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    exponents = growth(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for stage in STAGES:
        points = sorted((r["n"], r["wall_s"]) for r in rows if r["stage"] == stage)
        if not points:
            continue
        label = f"{stage} (by {DRIVER[stage]})"
        if stage in exponents:
            label += f": n^{exponents[stage]:.2f}"
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("size driving the stage (items, users or events)")
    ax.set_ylabel("wall seconds")
    ax.set_title("Cost against shop size (log-log; slope = growth exponent)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["Size", "STAGES", "run", "run_size", "growth", "measured", "serve_probe"]
