"""Write K copies of an amazon-scientific directory whose .inter files leave out one fold of users each (seeded).

python make_folds.py ../shared/data/amazon-scientific crossfit-data 3
→ crossfit-data/data-{0,1,2}/amazon-scientific/ and crossfit-data/folds.json (user index → fold)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

source, out, k_folds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
users = sorted({line.split("\t")[0] for line in (source / "Scientific.valid.inter").read_text().splitlines()[1:]})
fold = dict(zip(np.random.default_rng(0).permutation(users).tolist(), [i % k_folds for i in range(len(users))]))
for k in range(k_folds):
    target = out / f"data-{k}" / source.name
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.suffix == ".inter":
            lines = f.read_text().splitlines()
            kept = [lines[0]] + [line for line in lines[1:] if fold[line.split("\t")[0]] != k]
            (target / f.name).write_text("\n".join(kept) + "\n")
        else:
            shutil.copy(f, target / f.name)
    print(k, sum(1 for u in fold if fold[u] == k), "users held out")
(out / "folds.json").write_text(json.dumps(fold))
