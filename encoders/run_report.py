"""Per-run training artefacts: a metrics CSV and a training-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path


def write_metrics_csv(rows: list[dict], path: Path) -> Path:
    """One row per epoch (the union of keys as columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_training_curve(rows: list[dict], path: Path, title: str = "training") -> Path | None:
    """Train loss and validation NDCG@10 / Recall@10 per epoch."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [r["train_loss"] for r in rows], marker="o", color="tab:red")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss (contrastive softmax)")
    for key, colour in (("valid_ndcg@10", "tab:blue"), ("valid_recall@10", "tab:green")):
        if key in rows[0]:
            right.plot(epochs, [r[key] for r in rows], marker="o", label=key, color=colour)
    right.set_xlabel("epoch")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
