"""Ids in URL paths: `{item_id:id}` / `{user_id:id}` take any id, slashes included ("kit/2", raw or as `%2F`),
except one that ends in a suffix a route puts after an id ("/similar", "/activate", …), so a path names one route
only (an item named "x/similar" cannot be addressed by path; every other id can)."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

ROUTE_SUFFIXES = ("similar", "activate", "deactivate", "recommendations")
"""The path segments routes put after an id: an id that ends in "/" + one of them would name two routes."""


class IdConvertor(Convertor[str]):
    """Starlette path convertor: one or more characters, `/` allowed, not ending in "/" + a `ROUTE_SUFFIXES` word."""

    regex = ".+?" + "".join(f"(?<!/{suffix})" for suffix in ROUTE_SUFFIXES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())  # idempotent: the same convertor under the same name on every import
