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


def test_not_a_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RecsysError, match="not a Hugging Face model directory"):
        load_backbone(str(tmp_path))


def test_int8_quantised_encoder_stays_close(tiny_bert_dir):
    texts = ["black mirrorless camera", "camera bag", "running shoe blue"]
    cpu = torch.device("cpu")  # int8 dynamic quantisation is a CPU path (a GPU keeps the float model)
    full = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir)), cpu).encode(texts)
    quantised = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), quantize_int8=True), cpu)
    assert "quantized.dynamic" in type(quantised.model.encoder.layer[0].attention.self.query).__module__
    cosine = (full * quantised.encode(texts)).sum(axis=1)
    assert cosine.min() > 0.95


def test_prefetched_tokenisation_gives_the_same_vectors_in_the_same_order(tiny_bert_dir):
    encoder = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), batch_size=3))
    texts = [f"item {i} " + "word " * (i % 7) for i in range(20)]  # 7 batches of mixed lengths
    plain = encoder.encode(texts, prefetch=False)
    prefetched = encoder.encode(texts, prefetch=True)
    np.testing.assert_array_equal(prefetched, plain)
    np.testing.assert_allclose(prefetched[5], encoder.encode([texts[5]], prefetch=True)[0], atol=1e-5)
