"""Per-column scores of synthetic tables, as tabular users know them (SDMetrics' definitions).

Each score is in [0, 1], 1 = the synthetic table matches the real one in that respect:

* column shapes (:func:`column_shapes`): for a numeric column ("continuous", "integer" or "datetime", in seconds)
  1 - the two-sample Kolmogorov-Smirnov statistic (SDMetrics' KSComplement); for a
  "categorical" column 1 - the total variation distance of the category frequencies
  (TVComplement);
* pair trends (:func:`pair_trends`): for two numeric columns 1 - |corr_real - corr_synth| / 2
  with Pearson's correlation (CorrelationSimilarity); for a pair with a categorical column
  1 - the total variation distance of the joint frequency table (ContingencySimilarity),
  numeric columns binned into :data:`BINS` quantile bins of the real column.

Missing cells (NaN): a category of their own in frequency tables (so a table that loses or
invents missing values is penalised); dropped for the KS statistic and, row by row, for a
correlation. A constant column has correlation 0 with everything (no linear trend).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

KINDS = ("continuous", "integer", "categorical", "datetime")
#: quantile bins of a numeric column in a contingency table
BINS = 10
#: above this many column pairs, a fixed-seed random subset of this many is scored
MAX_PAIRS = 200
#: the category of a missing cell (a string no real category is expected to be)
_MISSING = "\x00missing"


def _checked_kinds(real: Any, synth: Any, kinds: dict[str, str]) -> None:
    for column, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"column '{column}' has kind '{kind}'; choose one of: {', '.join(KINDS)}")
        for name, table in (("real", real), ("synthetic", synth)):
            if column not in table.columns:
                raise ValueError(f"column '{column}' is missing from the {name} table; "
                                 "pass tables with the same columns")


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical
    distribution functions of ``a`` and ``b`` (NaN dropped; 1 when exactly one is empty, 0
    when both are)."""
    a, b = np.sort(a[~np.isnan(a)]), np.sort(b[~np.isnan(b)])
    if a.size == 0 or b.size == 0:
        return float(a.size != b.size)
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / a.size - np.searchsorted(b, points, side="right") / b.size
    return float(np.abs(gap).max())


def _categories(values: Any) -> Any:
    """A column's cells as category labels, missing cells as a category of their own."""
    return values.astype(object).where(values.notna(), _MISSING)


def total_variation(real_keys: Any, synth_keys: Any) -> float:
    """Total variation distance, half the summed absolute difference, between the frequencies
    of the rows of two DataFrames of category labels (one column: categories; two: cells of a
    contingency table)."""
    p = real_keys.value_counts(normalize=True).to_dict()
    q = synth_keys.value_counts(normalize=True).to_dict()
    return float(0.5 * sum(abs(p.get(key, 0.0) - q.get(key, 0.0)) for key in p.keys() | q.keys()))


def _numeric(values: Any) -> np.ndarray:
    """A numeric or datetime column as floats (datetimes in seconds; NaN where missing)."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return ((values - pd.Timestamp(0, tz=values.dt.tz)) / pd.Timedelta(seconds=1)).to_numpy(dtype=float,
                                                                                               na_value=np.nan)
    return values.to_numpy(dtype=float, na_value=np.nan)


def column_shapes(real: Any, synth: Any, kinds: dict[str, str]) -> dict[str, Any]:
    """Per column of ``kinds`` (name -> "continuous" | "integer" | "categorical") the shape
    score of ``synth`` against ``real`` (pandas DataFrames; module docstring), and their mean
    under ``score``."""
    _checked_kinds(real, synth, kinds)
    per_column = {}
    for column, kind in kinds.items():
        if kind == "categorical":
            distance = total_variation(_categories(real[column]).to_frame(), _categories(synth[column]).to_frame())
        else:
            distance = ks_statistic(_numeric(real[column]), _numeric(synth[column]))
        per_column[column] = 1.0 - distance
    score = float(np.mean(list(per_column.values()))) if per_column else float("nan")
    return {"per_column": per_column, "score": score}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation over the rows where both are present; 0 for a constant column."""
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else 0.0


def _binned(values: Any, real_values: Any, kind: str) -> Any:
    """A column as contingency-table labels: categories as they are, numeric values by their
    quantile bin of ``real_values`` (the real table's column; missing cells a label of their own)."""
    if kind == "categorical":
        return _categories(values)
    real = _numeric(real_values)
    present = real[~np.isnan(real)]
    inner = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])) if present.size else np.empty(0)
    import pandas as pd

    x = _numeric(values)
    labels = np.searchsorted(inner, x, side="right").astype(object)
    labels[np.isnan(x)] = _MISSING
    return pd.Series(labels, index=values.index)


def pair_score(real: Any, synth: Any, a: str, b: str, kinds: dict[str, str]) -> float:
    """The trend score of columns ``a`` and ``b`` (module docstring)."""
    if kinds[a] != "categorical" and kinds[b] != "categorical":
        corr_real = _correlation(_numeric(real[a]), _numeric(real[b]))
        corr_synth = _correlation(_numeric(synth[a]), _numeric(synth[b]))
        return 1.0 - abs(corr_real - corr_synth) / 2
    import pandas as pd

    def table(t: Any) -> Any:
        return pd.DataFrame({a: _binned(t[a], real[a], kinds[a]), b: _binned(t[b], real[b], kinds[b])})

    return 1.0 - total_variation(table(real), table(synth))


def pair_trends(real: Any, synth: Any, kinds: dict[str, str], max_pairs: int = MAX_PAIRS,
                seed: int = 0) -> dict[str, Any]:
    """The trend score of every pair of the columns of ``kinds`` (at most ``max_pairs``: above
    that a random subset drawn with ``seed``), their mean under ``score``, and how many pairs
    were scored of how many there are."""
    _checked_kinds(real, synth, kinds)
    pairs = list(combinations(kinds, 2))
    chosen = pairs
    if len(pairs) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False))
        chosen = [pairs[i] for i in keep]
    per_pair = {f"{a} / {b}": pair_score(real, synth, a, b, kinds) for a, b in chosen}
    # None, not NaN, for a table of one column: metrics.json stays strict JSON
    return {"per_pair": per_pair, "score": float(np.mean(list(per_pair.values()))) if per_pair else None,
            "pairs_scored": len(chosen), "pairs_total": len(pairs)}


def table_scores(real: Any, synth: Any, kinds: dict[str, str], seed: int = 0) -> dict[str, Any]:
    """The held-out report's summary of :func:`column_shapes` and :func:`pair_trends`: the two
    means (``shapes``, ``pair_trends``), each column's shape score, and the pairs scored."""
    shapes, trends = column_shapes(real, synth, kinds), pair_trends(real, synth, kinds, seed=seed)
    return {"shapes": shapes["score"], "pair_trends": trends["score"], "per_column": shapes["per_column"],
            "pairs_scored": trends["pairs_scored"], "pairs_total": trends["pairs_total"]}
