"""fdrl's defaults (or a candidate) beside the Gaussian mixture on the tabular-peers tables, over
several train / held-out splits: the scores that one split of a small table cannot give.

For each table of ``benchmarks/tabular_peers.py`` and each split seed, 20% of the rows are held
out; fdrl is trained on the rest (``fdrl.fit`` with the vectors preset, ``--set`` overrides, one
thread) and the 10-component Gaussian mixture is fitted to the same rows; each draws 5 m samples
(m held-out rows), scored as 5 sets of m against the held-out rows on the peers' common encoding
(C2ST accuracy and energy distance averaged over the sets; near-copies over all 5 m). Prints one
JSON line per run and a Markdown table of the means over seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/table_seeds.py --seeds 0,1,2
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/table_seeds.py --tables wine,digits --methods fdrl \\
        --set prior.name=data_gaussian --set train.data_smoothing=1.0          # an earlier default
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import tabular_peers as peers  # noqa: E402  (the tables, their encoding and the mixture)

SETS = 5


def split(df: Any, seed: int) -> tuple[Any, Any]:
    """80 / 20 rows, drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(df))
    cut = len(df) - int(round(peers.HELDOUT_FRACTION * len(df)))
    return df.iloc[order[:cut]].reset_index(drop=True), df.iloc[order[cut:]].reset_index(drop=True)


def draws(method: str, train: Any, kinds: dict[str, str], n: int, seed: int, overrides: dict[str, Any]) -> Any:
    """``n`` samples of ``method`` (fdrl with ``overrides``, or the mixture) in the table's types."""
    if method == "gmm":
        return peers.fit_sample_gmm(train, kinds, n, seed)
    import fdrl

    with tempfile.TemporaryDirectory(prefix="fdrl-seeds-") as run:
        model = fdrl.fit(train, out=run, progress=False, **{"data.test_fraction": 0, "train.seed": seed, **overrides})
        samples = model.sample(n, seed=seed)
    return peers.typed(samples, peers.TableEncoding(train, kinds))


def one_run(table: str, method: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fdrl.evaluate.heldout import memorisation
    from fdrl.evaluate.metrics import c2st_accuracy, energy_distance

    df, kinds = peers.TABLES[table]()
    train, heldout = split(df, seed)
    m = len(heldout)
    start = time.process_time()
    samples = draws(method, train, kinds, SETS * m, seed, overrides)
    cpu = time.process_time() - start
    encoding = peers.TableEncoding(train, kinds)
    x_train, x_held, x_samp = (torch.as_tensor(encoding.encode(d), dtype=torch.float32)
                               for d in (train, heldout, samples))
    sets = [x_samp[i * m:(i + 1) * m] for i in range(SETS)]
    return {"table": table, "method": method, "seed": seed, "heldout_rows": m, "cpu_s": round(cpu, 1),
            "c2st": float(np.mean([c2st_accuracy(s, x_held, seed=i) for i, s in enumerate(sets)])),
            "energy": float(np.mean([energy_distance(s, x_held) for s in sets])),
            "near_copies": memorisation(x_samp, x_train, x_held)["share_closer_than_heldout_1pct"]}


def markdown(rows: list[dict[str, Any]]) -> str:
    """Means over seeds, one line per table and method."""
    lines = ["| table | method | seeds | C2ST | energy | near-copies | CPU s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    keys = sorted({(r["table"], r["method"]) for r in rows}, key=lambda k: (list(peers.TABLES).index(k[0]), k[1]))
    for table, method in keys:
        runs = [r for r in rows if (r["table"], r["method"]) == (table, method)]
        mean = lambda k: float(np.mean([r[k] for r in runs]))  # noqa: E731
        lines.append(f"| {table} | {method} | {len(runs)} | {mean('c2st'):.3f} | {mean('energy'):.3f} | "
                     f"{mean('near_copies'):.3f} | {mean('cpu_s'):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(peers.TABLES), help="comma-separated tables of tabular_peers.py")
    parser.add_argument("--methods", default="fdrl,gmm", help="fdrl and/or gmm")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an fdrl config override")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    rows = []
    for table in args.tables.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in args.methods.split(","):
                row = {**one_run(table, method, seed, overrides if method == "fdrl" else {}),
                       "overrides": overrides if method == "fdrl" else {}}
                print(json.dumps(row), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                rows.append(row)
    print(markdown(rows))


if __name__ == "__main__":
    main()
