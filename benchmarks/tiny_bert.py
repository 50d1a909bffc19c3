"""A tiny randomly initialised BERT (2 layers, hidden 32) saved as a local HF directory: the unit tests' model, and the
benchmarks that time the serving code without real weights (`recsys bench catalogue`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(directory: Path, corpus: Iterable[str], seed: int = 0) -> Path:
    """Word-level vocabulary from `corpus`, random weights from a fixed seed."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(SPECIAL + words) + "\n")
    try:  # transformers 5 reads the vocabulary from `vocab` (and ignores `vocab_file`: every word was [UNK])
        tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    except (TypeError, ValueError, OSError):
        tokenizer = None
    if tokenizer is None or len(tokenizer) != len(SPECIAL) + len(words):  # transformers 4
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    if len(tokenizer) != len(SPECIAL) + len(words):
        raise RuntimeError(f"the tiny tokenizer has {len(tokenizer)} tokens, not the {len(SPECIAL) + len(words)} "
                           "of its vocabulary")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(SPECIAL) + len(words), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
