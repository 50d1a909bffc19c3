"""A living shop across workers: how fast every worker of `recsys serve --workers N` sees a catalogue edit or an
event, and what a worker's memory does over many reloads.

Convergence: after each write (an upsert, a deactivation, a new user's event) returns, reads go out one after
another on fresh connections (each lands on some worker) for `window` seconds; a read that still shows the old
state is stale, and the write has converged when the first good read after the last stale one was sent (0: no
stale read; an upper bound, at the resolution of one read). Reloads: the
bundle is reloaded `reloads` times, alternating between two copies of it (so every worker loads each time: the
one that took the reload, the others when they see it in the event store), each followed by free-text queries;
the RSS of every worker is read from /proc after each. Feed (`feed_items` > 0): that many new items upserted one
request each, then as many others in one `POST /v1/admin/items`: the seconds until every worker serves the last.

    recsys bench live --bundle artifacts/shop --workers 2 --out results/live
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

from benchmarks.common import Column, environment, write_report
from benchmarks.catalogue import WORDS
from benchmarks.latency import ADMIN_TOKEN, Server
from recsys.artifacts import resolve_bundle

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COLUMNS = [Column("measure"), Column("kind"), Column("n"), Column("median"), Column("max"), Column("unit"),
           Column("note")]


def fresh_get(url: str, **params) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(url, params=params, headers={"Connection": "close"})


def worker_pids(server: Server) -> list[int]:
    """The uvicorn worker processes (children of the server process that run `spawn_main`; not the resource
    tracker)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return sorted(p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes())


def rss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024


def _stale_until(check, window: float) -> tuple[float, int, int]:
    """(when every worker had it: the send time of the first good read after the last stale one, stale reads,
    reads) over `window` seconds of fresh reads after the write returned."""
    start, converged, stale, reads = time.perf_counter(), 0.0, 0, 0
    last_stale = False
    while time.perf_counter() - start < window:
        sent = time.perf_counter() - start
        reads += 1
        ok = check()
        if not ok:
            stale += 1
        elif last_stale:
            converged = sent
        last_stale = not ok
    return (window if last_stale else converged), stale, reads


def convergence(url: str, first_item: str, trials: int, window: float) -> list[dict]:
    """Per write kind and trial: when every worker answered with the write (see `_stale_until`)."""
    anchor = fresh_get(f"{url}/v1/items/{first_item}/similar", k=1).json()["items"][0]["item_id"]
    rows = []
    with httpx.Client(timeout=60) as admin:
        for trial in range(trials):
            item = {"item_id": f"LIVE{trial}", "text": f"live product number {trial}", "title": f"Live {trial}"}
            admin.put(f"{url}/v1/admin/items/LIVE{trial}", json=item, headers=ADMIN).raise_for_status()
            rows.append(("upsert", *_stale_until(lambda: fresh_get(f"{url}/v1/items/LIVE{trial}").status_code == 200,
                                                 window)))
            target = fresh_get(f"{url}/v1/items/{anchor}/similar", k=1).json()["items"][0]["item_id"]
            admin.post(f"{url}/v1/admin/items/{target}/deactivate", headers=ADMIN).raise_for_status()
            rows.append(("deactivate", *_stale_until(lambda: target not in {
                i["item_id"] for i in fresh_get(f"{url}/v1/items/{anchor}/similar", k=10).json()["items"]}, window)))
            user = f"walk-in-{trial}"
            admin.post(f"{url}/v1/events", json={"user_id": user, "item_id": anchor}).raise_for_status()
            rows.append(("event", *_stale_until(lambda: fresh_get(f"{url}/v1/users/{user}/recommendations", k=3)
                                                .json()["strategy"] == "personalised", window)))
            admin.post(f"{url}/v1/admin/items/{target}/activate", headers=ADMIN).raise_for_status()
    return [{"kind": kind, "converged_s": at, "stale": stale, "reads": reads} for kind, at, stale, reads in rows]


def feed(url: str, items: int, window: float) -> list[dict]:
    """A catalogue feed of `items` new items sent two ways, one after the other: one `PUT /v1/admin/items/{id}` per
    item (one connection, in turn), then one `POST /v1/admin/items` with all of them; for each, the seconds until
    the last request returned and until every worker served the last item (see `_stale_until`)."""
    rows = []
    with httpx.Client(timeout=600) as admin:
        for kind, prefix in (("one request per item", "FEED-PUT"), ("one request", "FEED-POST")):
            records = [{"item_id": f"{prefix}-{n}", "text": f"feed product number {n}: a {WORDS[n % len(WORDS)]}",
                        "title": f"Feed {n}"} for n in range(items)]
            started = time.perf_counter()
            if kind == "one request":
                admin.post(f"{url}/v1/admin/items", json={"upsert": records}, headers=ADMIN).raise_for_status()
            else:
                for record in records:
                    admin.put(f"{url}/v1/admin/items/{record['item_id']}", json=record,
                              headers=ADMIN).raise_for_status()
            sent = time.perf_counter() - started
            last = records[-1]["item_id"]
            converged, _, _ = _stale_until(lambda: fresh_get(f"{url}/v1/items/{last}").status_code == 200, window)
            rows.append({"kind": kind, "items": items, "sent_s": round(sent, 3),
                         "served_s": round(sent + converged, 3)})
            print(f"feed, {kind}: {items:,} items sent in {sent:.2f} s; every worker serves the last "
                  f"{converged:.2f} s later", flush=True)
    return rows


