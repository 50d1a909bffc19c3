"""The Redis event store: several replicas on several machines share one log (needs the `redis` package)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import polars as pl

from recsys.errors import StoreError
from recsys.event_log import Change, ChangeKind, EventRow, event_frame_of, vector_bytes, vector_of

# Redis: each log is appended by a Lua script, so taking the next seq and writing the entry are one atomic step
# (a reader never sees seq n+1 before n).
_APPEND_EVENT = """
local seq = redis.call('INCR', KEYS[1])
local n = redis.call('RPUSH', KEYS[2], cjson.encode({item_id=ARGV[1], kind=ARGV[2], ts=tonumber(ARGV[3]), seq=seq}))
redis.call('SADD', KEYS[3], ARGV[4])
return n
"""
REDIS_TIMEOUT_S = 10.0
"""How long a caller that names no timeout (the batch jobs' `--redis-timeout-s` default, the store benchmark) waits
for Redis to accept a connection or to answer a command (the API passes its own `RECSYS_REDIS_TIMEOUT_S`); a batch
job's read of a user's whole list is one answer."""

_APPEND_CHANGES = """
local seqs = {}
for i, payload in ipairs(ARGV) do
  local seq = redis.call('INCR', KEYS[1])
  redis.call('ZADD', KEYS[2], seq, seq .. '|' .. payload)
  seqs[i] = seq
end
return seqs
"""


class RedisEventStore:
    """Shared store for several replicas (needs the `redis` package and a Redis server): events in a list per
    user, changes in a sorted set scored by seq."""

    reads_wait = True  # a network round trip, up to the timeout (`EventStore.reads_wait`)

    def __init__(self, url: str, prefix: str = "recsys", timeout_s: float = REDIS_TIMEOUT_S) -> None:
        """`timeout_s`: the longest wait for a connection and for each answer, after which a call raises redis'
        TimeoutError or ConnectionError (a Redis that accepts connections and never answers would otherwise hold
        its caller for good: redis-py 5 has no read timeout, later versions 5 s)."""
        import redis

        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            self._redis.ping()
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"cannot reach Redis at {redact(url)}: {exc}") from None
        self._prefix = prefix
        self._append_event = self._redis.register_script(_APPEND_EVENT)
        self._append_changes = self._redis.register_script(_APPEND_CHANGES)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # ---- events -------------------------------------------------------------------------------
    def _event_keys(self, user_id: str) -> list[str]:
        return [self._key("event_seq"), self._key("events", user_id), self._key("users")]

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        stamp = repr(float(timestamp if timestamp is not None else time.time()))
        # one round trip; RPUSH answers the list's length: O(1) whatever the user's history
        return int(self._append_event(keys=self._event_keys(user_id), args=[item_id, kind, stamp, user_id]))

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None, batch: int = 10_000) -> int:
        keys = self._event_keys(user_id)
        stamp = repr(float(timestamp if timestamp is not None else time.time()))
        items, count = list(item_ids), None
        for start in range(0, len(items), batch):  # one round trip per batch, each event its own seq
            pipe = self._redis.pipeline(transaction=False)
            for item_id in items[start:start + batch]:
                self._append_event(keys=keys, args=[item_id, kind, stamp, user_id], client=pipe)
            count = int(pipe.execute()[-1])
        return count if count is not None else int(self._redis.llen(self._key("events", user_id)))

    def _entries(self, user_id: str, limit: int | None, until: int | None) -> list[dict]:
        raw = self._redis.lrange(self._key("events", user_id), 0 if until is not None or limit is None else -limit, -1)
        entries = [json.loads(e) for e in raw]
        if until is not None:
            entries = [e for e in entries if e.get("seq", 0) <= until]
        return entries[-limit:] if limit is not None else entries

    def events(self, user_id: str, limit: int, until: int | None = None) -> list[str]:
        return [e["item_id"] for e in self._entries(user_id, limit, until)]

    def events_with_kinds(self, user_id: str, limit: int, until: int | None = None) -> list[tuple[str, str]]:
        return [(e["item_id"], e["kind"]) for e in self._entries(user_id, limit, until)]

    def events_for(self, user_ids: Iterable[str], limit: int, until: int | None = None) -> dict[str, list[str]]:
        out = {user: self.events(user, limit, until) for user in dict.fromkeys(user_ids)}
        return {user: items for user, items in out.items() if items}

    def event_users(self, until: int | None = None) -> list[str]:
        users = sorted(u.decode() for u in self._redis.smembers(self._key("users")))
        return users if until is None else [u for u in users if self._entries(u, 1, until)]

    def last_event_seq(self) -> int:
        return int(self._redis.get(self._key("event_seq")) or 0)

    def event_items(self, limit: int, users: int = 100) -> list[str]:
        # one SSCAN step names up to `users` users (not every user's list is read: Redis keeps no global event
        # order), then one pipelined round trip reads the first events of each, `limit` in all
        _, found = self._redis.sscan(self._key("users"), 0, count=min(limit, users))
        found = sorted(found)[: min(limit, users)]
        pipe = self._redis.pipeline(transaction=False)
        for user in found:
            pipe.lrange(self._key("events", user.decode()), 0, -(-limit // len(found)) - 1)
        return [json.loads(raw)["item_id"] for entries in (pipe.execute() if found else [])
                for raw in entries][:limit]

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        wanted = None if kinds is None else set(kinds)

        def rows() -> Iterator[EventRow]:
            for user in sorted(u.decode() for u in self._redis.smembers(self._key("users"))):
                for raw in self._redis.lrange(self._key("events", user), 0, -1):
                    entry = json.loads(raw)
                    seq = int(entry.get("seq", 0))  # entries written before events had a seq count as the oldest
                    if (until is None or seq <= until) and (wanted is None or entry["kind"] in wanted):
                        yield seq, user, entry["item_id"], entry["kind"], float(entry.get("ts", 0.0))

        return event_frame_of(rows()).sort("seq", maintain_order=True)

    # ---- catalogue changes ------------------------------------------------------------------------
    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        return self.record_changes([Change(0, kind, item_id, record, vector, space, active)])[0]

    def record_changes(self, changes: Sequence[Change]) -> list[int]:
        # one script: Redis runs it whole, so no reader sees part of the batch
        payloads = []
        for c in changes:
            blob = vector_bytes(c.vector)
            payloads.append(json.dumps({"kind": c.kind, "item_id": c.item_id, "record": c.record, "space": c.space,
                                        "active": c.active,
                                        "vector": None if blob is None else base64.b64encode(blob).decode()}))
        if not payloads:
            return []
        seqs = self._append_changes(keys=[self._key("change_seq"), self._key("changes")], args=payloads)
        return [int(seq) for seq in seqs]

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        members = self._redis.zrangebyscore(self._key("changes"), f"({after}", "+inf" if until is None else until)
        out = []
        for member in members:
            seq, payload = member.decode().split("|", 1)
            entry = json.loads(payload)
            vector = None if entry["vector"] is None else vector_of(base64.b64decode(entry["vector"]))
            out.append(Change(int(seq), entry["kind"], entry["item_id"], entry["record"], vector, entry["space"],
                              entry["active"]))
        return out

    def changed_items(self) -> list[tuple[str, str | None]]:
        entries = (json.loads(member.decode().split("|", 1)[1])
                   for member in self._redis.zrangebyscore(self._key("changes"), "(0", "+inf"))
        return [(entry["kind"], entry["item_id"]) for entry in entries]  # (the vectors are not decoded)

    def latest_bundle(self, page: int = 256) -> dict | None:
        # the changes newest first, a page at a time, until a reload (an upsert's vector is skipped, not decoded)
        start = 0
        while True:
            members = self._redis.zrevrange(self._key("changes"), start, start + page - 1)
            for member in members:
                entry = json.loads(member.decode().split("|", 1)[1])
                if entry["kind"] == "bundle":
                    return entry["record"]
            if len(members) < page:
                return None
            start += page

    def last_change_seq(self) -> int:
        return int(self._redis.get(self._key("change_seq")) or 0)

    def close(self) -> None:
        self._redis.close()


def redact(url: str) -> str:
    """`url` without its password (error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
