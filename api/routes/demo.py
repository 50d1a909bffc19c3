"""/demo: a small product page (plain HTML + fetch, no build step) that calls the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["demo"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"


@router.get("/demo", response_class=HTMLResponse, include_in_schema=False)
def demo() -> HTMLResponse:
    """Product page: ?user=<id>&item=<id> (defaults: a known user and their last item)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
