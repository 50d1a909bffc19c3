"""Benchmarks (`recsys bench …` / `python -m benchmarks.<name>`): each writes JSON + Markdown + PNG."""
