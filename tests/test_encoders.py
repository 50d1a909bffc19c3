import numpy as np
import pytest

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
    full = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir))).encode(texts)
    quantised = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir), quantize_int8=True))
    assert "quantized.dynamic" in type(quantised.model.encoder.layer[0].attention.self.query).__module__
    cosine = (full * quantised.encode(texts)).sum(axis=1)
    assert cosine.min() > 0.95
