"""A bounded asyncio/httpx load generator, run as its own process by benchmarks/latency.py.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --plan plan.json --concurrency 32 \
        --requests 2000 --seconds 20

The plan is a JSON list of requests ({"method", "path", "json"?}) that the workers cycle through.
Prints one JSON object: latencies summary, error count, throughput."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np


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
        "seconds": round(elapsed, 3),
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
