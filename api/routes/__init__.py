"""Routes, split by resource."""
