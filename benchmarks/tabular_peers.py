"""fdrl beside the tabular generators people compare with: Forest-Flow (``forestdiffusion``),
conditional flow matching (``torchcfm``) and a Gaussian mixture, on the same tables, the same
80/20 split and the same held-out metrics, one thread each.

    python benchmarks/tabular_peers.py --out results.json --markdown docs/tabular-peers.md

Each method is an adapter ``fit_sample(train_df, kinds, n, seed, length) -> DataFrame`` (the
training table's columns and types), run in a fresh subprocess whose process CPU seconds around
fit + sample are recorded. ``length`` is the method's training length (``None``: its default);
the "equal CPU" row of a peer rescales it so that its CPU seconds match fdrl's on that table.
Metrics are computed on one encoding fitted on the training rows (standardised numerics,
one-hot categoricals). Peers need ``pip install 'fdrl[peers]'``; a missing one is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every library (xgboost, BLAS, torch)

SPLIT_SEED = 0
HELDOUT_FRACTION = 0.2
CONTINUOUS, INTEGER, CATEGORICAL = "continuous", "integer", "categorical"

# --------------------------------------------------------------------------------------- tables


def _sklearn_table(loader: Callable, integer: tuple[str, ...] = (), **kwargs) -> tuple[Any, dict[str, str]]:
    import pandas as pd

    bunch = loader(**kwargs)
    df = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    for column in integer:
        df[column] = df[column].round().astype("int64")
    return df, {c: INTEGER if c in integer else CONTINUOUS for c in df.columns}


def wine() -> tuple[Any, dict[str, str]]:
    """sklearn's wine: 178 x 13 chemical measurements."""
    from sklearn.datasets import load_wine
    return _sklearn_table(load_wine)


def diabetes() -> tuple[Any, dict[str, str]]:
    """sklearn's diabetes in raw units: 442 x 10, age and sex integers."""
    from sklearn.datasets import load_diabetes
    return _sklearn_table(load_diabetes, ("age", "sex"), scaled=False)


def breast_cancer() -> tuple[Any, dict[str, str]]:
    """sklearn's breast cancer: 569 x 30 continuous."""
    from sklearn.datasets import load_breast_cancer
    return _sklearn_table(load_breast_cancer)


def digits() -> tuple[Any, dict[str, str]]:
    """sklearn's digits as 64-D vectors: 1797 x 64 integers 0..16."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    return _sklearn_table(lambda: bunch, tuple(str(c) for c in bunch.feature_names))


def moons() -> tuple[Any, dict[str, str]]:
    """Two moons in 2-D (500 rows, noise 0.05)."""
    import pandas as pd
    from sklearn.datasets import make_moons

    x, _ = make_moons(500, noise=0.05, random_state=0)
    return pd.DataFrame(x, columns=["x", "y"]), {"x": CONTINUOUS, "y": CONTINUOUS}


def collinear() -> tuple[Any, dict[str, str]]:
    """160 x 12: three latent normal factors mixed into 12 columns plus noise of sd 0.05."""
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 3)) @ rng.standard_normal((3, 12)) + 0.05 * rng.standard_normal((160, 12))
    df = pd.DataFrame(x, columns=[f"c{i}" for i in range(12)])
    return df, dict.fromkeys(df.columns, CONTINUOUS)


def iris_species() -> tuple[Any, dict[str, str]]:
    """sklearn's iris, 150 rows: four measurements and the species name as a string column."""
    from sklearn.datasets import load_iris

    df, kinds = _sklearn_table(load_iris)
    df["species"] = np.asarray(load_iris().target_names)[load_iris().target]
    return df, {**kinds, "species": CATEGORICAL}


