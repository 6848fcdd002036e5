"""The held-out report in words: its verdict (:func:`verdict`) and its printed lines
(:func:`report_lines`), from the report's numbers alone.

Plain Python: ``fdrl info`` prints a run's report without PyTorch, and old ``metrics.json``
files (from before the uncertainties, the verdict or the duplicate counts) still print: what a
report lacks is left out.
"""

from __future__ import annotations

import math
from typing import Any

#: below this many scored rows a two-sample test's 95% interval is wider than +-0.07 (Wilson,
#: 2 x 100 points at accuracy 0.5): only gross differences between models show
MIN_HELDOUT = 100
#: below this many (+-0.03 at 2 x 500 points) overlapping intervals of fdrl and the Gaussian
#: baseline mean the test is too weak to separate them, rather than that they are equal
SMALL_HELDOUT = 500
#: a share of near-copies above this (1% expected for fresh data on a large held-out part), and
#: above what fresh data reach by chance on a small one (``near_copy_share_fresh_q99``: 20% on
#: 30 rows), means the model copies
NEAR_COPY_LIMIT = 0.05
#: a DCR share whose 95% interval lies above 0.5 + this leans towards the training rows
DCR_MARGIN = 0.03
#: an estimator whose mean ratio on held-out rows is this many times its mean on training rows
#: (and above 2) has learnt its training rows: r is about 1 on both when it has not
MEMORY_FACTOR = 3.0
#: how the report names its rows
ROW_NAMES = {"gaussian": "Gaussian (Eq. 8)", "gmm": "Gaussian mixture (10)", "prior": "prior draws"}
#: how the verdict names the baselines it compares with
BASELINE_NAMES = {"gaussian": "Gaussian of Eq. 8", "gmm": "Gaussian mixture"}
FAILED = ("fdrl's samples are further from the held-out data than the prior it starts from: the run failed "
          "(diverged or undertrained)")


def _half_width(scores: dict[str, Any]) -> float:
    lo, hi = scores["c2st_accuracy_ci"]
    return (hi - lo) / 2


def _c2st(scores: dict[str, Any]) -> str:
    return f"{scores['c2st_accuracy']:.2f} +- {_half_width(scores):.2f}"


