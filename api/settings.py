"""Service settings from the environment (prefix RECSYS_) or explicit arguments."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import DirectoryPath, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.limits import LIST_ITEMS, TEXT_CHARS
from recsys.errors import RecsysError
from recsys.store import HISTORY_LIMIT


class SettingsError(RecsysError):
    """A RECSYS_* setting has a value the service cannot use."""


ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+")  # scheme://host[:port], as a browser's Origin header says it


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", frozen=True, allow_inf_nan=False)  # "inf" too

    bundle: Path | None = Field(None, description="bundle directory (or model directory: newest version)")
    max_k: int = Field(100, ge=10, le=10_000, description="largest k a request may ask for (at least the default "
                       "list length, 10)")
    max_session_items: int = Field(200, ge=1, le=LIST_ITEMS, description="most item ids a session request may post")
    max_exclude_items: int = Field(1_000, ge=0, le=LIST_ITEMS, description="most ids an exclude list may hold")
    max_batch_items: int = Field(1_000, ge=1, le=LIST_ITEMS, description="most catalogue changes one `POST "
                                 "/v1/admin/items` may carry (upserts, activations, deactivations, deletions)")
    max_text_chars: int = Field(1_000, ge=1, le=TEXT_CHARS, description="longest free-text query or item text")
    max_body_bytes: int = Field(256 * 1024, ge=1_024, description="larger request bodies get 413 (counted while "
                                "reading, whatever the transfer encoding)")
    rerank: bool = Field(True, description="re-rank with the bundle's LightGBM re-ranker when it has one (false: "
                         "serve the towers' retrieval order, e.g. to compare or as a kill switch)")
    unknown_user_fallback: bool = Field(True, description="unknown users get popular items instead of a 404")
    history_limit: int = Field(HISTORY_LIMIT, ge=1, description="most recent items of a user's history (bundle "
                               "history + events) a recommendation reads; batch-score uses the same default")
    bundle_root: DirectoryPath | None = Field(None, description="reloads only load bundles under this directory, "
                                              "which must exist (default: the served bundle's parent, its model "
                                              "directory)")
    start_bundle: Literal["latest", "given"] = Field("latest", description="what a server (or a worker restarted on "
                                                     "its own) serves at start when the latest reload recorded in the "
                                                     "event store swapped in another bundle: latest: that bundle (a "
                                                     "rollback stays rolled back), unless the bundle given is a newer "
                                                     "version of its model directory than it and it was no rollback; "
                                                     "given: the bundle given (RECSYS_BUNDLE, --bundle)")
    state_dir: Path = Field(Path("recsys-state"), description="where the SQLite event store lives")
    event_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = Field(2.0, gt=0, le=60, description="the longest a worker waits for Redis to accept a "
                                   "connection or to answer a command; past it the request answers 503 'retry "
                                   "shortly' (redis-py's own limit is none in version 5, 5 s in recent ones)")
    sqlite_write_timeout_s: float = Field(5.0, gt=0, le=60, description="the longest an event or a catalogue edit "
                                          "waits for another process writing to the SQLite store (another worker, "
                                          "an import), and at most as long again for this worker's earlier "
                                          "writes; past it the request answers 503 'retry shortly' (a client "
                                          "has usually given up sooner than SQLite's 30 s, and a late write then "
                                          "lands after the client retried it)")
    sync_interval_ms: float = Field(200.0, gt=0, description="how often a worker checks the event store for catalogue "
                                    "changes made through another worker (and for reloads to follow): every change "
                                    "is visible to every worker within about this long")
    compact_share: float = Field(0.10, ge=0, le=1, description="compact the index (built aside, swapped in) once more "
                                 "than this share of its rows are deleted or replaced items (0: never)")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field((), description="comma-separated origins "
                                                               "(https://shop.example) whose pages may call the "
                                                               "public /v1/ routes from JavaScript (CORS), or *: any; "
                                                               "never the admin routes (default: none, no CORS)")
    admin_token: SecretStr | None = Field(None, description="bearer token for /v1/admin/*; admin is off when unset "
                                          "or empty")
    cache_mb: float = Field(256, ge=0, description="one memory budget (MiB per worker) for the cached user query "
                            "vectors and similar-item responses, counted in bytes (0: no caches)")
    warm_user_cache: int = Field(20_000, ge=0, description="at load, encode up to this many known users' "
                                 "histories into the cache (as many as its budget holds), so their first request "
                                 "skips the user tower; every other user is encoded on first request (0: all on "
                                 "first request)")
    warm_similar_items: int = Field(20_000, ge=0, description="at load, compute the similar-item lists of the "
                                    "many most popular items (the rest on first use; 0: all on first use)")
    preload_item_tower: bool = Field(False, description="at load, load the item tower for new text (upserts, "
                                     "free-text queries) too; by default a trained sequence tower loads its BERT on "
                                     "the first request that needs it, and the worker starts without transformers")
    micro_batch_ms: float = Field(2.0, ge=0, description="wait this long to batch concurrent BERT encodes")
    micro_batch_max: int = Field(32, ge=1)
    turn_batch_max: int = Field(64, ge=0, description="history requests (known users, sessions without text) that "
                                "reach the event loop in the same turn share one recommend_batch call (one user-tower "
                                "pass, one FAISS search), up to this many (0: one call each)")
    turn_batch_wait_ms: float = Field(1.0, ge=0, le=50, description="when a worker is saturated (its previous "
                                      "batch held 4 or more requests), a loop-turn batch waits this long for more "
                                      "requests to join it before it runs (0: never wait); light load never waits")
    quantize_int8: bool = Field(False, description="int8 dynamic quantisation of the BERT towers on CPU")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads for the BERT towers (0: torch's "
                               "default, one per core); concurrent requests are micro-batched instead, so 1 keeps "
                               "several workers from oversubscribing the cores")
    blas_threads: int = Field(1, ge=0, description="BLAS (OpenBLAS/MKL) threads for numpy in this process (0: "
                              "the library default); idle BLAS threads spin and steal the core a request needs")
    gil_switch_ms: float = Field(5.0, gt=0, le=100, description="the interpreter's thread switch interval (Python's "
                                 "default, 5 ms); lower it (e.g. 0.5) when BERT towers run on request under load: "
                                 "the micro-batcher's forward pass needs the GIL back many times while the event loop "
                                 "holds it (on 2 cores: session p99 ↓, inline user/similar p99 ↑)")
    faiss_threads: int = Field(1, ge=0, description="OpenMP threads per FAISS search (0: FAISS default), set in "
                               "every thread that searches (OpenMP's setting is per thread); requests already run "
                               "concurrently, so 1 avoids oversubscribing the cores")

    @field_validator("bundle", "bundle_root", "state_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """An empty path variable (RECSYS_BUNDLE_ROOT=) is unset: its default, not the working directory ("" is
        read as ".")."""
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """A comma-separated list (as the environment gives it) → the origins, lowercased as browsers send them; an
        origin with a path or a trailing slash would never match one, so it is refused."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        origins = tuple(str(origin).strip().lower() for origin in value)
        for origin in origins:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin[:80]!r} is not an origin: write scheme://host[:port] as a browser sends it "
                                 "(no path, no trailing slash), or * for any")
        return origins

    @property
    def admin_enabled(self) -> bool:
        """Admin routes need a non-empty token (an empty RECSYS_ADMIN_TOKEN= leaves them off)."""
        return self.admin_token is not None and bool(self.admin_token.get_secret_value().strip())