def wine_mixed() -> tuple[Any, dict[str, str]]:
    """sklearn's wine, 178 rows: the cultivar as a string label, alcohol as a tertile category
    (low / mid / high), magnesium and proline as integers, four continuous measurements."""
    import pandas as pd
    from sklearn.datasets import load_wine

    bunch = load_wine()
    full = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    df = full[["malic_acid", "ash", "flavanoids", "color_intensity"]].copy()
    df["magnesium"] = full["magnesium"].round().astype("int64")
    df["proline"] = full["proline"].round().astype("int64")
    df["alcohol_level"] = pd.qcut(full["alcohol"], 3, labels=["low", "mid", "high"]).astype(str)
    df["cultivar"] = np.asarray(bunch.target_names)[bunch.target]
    kinds = {**dict.fromkeys(df.columns[:4], CONTINUOUS), "magnesium": INTEGER, "proline": INTEGER,
             "alcohol_level": CATEGORICAL, "cultivar": CATEGORICAL}
    return df, kinds


def mixed_synthetic() -> tuple[Any, dict[str, str]]:
    """300 synthetic rows: two string columns tied to the numbers (a colour chosen by a latent
    cluster, a size by a continuous column's sign), a Poisson count, a constant, two continuous."""
    import pandas as pd

    rng = np.random.default_rng(0)
    cluster = rng.integers(0, 3, 300)
    height = rng.normal(cluster * 2.0, 0.5)
    weight = 0.8 * height + rng.normal(0, 0.3, 300)
    df = pd.DataFrame({
        "height": height, "weight": weight,
        "count": rng.poisson(1 + cluster * 2).astype("int64"),
        "constant": np.full(300, 3.5),
        "colour": np.array(["red", "green", "blue"])[cluster],
        "size": np.where(weight > np.median(weight), "large", "small"),
    })
    kinds = {"height": CONTINUOUS, "weight": CONTINUOUS, "count": INTEGER, "constant": CONTINUOUS,
             "colour": CATEGORICAL, "size": CATEGORICAL}
    return df, kinds


def _continuous(x: np.ndarray, names: list[str]) -> tuple[Any, dict[str, str]]:
    import pandas as pd

    return pd.DataFrame(x, columns=names), dict.fromkeys(names, CONTINUOUS)


def blobs() -> tuple[Any, dict[str, str]]:
    """400 rows in 5-D from six Gaussian clusters of standard deviations 0.3-2 (a mixture's home)."""
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(400, n_features=5, centers=6, cluster_std=[0.5, 1, 1.5, 0.7, 0.3, 2], random_state=4)
    return _continuous(x, list("abcde"))


def circles() -> tuple[Any, dict[str, str]]:
    """Two concentric circles in 2-D (500 rows, noise 0.05, radii 1 and 0.5)."""
    from sklearn.datasets import make_circles

    x, _ = make_circles(500, noise=0.05, factor=0.5, random_state=1)
    return _continuous(x, ["x", "y"])


def s_curve() -> tuple[Any, dict[str, str]]:
    """A 2-D sheet bent into an S in 3-D (600 rows, noise 0.05)."""
    from sklearn.datasets import make_s_curve

    x, _ = make_s_curve(600, noise=0.05, random_state=2)
    return _continuous(x, ["a", "b", "c"])


def swiss_roll_3d() -> tuple[Any, dict[str, str]]:
    """A rolled 2-D sheet in 3-D (600 rows, noise 0.3)."""
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(600, noise=0.3, random_state=3)
    return _continuous(x, ["a", "b", "c"])


def skewed() -> tuple[Any, dict[str, str]]:
    """400 rows of skewed, bounded columns: log-normal, exponential, a product of normals and a
    square plus noise (tied to the log-normal's exponent)."""
    import pandas as pd

    rng = np.random.default_rng(5)
    z = rng.standard_normal((400, 3))
    df = pd.DataFrame({"lognorm": np.exp(z[:, 0]), "expo": rng.exponential(2, 400),
                       "prod": z[:, 1] * z[:, 2], "sq": z[:, 0] ** 2 + 0.1 * z[:, 1]})
    return df, dict.fromkeys(df.columns, CONTINUOUS)


