"""The soak's bundles (stop 60): a tiny BERT, a zero-shot bundle of a 90-item synthetic shop, and, with `trained` /
`text`, tiny trained towers (a sequence user tower / a text user tower) on the same shop. Run from the checkout:

    python benchmarks/results/api-soak/build.py /tmp/soak/bundles [trained] [text]
"""

import sys
from pathlib import Path


def main(out: Path, kinds: list[str]) -> None:
    """Write the bundles under `out`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: its tests' tiny BERT and configs
    from encoders.experiment import train_and_evaluate
    from jobs.workflows import build_bundle
    from recsys.config import BuildConfig, EncoderConfig, TowerConfig
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset
    from tests.conftest import toy_dataset
    from tests.test_lora import small_config
    from tests.tiny_bert import build_tiny_bert

    out.mkdir(parents=True, exist_ok=True)
    corpus = list(toy_dataset().items["text"]) + generate_shop(n_users=50, n_items=120, seed=0).items["text"].to_list()
    bert = build_tiny_bert(out / "tiny-bert", corpus)
    shop = generate_shop(n_users=60, n_items=90, seed=2)
    config = BuildConfig(encoder=EncoderConfig(model=str(bert), max_length=32))
    path, _, _ = build_bundle(shop, config, out / "frozen", "shop", progress=False)
    print("frozen", path.rename(path.parent / "v1"))
    if "trained" in kinds:
        trained = train_and_evaluate(shop, split_dataset(shop), small_config(bert), name="tiny",
                                     out_root=out / "trained", progress=False)
        print("trained", trained.path)
    if "text" in kinds:
        tower = TowerConfig(dim=16, item_max_length=24, history_max_length=48, seq_layers=1, user_tower="text")
        text = train_and_evaluate(shop, split_dataset(shop), small_config(bert, tower=tower), name="tinytext",
                                  out_root=out / "text", progress=False)
        print("text", text.path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