OTHER_VARIABLES = frozenset({"RECSYS_ONNX_CACHE", "RECSYS_RANKER_CACHE"})  # read by the ONNX and re-ranker caches


def check_names(environ: Mapping[str, str]) -> None:
    """SettingsError for a RECSYS_* variable that is no setting (a typo such as RECSYS_RERANKK would be ignored)."""
    prefix = Settings.model_config["env_prefix"]
    known = sorted({prefix + name.upper() for name in Settings.model_fields} | OTHER_VARIABLES)
    for name in sorted(environ):
        if name.upper().startswith(prefix) and name.upper() not in known:  # pydantic-settings ignores the case
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)  # the shared prefix scores too
            hint = f"did you mean {close[0]}?" if close else "see the README's API section for the settings"
            raise SettingsError(f"{name}: not a setting ({hint})")


def load_settings(**values) -> Settings:
    """Settings from the environment (and `values`); a bad value, or a RECSYS_* variable that is no setting, is a
    SettingsError naming its variable."""
    check_names(os.environ)
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "RECSYS_" + "_".join(str(part) for part in error["loc"]).upper()
        raise SettingsError(f"{name}: {error['msg']}") from None


SECRET_SETTINGS = frozenset({"admin_token", "redis_url"})  # a Redis URL can carry a password


def public_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The RECSYS_* settings in `environ`, sorted, secret ones left out (for reports of what was served)."""
    prefix = Settings.model_config["env_prefix"]
    hidden = {prefix + name.upper() for name in SECRET_SETTINGS}
    return {k: v for k, v in sorted(environ.items()) if k.startswith(prefix) and k not in hidden}
