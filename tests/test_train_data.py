"""Training sequences' augmentation and batching (encoders/train_data.py)."""

from __future__ import annotations

import numpy as np

from encoders.train_data import TrainingData, augment, sequence_batches

SEQUENCE = np.arange(10, 16)


def test_each_augmentation_alone_and_an_option_at_zero_draws_nothing():
    rng = np.random.default_rng(0)
    assert augment(SEQUENCE, rng, 0.0, 0.0, 0.0).tolist() == SEQUENCE.tolist()
    assert rng.random() == np.random.default_rng(0).random()  # nothing drawn: other options' draws unchanged
    assert augment(SEQUENCE, np.random.default_rng(0), 0.0, 0.0, 1.0).tolist() == [15, 14, 13, 12, 11, 10]
    cropped = augment(SEQUENCE, np.random.default_rng(1), 1.0, 0.0).tolist()
    assert 2 <= len(cropped) < 6 and cropped == SEQUENCE[-len(cropped):].tolist()  # the oldest part goes
    masked = augment(SEQUENCE, np.random.default_rng(2), 0.0, 0.5).tolist()
    assert 2 <= len(masked) < 6 and masked == sorted(masked) and set(masked) <= set(SEQUENCE.tolist())
    assert augment(np.array([3, 4]), np.random.default_rng(0), 1.0, 0.9, 1.0).tolist() == [4, 3]  # two stay


def test_half_the_sequences_read_backwards_predict_the_earlier_item():
    data = TrainingData([str(i) for i in range(20)], [np.arange(i, i + 4) for i in range(0, 16, 4)],
                        np.ones(20, dtype=bool))
    rows = []
    for inputs, lengths, targets in sequence_batches(data, 2, 10, np.random.default_rng(3), reverse_prob=0.5):
        assert lengths.tolist() == [3, 3]
        rows += [(i.tolist(), t.tolist()) for i, t in zip(inputs, targets)]
    backwards = [(i, t) for i, t in rows if i[0] > i[1]]
    assert len(rows) == 4 and 0 < len(backwards) < 4
    for inputs, targets in rows:  # each position's target is the item after it in the sequence as read
        step = 1 if inputs[0] < inputs[1] else -1
        assert targets == [x + step for x in inputs] and inputs[0] % 4 == (0 if step == 1 else 3)