def reload_rss(server: Server, copies: list[Path], reloads: int) -> list[dict]:
    """RSS of every worker after each reload (alternating between the copies) and a few text queries."""
    rows = []
    with httpx.Client(timeout=300) as admin:
        for n in range(1, reloads + 1):
            target = copies[n % 2]
            admin.post(f"{server.url}/v1/admin/reload", json={"bundle": str(target)}, headers=ADMIN).raise_for_status()
            deadline = time.time() + 300
            while time.time() < deadline:  # until every worker serves it (the others follow through the store)
                if {fresh_get(f"{server.url}/health/ready").json()["model_version"] for _ in range(8)} == {target.name}:
                    break
                time.sleep(0.2)
            for _ in range(8):  # free-text queries: the item tower on request, on whichever worker
                with httpx.Client(timeout=60) as client:
                    client.post(f"{server.url}/v1/sessions/recommendations", json={"text": "a gift", "k": 5},
                                headers={"Connection": "close"}).raise_for_status()
            rows.append({"reload": n, **{f"worker{w}": round(rss_mb(pid), 1)
                                         for w, pid in enumerate(worker_pids(server))}})
            print(f"reload {n:2d}: {rows[-1]}", flush=True)
    return rows


def run(bundle: str | Path, out_dir: str | Path, workers: int = 2, trials: int = 10, window: float = 1.5,
        reloads: int = 20, command: str = "", feed_items: int = 0) -> dict:
    bundle = resolve_bundle(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copies = [shutil.copytree(bundle, tmp / "model" / name) for name in ("a", "b")]
        server = Server(copies[0], tmp / "state", {}, workers)
        try:
            server.wait_ready()
            first_item = pl.read_parquet(bundle / "embeddings" / "items.parquet", columns=["item_id"])["item_id"][0]
            converged = convergence(server.url, first_item, trials, window) if trials else []
            fed = feed(server.url, feed_items, window) if feed_items else []
            memory = reload_rss(server, copies, reloads) if reloads else []
        finally:
            server.stop()
    rows = []
    for kind in ("upsert", "deactivate", "event") if converged else ():
        times = sorted(r["converged_s"] for r in converged if r["kind"] == kind)
        stale = sum(r["stale"] for r in converged if r["kind"] == kind)
        reads = sum(r["reads"] for r in converged if r["kind"] == kind)
        rows.append({"measure": "convergence", "kind": kind, "n": len(times),
                     "median": round(times[len(times) // 2], 3),
                     "max": round(times[-1], 3), "unit": "s after the write",
                     "note": f"{stale} stale of {reads} fresh-connection reads in {window} s windows"})
    for row in fed:
        rows.append({"measure": "feed", "kind": row["kind"], "n": row["items"], "median": row["served_s"],
                     "max": row["served_s"], "unit": "s until every worker serves the last item",
                     "note": f"sent in {row['sent_s']:.2f} s: {row['items'] / row['sent_s']:,.0f} items/s"})
    for key in [k for k in memory[0] if k.startswith("worker")] if memory else ():
        series = sorted(r[key] for r in memory)
        first, last = memory[0][key], memory[-1][key]
        rows.append({"measure": "RSS", "kind": key, "n": len(memory), "median": series[len(series) // 2],
                     "max": series[-1], "unit": "MB over the reloads",
                     "note": f"after reload 1: {first:,.0f} MB, after reload {len(memory)}: {last:,.0f} MB "
                             f"({last / first - 1:+.1%})"})
    meta = {"bundle": str(bundle), "workers": workers, "environment": environment(), "command": command,
            "convergence": converged, "rss": memory, "feed": fed}
    paths = write_report(out_dir, "live", rows, COLUMNS, title="Live catalogue across workers", meta=meta,
                         chart=(lambda _, path: _chart(memory, fed, converged, path)) if memory or fed or converged
                         else None,
                         notes=[f"command: `{command}`" if command else "command: (library call)",
                                f"bundle {bundle}; `recsys serve --workers {workers}`, SQLite event store",
                                "convergence: seconds after the write returned until every worker answered with it "
                                "(reads on fresh connections, one after another: the send time of the first good "
                                "read after the last stale one; 0 when no read was stale); RSS: every worker "
                                "after reload 1 and after the last; feed: a catalogue feed of new items as one "
                                "request per item (PUT, in turn) and as one request (POST /v1/admin/items), run "
                                "once each"])
    return {"rows": rows, "paths": {k: str(v) for k, v in paths.items()}}


def _chart(memory: list[dict], fed: list[dict], converged: list[dict], path: Path) -> None:
    """One panel per part that ran: worker RSS over the reloads, the feed's seconds each way, the convergence
    seconds per write kind."""
    import matplotlib.pyplot as plt

    panels = [name for name, rows in (("rss", memory), ("feed", fed), ("convergence", converged)) if rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "rss":
            for key in [k for k in memory[0] if k.startswith("worker")]:
                ax.plot([r["reload"] for r in memory], [r[key] for r in memory], marker="o", label=key)
            ax.set(xlabel="reload", ylabel="RSS (MB)", title="Worker memory over reloads")
            ax.legend()
        elif panel == "feed":
            ax.bar([r["kind"] for r in fed], [r["served_s"] for r in fed], color=["tab:gray", "tab:blue"][:len(fed)])
            ax.set(ylabel="s until every worker serves the last item",
                   title=f"A feed of {fed[0]['items']:,} new items")
        else:
            kinds = list(dict.fromkeys(r["kind"] for r in converged))
            ax.boxplot([[r["converged_s"] for r in converged if r["kind"] == k] for k in kinds], tick_labels=kinds)
            ax.set(ylabel="s after the write", title="Every worker answers with the write")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
