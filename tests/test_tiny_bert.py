"""The unit tests' tiny BERT reads the words of its corpus: its tokenizer holds the corpus vocabulary (under
transformers 5, `vocab_file=` was ignored and every word became [UNK], so every item text encoded alike)."""

from transformers import AutoModel, AutoTokenizer

from recsys.data.synthetic import generate_shop


def test_the_tiny_tokenizer_knows_the_shop_words_and_item_texts_encode_apart(tiny_bert_dir):
    import torch

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = generate_shop(n_users=20, n_items=40, seed=2).items["text"].to_list()[:8]
    ids = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    known = ids["input_ids"][ids["attention_mask"].bool()]
    assert (known == tokenizer.unk_token_id).float().mean() < 0.05
    with torch.no_grad():
        pooled = AutoModel.from_pretrained(tiny_bert_dir)(**ids).last_hidden_state.mean(dim=1)
    assert torch.cdist(pooled, pooled).fill_diagonal_(1.0).min() > 1e-3  # no two item texts encode alike