def housing() -> tuple[Any, dict[str, str]]:
    """The Boston housing table as mlxtend ships it, 506 rows: twelve of its 13 attributes (the
    column ``B``, computed from a town's share of one ethnic group, is left out) and the median
    value ``MEDV``; ``CHAS`` (a 0/1 flag) and ``RAD`` (an index of 9 values) categorical, ``TAX``
    an integer."""
    import pandas as pd
    from mlxtend.data import boston_housing_data

    x, y = boston_housing_data()
    names = "CRIM ZN INDUS CHAS NOX RM AGE DIS RAD TAX PTRATIO B LSTAT".split()
    df = pd.DataFrame(x, columns=names).drop(columns="B")
    df["MEDV"] = y
    for name in ("CHAS", "RAD", "TAX"):
        df[name] = df[name].round().astype("int64")
    return df, {**dict.fromkeys(df.columns, CONTINUOUS), "CHAS": CATEGORICAL, "RAD": CATEGORICAL, "TAX": INTEGER}


def auto_mpg() -> tuple[Any, dict[str, str]]:
    """UCI's auto-mpg as mlxtend ships it, 392 cars: cylinders (5 values) and origin (3)
    categorical, model year an integer, four measurements and the miles per gallon (the car's
    name, which mlxtend leaves empty, is left out)."""
    import pandas as pd
    from mlxtend.data import autompg_data

    x, y = autompg_data()
    names = ["cylinders", "displacement", "horsepower", "weight", "acceleration", "year", "origin"]
    df = pd.DataFrame(x[:, :len(names)], columns=names)
    df["mpg"] = y
    for name in ("cylinders", "year", "origin"):
        df[name] = df[name].round().astype("int64")
    return df, {**dict.fromkeys(df.columns, CONTINUOUS), "cylinders": CATEGORICAL, "origin": CATEGORICAL,
                "year": INTEGER}


TABLES: dict[str, Callable[[], tuple[Any, dict[str, str]]]] = {
    "wine": wine, "diabetes": diabetes, "breast_cancer": breast_cancer, "digits": digits, "moons": moons,
    "collinear": collinear, "iris_species": iris_species, "wine_mixed": wine_mixed,
    "mixed_synthetic": mixed_synthetic, "blobs": blobs, "circles": circles, "s_curve": s_curve,
    "swiss_roll_3d": swiss_roll_3d, "skewed": skewed, "housing": housing, "auto_mpg": auto_mpg,
}


def split(df: Any) -> tuple[Any, Any]:
    """The fixed 80/20 train / held-out split (seed :data:`SPLIT_SEED`)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(df))
    cut = len(df) - int(round(HELDOUT_FRACTION * len(df)))
    return df.iloc[order[:cut]].reset_index(drop=True), df.iloc[order[cut:]].reset_index(drop=True)


# ------------------------------------------------------------------------------------ encoding


class TableEncoding:
    """A table as vectors, fitted on the training rows: fdrl's column codec
    (:class:`fdrl.data.columns.TableCodec` with the table's kinds: one-hot labels, integers
    rounded into the training range when decoded) and then every feature standardised. The same
    encoding for every method and for the metrics; ``decode`` is its inverse."""

    def __init__(self, train: Any, kinds: dict[str, str]):
        from fdrl.data.columns import TableCodec

        self.labels = [c for c in train.columns if kinds[c] == CATEGORICAL]
        self.codec = TableCodec.fit(self._text(train), kinds)
        features = self.codec.encode(self._text(train)).astype(np.float64)
        self.mean, self.scale = features.mean(0), features.std(0)
        self.scale[self.scale == 0] = 1.0

    def _text(self, df: Any) -> Any:
        """Labels compared as text, whatever their type in a method's output."""
        return df.astype({c: str for c in self.labels})

    @property
    def width(self) -> int:
        return self.codec.width

    def encode(self, df: Any) -> np.ndarray:
        return (self.codec.encode(self._text(df)) - self.mean) / self.scale

    def decode(self, x: np.ndarray) -> Any:
        return self.codec.decode(np.asarray(x, dtype=np.float64) * self.scale + self.mean)


def typed(df: Any, encoding: TableEncoding) -> Any:
    """``df`` in the training table's types: integers rounded and clipped to the training range,
    labels as text (a round trip through the encoding)."""
    return encoding.decode(encoding.encode(df))


