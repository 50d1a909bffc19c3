"""Bounded load generators, each run as its own process by benchmarks/latency.py.

- `wrk` (C, event-driven; Debian/Ubuntu package `wrk`), used when it is on PATH: it costs the machine
  little CPU, so on a small box the server keeps the cores. Driven by benchmarks/wrk_plan.lua.
- an asyncio/httpx client (this module's CLI), the fallback that needs nothing installed:

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --plan plan.json --concurrency 32 \
        --requests 2000 --seconds 20

The plan is a JSON list of requests ({"method", "path", "json"?}) that the workers cycle through.
Both print/return one summary: latency percentiles, error count, throughput."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

WRK_SCRIPT = Path(__file__).with_name("wrk_plan.lua")


def available_tool(preferred: str = "auto") -> str:
    """"wrk" when asked for (or "auto" and it is on PATH), else "httpx"."""
    if preferred not in ("auto", "wrk", "httpx"):
        raise ValueError(f"unknown load generator {preferred!r}: choose auto, wrk or httpx")
    if preferred == "wrk" and shutil.which("wrk") is None:
        raise RuntimeError("wrk is not on PATH (Debian/Ubuntu: apt-get install wrk); use --loadgen httpx")
    if preferred == "auto":
        return "wrk" if shutil.which("wrk") else "httpx"
    return preferred


def drive(url: str, plan: list[dict], concurrency: int, requests: int, seconds: float, tool: str = "auto") -> dict:
    """Run one bounded load level with `tool` in a separate process; the summary dict (see `summarise`)."""
    tool = available_tool(tool)
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "wrk":
            return run_wrk(url, plan, concurrency, requests, seconds, Path(tmp))
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(json.dumps(plan))
        out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--plan", str(plan_path),
                              "--concurrency", str(concurrency), "--requests", str(requests),
                              "--seconds", str(seconds)], capture_output=True, text=True, check=True)
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "tool": "httpx"}


def run_wrk(url: str, plan: list[dict], concurrency: int, requests: int, seconds: float, tmp: Path) -> dict:
    """One level with wrk (one thread, `concurrency` keep-alive connections), stopped after `requests`
    responses or `seconds`, whichever comes first."""
    tsv = tmp / "plan.tsv"
    with tsv.open("w") as handle:
        for request in plan:
            body = json.dumps(request["json"]) if request.get("json") is not None else ""
            handle.write(f"{request['method']}\t{request['path']}\t{body}\n")
    threads = 1
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, math.ceil(seconds))}s", "--timeout", "30s",
               "-s", str(WRK_SCRIPT), url, "--", str(tsv), str(max(1, requests))]
    with (tmp / "wrk.stderr").open("w+") as stderr, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                                                     text=True) as process:
        lines, done = [], 0
        for line in process.stdout:
            lines.append(line)
            done += line.strip() == WRK_THREAD_DONE
            if done == threads and line.strip() == WRK_THREAD_DONE:  # every thread has its share: wrk would idle
                stop_early(process)                                  # out its -d limit before it reports
        if process.wait() != 0:
            stderr.seek(0)
            raise subprocess.CalledProcessError(process.returncode, command, "".join(lines), stderr.read())
    raw = json.loads(lines[-1])
    elapsed = raw["duration_us"] / 1e6
    kinds = {"connect": raw["connect"], "read": raw["read"], "write": raw["write"], "timeout": raw["timeout"],
             "4xx": raw["http_4xx"], "5xx": raw["http_5xx"]}
    kinds = {kind: n for kind, n in kinds.items() if n}
    return {"requests": raw["requests"], "errors": sum(kinds.values()), "error_kinds": kinds,
            "seconds": round(elapsed, 4), "rps": round(raw["requests"] / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p95_ms": round(raw["p95_us"] / 1000, 2),
            "p99_ms": round(raw["p99_us"] / 1000, 2), "max_ms": round(raw["max_us"] / 1000, 2), "tool": "wrk"}


WRK_THREAD_DONE = "wrk_plan: thread done"  # benchmarks/wrk_plan.lua prints it when a thread has its share


def stop_early(process: subprocess.Popen) -> None:
    """End wrk's sleep through its -d limit once its threads are done: a SIGINT, which wrk's own handler turns into
    the end of the run (it joins its threads and reports, done() included, as after -d). Sent again until wrk exits:
    one that lands before wrk installs the handler is ignored, one between the handler and the sleep only sets its
    stop flag."""
    while process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass


async def run(url: str, plan: list[dict], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = {"next": 0}
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                n = counter["next"]
                if n >= max_requests:
                    return
                counter["next"] = n + 1
                request = plan[n % len(plan)]
                started = time.perf_counter()
                try:
                    response = await client.request(request["method"], request["path"], json=request.get("json"))
                    if response.status_code >= 400:
                        errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(elapsed, 4),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(values, 50)), 2) if len(values) else None,
        "p95_ms": round(float(np.percentile(values, 95)), 2) if len(values) else None,
        "p99_ms": round(float(np.percentile(values, 99)), 2) if len(values) else None,
        "max_ms": round(float(values.max()), 2) if len(values) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    plan = json.loads(open(args.plan).read())
    print(json.dumps(asyncio.run(run(args.url, plan, args.concurrency, args.requests, args.seconds))))


if __name__ == "__main__":
    main()
