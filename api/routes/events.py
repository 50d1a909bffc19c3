"""Event ingestion: a view / cart / purchase extends the user's history for the next call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from api.deps import get_loaded, get_service
from api.errors import documented
from api.loaded import Loaded
from api.schemas import EventRequest, EventResponse
from api.service import Service

router = APIRouter(prefix="/v1", tags=["events"])


@router.post("/events", response_model=EventResponse, status_code=201,
             responses=documented(400, 404, 413, 415, 422, 503))
def record_event(event: Annotated[EventRequest, Body()], loaded: Annotated[Loaded, Depends(get_loaded)],
                 service: Annotated[Service, Depends(get_service)]) -> EventResponse:
    """Store the event; the user's next recommendations include it (new users become known)."""
    count = service.record_event(loaded, event.user_id, event.item_id, event.kind, event.timestamp)
    return EventResponse(user_id=event.user_id, events_stored=count)