def _disjoint_above(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``a``'s C2ST interval lies wholly above ``b``'s."""
    return a["c2st_accuracy_ci"][0] > b["c2st_accuracy_ci"][1]


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return not (_disjoint_above(a, b) or _disjoint_above(b, a))


def _worse_than(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``a`` is measurably further from the held-out data than ``b``: its energy
    distance above ``b``'s by more than twice their combined standard error, or its C2ST
    interval wholly above ``b``'s."""
    gap = a["energy_distance"] - b["energy_distance"]
    return gap > 2 * math.hypot(a["energy_distance_se"], b["energy_distance_se"]) or _disjoint_above(a, b)


def _size_line(report: dict[str, Any], heldout_rows: int | None) -> str | None:
    """The warning that the scored set is too small, or None."""
    m, gaussian = report["n"], report["baselines"].get("gaussian")
    small = m < MIN_HELDOUT or (m < SMALL_HELDOUT and gaussian is not None and _overlap(report, gaussian))
    if not small:
        return None
    if heldout_rows is not None and heldout_rows <= m:
        start = f"the held-out part has {m} rows"
        advice = "hold out more (data.test_fraction) or pass data.params.test_path"
    else:
        start, advice = f"only {m} samples were scored", "score more (train.eval_n, or fdrl evaluate RUN --n N)"
    return f"{start}: too few to tell these models apart (C2ST +-{_half_width(report):.2f}); {advice}"


def _fresh_share(mem: dict[str, Any]) -> float:
    """The near-copy share of fresh data on this report's held-out part (1% in an old report)."""
    fresh = mem.get("near_copy_share_fresh")
    return 0.01 if fresh is None or math.isnan(fresh) else fresh


def _on_rows(mem: dict[str, Any]) -> str:
    """", on N held-out rows" where so few rows move the expectation above 1%."""
    return f" on {mem['heldout_rows']} held-out rows" if round(_fresh_share(mem), 2) > 0.01 else ""


def _memorisation_lines(mem: dict[str, Any]) -> list[str]:
    """The copying verdict and, where held-out rows also occur in training, that warning."""
    near, fresh = mem["share_closer_than_heldout_1pct"], _fresh_share(mem)
    dcr, ci = mem.get("dcr_share"), mem.get("dcr_share_ci")
    dcr_text = "" if dcr is None else f"; DCR share {dcr:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (0.5 for fresh data)"
    chance = mem.get("near_copy_share_fresh_q99")
    chance = NEAR_COPY_LIMIT if chance is None or math.isnan(chance) else max(chance, NEAR_COPY_LIMIT)
    expected = f"{fresh:.0%} expected for fresh data{_on_rows(mem)}"
    if chance > NEAR_COPY_LIMIT:
        expected += f", up to {chance:.0%} by chance"
    if near > chance:
        lines = [f"copies training rows: {near:.0%} of samples are near-copies ({expected}){dcr_text}"]
    elif dcr is not None and ci[0] > 0.5 + DCR_MARGIN:
        lines = [f"leans towards its training rows: {dcr:.0%} of samples are closer to a training row than to any "
                 f"held-out row (DCR share [{ci[0]:.2f}, {ci[1]:.2f}]; 0.5 for fresh data, "
                 f"{mem['dcr_share_copier']:.2f} for a model that copies)"]
    else:
        lines = [f"no sign of copying: {near:.1%} near-copies ({expected}){dcr_text}"]
    shared = mem.get("heldout_rows_in_training", 0)
    if shared:
        lines.append(f"{shared} of {mem['heldout_rows']} held-out rows also occur among the training rows "
                     f"({mem['duplicated_training_rows']} training rows are duplicates): those are not unseen data; "
                     "drop duplicate rows before splitting for an honest held-out score")
    return lines


def _comparison(report: dict[str, Any]) -> str | None:
    """fdrl against the best baseline (lowest C2ST accuracy), and the floor where it is reached."""
    candidates = {name: s for name, s in report["baselines"].items() if name in BASELINE_NAMES}
    if not candidates:
        return None
    name = min(candidates, key=lambda k: candidates[k]["c2st_accuracy"])
    best = candidates[name]
    if _disjoint_above(best, report):
        relation = "closer to the held-out data than"
    elif _disjoint_above(report, best):
        relation = "further from the held-out data than"
    else:
        relation = "no better than"
    line = f"fdrl is {relation} the {BASELINE_NAMES[name]} by C2ST ({_c2st(report)} vs {_c2st(best)})"
    floor = report.get("floor")
    if floor is not None and _overlap(report, floor):
        line += f", and as close as the training rows themselves (the floor, {_c2st(floor)})"
    return line


def _estimator_memory_line(ratio: dict[str, float] | None) -> str | None:
    """A line when the estimator's ratio says it has learnt its training rows, else None."""
    if ratio is None or not (ratio["heldout"] > 2 and ratio["heldout"] > MEMORY_FACTOR * max(ratio["train"], 0.0)):
        return None
    return (f"the estimator has learnt its training rows: its ratio r = q~/p averages {ratio['heldout']:.3g} on "
            f"held-out rows against {ratio['train']:.3g} on training rows (about 1 on both when it has not), so "
            "log_ratio on new data is not a density ratio (it grows with train.steps and shrinks with more data)")


def verdict(report: dict[str, Any], heldout_rows: int | None = None) -> list[str]:
    """Short sentences on a held-out report (:func:`fdrl.evaluate.heldout.heldout_report`),
    most important first: a failed run (samples measurably further from the held-out data than
    the prior's draws), a scored set too small to separate the models, copying of training
    rows (and held-out rows that are not unseen), an estimator that has learnt its training
    rows, then fdrl against its best baseline.
    ``heldout_rows``: the size of the held-out part (None: fresh draws, as many as wanted)."""
    lines = []
    prior = report["baselines"].get("prior")
    if prior is not None and _worse_than(report, prior):
        lines.append(f"{FAILED}; energy distance {report['energy_distance']:.3g} vs the prior's "
                     f"{prior['energy_distance']:.3g}: try more training steps (train.steps), a smaller flow step "
                     "(flow.eta) or learning rate (train.lr)")
    size = _size_line(report, heldout_rows)
    if size is not None:
        lines.append(size)
    lines += _memorisation_lines(report["memorisation"])
    memory = _estimator_memory_line(report.get("estimator_ratio"))
    if memory is not None:
        lines.append(memory)
    comparison = _comparison(report)
    if comparison is not None:
        lines.append(comparison)
    return lines


def _score_cells(scores: dict[str, Any]) -> str:
    """One row's energy distance (+- standard error) and C2ST accuracy [95% interval]."""
    energy = f"{scores['energy_distance']:.4g}"
    if "energy_distance_se" in scores:
        energy += f" +- {scores['energy_distance_se']:.2g}"
    c2st = f"{scores['c2st_accuracy']:.3f}"
    if "c2st_accuracy_ci" in scores:
        lo, hi = scores["c2st_accuracy_ci"]
        c2st += f" [{lo:.3f}, {hi:.3f}]"
    return f"{energy:>22}  {c2st}"


def _memorisation_text(mem: dict[str, Any]) -> list[str]:
    """The memorisation numbers, those an old report lacks left out."""
    line = f"memorisation: near-copies {mem['share_closer_than_heldout_1pct']:.1%} ({_fresh_share(mem):.0%} expected)"
    if mem.get("dcr_share") is not None:
        lo, hi = mem["dcr_share_ci"]
        line += (f"; DCR share {mem['dcr_share']:.2f} [{lo:.2f}, {hi:.2f}] (0.5 fresh, "
                 f"{mem['dcr_share_copier']:.2f} a copier; {mem['dcr_rows']} rows each)")
    elif "dcr_rows" in mem:
        line += f"; DCR share not computed ({mem['dcr_rows']} held-out rows unseen in training)"
    ratio = mem.get("median_ratio")
    if ratio is not None and math.isfinite(ratio):
        line += f"; nearest-training-row distance, samples / held-out = {ratio:.2f} (1 = no copying)"
    lines = [line]
    if "duplicated_training_rows" in mem:
        lines.append(f"duplicates: {mem['duplicated_training_rows']} of {mem['training_rows']} training rows; "
                     f"{mem['heldout_rows_in_training']} of {mem['heldout_rows']} held-out rows occur in training")
    return lines


def _columns_text(metrics: dict[str, Any]) -> list[str]:
    """The per-column scores of fdrl (and of the mixture, where scored), if the report has them."""
    ours, gmm = metrics.get("columns"), (metrics.get("baselines", {}).get("gmm") or {}).get("columns")
    if not ours:
        return []
    pairs = f"{ours['pairs_scored']} pairs"
    if ours["pairs_scored"] < ours["pairs_total"]:
        pairs += f" of {ours['pairs_total']}, a fixed random subset"
    if ours["pair_trends"] is None:  # one column: no pairs (the mixture's report has none either)
        trend_text = "no pair trends (one column)"
    elif gmm:
        trend_text = f"pair trends {ours['pair_trends']:.3f} / {gmm['pair_trends']:.3f} ({pairs})"
    else:
        trend_text = f"pair trends {ours['pair_trends']:.3f} ({pairs})"
    if gmm:
        head = (f"columns (1 = as the held-out table), fdrl / Gaussian mixture: shapes {ours['shapes']:.3f} / "
                f"{gmm['shapes']:.3f}, {trend_text}")
        cells = [f"{c} {v:.2f} / {gmm['per_column'].get(c, float('nan')):.2f}" for c, v in ours["per_column"].items()]
    else:
        head = f"columns (1 = as the held-out table): shapes {ours['shapes']:.3f}, {trend_text}"
        cells = [f"{c} {v:.2f}" for c, v in ours["per_column"].items()]
    return [head, "column shapes: " + ", ".join(cells)]


def report_lines(metrics: dict[str, Any]) -> list[str]:
    """A held-out report (``metrics.json``) as printed lines: the verdict, the table of scores
    (energy distance +- its standard error, C2ST accuracy [95% interval]) for fdrl, the
    baselines and the floor, memorisation and duplicates, and the per-column scores."""
    lines = []
    if metrics.get("verdict"):
        lines.append("verdict:")
        lines += [f"  - {sentence}" for sentence in metrics["verdict"]]
    lines.append(f"scored against: {metrics.get('reference', '?')}, n = {metrics.get('n', '?')} "
                 f"({metrics.get('units', '?')} units)")
    lines.append(f"  {'':<28}{'energy distance':>22}  C2ST accuracy [95%]")
    rows = [("fdrl samples", metrics), *metrics.get("baselines", {}).items()]
    if "floor" in metrics:
        rows.append(("floor (train vs held-out)", metrics["floor"]))
    for name, scores in rows:
        lines.append(f"  {ROW_NAMES.get(name, name):<28}{_score_cells(scores)}")
    if "memorisation" in metrics:
        lines += [f"  {line}" for line in _memorisation_text(metrics["memorisation"])]
    if "estimator_ratio" in metrics:
        ratio = metrics["estimator_ratio"]
        lines.append(f"  estimator: mean r = q~/p {ratio['train']:.3g} on training rows, {ratio['heldout']:.3g} on "
                     "held-out rows (about 1 on both for an estimator that has not learnt its training rows)")
    lines += [f"  {line}" for line in _columns_text(metrics)]
    lines += [f"  note: {note}" for note in metrics.get("notes", [])]
    return lines
