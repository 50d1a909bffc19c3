"""Core of the recommender: data, splits, metrics, retrieval, pipeline and bundles (no torch)."""

__version__ = "0.1.0"
