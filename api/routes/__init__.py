"""Routes, split by resource."""

from api import path_ids  # noqa: F401 (registers the `id` path convertor the routes' paths use)
