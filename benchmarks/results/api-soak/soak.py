"""Concurrency soak of `recsys serve --workers 2`: seeded random mix from several client threads, then convergence.

    python benchmarks/results/api-soak/soak.py --bundle /tmp/soak/bundles/frozen/shop/v1 --seconds 180 \
        --clients 6 --seed 1 --out DIR
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import httpx
import polars as pl

TOKEN = "s0ak"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
WORDS = "black red small large wireless camera lens bag shoe kettle lamp desk chair phone cable charger".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Soak:
    def __init__(self, base: str, items: list[str], users: list[str], clients: int, seed: int, versions: list[str],
                 out: Path):
        self.base, self.items, self.users, self.clients, self.seed = base, items, users, clients, seed
        self.versions = versions
        self.counts: collections.Counter = collections.Counter()
        self.problems: list[dict] = []
        self.lock = threading.Lock()
        # item -> expected (exists, text or None, active); items owned by one client each
        self.expected: dict[str, dict] = {}
        self.reloads: list[tuple[float, str, int]] = []  # (time returned, version asked, status)
        self.out = out
        self.evented: set[str] = set()
        self.kills: list[float] = []

    def note(self, route: str, method: str, status, request: dict, body: str, ok: bool, elapsed: float):
        with self.lock:
            self.counts[(method, route, status)] += 1
            if not ok:
                self.problems.append({"t": time.time(), "route": route, "method": method, "status": status,
                                      "request": request, "body": body[:2000], "elapsed_s": round(elapsed, 3)})

    def call(self, method: str, route: str, path: str, ok_statuses, json_body=None, params=None, admin=False,
             timeout=60.0):
        headers = {"Connection": "close", **(ADMIN if admin else {})}
        started = time.monotonic()
        try:
            with httpx.Client(timeout=timeout) as client:
                response = client.request(method, self.base + path, json=json_body, params=params, headers=headers)
            status, body = response.status_code, response.text
        except httpx.HTTPError as exc:
            response, status, body = None, type(exc).__name__, repr(exc)
        self.note(route, method, status, {"path": path, "json": json_body, "params": params}, body,
                  status in ok_statuses, time.monotonic() - started)
        return response

    # ---- one client ----
    def client(self, n: int, deadline: float):
        rng = random.Random(self.seed * 1000 + n)
        owned = [i for k, i in enumerate(self.items) if k % self.clients == n]
        mine: dict[str, dict] = {i: {"exists": True, "text": None, "active": True} for i in owned}
        with self.lock:
            self.expected.update(mine)
        counter = 0
        ops = [("get_item", 8), ("similar", 8), ("similar_user", 4), ("user", 8), ("session_items", 5),
               ("session_text", 3), ("event", 8), ("upsert_new", 4), ("upsert_text", 4), ("deactivate", 2),
               ("activate", 2), ("delete", 1), ("batch", 2), ("reload", 1), ("metrics", 2), ("health", 2),
               ("admin_ids", 1), ("model", 1)]
        names, weights = zip(*ops)
        while time.monotonic() < deadline:
            op = rng.choices(names, weights)[0]
            live = [i for i, s in mine.items() if s["exists"]]
            anyitem = rng.choice(self.items + list(self.expected))
            try:
                self.run_op(op, rng, n, mine, live, anyitem, counter)
            except Exception:
                self.note("client", op, "client-exception", {}, traceback.format_exc(), False, 0)
            counter += 1

    def text(self, rng) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))

    def run_op(self, op, rng, n, mine, live, anyitem, counter):
        if op == "get_item":
            self.call("GET", "/v1/items/{id}", f"/v1/items/{anyitem}", {200, 404})
        elif op == "similar":
            self.call("GET", "/v1/items/{id}/similar", f"/v1/items/{anyitem}/similar", {200, 404},
                      params={"k": rng.randint(1, 20)})
        elif op == "similar_user":
            self.call("GET", "/v1/items/{id}/similar?user_id", f"/v1/items/{anyitem}/similar", {200, 404},
                      params={"k": 10, "user_id": rng.choice(self.users + [f"walk-{n}-{rng.randint(0, 20)}"])})
        elif op == "user":
            self.call("GET", "/v1/users/{id}/recommendations",
                      f"/v1/users/{rng.choice(self.users + [f'walk-{n}-{rng.randint(0, 20)}'])}/recommendations",
                      {200}, params={"k": rng.randint(1, 20)})
        elif op == "session_items":
            self.call("POST", "/v1/sessions/recommendations", "/v1/sessions/recommendations", {200, 404},
                      json_body={"item_ids": rng.sample(self.items, rng.randint(1, 4)), "k": 10})
        elif op == "session_text":
            body = {"text": self.text(rng), "k": 10}
            if rng.random() < 0.5:
                body["item_ids"] = rng.sample(self.items, 2)
            self.call("POST", "/v1/sessions/recommendations (text)", "/v1/sessions/recommendations", {200, 404},
                      json_body=body)
        elif op == "event":
            item = rng.choice(live) if live and rng.random() < 0.5 else anyitem
            user = rng.choice(self.users + [f"walk-{n}-{rng.randint(0, 20)}"])
            r = self.call("POST", "/v1/events", "/v1/events", {201, 404},
                          json_body={"user_id": user, "item_id": item,
                                     "kind": rng.choice(["view", "cart", "purchase"])})
            if r is not None and r.status_code == 201:
                with self.lock:
                    self.evented.add(user)
        elif op == "upsert_new" or (op == "upsert_text" and live):
            item = f"SOAK-{n}-{counter}" if op == "upsert_new" else rng.choice(live)
            text = self.text(rng)
            r = self.call("PUT", "/v1/admin/items/{id}", f"/v1/admin/items/{item}", {200},
                          json_body={"text": text}, admin=True)
            if r is not None and r.status_code == 200:
                mine[item] = {"exists": True, "text": text, "active": True}
                with self.lock:
                    self.expected[item] = mine[item]
        elif op in ("deactivate", "activate") and live:
            item = rng.choice(live)
            r = self.call("POST", f"/v1/admin/items/{{id}}/{op}", f"/v1/admin/items/{item}/{op}", {200}, admin=True)
            if r is not None and r.status_code == 200:
                mine[item]["active"] = op == "activate"
        elif op == "delete" and len(live) > 3:
            item = rng.choice(live)
            r = self.call("DELETE", "/v1/admin/items/{id}", f"/v1/admin/items/{item}", {200}, admin=True)
            if r is not None and r.status_code == 200:
                mine[item] = {"exists": False, "text": None, "active": False}
                with self.lock:
                    self.expected[item] = mine[item]
        elif op == "batch":
            ups = [{"item_id": f"SOAKB-{n}-{counter}-{k}", "text": self.text(rng)} for k in range(rng.randint(1, 4))]
            if live and rng.random() < 0.5:
                ups.append({"item_id": rng.choice(live), "text": self.text(rng)})
            rest = [i for i in live if i not in {u["item_id"] for u in ups}]
            deact = rng.sample(rest, min(len(rest), rng.randint(0, 2)))
            rest = [i for i in rest if i not in deact]
            act = rng.sample(rest, min(len(rest), rng.randint(0, 2)))
            r = self.call("POST", "/v1/admin/items", "/v1/admin/items", {200},
                          json_body={"upsert": ups, "deactivate": deact, "activate": act}, admin=True)
            if r is not None and r.status_code == 200:
                for u in ups:
                    mine[u["item_id"]] = {"exists": True, "text": u["text"], "active": True}
                    with self.lock:
                        self.expected[u["item_id"]] = mine[u["item_id"]]
                for i in deact:
                    mine[i]["active"] = False
                for i in act:
                    mine[i]["active"] = True
        elif op == "reload":
            version = rng.choice(self.versions + [None])
            r = self.call("POST", "/v1/admin/reload", "/v1/admin/reload", {200},
                          json_body={"bundle": version} if version else {}, admin=True, timeout=120)
            with self.lock:
                self.reloads.append((time.time(), version or "(newest)", r.status_code if r is not None else -1,
                                     r.json().get("model_version") if r is not None and r.status_code == 200 else None))
        elif op == "metrics":
            self.call("GET", "/metrics", "/metrics", {200})
        elif op == "health":
            path = rng.choice(["/health", "/health/live", "/health/ready"])
            self.call("GET", path, path, {200})
        elif op == "admin_ids":
            self.call("GET", "/v1/admin/items", "/v1/admin/items", {200}, admin=True)
        elif op == "model":
            self.call("GET", "/v1/model", "/v1/model", {200})

    # ---- the end ----
    def converge(self, log: Path) -> dict:
        """Both workers on one version (per-pid gauges of one scrape), then every expected item state on fresh
        connections (each read lands on some worker)."""
        deadline = time.monotonic() + 90
        versions = {}
        while time.monotonic() < deadline:
            text = httpx.get(self.base + "/metrics", timeout=30).text
            versions = dict(re.findall(r'recsys_model_info\{[^}]*pid="(\d+)"[^}]*version="([^"]+)"[^}]*\} 1\.0', text))
            if not versions:
                versions = {pid: v for v, pid in re.findall(
                    r'recsys_model_info\{[^}]*version="([^"]+)"[^}]*pid="(\d+)"[^}]*\} 1\.0', text)}
            if len(versions) == 2 and len(set(versions.values())) == 1:
                break
            time.sleep(1)
        time.sleep(2)
        wrong = []
        for item, state in sorted(self.expected.items()):
            for _ in range(6):
                r = httpx.get(f"{self.base}/v1/items/{item}", headers={"Connection": "close"}, timeout=30)
                if not state["exists"]:
                    good = r.status_code == 404
                elif r.status_code != 200:
                    good = False
                else:
                    body = r.json()
                    good = body["active"] == state["active"] and (state["text"] is None or body["text"]
                                                                   == state["text"])
                if not good:
                    wrong.append({"item": item, "expected": state, "status": r.status_code, "body": r.text[:300]})
                    break
        # index size per worker = expected active items; no inactive/deleted item served anywhere
        active = {i for i, st in self.expected.items() if st["exists"] and st["active"]}
        gone = {i for i, st in self.expected.items() if not (st["exists"] and st["active"])}
        text = httpx.get(self.base + "/metrics", timeout=30).text
        sizes = dict(re.findall(r'recsys_index_items\{pid="(\d+)"\} ([0-9.e+]+)', text))
        ids = httpx.get(self.base + "/v1/admin/items", headers=ADMIN, timeout=30).json()
        served_gone = []
        anchors = random.Random(0).sample(sorted(active), min(40, len(active)))
        for anchor in anchors:
            for _ in range(2):
                r = httpx.get(f"{self.base}/v1/items/{anchor}/similar", params={"k": 50},
                              headers={"Connection": "close"}, timeout=30)
                got = {i["item_id"] for i in r.json()["items"]} if r.status_code == 200 else {f"status {r.status_code}"}
                if got & gone or r.status_code != 200:
                    served_gone.append({"anchor": anchor, "status": r.status_code, "gone": sorted(got & gone)})
        not_personal = []
        for user in sorted(self.evented)[:60]:
            r = httpx.get(f"{self.base}/v1/users/{user}/recommendations", params={"k": 50},
                          headers={"Connection": "close"}, timeout=30)
            body = r.json()
            listed = {i["item_id"] for i in body["items"]} if r.status_code == 200 else set()
            if r.status_code != 200 or body["strategy"] != "personalised" or listed & gone:
                not_personal.append({"user": user, "status": r.status_code, "body": r.text[:300]})
        return {"versions": versions, "wrong_items": wrong, "items_checked": len(self.expected),
                "index_sizes": sizes, "expected_active": len(active),
                "admin_ids_match": set(ids["active"]) == active and set(ids["inactive"]) == {
                    i for i, st in self.expected.items() if st["exists"] and not st["active"]},
                "served_gone": served_gone, "users_checked": min(60, len(self.evented)), "users_wrong": not_personal}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--kill-at", type=float, default=0)
    parser.add_argument("--code", default=str(Path(__file__).resolve().parents[3]), help="the checkout the server runs")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    models = out / "models"
    for v in ("v1", "v2", "v3"):
        shutil.copytree(args.bundle, models / v)
    port = free_port()
    env = {**os.environ, "RECSYS_STATE_DIR": str(out / "state"), "RECSYS_ADMIN_TOKEN": TOKEN,
           "RECSYS_WARM_SIMILAR_ITEMS": "0", "RECSYS_WARM_USER_CACHE": "0", "PYTHONPATH": args.code,
           **dict(e.split("=", 1) for e in args.env)}
    log_path = out / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--bundle", str(models / "v1"), "--port",
                                str(port), "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=args.code)
    base = f"http://127.0.0.1:{port}"
    try:
        workers = set()
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            try:
                workers.add(httpx.get(f"{base}/health/live", headers={"Connection": "close"}).json()["worker"])
            except httpx.HTTPError:
                time.sleep(0.2)
        assert len(workers) == 2, log_path.read_text()[-3000:]
        bundle = Path(args.bundle)
        items = pl.read_parquet(bundle / "embeddings" / "items.parquet", columns=["item_id"])["item_id"].to_list()
        users = pl.read_parquet(bundle / "stats" / "histories.parquet", columns=["user_id"])["user_id"].to_list()
        soak = Soak(base, items, users, args.clients, args.seed, ["v1", "v2", "v3"], out)
        end = time.monotonic() + args.seconds
        started = time.time()
        threads = [threading.Thread(target=soak.client, args=(n, end)) for n in range(args.clients)]
        for t in threads:
            t.start()
        kills = 0
        while args.kill_at and time.monotonic() + args.kill_at < end:
            time.sleep(args.kill_at)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            victims = [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            print("killing worker", victims[kills % len(victims)], flush=True)
            os.kill(victims[kills % len(victims)], signal.SIGKILL)
            soak.kills.append(time.time())
            kills += 1
        for t in threads:
            t.join()
        duration = time.time() - started
        result = soak.converge(log_path)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    text = log_path.read_text(errors="replace")
    tracebacks = [m.start() for m in re.finditer("Traceback", text)]
    report = {"seconds": round(duration, 1), "requests": sum(soak.counts.values()),
              "counts": {f"{m} {r} {s}": c for (m, r, s), c in sorted(soak.counts.items(), key=str)},
              "problems": soak.problems, "kills": soak.kills, "reloads": soak.reloads, **result,
              "log_tracebacks": len(tracebacks), "log_exception_lines": text.count("Exception"),
              "log_errors": [line for line in text.splitlines() if " ERROR " in line or "ERROR:" in line][:50]}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k not in ("problems",)}, indent=1, default=str)[:6000])
    print("problems:", len(soak.problems))
    for p in soak.problems[:30]:
        print(json.dumps(p, default=str)[:800])


if __name__ == "__main__":
    main()
