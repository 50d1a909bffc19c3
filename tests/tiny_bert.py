"""The tests' tiny randomly initialised BERT: `benchmarks.tiny_bert` (the installed package ships it, so the
benchmarks that need a BERT without weights build the same one)."""

from benchmarks.tiny_bert import SPECIAL, build_tiny_bert

__all__ = ["SPECIAL", "build_tiny_bert"]
