"""The vectors preset on small, wide, collinear and large tables: docs/tables-quality.md.

Each table is trained with ``fdrl.fit`` (the vectors preset plus any ``--set`` overrides, one
thread; a finished run in ``--out`` is only scored again) and scored on its held-out 20%: C2ST accuracy and energy distance beside the 10-component
Gaussian mixture's, the share of near-copies (samples closer to a training row than 99% of
held-out rows are; about 1% for fresh data) and how far samples reach (max |z| in standardised
units, against the data's own max |z|).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/table_defaults.py                 # all tables
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/table_defaults.py wine iris \\
        --set train.steps=300                                                            # a candidate
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def collinear(rows: int = 200, columns: int = 12, factors: int = 3, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """``factors`` latent Gaussian factors mixed into ``columns`` columns plus ``noise``: after
    standardising, a covariance with ``factors`` large eigenvalues and the rest near noise**2."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, factors)) @ rng.normal(size=(factors, columns)) + noise * rng.normal(
        size=(rows, columns))


def exactly_collinear(rows: int = 200, columns: int = 12, factors: int = 3, seed: int = 1) -> np.ndarray:
    """``factors`` latent Gaussian factors mixed into ``columns`` columns, no noise: rank ``factors``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, factors)) @ rng.normal(size=(factors, columns))


def mixed(rows: int = 200, seed: int = 1) -> np.ndarray:
    """5 Gaussian columns, a constant column and 2 binary columns."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(rows, 5)), np.full((rows, 1), 3.0), rng.integers(0, 2, (rows, 2))], 1)


