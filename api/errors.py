"""One error body for every 4xx/5xx the API answers (`ErrorResponse`), its exception handlers, and the
scrubbing that keeps filesystem paths out of error messages."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.path_ids import trailing_slash_redirect
from recsys.errors import BundleError, UnknownIdError

logger = logging.getLogger("recsys.api")  # the service's logger: `recsys serve` routes "recsys" to its handler
MAX_ERRORS = 20  # field errors listed in one answer (a body with 1,000 bad ids does not get a 1,000-line answer)
MAX_TEXT = 300  # characters of a message or a location part (they may quote the client's own keys)
NO_ROUTE = ("no route has this path (an id is sent percent-encoded, its slashes as %2F, as encodeURIComponent "
            "writes it)")
UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's 400 for a JSON body it cannot decode
NOT_UTF8 = "the body is not UTF-8: send JSON encoded as UTF-8"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?(?:[/\\][^\s'\"`:;,()\[\]{}<>/\\]+){2,}[/\\]?")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query', 'path' or 'header', then the field's path")
    msg: str
    type: str = Field(description="a machine-readable kind, e.g. 'int_type', 'missing', 'value_error'")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="what went wrong, in one line")
    errors: list[FieldError] = Field(default_factory=list, description="for 422: one entry per invalid field")


def error_response(status: int, detail: str, errors: Sequence[FieldError] = (),
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(detail=detail, errors=list(errors[:MAX_ERRORS]))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def field_errors(raw: Sequence[dict]) -> list[FieldError]:
    """Pydantic/FastAPI error dicts without their `input` and `ctx` (never echoed: they may hold the
    client's whole value, or one JSON cannot represent, such as a non-finite number)."""
    out = []
    for error in raw[:MAX_ERRORS]:
        message = str(error.get("msg", "invalid value"))
        reason = (error.get("ctx") or {}).get("error")
        if error.get("type") == "json_invalid" and isinstance(reason, str):
            message = f"{message}: {reason}"
        loc = [part if isinstance(part, int) else _short(part) for part in error.get("loc", ())]
        out.append(FieldError(loc=loc, msg=_short(message), type=str(error.get("type", "value_error"))))
    return out


def _said(error: FieldError) -> str:
    """One field error for the one-line `detail`: where, then what; a body that is not JSON, or none at all, in
    words (FastAPI's loc for the former is ["body", <character offset>], which read as "body.28")."""
    if error.type == "json_invalid":
        reason = error.msg.removeprefix("JSON decode error").lstrip(": ") or "unreadable"
        at = f" at character {error.loc[1]}" if len(error.loc) == 2 and isinstance(error.loc[1], int) else ""
        return f"the body is not valid JSON ({reason}{at})"
    if error.type == "missing" and list(error.loc) == ["body"]:
        return "the body is empty: send a JSON object"
    return f"{'.'.join(str(p) for p in error.loc) or 'request'}: {error.msg}"


def summary(errors: Sequence[FieldError], total: int) -> str:
    parts = [_said(e) for e in errors[:5]]
    more = f" (and {total - 5} more)" if total > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def scrub_paths(message: str, roots: Sequence[Path] = ()) -> str:
    """`message` with every filesystem path gone: paths under one of `roots` become relative to it (a
    bundle version's name), any other absolute path (a library's source file, a system file) becomes '…'."""
    for root in roots:
        for form in {str(root), str(root.resolve())}:
            message = message.replace(form.rstrip("/\\") + "/", "").replace(form, root.name)
    return ABSOLUTE_PATH.sub("…", message)


HARD_CAPS = {"maximum": "less_than_equal", "maxItems": "too_long", "maxLength": "string_too_long"}
"""JSON Schema keyword of a served limit → the pydantic error a model's fixed hard cap (above it) raises."""


def served_limits(raw: Sequence[dict], limits: Mapping[str, Mapping[str, int]]) -> list[dict]:
    """`raw` with every value above a model's fixed hard cap (`api.limits`: the largest a setting can be) told the
    limit served, as a value between the two is by the routes' own checks: one limit in every message, the one the
    OpenAPI document states. `limits`: field name → {keyword: served limit} (`api.contract.settings_limits`)."""
    out = []
    for error in raw:
        loc = tuple(error.get("loc", ()))
        served = limits.get(loc[-1]) if loc and isinstance(loc[-1], str) else None
        for keyword, limit in (served or {}).items():
            if error.get("type") == HARD_CAPS[keyword]:
                error = {**error, "msg": _above(loc[-1], keyword, limit, error)}
        out.append(error)
    return out


def _above(name: str, keyword: str, limit: int, error: dict) -> str:
    """The served limit's message for `error` on field `name` (a huge number is not printed, nor converted)."""
    value = error.get("input")
    if keyword == "maxLength":
        return f"{name} is {len(value)} characters; the limit is {limit}" if isinstance(value, str) else \
            f"{name} is too long; the limit is {limit} characters"
    if keyword == "maxItems":
        return f"{name} holds {(error.get('ctx') or {}).get('actual_length', 'too many')} entries; the limit is {limit}"
    text = value.strip() if isinstance(value, str) else str(value) if type(value) is int and 0 <= value < 10 ** 18 \
        else ""  # a query parameter comes as text
    shown = f"{name}={text}" if text.isascii() and text.isdigit() and len(text) <= 18 else name
    return f"{shown} is above the limit of {limit}"


def install_error_handlers(app: FastAPI, max_body_bytes: int, roots: Callable[[], Sequence[Path]] = list,
                           limits: Mapping[str, Mapping[str, int]] | None = None) -> None:
    """Every error the app answers has the `ErrorResponse` shape; no message carries a filesystem path
    (`roots()`: directories whose paths are shown relative to them, e.g. the bundle root); `limits`: the served
    limits every too-large message names (`served_limits`)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if limits:
            raw = served_limits(raw, limits)
        kind = not_json(request)
        if kind is not None and any(tuple(e.get("loc", ()))[:1] == ("body",) for e in raw):
            return error_response(415, f"the request body must be JSON (Content-Type: application/json), not "
                                       f"{kind!r}")
        errors = field_errors(raw)
        return error_response(422, summary(errors, len(raw)), errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, headers = exc.detail, getattr(exc, "headers", None)
        if exc.status_code == 413:
            detail = f"request body over the limit of {max_body_bytes} bytes"
        if exc.status_code == 400 and detail == UNREADABLE_BODY:  # (a body that is not UTF-8: its bytes not shown)
            detail = NOT_UTF8
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        if exc.status_code == 404 and detail == "Not Found":  # the router's own: no route has this path
            redirect = trailing_slash_redirect(request)
            if redirect is not None:
                return redirect
            detail = NO_ROUTE
        return error_response(exc.status_code, scrub_paths(str(detail), roots()), headers=headers)

    @app.exception_handler(BundleError)
    async def unavailable(_: Request, exc: BundleError) -> JSONResponse:
        return error_response(503, scrub_paths(str(exc), roots()))

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, exc: UnknownIdError) -> JSONResponse:
        return error_response(404, str(exc))

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The event store cannot answer now (Redis down or timing out, SQLite locked or failing its disk): a 503
        that asks the client to retry, as for any transient outage; anything else SQLite raises is a bug (500)."""
        if isinstance(exc, sqlite3.OperationalError) and not is_sqlite_outage(exc):
            logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            return error_response(500, "internal error: the server logged it")
        logger.warning("%s %s: the event store is unavailable (%s: %s)", request.method, request.url.path,
                       type(exc).__name__, exc)
        return error_response(503, "the event store is unavailable; retry shortly", headers={"Retry-After": "1"})

    for outage in store_outages():
        app.add_exception_handler(outage, store_unavailable)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        """A bug or an outage (e.g. the event store unreachable): the same shape, nothing of the exception's text
        (the server logs it with its traceback)."""
        return error_response(500, "internal error: the server logged it")


SQLITE_OUTAGES = ("locked", "busy", "disk i/o error", "readonly", "unable to open", "disk is full")


def is_sqlite_outage(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed for the state of its file or disk (another writer holding it past the busy timeout, a
    read-only or full disk), not for a statement of ours."""
    return any(kind in str(exc).lower() for kind in SQLITE_OUTAGES)


def store_outages() -> tuple[type[Exception], ...]:
    """The exceptions by which an event store says it cannot answer now: SQLite's operational errors (sorted by
    `is_sqlite_outage`) and, when the redis client is installed, its connection and timeout errors."""
    kinds: list[type[Exception]] = [sqlite3.OperationalError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
    except ImportError:
        return tuple(kinds)
    return (*kinds, RedisConnectionError, RedisTimeoutError)


def not_json(request: Request) -> str | None:
    """The request's declared body type when it names one that is not JSON (FastAPI then reads no JSON, and the
    body fails validation as a whole); None when it is JSON (`application/json`, `…+json`) or not declared."""
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not declared or declared == "application/json" or declared.endswith("+json"):
        return None
    return declared


def allowed_methods(request: Request) -> str:
    """Every method the request's path supports, across its routes (e.g. PUT and DELETE on one item path: a
    405 from one route would otherwise name only its own)."""
    routes = request.app.router.routes
    allowed = [method for method in METHODS
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]
    if "GET" in allowed and "HEAD" not in allowed:  # every GET route answers HEAD (api.methods.HeadAsGet)
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return ", ".join(allowed)


def _describe(status: int) -> dict:
    return {"model": ErrorResponse, "description": DESCRIPTIONS[status]}


DESCRIPTIONS = {
    400: "the body is not UTF-8 JSON",
    401: "missing or wrong bearer token",
    403: "admin routes are off (no RECSYS_ADMIN_TOKEN)",
    404: "unknown user or item id",
    409: "refused: conflicts with the path or the serving state",
    413: "request body over RECSYS_MAX_BODY_BYTES",
    415: "the body is declared as another type than JSON (Content-Type)",
    422: "invalid parameters or body: `errors` lists each field",
    503: "no bundle loaded yet, this bundle cannot serve the request, or the event store is unavailable (retry)",
}


def documented(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route: the error statuses it may answer, each with the `ErrorResponse` body."""
    return {status: _describe(status) for status in statuses}
