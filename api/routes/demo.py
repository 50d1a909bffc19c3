"""/demo: a small product page (plain HTML + fetch, no build step) that calls the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from api.deps import get_loaded
from api.loaded import Loaded

router = APIRouter(tags=["demo"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"


DEFAULT_USER = '"__default_user__"'  # the page's JavaScript string literal that names the default user


@router.get("/demo", response_class=HTMLResponse, include_in_schema=False)
def demo(loaded: Annotated[Loaded, Depends(get_loaded)]) -> HTMLResponse:
    """Product page: ?user=<id>&item=<id> (defaults: a user the served bundle knows, or "visitor" when it knows
    none, and the first item recommended to them)."""
    user = next(iter(loaded.recommender.histories), "visitor")
    literal = json.dumps(user).replace("<", "\\u003c")  # a JavaScript string that cannot close the <script>
    return HTMLResponse(PAGE.read_text(encoding="utf-8").replace(DEFAULT_USER, literal))