# ------------------------------------------------------------------------------------- methods
# Each adapter: fit_sample(train_df, kinds, n, seed, length) -> DataFrame in train_df's columns
# and types. ``length`` is the training length its LENGTHS entry names (None: the default).


def fit_sample_fdrl(train: Any, kinds: dict[str, str], n: int, seed: int, length: int | None = None) -> Any:
    """fdrl's defaults (the ``vectors`` preset) on every training row; ``length`` = train.steps."""
    import fdrl

    overrides: dict[str, Any] = {"data.test_fraction": 0, "train.seed": seed}
    if length is not None:
        overrides["train.steps"] = length
    with tempfile.TemporaryDirectory(prefix="fdrl-peers-") as run:
        model = fdrl.fit(train, out=run, progress=False, **overrides)  # fdrl types the columns itself
        samples = model.sample(n)
    return typed(samples, TableEncoding(train, kinds))


def forestflow_schedule(length: int | None) -> tuple[int, int]:
    """(n_t, duplicate_K) for a training length counted in tree-model fits of one copy of the
    data, n_t x duplicate_K (its cost is about proportional to it): the README's 50 x 100 by
    default; duplicate_K shrinks first, then n_t (down to 2) once duplicate_K is 1."""
    if length is None:
        return 50, 100
    return (50, max(1, round(length / 50))) if length >= 50 else (max(2, length), 1)


def fit_sample_forestflow(train: Any, kinds: dict[str, str], n: int, seed: int, length: int | None = None) -> Any:
    """Forest-Flow with its README flow defaults (xgboost, n_t=50, duplicate_K=100; ``length``
    per :func:`forestflow_schedule`), categorical columns as integer codes in ``cat_indexes``
    (it dummy-codes them), integer columns in ``int_indexes``."""
    import pandas as pd
    from ForestDiffusion import ForestDiffusionModel

    codes, levels = train.copy(), {}
    for column in train.columns:
        if kinds[column] == CATEGORICAL:
            codes[column], levels[column] = pd.factorize(train[column].astype(str), sort=True)
    columns = list(train.columns)
    n_t, duplicate_k = forestflow_schedule(length)
    cat_indexes = [i for i, c in enumerate(columns) if kinds[c] == CATEGORICAL]
    # with categoricals, forestdiffusion 1.0.6 under pandas 3 fails to round integer columns (its
    # decoded array is read-only); :func:`typed` then does its rounding and clipping instead
    int_indexes = [] if cat_indexes else [i for i, c in enumerate(columns) if kinds[c] == INTEGER]
    model = ForestDiffusionModel(codes.to_numpy(float), n_t=n_t, duplicate_K=duplicate_k, diffusion_type="flow",
                                 cat_indexes=cat_indexes, int_indexes=int_indexes, n_jobs=1, nthread=1, seed=seed)
    samples = pd.DataFrame(model.generate(batch_size=n), columns=columns)
    for column, names in levels.items():
        samples[column] = np.asarray(names)[samples[column].round().astype(int).clip(0, len(names) - 1)]
    return typed(samples, TableEncoding(train, kinds))


