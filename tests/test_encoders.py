import numpy as np
import pytest
import torch

from encoders.backbone import load_backbone
from encoders.text_encoder import TextEncoder
from recsys.config import EncoderConfig
from recsys.errors import RecsysError


def test_encodes_normalised_and_order_independent(tiny_bert_dir):
    encoder = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), batch_size=2))
    texts = ["black mirrorless camera", "camera bag", "running shoe blue and more words here"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # batching/padding must not change a text's vector
    single = encoder.encode([texts[1]])
    np.testing.assert_allclose(single[0], vectors[1], atol=1e-5)
    assert encoder.encode([]).shape == (0, 32)
    # the words make the vector: texts of as many tokens, other words, lie apart (all [UNK] encoded them alike)
    same_length = encoder.encode(["black mirrorless camera", "running shoe blue", "camera bag brown"])
    assert pairwise_distances(same_length).min() > 0.05


def pairwise_distances(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows, the diagonal left out (flattened)."""
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    return distances[~np.eye(len(vectors), dtype=bool)]


def test_not_a_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RecsysError, match="not a Hugging Face model directory"):
        load_backbone(str(tmp_path))


def test_int8_quantised_encoder_stays_close(tiny_bert_dir):
    texts = ["black mirrorless camera", "camera bag", "running shoe blue"]  # the first and last: 3 tokens each
    cpu = torch.device("cpu")  # int8 dynamic quantisation is a CPU path (a GPU keeps the float model)
    full = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir)), cpu).encode(texts)
    quantised = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), quantize_int8=True), cpu)
    assert "quantized.dynamic" in type(quantised.model.encoder.layer[0].attention.self.query).__module__
    cosine = full @ quantised.encode(texts).T
    assert np.diag(cosine).min() > 0.95
    # ... and apart for other texts: each int8 vector is nearest to its own text's float one, by a margin
    assert pairwise_distances(full).min() > 0.05
    assert (np.diag(cosine) - np.where(np.eye(len(texts), dtype=bool), -1, cosine).max(axis=0)).min() > 1e-3


def test_prefetched_tokenisation_gives_the_same_vectors_in_the_same_order(tiny_bert_dir):
    encoder = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), batch_size=3))
    texts = [f"item {i} " + "word " * (i % 7) for i in range(20)]  # 7 batches of mixed lengths
    plain = encoder.encode(texts, prefetch=False)
    prefetched = encoder.encode(texts, prefetch=True)
    np.testing.assert_array_equal(prefetched, plain)
    np.testing.assert_allclose(prefetched[5], encoder.encode([texts[5]], prefetch=True)[0], atol=1e-5)