def correlated_gaussian(rows: int = 5000, dim: int = 4, seed: int = 0) -> np.ndarray:
    """A Gaussian with a random full covariance (eigenvalues spread over two decades)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (rng.normal(size=(rows, dim)) * np.logspace(0, -1, dim)) @ q.T


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import sklearn.datasets

        return getattr(sklearn.datasets, f"load_{name}")().data

    return load


def _moons() -> np.ndarray:
    from sklearn.datasets import make_moons

    return make_moons(5000, noise=0.05, random_state=0)[0]


#: name -> the table (rows x features); 20% of each is held out by the preset
TABLES: dict[str, Callable[[], np.ndarray]] = {
    "iris": _sklearn("iris"),
    "wine": _sklearn("wine"),
    "diabetes": _sklearn("diabetes"),
    "breast_cancer": _sklearn("breast_cancer"),
    "digits": _sklearn("digits"),
    "collinear": collinear,
    "exactly_collinear": exactly_collinear,
    "mixed": mixed,
    "moons": _moons,
    "gauss4d": correlated_gaussian,
}


def run(name: str, overrides: dict[str, object], root: Path) -> dict[str, object]:
    """Train on table ``name`` with ``overrides`` under ``root``; the row of the report."""
    import fdrl

    x = TABLES[name]().astype(np.float32)
    start = time.perf_counter()
    model = fdrl.fit(x, out=root / name, progress=False, **overrides)
    seconds = time.perf_counter() - start
    m = model.metrics
    gmm = m["baselines"]["gmm"]
    scale = np.where(x.std(0) > 0, x.std(0), 1.0)
    reach = np.abs((np.asarray(model.sample(2000, seed=1)) - x.mean(0)) / scale).max()
    data_reach = np.abs((x - x.mean(0)) / scale).max()
    log = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    events = [e["event"] for e in log if e.get("event") in ("rollback", "diverged")]
    return {
        "table": f"{name} {x.shape[0]}x{x.shape[1]}",
        "c2st": m["c2st_accuracy"], "c2st_gmm": gmm["c2st_accuracy"],
        "energy": m["energy_distance"], "energy_gmm": gmm["energy_distance"],
        "copies": m["memorisation"]["share_closer_than_heldout_1pct"],
        "reach": float(reach), "data_reach": float(data_reach),
        "events": ",".join(events) or "-", "seconds": seconds,
    }


def resample(run_dir: Path, n: int = 2000, sets: int = 5) -> str:
    """The run's model sampled again (``n`` samples, seed 1): near-copies and the median
    distance ratio over all ``n``, C2ST and energy averaged over ``sets`` disjoint sets of as many
    samples as there are held-out rows (less noisy than the report's single set)."""
    from fdrl import FDRL
    from fdrl.config import load_config
    from fdrl.data import build_data
    from fdrl.evaluate.heldout import memorisation, scores

    config = load_config(str(run_dir / "config.yaml"))
    data = build_data(config.data.spec)
    samples = FDRL.load(run_dir).sample(n, seed=1, standardized=True)
    m = data.heldout.shape[0]
    found = memorisation(samples, data.samples, data.heldout)
    each = [scores(samples[i * m:(i + 1) * m], data.heldout, 0) for i in range(min(sets, n // m))]
    c2st = sum(e["c2st_accuracy"] for e in each) / len(each)
    energy = sum(e["energy_distance"] for e in each) / len(each)
    return (f"near-copies {found['share_closer_than_heldout_1pct']:.1%}, median distance ratio "
            f"{found['median_ratio']:.2f}, C2ST {c2st:.3f}, energy {energy:.3g} (mean of {len(each)} sets of {m})")


def bootstrap(name: str, factors: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)) -> str:
    """No training: the training rows jittered as ``train.data_smoothing=c`` jitters a batch
    (2000 draws, :class:`fdrl.smoothing.BatchSmoother`), scored as a model's samples against the
    held-out rows (near-copies over all 2000, C2ST and energy on the report's m), for each c in
    ``factors``; and the h of the chi_d-calibrated alternative
    (P(h chi_d < t) = 5%, t the 5% quantile of the rows' leave-one-out nearest-neighbour distances)."""
    import torch
    from scipy.stats import chi2

    from fdrl.data.source import ArrayData
    from fdrl.evaluate.heldout import heldout_report, memorisation
    from fdrl.smoothing import BatchSmoother

    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "t.npy", TABLES[name]().astype(np.float32))
        data = ArrayData.from_file(Path(folder) / "t.npy", test_fraction=0.2, standardize=True)
    rows, heldout = data.samples, data.heldout
    g = torch.Generator().manual_seed(1)
    draws = rows[torch.randint(rows.shape[0], (2000,), generator=g)]
    parts = []
    for c in factors:
        smoother = BatchSmoother.fit(rows, c)
        jittered = smoother(draws, g)
        r = heldout_report(jittered, rows, heldout, draws, seed=0)
        parts.append(f"c={c:g} (h {smoother.bandwidth:.3f}): near-copies "
                     f"{memorisation(jittered, rows, heldout)['share_closer_than_heldout_1pct']:.1%}, "
                     f"C2ST {r['c2st_accuracy']:.3f}, "
                     f"energy {r['energy_distance']:.3g}")
    distances = torch.cdist(rows, rows).fill_diagonal_(float("inf")).min(1).values
    calibrated = float(distances.quantile(0.05)) / np.sqrt(chi2.ppf(0.05, rows.shape[1]))
    return f"{name}: " + "; ".join(parts) + f"; chi_d-calibrated h {calibrated:.3f}"


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", default=list(TABLES), help=f"of: {', '.join(TABLES)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--out", help="where the runs go (default: a temporary folder)")
    parser.add_argument("--resample", action="store_true", help="also score 2000 fresh samples of each model")
    parser.add_argument("--bootstrap", action="store_true",
                        help="no training: score the jittered training rows themselves (smoothed bootstrap)")
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.bootstrap:
        for name in args.tables:
            print(bootstrap(name), flush=True)
        return
    root = Path(args.out or tempfile.mkdtemp(prefix="table-defaults-"))
    print(f"overrides: {overrides or 'none'}; runs in {root}")
    print("| table | C2ST | GMM C2ST | energy | GMM energy | energy / GMM | near-copies | max abs z (data) | "
          "guard | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.tables:
        r = run(name, overrides, root)
        # a mixture's energy at or below 0 is the estimate's noise (held-out sets of 30-100 rows): no ratio
        ratio = f"{r['energy'] / r['energy_gmm']:.2f}" if r["energy_gmm"] > 0 else "n/a"
        print(f"| {r['table']} | {r['c2st']:.3f} | {r['c2st_gmm']:.3f} | {r['energy']:.3g} | {r['energy_gmm']:.3g} | "
              f"{ratio} | {r['copies']:.1%} | {r['reach']:.3g} ({r['data_reach']:.3g}) | {r['events']} | "
              f"{r['seconds']:.0f} |", flush=True)
        if args.resample:
            print(f"  {name}, 2000 samples: {resample(root / name)}", flush=True)


if __name__ == "__main__":
    main()