def fit_sample_cfm(train: Any, kinds: dict[str, str], n: int, seed: int, length: int | None = None) -> Any:
    """Conditional flow matching with torchcfm, as its 2-D example trains it (torchcfm has no
    fit / sample API): ``ConditionalFlowMatcher(sigma=0.1)``, its ``MLP(dim, time_varying=True)``
    (3 x 64, SELU), Adam at default settings, batches of 256 (training rows drawn with
    replacement) against N(0, I), 20000 iterations (``length``); samples by dopri5 from t=0 to 1
    (atol = rtol = 1e-4, torchdiffeq, the solver its example runs through torchdyn). Works on
    the :class:`TableEncoding` of the table (argmax / rounding decode)."""
    import torch
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
    from torchcfm.models.models import MLP
    from torchdiffeq import odeint

    torch.manual_seed(seed)
    encoding = TableEncoding(train, kinds)
    data = torch.as_tensor(encoding.encode(train), dtype=torch.float32)
    model = MLP(dim=data.shape[1], time_varying=True)
    optimizer = torch.optim.Adam(model.parameters())
    matcher = ConditionalFlowMatcher(sigma=0.1)
    for _ in range(20000 if length is None else length):
        optimizer.zero_grad()
        x1 = data[torch.randint(len(data), (256,))]
        t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
        loss = torch.mean((model(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        field = lambda t, x: model(torch.cat([x, t.expand(len(x), 1)], dim=-1))  # noqa: E731
        x = odeint(field, torch.randn(n, data.shape[1]), torch.tensor([0.0, 1.0]), method="dopri5",
                   atol=1e-4, rtol=1e-4)[-1]
    return encoding.decode(x.numpy())


def fit_sample_gmm(train: Any, kinds: dict[str, str], n: int, seed: int, length: int | None = None) -> Any:
    """A Gaussian mixture with full covariances (10 components, at most one per 5 rows: fdrl's
    held-out baseline) on the :class:`TableEncoding`, decoded like ``cfm``."""
    import torch

    from fdrl.evaluate.heldout import gaussian_mixture_draws

    encoding = TableEncoding(train, kinds)
    draws = gaussian_mixture_draws(torch.as_tensor(encoding.encode(train)), n, seed, components=10)
    return encoding.decode(draws.double().numpy())


def training_rows(train: Any, kinds: dict[str, str], n: int, seed: int, length: int | None = None) -> Any:
    """The training rows themselves, no model: the split's floor. Fresh rows of the training
    distribution score about this on C2ST and energy against the held-out rows (so a difference
    between methods smaller than the gap from this to the ideal is the split's noise); their
    near-copies are 1 by construction, and their DCR share is that of a perfect copier (well
    above 0.5; below 1 because the share judges against a subset of the training rows)."""
    return train


METHODS: dict[str, Callable[..., Any]] = {
    "fdrl": fit_sample_fdrl, "forestflow": fit_sample_forestflow, "cfm": fit_sample_cfm, "gmm": fit_sample_gmm,
    "rows": training_rows,
}
#: the modules each method needs (imported before its clock starts) and the pip name of an extra
REQUIRES = {"fdrl": ("fdrl", "torch"), "forestflow": ("ForestDiffusion",), "cfm": ("torchcfm", "torchdiffeq"),
            "gmm": ("sklearn.mixture", "torch"), "rows": ()}
#: the training length ``length`` rescales for the equal-CPU row: (name, default)
LENGTHS = {"forestflow": ("n_t x duplicate_K", 5000), "cfm": ("iterations", 20000)}
QUICK_LENGTHS = {"fdrl": 20, "forestflow": 5, "cfm": 50}
#: an equal-CPU run off its target by more than this fraction is rescaled from its own CPU
#: seconds, up to EQUAL_CPU_TRIES runs in all (a short first run overstates the cost per unit
#: of length: its fixed costs weigh more)
EQUAL_CPU_TOLERANCE, EQUAL_CPU_TRIES = 0.25, 2


def missing(method: str) -> str | None:
    """Why ``method`` cannot run here (a one-line install hint), or None."""
    for module in REQUIRES[method]:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"{method} skipped: {module} is not installed (pip install 'fdrl[peers]')"
    return None


# -------------------------------------------------------------------------------------- scoring


def score(train: Any, heldout: Any, samples: Any, kinds: dict[str, str], seed: int = 0) -> dict[str, float | None]:
    """Held-out metrics of ``samples``, the same for every method, on the :class:`TableEncoding`
    fitted on ``train``: C2ST accuracy, energy distance, near-copies, DCR share, and the
    column-shape / pair-trend scores of :mod:`fdrl.evaluate.tabular`. The C2ST takes as many
    samples as held-out rows, so it is the mean over the disjoint sets of that size the samples
    hold (four here, each with its own folds): one set alone moves by +-0.06 on a 36-row hold-out."""
    import torch

    from fdrl.evaluate.heldout import dcr_share, memorisation
    from fdrl.evaluate.metrics import c2st_accuracy, energy_distance

    encoding = TableEncoding(train, kinds)
    x_train, x_held, x_samp = (encoding.encode(df) for df in (train, heldout, samples))
    t_train, t_held, t_samp = (torch.as_tensor(x, dtype=torch.float32) for x in (x_train, x_held, x_samp))
    dcr = dcr_share(t_samp, t_train, t_held, torch.Generator().manual_seed(seed))
    sets = max(1, len(t_samp) // len(t_held))
    result: dict[str, float | None] = {
        "c2st": float(np.mean([c2st_accuracy(part, t_held, seed=seed + i) for i, part in
                               enumerate(t_samp[:len(t_held) * sets].split(len(t_held)))])),
        "energy": energy_distance(t_samp, t_held),
        "near_copies": memorisation(t_samp, t_train, t_held)["share_closer_than_heldout_1pct"],
        "dcr_share": dcr[0] / len(t_samp),
    }
    from fdrl.evaluate.tabular import column_shapes, pair_trends

    result["shapes"] = column_shapes(heldout, samples, kinds)["score"]
    result["trends"] = pair_trends(heldout, samples, kinds)["score"]
    return result


# --------------------------------------------------------------------------------------- runner


def worker(spec_path: str) -> None:
    """One fit + sample in this (fresh) process: reads the spec, writes samples and CPU seconds."""
    spec = json.loads(Path(spec_path).read_text())
    method = spec["method"]
    for module in REQUIRES[method]:
        __import__(module)
    import torch

    torch.set_num_threads(1)
    df, kinds = TABLES[spec["table"]]()
    train, _ = split(df)
    start = time.process_time()
    samples = METHODS[method](train, kinds, spec["n"], spec["seed"], spec["length"])
    cpu = time.process_time() - start
    with open(spec["out"], "wb") as f:
        pickle.dump({"samples": samples, "cpu_s": cpu}, f)


def run_method(table: str, method: str, n: int, seed: int, length: int | None) -> tuple[Any, float]:
    """Samples and CPU seconds of one method on one table, run in a fresh subprocess."""
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.pkl"
        spec.write_text(json.dumps({"table": table, "method": method, "n": n, "seed": seed, "length": length,
                                    "out": str(out)}))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, __file__, "--worker", str(spec)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"exit code {done.returncode}")
        with open(out, "rb") as f:
            result = pickle.load(f)
    return result["samples"], result["cpu_s"]


def equal_length(cpu_default: float, length_default: int, cpu_target: float) -> int:
    """The training length at which a method that spent ``cpu_default`` seconds at
    ``length_default`` should spend ``cpu_target``, taking CPU seconds as proportional to the
    length (the equal-CPU row records what it then measured)."""
    return max(1, int(round(length_default * cpu_target / cpu_default)))


def row(table: str, method: str, setting: str, length: int | None, n: int, seed: int, train: Any, heldout: Any,
        kinds: dict[str, str]) -> dict[str, Any]:
    """One result row; a method that fails records its one-line error instead of metrics."""
    entry: dict[str, Any] = {"table": table, "method": method, "setting": setting, "length": length}
    try:
        samples, cpu = run_method(table, method, n, seed, length)
    except RuntimeError as error:
        return {**entry, "error": str(error)}
    return {**entry, "cpu_s": cpu, **score(train, heldout, samples, kinds, seed)}


def benchmark(tables: list[str], methods: list[str], seed: int, quick: bool, equal_cpu: bool,
              probe_only: list[str], cpu_target: float | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Every method on every table: a default row (for a method in ``probe_only``, or with
    ``quick``, a short "quick" row at its QUICK_LENGTHS length instead), and for the peers with a
    training length an equal-CPU row matched to fdrl's CPU seconds on that table (or to
    ``cpu_target`` where fdrl did not run), its length scaled from the first row's CPU seconds
    (and once more from its own, if that run missed by over EQUAL_CPU_TOLERANCE)."""
    rows, skipped = [], {}
    for method in methods:
        if (why := missing(method)) is not None:
            skipped[method] = why
            log(why)
    runnable = [m for m in methods if m not in skipped]
    for table in tables:
        df, kinds = TABLES[table]()
        train, heldout = split(df)
        n = len(train)
        first: dict[str, dict[str, Any]] = {}
        for method in runnable:
            short = quick or method in probe_only
            length = QUICK_LENGTHS.get(method) if short else None
            first[method] = row(table, method, "quick" if short else "default", length, n, seed, train, heldout, kinds)
            rows.append(first[method])
            log(json.dumps(first[method]))
        fdrl_cpu = first.get("fdrl", {}).get("cpu_s", cpu_target)
        if not equal_cpu or fdrl_cpu is None:
            continue
        for method in runnable:
            if method not in LENGTHS or "cpu_s" not in first[method]:
                continue
            matched = first[method]
            for _ in range(EQUAL_CPU_TRIES):
                length = equal_length(matched["cpu_s"], matched["length"] or LENGTHS[method][1], fdrl_cpu)
                matched = row(table, method, "equal_cpu", length, n, seed, train, heldout, kinds)
                log(json.dumps(matched))
                if "cpu_s" not in matched or abs(matched["cpu_s"] / fdrl_cpu - 1) <= EQUAL_CPU_TOLERANCE:
                    break
            rows.append(matched)
    return {"seed": seed, "split_seed": SPLIT_SEED, "heldout_fraction": HELDOUT_FRACTION, "quick": quick,
            "cpu_target": cpu_target,
            "lengths": {m: {"knob": k, "default": d} for m, (k, d) in LENGTHS.items()}, "skipped": skipped,
            "rows": rows}


COLUMNS = [("CPU s", "cpu_s", 1), ("C2ST", "c2st", 3), ("energy", "energy", 3), ("near-copies", "near_copies", 3),
           ("DCR share", "dcr_share", 2), ("shapes", "shapes", 3), ("trends", "trends", 3)]


def markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (method x table, one line per setting)."""
    lines = ["| table | method | setting | length | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|" + " --- |" * (4 + len(COLUMNS))]
    for r in result["rows"]:
        if "error" in r:
            cells = [f"error: {r['error']}"] + [""] * (len(COLUMNS) - 1)
        else:
            cells = ["-" if r[key] is None else f"{r[key]:.{digits}f}" for _, key, digits in COLUMNS]
        lines.append(f"| {r['table']} | {r['method']} | {r['setting']} | {r['length'] or 'default'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


MARKER_START, MARKER_END = "<!-- tabular-peers:start -->", "<!-- tabular-peers:end -->"


def write_markdown(path: Path, table: str, command: str) -> None:
    """Put ``table`` and the command that made it between the page's markers (the whole page
    is the table if it has none)."""
    block = f"{MARKER_START}\n```\n{command}\n```\n\n{table}\n{MARKER_END}"
    text = path.read_text() if path.exists() else ""
    if MARKER_START in text and MARKER_END in text:
        head, rest = text.split(MARKER_START, 1)
        text = head + block + rest.split(MARKER_END, 1)[1]
    else:
        text = block + "\n"
    path.write_text(text)


def _names(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [t for t in text.split(",") if t]
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {','.join(unknown) or '(none)'}: choose from {','.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, from {','.join(TABLES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny training lengths (a smoke test)")
    parser.add_argument("--no-equal-cpu", action="store_true", help="only the default rows")
    parser.add_argument("--probe-only", default="", help="methods whose default run is too long here: a quick "
                        "row instead, which the equal-CPU row scales from")
    parser.add_argument("--cpu-target", type=float, help="CPU seconds of the equal-CPU rows on tables where "
                        "fdrl did not run")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table into this page")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    try:
        tables, methods = _names(args.tables, TABLES, "table"), _names(args.methods, METHODS, "method")
        probe_only = _names(args.probe_only, METHODS, "method") if args.probe_only else []
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = benchmark(tables, methods, args.seed, args.quick, not args.no_equal_cpu, probe_only, args.cpu_target,
                       lambda line: print(line, file=sys.stderr, flush=True))
    table = markdown(result)
    print(table, file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.markdown:
        command = "python benchmarks/tabular_peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_markdown(args.markdown, table, command)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
